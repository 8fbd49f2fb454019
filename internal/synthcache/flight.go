package synthcache

import (
	"bytes"
	"context"
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/speechgate/speechgate/internal/smallest"
)

// window bounds the audio a flight holds for its readers once it no
// longer stores what it receives: 32 of the upstream client's reads, at
// most 1 MiB. Beyond it the flight stops reading the upstream until the
// slowest reader catches up, so that TCP holds the rest back, as it does
// without a cache.
const window = 32

// flight is one upstream synthesis that every identical request arriving
// while it runs reads.
//
// What it receives is written into a pending entry of the in-process tier,
// within its budget, and kept there for joiners and for the cache. When the
// tier has no room (or keeps nothing), the flight keeps only what its
// readers have not yet read, closes itself to new joiners (who would miss
// the beginning), and reads the upstream no faster than its slowest reader:
// memory stays flat however many syntheses run.
type flight struct {
	key    Key
	ctx    context.Context // the upstream call's: it outlives the leader's caller
	cancel context.CancelFunc
	mem    *memory
	entry  *entry // the pending entry it writes into; nil when not storing

	ready     chan struct{} // closed once Smallest accepted or refused it
	acceptErr error
	stream    *smallest.SpeechStream // set before ready closes, when accepted
	firstByte atomic.Int64

	mu       sync.Mutex
	chunks   [][]byte // chunks[0] is chunk number base
	base     int
	size     int
	storing  bool // every chunk so far is in the entry
	joinable bool // nothing has been dropped: a joiner gets it all
	done     bool
	err      error
	changed  chan struct{} // closed and replaced at each chunk and at the end
	consumed chan struct{} // closed and replaced when a reader moves on or leaves
	cursors  map[*int]struct{}
}

// newFlight starts a flight. The upstream call keeps ctx's values (the
// trace, the request id) but not its cancellation: it ends when its last
// reader leaves.
func (c *Cache) newFlight(ctx context.Context, k Key) *flight {
	fctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	f := &flight{key: k, ctx: fctx, cancel: cancel, mem: c.mem, entry: c.mem.pending(k), ready: make(chan struct{}),
		changed: make(chan struct{}), consumed: make(chan struct{}), cursors: map[*int]struct{}{}, joinable: true}
	f.storing = f.entry != nil
	return f
}

// join adds a reader at the start, and reports false when the flight can
// no longer give a new reader all of its audio. The caller holds c.mu, so
// the flight cannot end between being found and being joined.
func (f *flight) join() (*int, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.joinable {
		return nil, false
	}
	cursor := new(int)
	f.cursors[cursor] = struct{}{}
	if f.entry != nil {
		f.mem.retain(f.entry) // its blocks stay until this reader is done
	}
	return cursor, true
}

// leave removes a reader; the last one cancels an unfinished upstream call.
func (f *flight) leave(cursor *int) {
	f.mu.Lock()
	delete(f.cursors, cursor)
	last := len(f.cursors) == 0 && !f.done
	if last {
		// Its upstream call is about to be cancelled: a request that finds
		// it before it is forgotten must lead a flight of its own, not join
		// one that will fail.
		f.joinable = false
	}
	f.trimLocked()
	f.mu.Unlock()
	if f.entry != nil {
		f.mem.release(f.entry)
	}
	if last {
		f.cancel()
	}
}

// trimLocked drops what every reader has read, once the flight no longer
// stores its audio. f.mu is held.
func (f *flight) trimLocked() {
	if f.storing {
		return
	}
	low := f.base + len(f.chunks)
	for c := range f.cursors {
		low = min(low, *c)
	}
	if n := low - f.base; n > 0 {
		clear(f.chunks[:n])
		f.chunks = f.chunks[n:]
		f.base = low
		f.joinable = false
	}
	close(f.consumed)
	f.consumed = make(chan struct{})
}

