package smallest

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// StreamOptions are the voice and settings of a WebSocket synthesis (contract
// §1.5). Every message carries them, as Smallest's own clients do.
type StreamOptions struct {
	VoiceOptions
	WordTimestamps   bool `json:"word_timestamps,omitempty"`
	MaxBufferFlushMS int  `json:"max_buffer_flush_ms,omitempty"`
}

// streamMessage is one client message: the options plus the text and its flags.
type streamMessage struct {
	Text     string `json:"text"`
	Continue bool   `json:"continue"`
	Flush    bool   `json:"flush"`
	*StreamOptions
}

// SpeechEvent is one message from a WebSocket synthesis.
type SpeechEvent struct {
	// RequestID is Smallest's id of the synthesis the event belongs to; it
	// changes when a new one starts.
	RequestID string
	// Audio is decoded PCM16 (the WebSocket produces nothing else); the
	// caller owns it.
	Audio []byte
	// Word is set for a word timing.
	Word *WordTiming
	// Complete marks the end of a synthesis.
	Complete bool
}

// WordTiming is when a word is spoken, in seconds, as Smallest reports it.
type WordTiming struct {
	Word       string
	Start, End float64
}

// SpeechSession is a synthesis of text streamed in over Lightning's
// WebSocket. Call Send and End from one goroutine and Next from another;
// Close when done, from either.
type SpeechSession struct {
	c      *Client
	call   call
	opts   *StreamOptions
	ctx    context.Context
	cancel context.CancelCauseFunc

	mu        sync.Mutex // guards the fields below
	conn      *ttsConn
	sent      [][]byte // messages on conn before its first answer, to replay on a fresh socket
	answered  bool     // conn has answered at least once
	unflushed []byte   // text since the last flush
	flushed   []byte   // flushed text not yet answered with audio
	ended     bool     // End has been sent
	done      bool     // the final complete has arrived
}

// StreamSpeechText opens a WebSocket synthesis, on a pooled socket of the
// same key when one is free.
func (c *Client) StreamSpeechText(ctx context.Context, opts *StreamOptions) (*SpeechSession, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	s := &SpeechSession{c: c, opts: opts, ctx: ctx, cancel: cancel,
		call: newCall("WS /waves/v1/tts/live", c.credential(ctx))}
	conn := c.tts.get(s.poolKey())
	if conn == nil {
		var err error
		if conn, err = s.dial(); err != nil {
			cancel(nil)
			return nil, err
		}
	}
	s.conn = conn
	return s, nil
}

func (s *SpeechSession) poolKey() string { return keyOf(s.call.secret) }

func (s *SpeechSession) dial() (*ttsConn, error) {
	u := *s.c.base
	u.Scheme = map[string]string{"http": "ws", "https": "wss"}[u.Scheme]
	u.Path += "/waves/v1/tts/live"
	if t := s.c.tts.idleTimeout; t > 0 {
		u.RawQuery = url.Values{"timeout": {strconv.Itoa(int(t / time.Second))}}.Encode()
	}
	header := http.Header{}
	if s.call.secret != "" {
		header.Set("Authorization", s.c.scheme+" "+s.call.secret)
	}
	if s.c.userAgent != "" {
		header.Set("User-Agent", s.c.userAgent)
		header.Set("X-Source", s.c.userAgent)
	}
	cl := newCall(s.call.endpoint, s.call.secret) // each handshake is sent, or not, on its own
	ws, resp, err := websocket.Dial(cl.traced(s.ctx), u.String(), &websocket.DialOptions{HTTPClient: s.c.hc, HTTPHeader: header})
	if err != nil {
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
			return nil, responseError(cl.endpoint, resp, cl.secret)
		}
		return nil, cl.transportError(s.ctx, err)
	}
	ws.SetReadLimit(maxFrame)
	return newTTSConn(ws), nil
}

// Send sends a piece of text; flush asks for audio of everything sent so far.
func (s *SpeechSession) Send(text string, flush bool) error {
	return s.send(streamMessage{Text: text, Continue: true, Flush: flush, StreamOptions: s.opts})
}

// End says the text is complete: Smallest synthesizes what remains and ends
// with a complete message, after which Next returns io.EOF.
func (s *SpeechSession) End() error {
	return s.send(streamMessage{Text: "", Continue: false, Flush: true, StreamOptions: s.opts})
}

func (s *SpeechSession) send(m streamMessage) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.answered {
		s.sent = append(s.sent, b)
	}
	s.unflushed = append(s.unflushed, m.Text...)
	if m.Flush {
		s.flushed = append(s.flushed, s.unflushed...)
		s.unflushed = s.unflushed[:0]
	}
	s.ended = s.ended || !m.Continue
	if err := s.conn.ws.Write(s.ctx, websocket.MessageText, b); err != nil && s.ctx.Err() != nil {
		return s.call.transportError(s.ctx, err)
	}
	// A write to a socket the server has closed is lost, but Next sees the
	// close and, where it can, resends on a new socket what was lost.
	return nil
}

