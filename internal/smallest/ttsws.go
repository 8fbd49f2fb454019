package smallest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"slices"
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
	// CompleteBackoffMS, when set, is how long Smallest waits after a
	// flush's last audio before its complete.
	CompleteBackoffMS *int `json:"complete_backoff_ms,omitempty"`
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
	// Audio is decoded PCM16 (the WebSocket produces nothing else). It is
	// valid until the next call to Next: each frame is decoded into the
	// storage of the one before.
	Audio []byte
	// Word is set for a word timing.
	Word *WordTiming
	// Complete marks the end of a synthesis.
	Complete bool
	// Segment is the flush the audio or word is of, as Send numbered it; 0
	// for audio Smallest spoke before the text's flush (max_buffer_flush_ms).
	Segment int
	// Completed are the flushes a Complete answered, oldest first: one with
	// Lightning's per-flush completes, all that remained with one at the end.
	Completed []int
	// Epoch is the number of Clears before the event was read: an event of
	// an older epoch than the session's (Epoch) is of cleared text.
	Epoch uint64
}

// WordTiming is when a word is spoken, in seconds, as Smallest reports it.
type WordTiming struct {
	Word       string
	Start, End float64
}

// SpeechSession is a synthesis of text streamed in over Lightning's
// WebSocket. Call Send and End from one goroutine and Next from another;
// Close when done, from either.
//
// The session keeps the text of every flush until it is answered, so that
// it knows when audio is due (and how long Smallest may stay silent), when
// the synthesis is over, and what to send again on a new socket if
// Smallest closes one for inactivity. Lightning's newest documentation
// (tts-ws.yaml) answers each flush, after its audio, with a complete
// message; older pages describe one complete only after the end of the
// input. The session follows either (see onComplete).
type SpeechSession struct {
	// Attempts is how many handshakes opening its sockets took, retries
	// included; Waited is the time they waited for a slot of the account's
	// WebSocket budget. Read them after Next has returned io.EOF or an
	// error, or before the first Next.
	Attempts int
	Waited   time.Duration

	c      *Client
	call   call
	opts   *StreamOptions
	ctx    context.Context
	cancel context.CancelCauseFunc
	kick   chan struct{} // wakes Next when a flush makes audio due
	timer  *time.Timer   // Next's wait for audio that is due; used by Next only
	// swapped wakes Next when Clear takes the socket away or gives a new one.
	swapped chan struct{}
	pinged  chan struct{} // closed when the keepalive has stopped; nil: none
	epoch   atomic.Uint64 // Clears so far
	// discarded counts the bytes of audio abandoned sockets had received
	// and not yet given to Next.
	discarded atomic.Int64
	// audio is what events' audio is decoded into, by Next only.
	audio []byte

	mu        sync.Mutex // guards the fields below
	conn      *ttsConn
	sent      [][]byte  // messages on conn before its first answer, to replay on a fresh socket
	answered  bool      // conn has answered at least once
	segments  []segment // flushes (and the end) not yet completed, oldest first
	unflushed []byte    // text since the last flush
	// unflushedSpoken: audio came while no flush was outstanding, so
	// Smallest is speaking the unflushed text by itself (max_buffer_flush_ms).
	unflushedSpoken bool
	// spokenUpTo is how much of unflushed Smallest had when that audio
	// came: what it is speaking by itself, never to be sent again.
	spokenUpTo   int
	heard        bool // a message arrived since the oldest segment was sent
	lastComplete bool // the latest message was a complete
	ended        bool // End has been sent
	done         bool // the end's complete has arrived
	// completes is how Smallest has shown that it answers flushes (see
	// onComplete); speaking is the segment its audio is for.
	completes completeMode
	speaking  int
	lastID    string // the request id of the latest audio
	// completed: a complete arrived since the latest audio.
	completed bool
	// unsure: done was decided without knowing which kind of complete
	// ended the session, so one more may still come on this socket, which
	// must then not serve another session.
	unsure  bool
	reopens int // sockets reopened since the last progress
	flushes int // segments numbered so far
	closed  bool
}

