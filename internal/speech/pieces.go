package speech

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"runtime/debug"
	"strconv"
	"sync"

	"github.com/speechgate/speechgate/internal/rpcerror"
	"github.com/speechgate/speechgate/internal/sentence"
	"github.com/speechgate/speechgate/internal/smallest"
	"github.com/speechgate/speechgate/internal/synthcache"
)

// lookaheadChunks bounds the audio a piece buffers while the one before it
// streams: 32 reads, each one of Smallest's 1 KB frames or several that had
// arrived together, joined to at most 32 KiB (smallest.SpeechStream.Next),
// so at most 1 MiB and usually about 32 KB. Then its upstream read waits
// (TCP applies the backpressure), and memory stays bounded however long the
// text. It was 256 reads, which allowed 8 MiB a piece.
const lookaheadChunks = 32

// pipeline synthesizes the pieces of a long text in order, the next piece's
// request running while the current piece streams. The first piece is read
// in the caller's goroutine: a short text, the usual case, then costs no
// goroutine and no hand-off per chunk on its way to the caller.
type pipeline struct {
	ctx       context.Context
	up        Upstream
	cache     *synthcache.Cache  // nil: none
	lookup    synthcache.Request // what the cache needs, but the text
	base      smallest.SpeechRequest
	pieces    []sentence.Piece
	lookahead int
	fetches   []*fetch
	wg        sync.WaitGroup
}

// fetch is one piece's synthesis.
type fetch struct {
	index     int
	piece     sentence.Piece
	stream    *synthcache.Stream
	acceptErr error
	done      chan struct{} // closed when its upstream request has ended
	endOnce   sync.Once     // closes done of the inline piece

	// A look-ahead piece runs in a goroutine of its own; the first piece,
	// read inline, has none of these.
	ready     chan struct{}   // closed once Smallest accepted or refused the piece
	chunks    chan []byte     // closed when the piece ends
	streamErr error           // set before chunks closes
	after     <-chan struct{} // the done of the piece before it
}

func newPipeline(ctx context.Context, up Upstream, cache *synthcache.Cache, lookup synthcache.Request, base smallest.SpeechRequest,
	pieces []sentence.Piece, lookahead int) *pipeline {
	return &pipeline{ctx: ctx, up: up, cache: cache, lookup: lookup, base: base, pieces: pieces, lookahead: lookahead}
}

// open opens a piece's audio: from the cache, a synthesis in flight, or
// the upstream.
func (p *pipeline) open(req *smallest.SpeechRequest) (*synthcache.Stream, error) {
	r := p.lookup
	r.Speech = req
	return p.cache.Open(p.ctx, r, func(ctx context.Context) (*smallest.SpeechStream, error) { return p.up.StreamSpeech(ctx, req) })
}

// piece returns piece i once Smallest has accepted it, starting it, and any
// before it, if not started.
func (p *pipeline) piece(i int) (*fetch, error) {
	p.startUpTo(i)
	f := p.fetches[i]
	if f.chunks == nil { // the inline piece
		f.stream, f.acceptErr = p.open(p.request(f))
		if f.acceptErr != nil {
			f.end()
		}
		return f, f.acceptErr
	}
	select {
	case <-f.ready:
		return f, f.acceptErr
	case <-p.ctx.Done():
		return f, p.ctx.Err()
	}
}

// next returns the next audio of piece f, or io.EOF at its end.
func (p *pipeline) next(f *fetch) ([]byte, error) {
	if f.chunks == nil {
		b, err := f.stream.Next()
		if err != nil {
			f.end()
		}
		return b, err
	}
	b, ok := <-f.chunks
	switch {
	case ok:
		return b, nil
	case f.streamErr != nil:
		return nil, f.streamErr
	}
	return nil, io.EOF
}

// end releases the inline piece's upstream request; it is safe to call more
// than once.
func (f *fetch) end() {
	f.endOnce.Do(func() {
		if f.stream != nil {
			f.stream.Close()
		}
		close(f.done)
	})
}