// Next returns the next event, and io.EOF after the complete that follows End.
func (s *SpeechSession) Next() (*SpeechEvent, error) {
	for {
		s.mu.Lock()
		conn, done := s.conn, s.done
		s.mu.Unlock()
		if done {
			return nil, io.EOF
		}
		f, err := conn.next(s.ctx)
		if err != nil {
			if s.ctx.Err() != nil {
				return nil, s.call.transportError(s.ctx, err)
			}
			if retried, rerr := s.recover(conn, nil); retried || rerr != nil {
				if rerr != nil {
					return nil, rerr
				}
				continue
			}
			return nil, s.closeError(err)
		}
		ev, err := s.event(conn, f)
		if err != nil {
			if retried, rerr := s.recover(conn, err); retried || rerr != nil {
				if rerr != nil {
					return nil, rerr
				}
				continue
			}
			return nil, err
		}
		if ev != nil {
			return ev, nil
		}
	}
}

// ttsFrameWS is the union of the WebSocket's server messages.
type ttsFrameWS struct {
	Status    string          `json:"status"`
	RequestID string          `json:"request_id"`
	Data      json.RawMessage `json:"data"`
}

func (s *SpeechSession) event(conn *ttsConn, raw []byte) (*SpeechEvent, error) {
	var f ttsFrameWS
	if err := json.Unmarshal(raw, &f); err != nil {
		return nil, &Error{Kind: KindMalformed, Endpoint: s.call.endpoint, Message: "a message was not JSON"}
	}
	if f.Status == "error" {
		e := &Error{Kind: KindStreamError, Endpoint: s.call.endpoint, RequestID: f.RequestID}
		e.parseBody(raw, s.call.secret)
		return nil, e
	}
	s.mu.Lock()
	s.answered, s.sent = true, nil
	s.mu.Unlock()
	switch f.Status {
	case "chunk":
		s.mu.Lock()
		s.flushed = s.flushed[:0] // Smallest has the flushed text in hand
		s.mu.Unlock()
		var d struct {
			Audio string `json:"audio"`
		}
		if json.Unmarshal(f.Data, &d) != nil {
			return nil, &Error{Kind: KindMalformed, Endpoint: s.call.endpoint, Message: "a chunk's data was not an object"}
		}
		audio, err := decodeBase64(d.Audio)
		if err != nil {
			return nil, &Error{Kind: KindMalformed, Endpoint: s.call.endpoint, Message: "a chunk's audio was not base64"}
		}
		return &SpeechEvent{RequestID: f.RequestID, Audio: audio}, nil
	case "word_timestamp":
		var w struct {
			Word  string  `json:"word"`
			Start float64 `json:"start"`
			End   float64 `json:"end"`
		}
		if json.Unmarshal(f.Data, &w) != nil {
			return nil, &Error{Kind: KindMalformed, Endpoint: s.call.endpoint, Message: "a word timing was not an object"}
		}
		return &SpeechEvent{RequestID: f.RequestID, Word: &WordTiming{Word: w.Word, Start: w.Start, End: w.End}}, nil
	case "complete":
		s.mu.Lock()
		final := s.ended
		s.done = final
		s.mu.Unlock()
		return &SpeechEvent{RequestID: f.RequestID, Complete: true}, nil
	}
	return nil, nil // a status this client does not know: newer than it
}

// recover handles a socket that ended under the session. It reports whether
// the session continues on a new socket: when a pooled socket turned out to
// be closed before answering (its messages are replayed), or when Smallest
// closed it for inactivity (the text it had not answered, and the end if
// sent, are resent).
func (s *SpeechSession) recover(conn *ttsConn, frameErr error) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn != conn || s.done {
		return false, nil
	}
	var replay [][]byte
	switch {
	case conn.reused && !s.answered:
		replay = s.sent
	case isIdleClose(frameErr):
		// An idle close means Smallest dropped whatever it held: flushed text
		// it had not begun to speak, the text since, and the end if sent.
		if len(s.flushed) > 0 {
			b, _ := json.Marshal(streamMessage{Text: string(s.flushed), Continue: true, Flush: true, StreamOptions: s.opts})
			replay = append(replay, b)
		}
		if len(s.unflushed) > 0 {
			b, _ := json.Marshal(streamMessage{Text: string(s.unflushed), Continue: true, StreamOptions: s.opts})
			replay = append(replay, b)
		}
		if s.ended {
			b, _ := json.Marshal(streamMessage{Continue: false, Flush: true, StreamOptions: s.opts})
			replay = append(replay, b)
		}
	default:
		return false, nil
	}
	conn.close()
	fresh, err := s.dial()
	if err != nil {
		return false, err
	}
	for _, b := range replay {
		if err := fresh.ws.Write(s.ctx, websocket.MessageText, b); err != nil {
			fresh.close()
			return false, s.call.transportError(s.ctx, err)
		}
	}
	s.conn = fresh
	return true, nil
}

