package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"

	"github.com/speechgate/speechgate/internal/rpcerror"
	"github.com/speechgate/speechgate/internal/sentence"
	"github.com/speechgate/speechgate/internal/smallest"
)

// lookaheadChunks bounds the audio a piece buffers while the one before it
// streams: 256 reads of Smallest's 1 KB frames, joined by at most the 4 KiB
// the SSE reader holds, so 0.25 to 1 MB, after which its upstream read waits
// (TCP applies the backpressure) and memory stays bounded however long the
// text. The first piece streams at once and needs only a little slack.
const lookaheadChunks, firstChunks = 256, 8

// pipeline synthesizes the pieces of a long text in order, the next piece's
// request running while the current piece streams.
type pipeline struct {
	ctx       context.Context
	up        SpeechUpstream
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
	ready     chan struct{} // closed once Smallest accepted or refused the piece
	stream    *smallest.SpeechStream
	acceptErr error           // set before ready closes
	chunks    chan []byte     // closed when the piece ends
	streamErr error           // set before chunks closes
	done      chan struct{}   // closed when its upstream request has ended
	after     <-chan struct{} // the done of the piece before it
}

func newPipeline(ctx context.Context, up SpeechUpstream, base smallest.SpeechRequest, pieces []sentence.Piece, lookahead int) *pipeline {
	return &pipeline{ctx: ctx, up: up, base: base, pieces: pieces, lookahead: lookahead}
}

// piece returns piece i, starting it, and any before it, if not started.
func (p *pipeline) piece(i int) *fetch {
	p.startUpTo(i)
	return p.fetches[i]
}

// ahead starts the pieces within the look-ahead of piece i. It is called
// once piece i has been accepted, so that the next request runs while piece
// i streams without competing with it for Smallest's first answer.
func (p *pipeline) ahead(i int) { p.startUpTo(min(i+p.lookahead, len(p.pieces)-1)) }

func (p *pipeline) startUpTo(i int) {
	for j := len(p.fetches); j <= i; j++ {
		buffered := lookaheadChunks
		if j == 0 {
			buffered = firstChunks
		}
		f := &fetch{index: j, piece: p.pieces[j], ready: make(chan struct{}), chunks: make(chan []byte, buffered),
			done: make(chan struct{})}
		if j > 0 {
			f.after = p.fetches[j-1].done
		}
		p.fetches = append(p.fetches, f)
		p.wg.Add(1)
		go p.run(f)
	}
}

func (p *pipeline) run(f *fetch) {
	defer p.wg.Done()
	defer close(f.done)
	defer close(f.chunks)
	// The recovery interceptor guards only the handler's goroutine: a panic
	// here would end the process, so it becomes this piece's error.
	defer func() {
		if r := recover(); r != nil {
			err := fmt.Errorf("synthesis failed unexpectedly: %v", r)
			select {
			case <-f.ready:
				f.streamErr = err
			default:
				f.acceptErr = err
				close(f.ready)
			}
		}
	}()
	req := p.base
	req.Text = f.piece.Text
	st, err := p.up.StreamSpeech(p.ctx, &req)
	if smallest.IsRateLimited(err) && f.after != nil {
		// A look-ahead request over the account's concurrency limit: wait
		// for the piece before it to end, then ask again.
		select {
		case <-f.after:
			st, err = p.up.StreamSpeech(p.ctx, &req)
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
		case f.chunks <- chunk:
		case <-p.ctx.Done():
			f.streamErr = p.ctx.Err()
			return
		}
	}
}

// wait ends every piece's goroutine; the caller cancels ctx first.
func (p *pipeline) wait() { p.wg.Wait() }

// locate says which piece of the text an error happened in, when there are several.
func (p *pipeline) locate(f *fetch, err error) error {
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