// completeMode says when Lightning sends complete.
type completeMode int

const (
	completesUnknown completeMode = iota
	completesPerFlush
	completesAtEnd
)

// segment is the text of one flush, or of the end of the input.
type segment struct {
	n       int // its number, from 1, in the order of the flushes
	text    []byte
	end     bool
	started bool // some of its audio has arrived
}

// StreamSpeechText opens a WebSocket synthesis, on a pooled socket of the
// same key when one is free.
func (c *Client) StreamSpeechText(ctx context.Context, opts *StreamOptions) (*SpeechSession, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	s := &SpeechSession{c: c, opts: opts, ctx: ctx, cancel: cancel, kick: make(chan struct{}, 1), swapped: make(chan struct{}, 1),
		call: newCall("WS /waves/v1/tts/live", c.credential(ctx))}
	conn, err := s.take()
	if err != nil {
		cancel(nil)
		return nil, err
	}
	s.conn = conn
	if c.keepalive.Interval > 0 {
		s.pinged = make(chan struct{})
		go func() {
			defer close(s.pinged)
			c.keepalive.run(ctx, s.call.endpoint, s.current, func(err error) { s.cancel(err) })
		}()
	}
	return s, nil
}

// take returns a pooled socket of the session's key, or a new one.
func (s *SpeechSession) take() (*ttsConn, error) {
	if conn := s.c.tts.get(s.poolKey()); conn != nil {
		return conn, nil
	}
	conn, attempts, waited, err := s.dial()
	s.mu.Lock()
	s.Attempts += attempts
	s.Waited += waited
	s.mu.Unlock()
	return conn, err
}

// current is the socket the keepalive pings: the session's, while open.
func (s *SpeechSession) current() (*websocket.Conn, *hearing) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn == nil || s.conn.dead.Load() {
		return nil, nil
	}
	return s.conn.ws, &s.conn.hear
}

// Epoch is the number of Clears so far (see SpeechEvent.Epoch).
func (s *SpeechSession) Epoch() uint64 { return s.epoch.Load() }

func (s *SpeechSession) poolKey() string { return keyOf(s.call.secret) }

// dial opens a socket, holding a slot of the account's WebSocket budget
// for as long as the socket is open, in the pool or not. It returns the
// handshakes it made and the time it waited for the slot.
func (s *SpeechSession) dial() (*ttsConn, int, time.Duration, error) {
	u := *s.c.base
	u.Scheme = map[string]string{"http": "ws", "https": "wss"}[u.Scheme]
	u.Path += "/waves/v1/tts/live"
	if t := s.c.tts.idleTimeout; t > 0 {
		u.RawQuery = url.Values{"timeout": {strconv.Itoa(int(t / time.Second))}}.Encode()
	}
	var ws *websocket.Conn
	g, err := s.c.attempt(s.ctx, use{endpoint: s.call.endpoint, gated: UseWebSocket, retries: true}, func() error {
		cl := newCall(s.call.endpoint, s.call.secret) // each handshake is sent, or not, on its own
		var err error
		ws, err = s.c.dialWS(s.ctx, cl, u.String(), s.c.header(s.call.secret))
		return err
	})
	if err != nil {
		return nil, g.attempts, g.waited, err
	}
	ws.SetReadLimit(maxFrame)
	return newTTSConn(ws, g.release), g.attempts, g.waited, nil
}

// Send sends a piece of text; flush asks for audio of everything sent so
// far, and returns the number of the segment that makes (from 1; events
// name it). A flush with nothing unflushed to speak is not sent, and makes
// no segment (0): it would ask Lightning for a synthesis of nothing.
func (s *SpeechSession) Send(text string, flush bool) (int, error) {
	return s.send(text, flush, false)
}

// End says the text is complete: Smallest synthesizes what remains and ends
// with a complete message, after which Next returns io.EOF. It returns the
// number of the last segment, of the text since the last flush.
func (s *SpeechSession) End() (int, error) {
	return s.send("", true, true)
}