// isIdleClose reports whether err is Smallest's inactivity message:
// "Connection timed out after 60 seconds of inactivity".
func isIdleClose(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Kind == KindStreamError && strings.Contains(strings.ToLower(e.Message), "inactivity")
}

func (s *SpeechSession) closeError(err error) error {
	var ce websocket.CloseError
	if errors.As(err, &ce) {
		if ce.Code == websocket.StatusPolicyViolation {
			return &Error{Kind: KindStreamError, Endpoint: s.call.endpoint, CloseCode: int(ce.Code),
				Message: "Smallest closed the session (too many concurrent sessions)", cause: err}
		}
		return &Error{Kind: KindStreamBroken, Endpoint: s.call.endpoint, CloseCode: int(ce.Code),
			Message: "Smallest closed the session before it completed", cause: err}
	}
	return &Error{Kind: KindStreamBroken, Endpoint: s.call.endpoint, Message: scrub(rootCause(err), s.call.secret), cause: err}
}

// Close ends the session. A socket that completed cleanly and is still open
// goes back to the pool for the next session of the same key.
func (s *SpeechSession) Close() error {
	s.mu.Lock()
	conn, done := s.conn, s.done
	s.conn = nil
	s.mu.Unlock()
	s.cancel(context.Canceled)
	if conn == nil {
		return nil
	}
	if done && !conn.dead.Load() {
		s.c.tts.put(s.poolKey(), conn)
		return nil
	}
	conn.close()
	return nil
}

// ttsConn is one WebSocket with the goroutine that reads it for its whole
// life, so that a socket waiting in the pool still notices a close.
type ttsConn struct {
	ws     *websocket.Conn
	frames chan connFrame
	ctx    context.Context // the socket's life, independent of any one call
	cancel context.CancelFunc
	dead   atomic.Bool
	reused bool
	idle   time.Time // when it went into the pool
	pumped chan struct{}
}

type connFrame struct {
	data []byte
	err  error
}

func newTTSConn(ws *websocket.Conn) *ttsConn {
	ctx, cancel := context.WithCancel(context.Background())
	c := &ttsConn{ws: ws, frames: make(chan connFrame, 64), ctx: ctx, cancel: cancel, pumped: make(chan struct{})}
	go c.pump()
	return c
}

func (c *ttsConn) pump() {
	defer close(c.pumped)
	for {
		typ, data, err := c.ws.Read(c.ctx)
		if err != nil {
			c.dead.Store(true)
		}
		if err == nil && typ != websocket.MessageText {
			continue
		}
		select {
		case c.frames <- connFrame{data, err}:
		case <-c.ctx.Done():
			return
		}
		if err != nil {
			return
		}
	}
}

// next returns the next frame, or the error that ended the socket.
func (c *ttsConn) next(ctx context.Context) ([]byte, error) {
	select {
	case f := <-c.frames:
		return f.data, f.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// close ends the socket and waits for its reader to stop.
func (c *ttsConn) close() {
	c.dead.Store(true)
	c.cancel()
	c.ws.CloseNow()
	<-c.pumped
}

// ttsPool keeps sockets that completed a synthesis for reuse: the upstream
// may keep them open (LiveKit's plugin reuses them for up to an hour), which
// saves the next session a handshake. Sockets the server closes, or that
// have idled near Smallest's idle timeout, are dropped.
type ttsPool struct {
	mu          sync.Mutex
	idle        map[string][]*ttsConn
	perKey      int
	idleTimeout time.Duration // the ?timeout asked of Smallest; pooled sockets are dropped before it
	closed      bool
}

func (p *ttsPool) get(key string) *ttsConn {
	var stale []*ttsConn
	defer func() {
		for _, c := range stale {
			c.close()
		}
	}()
	p.mu.Lock()
	defer p.mu.Unlock()
	for conns := p.idle[key]; len(conns) > 0; conns = p.idle[key] {
		c := conns[len(conns)-1]
		p.idle[key] = conns[:len(conns)-1]
		if c.dead.Load() || len(c.frames) > 0 || (p.idleTimeout > 0 && time.Since(c.idle) > p.idleTimeout*3/4) {
			stale = append(stale, c) // anything said while idle is a close or an error
			continue
		}
		c.reused = true
		return c
	}
	return nil
}

func (p *ttsPool) put(key string, c *ttsConn) {
	p.mu.Lock()
	keep := !p.closed && p.perKey > 0 && len(p.idle[key]) < p.perKey
	if keep {
		c.idle = time.Now()
		p.idle[key] = append(p.idle[key], c)
	}
	p.mu.Unlock()
	if !keep {
		c.close()
	}
}

func (p *ttsPool) close() {
	p.mu.Lock()
	var all []*ttsConn
	for k, conns := range p.idle {
		all = append(all, conns...)
		delete(p.idle, k)
	}
	p.closed = true
	p.mu.Unlock()
	for _, c := range all {
		c.close()
	}
}
