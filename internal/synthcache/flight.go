package synthcache

import (
	"bytes"
	"context"
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/speechgate/speechgate/internal/rpcerror"
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
// Its readers read the upstream themselves: a reader that needs audio not
// yet received reads the next piece from Smallest, keeps it for the
// others, and takes it; the others wait for it. A flight with one reader,
// the usual case, reads the upstream in that caller's goroutine, as an
// uncached call does: a goroutine of the flight's own, handing each piece
// over, cost a tenth more CPU per real-time stream. Only the upstream
// request is made in a goroutine of its own, so that a caller who leaves
// while it waits (for the account's budget, say) is not held.
//
// What it receives is written into a pending entry of the in-process tier,
// within its budget, and kept there for joiners and for the cache. When the
// tier has no room (or keeps nothing), the flight keeps only what its
// readers have not yet read, closes itself to new joiners (who would miss
// the beginning), and reads the upstream no faster than its slowest reader:
// memory stays flat however many syntheses run.
type flight struct {
	c      *Cache
	key    Key
	ctx    context.Context // the upstream call's: it outlives the leader's caller
	cancel context.CancelFunc
	entry  *entry // the pending entry it writes into; nil when not storing

	ready     chan struct{} // closed once Smallest accepted or refused it
	acceptErr error
	stream    *smallest.SpeechStream // set before ready closes, when accepted
	shared    *writer                // the Redis tier's, when there is one; set before ready closes
	firstByte atomic.Int64

	mu       sync.Mutex
	chunks   [][]byte // chunks[0] is chunk number base
	base     int
	size     int
	storing  bool // every chunk so far is in the entry
	joinable bool // nothing has been dropped: a joiner gets it all
	opened   bool // the upstream request has been answered
	pumping  bool // a reader is reading the upstream
	done     bool // the synthesis has ended, as err says
	err      error
	live     int // readers whose callers have not gone
	cursors  map[*int]struct{}
	changed  chan struct{} // closed and replaced, when waiting, at each change a reader may wait for
	waiting  bool          // a reader waits on changed
	buf      []byte        // what the reading reader decodes into (see pump)
}

// newFlight starts a flight. The upstream call keeps ctx's values (the
// trace, the request id) but not its cancellation: it ends when its last
// reader's caller has gone.
func (c *Cache) newFlight(ctx context.Context, k Key) *flight {
	fctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	f := &flight{c: c, key: k, ctx: fctx, cancel: cancel, entry: c.mem.pending(k), ready: make(chan struct{}),
		changed: make(chan struct{}), cursors: map[*int]struct{}{}, joinable: true}
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
	f.live++
	if f.entry != nil {
		f.c.mem.retain(f.entry) // its blocks stay until this reader is done
	}
	return cursor, true
}

// leave removes a reader. stop is the reader's watch on its caller (see
// reader): true when it had not fired, and the caller had not gone.
func (f *flight) leave(cursor *int, stop func() bool) {
	live := stop()
	f.mu.Lock()
	delete(f.cursors, cursor)
	if live {
		f.live--
	}
	last := f.lastGoneLocked()
	f.trimLocked()
	f.mu.Unlock()
	if f.entry != nil {
		f.c.mem.release(f.entry)
	}
	if last {
		f.halt()
	}
}

// callerGone is a reader's caller going (its context done): when it was
// the last, the upstream call stops at once, even while a reader waits
// for Smallest inside it.
func (f *flight) callerGone() {
	f.mu.Lock()
	f.live--
	last := f.lastGoneLocked()
	f.mu.Unlock()
	if last {
		f.halt()
	}
}

// lastGoneLocked reports whether no reader's caller is left while the
// synthesis goes on, and closes the flight to joiners if so: a request
// that finds it before it is forgotten must lead a flight of its own, not
// join one about to be cancelled. f.mu is held.
func (f *flight) lastGoneLocked() bool {
	if f.live > 0 || f.done {
		return false
	}
	f.joinable = false
	return true
}

// trimLocked drops what every reader has read, once the flight no longer
// stores its audio, and wakes a reader waiting for the window to move.
// f.mu is held.
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
	f.signalLocked()
}

// signalLocked wakes the readers waiting for a change. A channel is
// replaced only when one waits, so that a lone reader allocates nothing
// per piece. f.mu is held.
func (f *flight) signalLocked() {
	if f.waiting {
		close(f.changed)
		f.changed = make(chan struct{})
		f.waiting = false
	}
}

// start makes the upstream request. A refusal ends the flight; an
// acceptance leaves it to its readers, who read the stream.
func (c *Cache) start(f *flight, open func(context.Context) (*smallest.SpeechStream, error)) {
	st, err := open(f.ctx)
	if err == nil && c.redis != nil {
		f.shared = c.redis.writer(f.ctx, f.key, c.maxEntry)
	}
	f.mu.Lock()
	f.stream, f.acceptErr, f.opened = st, err, true
	f.mu.Unlock()
	close(f.ready)
	if err != nil {
		c.forget(f)
		f.end(err)
		return
	}
	if f.ctx.Err() != nil {
		f.halt() // every caller left while Smallest answered
	}
}

// halt cancels the upstream call, and ends the flight unless a reader is
// in the stream, who then sees the cancellation and ends it, or the
// request is still being made, which start ends.
func (f *flight) halt() {
	f.cancel()
	f.mu.Lock()
	f.joinable = false
	// Ended under the same lock that saw no reader in the stream: none can
	// enter it after.
	now := f.opened && !f.pumping && f.finishLocked(context.Cause(f.ctx))
	f.mu.Unlock()
	if now {
		f.c.forget(f)
		f.release()
	}
}