func (s *SpeechSession) send(text string, flush, end bool) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn == nil {
		return 0, &Error{Kind: KindStreamBroken, Endpoint: s.call.endpoint, Message: "the session has no socket: reopening it after a clear failed"}
	}
	s.unflushed = append(s.unflushed, text...)
	if flush && !end && len(s.unflushed) == 0 {
		return 0, nil
	}
	b, err := json.Marshal(streamMessage{Text: text, Continue: !end, Flush: flush, StreamOptions: s.opts})
	if err != nil {
		return 0, err
	}
	if !s.answered {
		s.sent = append(s.sent, b)
	}
	n := 0
	if flush {
		if len(s.segments) == 0 {
			s.heard = false // audio is due from now
		}
		s.flushes++
		n = s.flushes
		// The segment's text is what it would take to say it again: without
		// what Smallest already spoke by itself.
		s.segments = append(s.segments, segment{n: n, text: s.unflushed[s.spokenUpTo:], end: end})
		s.unflushed, s.unflushedSpoken, s.spokenUpTo = nil, false, 0
		wake(s.kick)
	}
	s.ended = s.ended || end
	if err := s.conn.ws.Write(s.ctx, websocket.MessageText, b); err != nil && s.ctx.Err() != nil {
		return n, s.call.transportError(s.ctx, err)
	}
	// A write to a socket the server has closed is lost, but Next sees the
	// close and, where it can, resends on a new socket what was lost.
	return n, nil
}