// run makes the upstream call and keeps what it sends; when it ends OK the
// stored audio is committed, before the flight is forgotten, so that a
// request arriving meanwhile finds one or the other.
func (c *Cache) run(f *flight, open func(context.Context) (*smallest.SpeechStream, error)) {
	defer c.work.Done()
	defer f.cancel()
	if f.entry != nil {
		defer c.mem.release(f.entry) // the flight's own hold
	}
	st, err := open(f.ctx)
	if err != nil {
		f.acceptErr = err
		close(f.ready)
		c.forget(f)
		f.finish(err)
		return
	}
	f.stream = st
	close(f.ready)
	defer st.Close()
	var shared *writer
	if c.redis != nil {
		shared = c.redis.writer(f.ctx, f.key, c.maxEntry)
	}
	var buf []byte // what add copies each piece from
	for {
		if !f.wait() {
			c.forget(f)
			f.finish(context.Cause(f.ctx))
			return
		}
		b, err := st.NextInto(buf)
		if b != nil {
			buf = b
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			c.forget(f)
			f.finish(err)
			return
		}
		if f.firstByte.Load() == 0 {
			f.firstByte.Store(int64(st.FirstByte()))
		}
		f.add(b)
		if shared != nil {
			shared.add(b)
		}
	}
	m := meta{RequestID: st.RequestID, SessionID: st.SessionID, SampleRate: st.SampleRate}
	if f.entry != nil && f.storingNow() {
		c.mem.commit(f.entry, m)
	}
	c.usage()
	c.forget(f)
	f.finish(nil)
	if shared != nil {
		// The meta, which makes it readable, once the readers have their end.
		shared.commit(m)
	}
}

func (f *flight) storingNow() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.storing
}

// wait holds the upstream read back while the flight, not storing, holds
// a window's worth its readers have not read. It reports false when the
// upstream call has been cancelled.
func (f *flight) wait() bool {
	for {
		f.mu.Lock()
		full := !f.storing && len(f.chunks) >= window && len(f.cursors) > 0
		consumed := f.consumed
		f.mu.Unlock()
		if !full {
			return f.ctx.Err() == nil
		}
		select {
		case <-consumed:
		case <-f.ctx.Done():
			return false
		}
	}
}

// add keeps a copy of a chunk: in the pending entry while it has room,
// else on the heap (b's storage is reused for the next piece).
func (f *flight) add(b []byte) {
	var stored []byte
	if f.entry != nil && f.storingNow() {
		if stored = f.mem.write(f.entry, b); stored == nil {
			f.mu.Lock()
			f.storing = false
			f.mu.Unlock()
		}
	}
	if stored == nil {
		stored = bytes.Clone(b)
	}
	b = stored
	f.mu.Lock()
	defer f.mu.Unlock()
	f.chunks = append(f.chunks, b)
	f.size += len(b)
	f.trimLocked()
	close(f.changed)
	f.changed = make(chan struct{})
}

// forget takes the flight out of the map, so that new requests no longer
// join it.
func (c *Cache) forget(f *flight) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.flights[f.key] == f {
		delete(c.flights, f.key)
	}
}

func (f *flight) finish(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.done, f.err = true, err
	close(f.changed)
	f.changed = make(chan struct{})
}

// reader waits until the upstream has accepted the flight (or ctx ends),
// and returns a stream that reads it from its start.
func (f *flight) reader(ctx context.Context, cursor *int, o Outcome) (*Stream, error) {
	select {
	case <-f.ready:
	case <-ctx.Done():
		f.leave(cursor)
		return nil, context.Cause(ctx)
	}
	if f.acceptErr != nil {
		f.leave(cursor)
		return nil, f.acceptErr
	}
	s := &Stream{RequestID: f.stream.RequestID, SessionID: f.stream.SessionID, ContentExpiry: f.stream.ContentExpiry, Outcome: o,
		SampleRate: f.stream.SampleRate,
		firstByte:  func() time.Duration { return time.Duration(f.firstByte.Load()) }, close: func() { f.leave(cursor) }}
	if o == Miss {
		s.Attempts, s.Waited = f.stream.Attempts, f.stream.Waited
	}
	s.next = func() ([]byte, error) {
		for {
			f.mu.Lock()
			if i := *cursor - f.base; i < len(f.chunks) {
				b := f.chunks[i]
				*cursor++
				f.trimLocked()
				f.mu.Unlock()
				return b, nil
			}
			if f.done {
				err := f.err
				f.mu.Unlock()
				if err == nil {
					err = io.EOF
				}
				return nil, err
			}
			changed := f.changed
			f.mu.Unlock()
			select {
			case <-changed:
			case <-ctx.Done():
				return nil, context.Cause(ctx)
			}
		}
	}
	return s, nil
}