// pump reads the next piece from the upstream for every reader; the
// calling reader holds f.pumping, which it gives back here. The piece is
// decoded into the previous one's storage (f.buf, the pump's alone), and
// kept as add says. The end of the stream ends the flight: an OK end commits
// the stored audio before the flight is forgotten, so that a request
// arriving meanwhile finds one or the other.
func (f *flight) pump() {
	pumped := false
	defer func() {
		if !pumped {
			// A panic, which the caller's handler recovers from: the other
			// readers, and the cache's Close, must not wait for a piece
			// that will never come.
			f.c.forget(f)
			f.end(errPumpPanicked)
		}
	}()
	b, err := f.stream.NextInto(f.buf)
	pumped = true
	if b != nil {
		f.buf = b
	}
	c := f.c
	switch {
	case err == nil:
		if f.firstByte.Load() == 0 {
			f.firstByte.Store(int64(f.stream.FirstByte()))
		}
		if f.shared != nil {
			f.shared.add(b)
		}
		f.add(b)
	case errors.Is(err, io.EOF):
		m := meta{RequestID: f.stream.RequestID, SessionID: f.stream.SessionID, SampleRate: f.stream.SampleRate}
		if f.entry != nil && f.storingNow() {
			c.mem.commit(f.entry, m)
		}
		c.usage()
		c.forget(f)
		if f.shared == nil {
			f.end(nil)
			return
		}
		c.work.Add(1) // Close waits for the commit too
		f.end(nil)
		// The meta, which makes the entry readable, once the other readers
		// have their end. This reader's end waits for it, so that the
		// syntheses one caller makes one after another are stored, and
		// later evicted, in that order.
		f.shared.commit(m)
		c.work.Done()
	default:
		c.forget(f)
		f.end(err)
	}
}

// errPumpPanicked is what the other readers of a flight get when reading
// its stream panicked.
var errPumpPanicked = rpcerror.New(codes.Internal, "the synthesis failed unexpectedly; the gateway's log has the details",
	rpcerror.ReasonInternal, nil)

func (f *flight) storingNow() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.storing
}

// add keeps a chunk for the readers, and gives the stream back to them.
// b's storage is the next piece's (see pump), so the chunk is copied: into
// the pending entry while it has room, else onto the heap, unless the
// reader reading the upstream is the only one. That one takes it before it
// reads the next, and, what was read being dropped, nobody can join to
// read it later: a lone caller of a synthesis too long to store copies
// nothing, as with no cache.
func (f *flight) add(b []byte) {
	var kept []byte
	if f.entry != nil && f.storingNow() {
		if kept = f.c.mem.write(f.entry, b); kept == nil {
			f.mu.Lock()
			f.storing = false
			f.mu.Unlock()
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case kept != nil:
	case len(f.cursors) == 1:
		kept, f.joinable = b, false
	default:
		kept = bytes.Clone(b)
	}
	f.chunks = append(f.chunks, kept)
	f.size += len(kept)
	f.pumping = false
	f.trimLocked()
	f.signalLocked()
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

// end ends the synthesis with err (nil: complete) for every reader, and
// lets go of what the flight holds. Only the first end counts: from the
// reader that met the stream's end, from start, or from halt, none of which
// runs while a reader is in the stream.
func (f *flight) end(err error) {
	f.mu.Lock()
	first := f.finishLocked(err)
	f.mu.Unlock()
	if first {
		f.release()
	}
}

// finishLocked marks the synthesis ended with err and wakes the readers;
// false when it had ended already. f.mu is held.
func (f *flight) finishLocked(err error) bool {
	if f.done {
		return false
	}
	f.done, f.err, f.pumping = true, err, false
	f.signalLocked()
	return true
}

// release lets go of what an ended flight holds: its upstream call, its
// hold on the pending entry, and its place in c.work.
func (f *flight) release() {
	f.cancel()
	if f.stream != nil {
		f.stream.Close()
	}
	if f.entry != nil {
		f.c.mem.release(f.entry) // the flight's own hold
	}
	f.c.work.Done()
}

// reader waits until the upstream has accepted the flight (or ctx ends),
// and returns a stream that reads it from its start.
func (f *flight) reader(ctx context.Context, cursor *int, o Outcome) (*Stream, error) {
	stop := context.AfterFunc(ctx, f.callerGone)
	select {
	case <-f.ready:
	case <-ctx.Done():
		f.leave(cursor, stop)
		return nil, context.Cause(ctx)
	}
	if f.acceptErr != nil {
		f.leave(cursor, stop)
		return nil, f.acceptErr
	}
	s := &Stream{RequestID: f.stream.RequestID, SessionID: f.stream.SessionID, ContentExpiry: f.stream.ContentExpiry, Outcome: o,
		SampleRate: f.stream.SampleRate,
		firstByte:  func() time.Duration { return time.Duration(f.firstByte.Load()) }, close: func() { f.leave(cursor, stop) }}
	if o == Miss {
		s.Attempts, s.Waited = f.stream.Attempts, f.stream.Waited
	}
	s.next = func() ([]byte, error) { return f.next(ctx, cursor) }
	return s, nil
}

// next returns the reader's next chunk: one already kept, or else the
// next from the upstream, which this reader reads unless another is
// reading it or the window is full.
func (f *flight) next(ctx context.Context, cursor *int) ([]byte, error) {
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
		if err := ctx.Err(); err != nil {
			f.mu.Unlock()
			return nil, context.Cause(ctx)
		}
		// Not storing, the flight holds at most a window its slowest
		// reader has not read; beyond it TCP holds the rest back.
		full := !f.storing && len(f.chunks) >= window
		if !f.pumping && !full {
			f.pumping = true
			f.mu.Unlock()
			f.pump()
			continue
		}
		changed := f.changed
		f.waiting = true
		f.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		}
	}
}