// wake signals a channel of capacity one without blocking.
func wake(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// Clear drops the synthesis of everything sent so far, spoken or not, for
// a barge-in, and readies the session for new text. Lightning cannot cancel
// a synthesis (docs/upstream.md §6.4), so a socket with anything
// outstanding is abandoned, closed and never pooled, and a fresh one taken;
// events read before the Clear carry an older Epoch, and none of the old
// socket's follow. It returns the segments dropped before their complete,
// and whether the socket was abandoned, in which case Reopen must be called
// before the next Send. Call it from the goroutine that calls Send; not
// after End.
func (s *SpeechSession) Clear() (dropped []int, abandoned bool) {
	s.mu.Lock()
	s.epoch.Add(1)
	for _, seg := range s.segments {
		dropped = append(dropped, seg.n)
	}
	old := s.conn
	if old == nil || s.ended || (len(s.segments) == 0 && len(s.unflushed) == 0 && !s.unflushedSpoken) {
		s.mu.Unlock()
		return nil, false // every flush is complete: the socket is clean
	}
	s.conn = nil
	s.segments, s.unflushed, s.unflushedSpoken, s.spokenUpTo = nil, nil, false, 0
	s.speaking, s.lastID, s.completed, s.lastComplete, s.heard = 0, "", false, false, false
	s.sent, s.answered, s.unsure, s.reopens = nil, false, false, 0
	s.mu.Unlock()
	wake(s.swapped)
	old.close()
	s.discard(old)
	return dropped, true
}

// discard counts the audio an abandoned socket had received that Next had
// not yet read; it is dropped with the socket.
func (s *SpeechSession) discard(conn *ttsConn) {
	for {
		select {
		case f := <-conn.frames:
			if f.err != nil {
				continue
			}
			if fr, err := s.call.readFrame(f.data, nil, 0, ""); err == nil {
				s.discarded.Add(int64(len(fr.audio)))
			}
		default:
			return
		}
	}
}

// Discarded is the bytes of audio of cleared text that arrived from
// Smallest and were dropped with the sockets Clear abandoned.
func (s *SpeechSession) Discarded() int64 { return s.discarded.Load() }

// Reopen gives the session a socket after a Clear abandoned its own: a
// pooled one, or a new one.
func (s *SpeechSession) Reopen() error {
	fresh, err := s.take()
	if err != nil {
		return err
	}
	s.mu.Lock()
	closed := s.closed
	if !closed {
		s.conn = fresh
	}
	s.mu.Unlock()
	if closed {
		fresh.close() // Close came first: nothing will use it
		return &Error{Kind: KindStreamBroken, Endpoint: s.call.endpoint, Message: "the session was closed"}
	}
	wake(s.swapped)
	return nil
}

// Next returns the next event, and io.EOF after the complete that follows End.
// The event's audio is valid until the next call (see SpeechEvent.Audio).
func (s *SpeechSession) Next() (*SpeechEvent, error) {
	for {
		s.mu.Lock()
		conn, done, wait := s.conn, s.done, s.dueWithin()
		s.mu.Unlock()
		if done {
			return nil, io.EOF
		}
		if conn == nil { // a Clear is taking a fresh socket
			select {
			case <-s.swapped:
				continue
			case <-s.ctx.Done():
				return nil, s.call.transportError(s.ctx, s.ctx.Err())
			}
		}
		f, err, woken := s.await(conn, wait)
		if woken {
			continue // a flush made audio due, or a Clear swapped the socket: wait again
		}
		if err != nil {
			if s.ctx.Err() != nil {
				return nil, s.call.transportError(s.ctx, err)
			}
			if s.abandoned(conn) {
				continue // a Clear closed it
			}
			if IsKind(err, KindTimeout) {
				return nil, err
			}
			if s.endedByClose(err) {
				return nil, io.EOF
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

// dueWithin is how long Smallest may stay silent now: the upstream timeout
// from a flush to its first audio, the idle timeout between messages once
// audio flows, and no limit while nothing is due (the caller is thinking).
// The wait is timed only while Next waits: a caller that is slow to read
// does not make Smallest look silent.
func (s *SpeechSession) dueWithin() time.Duration {
	switch {
	case len(s.segments) == 0:
		return 0
	case !s.heard && s.c.responseTimeout > 0:
		return s.c.responseTimeout
	}
	return s.c.idleTimeout
}

// await returns the next message of conn, or a KindTimeout error when none
// comes within wait (0: no limit); woken reports that a flush interrupted
// an unlimited wait.
func (s *SpeechSession) await(conn *ttsConn, wait time.Duration) (_ []byte, _ error, woken bool) {
	var expired <-chan time.Time
	if wait > 0 {
		if s.timer == nil {
			s.timer = time.NewTimer(wait)
		} else {
			s.timer.Reset(wait)
		}
		defer s.timer.Stop()
		expired = s.timer.C
	}
	kick := s.kick
	if wait > 0 {
		kick = nil // already limited
	}
	select {
	case f := <-conn.frames:
		return f.data, f.err, false
	case <-s.ctx.Done():
		return nil, s.ctx.Err(), false
	case <-kick:
		return nil, nil, true
	case <-s.swapped:
		return nil, nil, true
	case <-expired:
		return nil, &Error{Kind: KindTimeout, Endpoint: s.call.endpoint,
			Message: "Smallest sent nothing for " + wait.String() + " while audio was due"}, false
	}
}

// endedByClose reports whether a socket closed normally right after the
// complete that answered the end: the synthesis is over, whatever Smallest
// said of the flushes before it.
func (s *SpeechSession) endedByClose(err error) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended && s.lastComplete && websocket.CloseStatus(err) == websocket.StatusNormalClosure {
		s.done = true
	}
	return s.done
}

// abandoned reports whether a Clear has taken conn from the session.
func (s *SpeechSession) abandoned(conn *ttsConn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conn != conn
}

func (s *SpeechSession) event(conn *ttsConn, raw []byte) (*SpeechEvent, error) {
	f, err := s.call.readFrame(raw, s.audio[:0], 0, "")
	if f.audio != nil {
		s.audio = f.audio
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn != conn {
		return nil, nil // of a socket a Clear abandoned: of cleared text
	}
	if err != nil {
		return nil, err
	}
	s.answered, s.sent = true, nil
	s.lastComplete = f.status == "complete"
	ev := &SpeechEvent{RequestID: f.requestID, Epoch: s.epoch.Load()}
	switch {
	case f.status == "word_timestamp" && f.word != nil:
		s.progress()
		ev.Word, ev.Segment = f.word, s.speakingSegment()
	case f.status == "complete":
		s.progress()
		ev.Complete, ev.Completed = true, s.onComplete()
	case f.status == "chunk":
		s.progress()
		ev.Segment = s.onAudio(f.requestID)
		if len(f.audio) > 0 {
			ev.Audio = f.audio // left nil when the chunk carried none
		}
	default:
		return nil, nil // a status this client does not know: newer than it
	}
	return ev, nil
}

// speakingSegment is the number of the segment being spoken; 0 when it is
// text not yet flushed.
func (s *SpeechSession) speakingSegment() int {
	if s.speaking < len(s.segments) {
		return s.segments[s.speaking].n
	}
	return 0
}

// onAudio notes which flush audio is for. Each synthesis has its own
// request id: audio of a new one with no complete before it shows that
// Smallest completes only at the end, and that the next flush is speaking.
// It returns the number of the segment the audio is of.
func (s *SpeechSession) onAudio(id string) int {
	if id != "" && s.lastID != "" && id != s.lastID && !s.completed {
		if s.completes == completesUnknown {
			s.completes = completesAtEnd
		}
		if s.completes == completesAtEnd {
			s.speaking = min(s.speaking+1, max(len(s.segments)-1, 0))
		}
	}
	if id != "" {
		s.lastID = id
	}
	s.completed = false
	switch {
	case s.speaking < len(s.segments):
		s.segments[s.speaking].started = true
	case len(s.unflushed) > 0:
		s.unflushedSpoken, s.spokenUpTo = true, len(s.unflushed)
	}
	return s.speakingSegment()
}

// onComplete accounts for a complete message. With one complete per flush
// (the newest documentation), it answers the oldest flush, and the session
// is done when it answers the end. With one complete at the end only (older
// pages), it answers everything. The two are told apart as soon as they
// can be: a complete before the end of the input is a flush's own, and
// audio of a new synthesis with no complete before it means completes come
// at the end. Until then, a complete after the end with no text left to
// speak ends the session either way; had it been a flush's own, the end's
// complete would still come, so that socket is not reused. It returns the
// numbers of the segments the complete answered.
func (s *SpeechSession) onComplete() []int {
	s.completed = true
	if len(s.segments) == 0 {
		return nil // a synthesis Smallest began by itself (max_buffer_flush_ms)
	}
	if s.completes == completesUnknown && !s.ended {
		s.completes = completesPerFlush
	}
	switch s.completes {
	case completesAtEnd:
		if !s.ended {
			return nil
		}
		done := s.remaining()
		s.segments, s.done = nil, true
		return done
	case completesUnknown:
		if !slices.ContainsFunc(s.segments[1:], hasWords) {
			done := s.remaining()
			s.segments, s.done, s.unsure = nil, true, len(s.segments) > 1 || !s.segments[0].end
			return done
		}
		s.completes = completesPerFlush
	}
	done := []int{s.segments[0].n}
	s.done = s.segments[0].end
	s.segments = s.segments[1:]
	s.speaking = 0
	s.heard = false // the next flush's audio is a new synthesis
	return done
}

// remaining are the numbers of the segments not yet completed.
func (s *SpeechSession) remaining() []int {
	out := make([]int, len(s.segments))
	for i, seg := range s.segments {
		out[i] = seg.n
	}
	return out
}

// hasWords reports whether a flush has text to speak.
func hasWords(seg segment) bool { return len(bytes.TrimSpace(seg.text)) > 0 }

// progress notes that Smallest answered on the current socket.
func (s *SpeechSession) progress() {
	s.heard = true
	s.reopens = 0
}

// maxReopens bounds how many times in a row a session reopens a socket that
// Smallest closed without answering on it: when every socket closes at
// once, one session otherwise opened hundreds in a fraction of a second.
const maxReopens = 3

// recover handles a socket that ended under the session. It reports whether
// the session continues on a new socket: when a pooled socket turned out to
// be closed before answering (its messages are replayed), or when Smallest
// closed it for inactivity (the flushes it had not begun to answer, the
// text since, and the end if sent, are resent).
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
		replay = s.unanswered()
	default:
		return false, nil
	}
	conn.close()
	s.reopens++
	if s.reopens > maxReopens {
		return false, &Error{Kind: KindStreamBroken, Endpoint: s.call.endpoint, cause: frameErr,
			Message: fmt.Sprintf("Smallest closed the session for inactivity %d times in a row without answering; the gateway stopped reopening it", s.reopens)}
	}
	wait := backoff(s.reopens)
	if dl, ok := s.ctx.Deadline(); ok && time.Until(dl) < wait {
		return false, &Error{Kind: KindStreamBroken, Endpoint: s.call.endpoint, cause: frameErr,
			Message: "Smallest closed the session for inactivity, and the call's deadline leaves no time to reopen it"}
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
	case <-s.ctx.Done():
		return false, s.call.transportError(s.ctx, s.ctx.Err())
	}
	fresh, attempts, waited, err := s.dial()
	s.Attempts += attempts
	s.Waited += waited
	if err != nil {
		var e *Error
		if errors.As(err, &e) {
			e.Message = "reopening the session Smallest closed for inactivity: " + e.Message
		}
		return false, err
	}
	for _, b := range replay {
		// A write to a socket Smallest has closed again fails; reading it
		// then shows why, and the reopens stay bounded.
		if fresh.ws.Write(s.ctx, websocket.MessageText, b) != nil {
			break
		}
	}
	s.conn = fresh
	s.heard = false
	return true, nil
}

// unanswered is what an idle close made Smallest drop: the flushes it had
// not begun to speak, the end if sent, and the text since the last flush
// unless Smallest was already speaking it by itself.
func (s *SpeechSession) unanswered() [][]byte {
	var out [][]byte
	add := func(m streamMessage) {
		b, _ := json.Marshal(m)
		out = append(out, b)
	}
	kept := s.segments[:0]
	for _, seg := range s.segments {
		if seg.started {
			// Answered, if perhaps not wholly: resending it would repeat
			// what was said. The end of the input is still said again.
			if !seg.end {
				continue
			}
			seg.text = nil
		}
		kept = append(kept, seg)
		add(streamMessage{Text: string(seg.text), Continue: !seg.end, Flush: true, StreamOptions: s.opts})
	}
	s.segments = kept
	s.speaking, s.lastID, s.completed = 0, "", false
	if rest := s.unflushed[s.spokenUpTo:]; len(rest) > 0 {
		add(streamMessage{Text: string(rest), Continue: true, StreamOptions: s.opts})
	}
	return out
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
			s.c.refused(s.call.secret, UseWebSocket)
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
	s.conn, s.closed = nil, true
	s.mu.Unlock()
	s.cancel(context.Canceled)
	if s.pinged != nil {
		<-s.pinged
	}
	if conn == nil {
		return nil
	}
	s.mu.Lock()
	reusable := done && !s.unsure
	s.mu.Unlock()
	if reusable && !conn.dead.Load() {
		s.c.tts.put(s.poolKey(), conn)
		return nil
	}
	conn.close()
	return nil
}

// ttsConn is one WebSocket with the goroutine that reads it for its whole
// life, so that a socket waiting in the pool still notices a close.
type ttsConn struct {
	ws      *websocket.Conn
	release func() // gives back the budget's slot, once the socket is closed
	freed   sync.Once
	frames  chan connFrame
	ctx     context.Context // the socket's life, independent of any one call
	cancel  context.CancelFunc
	dead    atomic.Bool
	reused  bool
	idle    time.Time // when it went into the pool
	pumped  chan struct{}
	hear    hearing
}

type connFrame struct {
	data []byte
	err  error
}

func newTTSConn(ws *websocket.Conn, release func()) *ttsConn {
	ctx, cancel := context.WithCancel(context.Background())
	c := &ttsConn{ws: ws, release: release, frames: make(chan connFrame, 64), ctx: ctx, cancel: cancel, pumped: make(chan struct{})}
	go c.pump()
	return c
}

// free gives the socket's slot back, once, when it is closed.
func (c *ttsConn) free() { c.freed.Do(c.release) }

func (c *ttsConn) pump() {
	defer close(c.pumped)
	for {
		typ, data, err := c.hear.read(c.ws)
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

// close ends the socket and waits for its reader to stop.
func (c *ttsConn) close() {
	c.dead.Store(true)
	c.cancel()
	c.ws.CloseNow()
	<-c.pumped
	c.free()
}

// ttsPool keeps sockets that completed a synthesis for reuse: the upstream
// may keep them open (LiveKit's plugin reuses them for up to an hour), which
// saves the next session a handshake. Sockets the server closes, or that
// have idled near Smallest's idle timeout, are dropped.
//
// With a Gate, an idle socket still holds its slot of the account's
// WebSocket budget, as Smallest counts it. So that it does not keep a slot
// from a call that waits for one, here or on another replica, a socket is
// not pooled while calls wait, and the pool's janitor closes idle sockets
// while they do (and sockets Smallest has closed).
type ttsPool struct {
	mu          sync.Mutex
	idle        map[string][]*ttsConn
	perKey      int
	idleTimeout time.Duration // the ?timeout asked of Smallest; pooled sockets are dropped before it
	closed      bool

	// waiting reports whether calls wait for a WebSocket slot of a key's
	// account; nil without a Gate.
	waiting func(key string) bool
	stop    chan struct{} // closed by close, to end the janitor
	swept   chan struct{} // closed when the janitor has ended
}

// newTTSPool returns a pool of up to perKey idle sockets per key. With a
// Gate it starts the janitor, which close ends.
func newTTSPool(perKey int, idleTimeout time.Duration, gate Gate) *ttsPool {
	p := &ttsPool{idle: map[string][]*ttsConn{}, perKey: perKey, idleTimeout: idleTimeout}
	if gate != nil && perKey > 0 {
		p.waiting = func(key string) bool { return gate.Waiting(accountOfKey(key), UseWebSocket) }
		p.stop, p.swept = make(chan struct{}), make(chan struct{})
		go p.janitor()
	}
	return p
}

// janitorEvery is how often the janitor looks at the idle sockets.
const janitorEvery = time.Second

func (p *ttsPool) janitor() {
	defer close(p.swept)
	t := time.NewTicker(janitorEvery)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
		}
		p.mu.Lock()
		keys := make([]string, 0, len(p.idle))
		for k := range p.idle {
			keys = append(keys, k)
		}
		p.mu.Unlock()
		for _, k := range keys {
			shed := p.waiting(k)
			var gone []*ttsConn
			p.mu.Lock()
			kept := p.idle[k][:0]
			for _, c := range p.idle[k] {
				if c.dead.Load() || shed {
					gone = append(gone, c)
					continue
				}
				kept = append(kept, c)
			}
			if len(kept) == 0 {
				delete(p.idle, k)
			} else {
				p.idle[k] = kept
			}
			p.mu.Unlock()
			for _, c := range gone {
				c.close()
			}
		}
	}
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
	if p.waiting != nil && p.waiting(key) {
		c.close() // its slot goes to a call that waits for one
		return
	}
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
	if p.closed {
		p.mu.Unlock()
		return
	}
	var all []*ttsConn
	for k, conns := range p.idle {
		all = append(all, conns...)
		delete(p.idle, k)
	}
	p.closed = true
	p.mu.Unlock()
	if p.stop != nil {
		close(p.stop)
		<-p.swept
	}
	for _, c := range all {
		c.close()
	}
}