// request is the upstream request for piece f.
func (p *pipeline) request(f *fetch) *smallest.SpeechRequest {
	req := p.base
	req.Text = f.piece.Text
	return &req
}

// ahead starts the pieces within the look-ahead of piece i. It is called
// once piece i has been accepted, so that the next request runs while piece
// i streams without competing with it for Smallest's first answer.
func (p *pipeline) ahead(i int) { p.startUpTo(min(i+p.lookahead, len(p.pieces)-1)) }

func (p *pipeline) startUpTo(i int) {
	for j := len(p.fetches); j <= i; j++ {
		f := &fetch{index: j, piece: p.pieces[j], done: make(chan struct{})}
		p.fetches = append(p.fetches, f)
		if j == 0 {
			continue // read inline, by piece and next
		}
		f.ready, f.chunks, f.after = make(chan struct{}), make(chan []byte, lookaheadChunks), p.fetches[j-1].done
		p.wg.Add(1)
		go p.run(f)
	}
}

func (p *pipeline) run(f *fetch) {
	defer p.wg.Done()
	defer close(f.done)
	defer close(f.chunks)
	// The recovery interceptor guards only the handler's goroutine: a panic
	// here would end the process, so it becomes this piece's error, which
	// the handler panics with again (see locate), stack and all.
	defer func() {
		if r := recover(); r != nil {
			err := &piecePanic{value: r, stack: debug.Stack()}
			select {
			case <-f.ready:
				f.streamErr = err
			default:
				f.acceptErr = err
				close(f.ready)
			}
		}
	}()
	req := p.request(f)
	st, err := p.open(req)
	if smallest.IsRateLimited(err) {
		// A look-ahead request over the account's concurrency limit: wait
		// for the piece before it to end, then ask again.
		select {
		case <-f.after:
			st, err = p.open(req)
		case <-p.ctx.Done():
		}
	}
	f.stream, f.acceptErr = st, err
	close(f.ready)
	if err != nil {
		return
	}
	defer st.Close()
	for {
		chunk, err := st.Next()
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			f.streamErr = err
			return
		}
		select {
		case f.chunks <- bytes.Clone(chunk): // chunk's storage holds the next piece
		case <-p.ctx.Done():
			f.streamErr = p.ctx.Err()
			return
		}
	}
}

// piecePanic is a panic recovered in a piece's goroutine.
type piecePanic struct {
	value any
	stack []byte
}

func (p *piecePanic) Error() string { return fmt.Sprintf("synthesis failed unexpectedly: %v", p.value) }

// wait ends every piece's goroutine and the inline piece's request; the
// caller cancels ctx first.
func (p *pipeline) wait() {
	if len(p.fetches) > 0 {
		p.fetches[0].end()
	}
	p.wg.Wait()
}

// locate says which piece of the text an error happened in, when there are several.
//
// A panic in a piece's goroutine is raised again here, in the handler's, so
// that the recovery interceptor reports it as it does any other: logged with
// the stack where it happened, an INTERNAL status for the caller.
func (p *pipeline) locate(f *fetch, err error) error {
	if pp := (*piecePanic)(nil); errors.As(err, &pp) {
		panic(fmt.Sprintf("%v\n\nin the goroutine of text piece %d:\n%s", pp.value, f.index+1, pp.stack))
	}
	if len(p.pieces) == 1 || err == nil {
		return err
	}
	return rpcerror.InPart(err,
		fmt.Sprintf("text piece %d of %d (characters %d to %d)", f.index+1, len(p.pieces), f.piece.Start+1, f.piece.End),
		map[string]string{
			"textPiece":  strconv.Itoa(f.index + 1),
			"textPieces": strconv.Itoa(len(p.pieces)),
			"textStart":  strconv.Itoa(f.piece.Start),
			"textEnd":    strconv.Itoa(f.piece.End),
		})
}
