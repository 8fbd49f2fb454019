package smallest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/speechgate/speechgate/internal/audio"
	"github.com/speechgate/speechgate/internal/sse"
)

// VoiceOptions are the voice and settings every Lightning request carries,
// over SSE or the WebSocket (docs/upstream.md §1.2). Zero values are left out so that
// Smallest applies its own defaults.
type VoiceOptions struct {
	VoiceID                     string   `json:"voice_id"`
	Model                       string   `json:"model,omitempty"`
	SampleRate                  int      `json:"sample_rate,omitempty"`
	Speed                       float32  `json:"speed,omitempty"`
	Language                    string   `json:"language,omitempty"`
	NumberPronunciationLanguage string   `json:"number_pronunciation_language,omitempty"`
	MathNotation                bool     `json:"math_notation,omitempty"`
	PronunciationDicts          []string `json:"pronunciation_dicts,omitempty"`
	SessionID                   string   `json:"session_id,omitempty"`
	RequestID                   string   `json:"request_id,omitempty"`
}

// SpeechRequest is Lightning's TtsRequest for one text over SSE.
type SpeechRequest struct {
	Text string `json:"text"`
	VoiceOptions
	OutputFormat string `json:"output_format,omitempty"`

	// ExpireContent sends the Enterprise x-expire-content header.
	ExpireContent bool `json:"-"`
}

// maxFrame bounds one SSE line or event. Smallest's frames carry about 1 KB of
// audio; 1 MiB leaves room for any chunking it might choose while refusing an
// upstream that never ends a line.
const maxFrame = 1 << 20

// SpeechStream is a Lightning synthesis in progress over SSE. It is not safe
// for concurrent use. Close it when done.
type SpeechStream struct {
	// RequestID and SessionID are Smallest's X-Request-Id and X-Session-Id.
	RequestID, SessionID string
	// ContentExpiry is Smallest's x-content-expiry answer, if any.
	ContentExpiry string
	// Attempts is how many requests it took, retries included; Waited is
	// the time they waited for a slot of the account's budget.
	Attempts int
	Waited   time.Duration
	// SampleRate is the audio's rate when the server chose it (a
	// self-hosted server's speech endpoint); 0: the rate asked for.
	SampleRate int

	// raw reads the response body as the audio itself, rather than SSE.
	raw     *bufio.Reader
	oddByte []byte // a sample's first byte, read at the end of the last piece

	release func() // gives back the budget's slot
	call    call
	ctx     context.Context
	cancel  context.CancelCauseFunc
	body    io.ReadCloser
	events  *sse.Reader
	idle    *time.Timer
	idleD   time.Duration
	sent    time.Time
	first   time.Duration
	done    bool  // Smallest's final frame has been read
	err     error // what Next returns from now on
}

// StreamSpeech starts a synthesis on POST /waves/v1/tts/live and returns once
// Smallest has accepted it (a 2xx status with headers), after a slot of the
// account's synthesis budget was granted and retries where they are safe
// (see attempt). Audio is then read with Next.
func (c *Client) StreamSpeech(ctx context.Context, r *SpeechRequest) (*SpeechStream, error) {
	payload, err := json.Marshal(r)
	if err != nil {
		return nil, err
	}
	var s *SpeechStream
	g, err := c.attempt(ctx, use{endpoint: "POST /waves/v1/tts/live", gated: UseSynthesis, retries: true}, func() error {
		var err error
		s, err = c.openSpeech(ctx, r, payload)
		return err
	})
	if err != nil {
		return nil, err
	}
	s.release, s.Attempts, s.Waited = g.release, g.attempts, g.waited
	return s, nil
}

// openSpeech makes one request for a synthesis.
func (c *Client) openSpeech(ctx context.Context, r *SpeechRequest, payload []byte) (*SpeechStream, error) {
	header := http.Header{"Accept": {"text/event-stream"}}
	if r.ExpireContent {
		header.Set("x-expire-content", "true")
	}
	s, resp, err := c.postSpeech(ctx, "/waves/v1/tts/live", payload, header) //nolint:bodyclose // SpeechStream.Close closes it
	if err != nil {
		return nil, err
	}
	s.events = sse.NewReader(resp.Body, maxFrame)
	s.SessionID = resp.Header.Get("X-Session-Id")
	s.ContentExpiry = resp.Header.Get("x-content-expiry")
	return s, nil
}

// postSpeech sends a synthesis request and waits for the answer's headers,
// within the idle timeout.
func (c *Client) postSpeech(ctx context.Context, path string, payload []byte, header http.Header) (*SpeechStream, *http.Response, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	req, cl, err := c.newRequest(ctx, http.MethodPost, path, nil, bytes.NewReader(payload))
	if err != nil {
		cancel(nil)
		return nil, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range header {
		req.Header[k] = v
	}
	s := &SpeechStream{call: cl, ctx: ctx, cancel: cancel, idleD: c.idleTimeout, sent: time.Now()}
	if s.idleD > 0 {
		// The idle timer also bounds the wait for response headers.
		s.idle = time.AfterFunc(s.idleD, func() { cancel(errIdle) })
	}
	resp, err := c.do(req, cl) //nolint:bodyclose // SpeechStream.Close closes it
	if err != nil {
		s.Close()
		return nil, nil, err
	}
	if s.idle != nil {
		s.idle.Stop() // from now it runs only while Next waits
	}
	s.body = resp.Body
	s.RequestID = resp.Header.Get("X-Request-Id")
	return s, resp, nil
}

// openAudio asks for a synthesis on an endpoint that answers with the
// audio itself (a self-hosted server's /v1/speak), and sniffs its format: a
// WAV header gives the rate and is not passed on; anything else is taken as
// headerless PCM16 at rate.
func (c *Client) openAudio(ctx context.Context, path string, payload []byte, rate int) (*SpeechStream, error) {
	s, resp, err := c.postSpeech(ctx, path, payload, http.Header{"Accept": {"audio/wav, audio/*"}}) //nolint:bodyclose // SpeechStream.Close closes it
	if err != nil {
		return nil, err
	}
	s.SampleRate = rate
	s.raw = bufio.NewReaderSize(resp.Body, maxBatch)
	if s.idle != nil {
		s.idle.Reset(s.idleD) // the sniffing waits for the body's first bytes
		defer s.idle.Stop()
	}
	if head, _ := s.raw.Peek(12); len(head) == 12 && string(head[:4]) == "RIFF" && string(head[8:]) == "WAVE" {
		f, err := audio.ReadWAVHeader(s.raw)
		if err != nil || (f.Tag != 1 && f.Tag != 0xFFFE) || f.BitsPerSample != 16 || f.Channels != 1 {
			s.Close()
			return nil, &Error{Kind: KindMalformed, Endpoint: s.call.endpoint, RequestID: s.RequestID,
				Message: "the speech endpoint answered with a WAV file that is not 16-bit mono PCM"}
		}
		s.SampleRate = int(f.SampleRate)
	}
	return s, nil
}

// nextRaw reads the next audio of a raw answer, up to maxBatch bytes, in
// whole 16-bit samples.
func (s *SpeechStream) nextRaw(buf []byte) ([]byte, error) {
	if s.idle != nil {
		s.idle.Reset(s.idleD)
		defer s.idle.Stop()
	}
	if cap(buf) < maxBatch {
		buf = make([]byte, 0, maxBatch)
	}
	buf = append(buf[:0], s.oddByte...)
	var n int
	var err error
	for n == 0 && err == nil {
		n, err = s.raw.Read(buf[len(buf):cap(buf)])
	}
	buf = buf[:len(buf)+n]
	switch {
	case errors.Is(err, io.EOF):
		s.done = true
		if len(buf) == 0 {
			return nil, io.EOF
		}
		s.oddByte = nil
		return buf, nil // a last odd byte is passed on, not dropped
	case err != nil:
		s.err = s.readError(err)
		return nil, s.err
	}
	if len(buf)%2 == 1 {
		s.oddByte = append(s.oddByte[:0], buf[len(buf)-1])
		buf = buf[:len(buf)-1]
	} else {
		s.oddByte = s.oddByte[:0]
	}
	if s.first == 0 {
		s.first = max(time.Since(s.sent), time.Nanosecond)
	}
	return buf, nil
}

// FirstByte is the time from sending the request to decoding the first audio
// byte; zero until then.
func (s *SpeechStream) FirstByte() time.Duration { return s.first }

// maxBatch bounds the audio Next joins from frames that have already arrived.
const maxBatch = 32 << 10

// Next returns the next audio, decoded into a new slice that the caller
// owns. It waits for one audio frame, then joins to it the frames that
// have already been received, until it holds 32 KiB: it never waits for
// audio that has not arrived, and a caller that falls behind catches up in
// fewer, larger pieces. It returns io.EOF after Smallest's final frame, and an *Error when
// the stream fails or ends before that frame; audio received before a
// failure is returned first.
//
// The idle timeout counts only time spent here, waiting for Smallest: while
// the caller is slow to take the audio, the gateway does not read, and
// Smallest's silence is then the caller's doing, not Smallest's.
func (s *SpeechStream) Next() ([]byte, error) { return s.NextInto(nil) }

// NextInto is Next decoding into buf's storage (from buf[:0]) when it has
// room, and into a new slice when it has not. A caller that is done with
// each piece of audio before it asks for the next, such as one that sends
// it (gRPC has encoded a message when SendMsg returns), passes back what
// the last call returned and allocates nothing per piece, where a new
// slice for each made 50 slices of garbage a second a real-time stream.
func (s *SpeechStream) NextInto(buf []byte) ([]byte, error) {
	if s.err != nil {
		return nil, s.err
	}
	if s.raw != nil {
		if s.done {
			return nil, io.EOF
		}
		return s.nextRaw(buf)
	}
	if s.idle != nil {
		s.idle.Reset(s.idleD)
		defer s.idle.Stop()
	}
	audio := buf[:0]
	for !s.done && len(audio) < maxBatch {
		var ev sse.Event
		var err error
		if len(audio) == 0 {
			ev, err = s.events.Next()
		} else {
			var ok bool
			if ev, ok, err = s.events.Buffered(); err == nil && !ok {
				break
			}
		}
		if err != nil {
			err = s.readError(err)
		} else {
			if s.idle != nil {
				s.idle.Reset(s.idleD)
			}
			audio, err = s.appendFrame(audio, ev)
		}
		if err != nil {
			s.err = err // returned now, or after the audio that came before it
			if len(audio) == 0 {
				return nil, err
			}
			break
		}
	}
	if len(audio) == 0 {
		s.err = io.EOF
		return nil, io.EOF
	}
	if s.first == 0 {
		s.first = max(time.Since(s.sent), time.Nanosecond)
	}
	return audio, nil
}

// appendFrame appends the audio of one frame to dst, and notes the end.
// Room is made for the frames already received, so that they can join it
// without another copy.
func (s *SpeechStream) appendFrame(dst []byte, ev sse.Event) ([]byte, error) {
	f, err := s.call.readFrame(ev.Data, dst, s.events.Pending()*3/4, s.RequestID)
	if err != nil {
		if ev.Unterminated && IsKind(err, KindMalformed) {
			return dst, s.broken() // the connection ended inside this frame
		}
		return dst, err
	}
	s.done = f.done
	return f.audio, nil
}

// Close ends the stream and releases its connection. It is safe to call more than once.
func (s *SpeechStream) Close() error {
	if s.idle != nil {
		s.idle.Stop()
	}
	if s.done && s.body != nil {
		// After the final frame only the end of the body is still to come.
		// Reading it lets an HTTP/1.1 connection carry the next request
		// instead of being closed; a server slow to end it is not waited for.
		t := time.AfterFunc(drainWait, func() { s.cancel(context.Canceled) })
		io.Copy(io.Discard, io.LimitReader(s.body, drainBytes))
		t.Stop()
	}
	s.cancel(context.Canceled)
	if s.release != nil {
		s.release()
	}
	if s.body != nil {
		return s.body.Close()
	}
	return nil
}

// drainWait and drainBytes bound what Close reads after the final frame.
const (
	drainWait  = 20 * time.Millisecond
	drainBytes = 4 << 10
)

func (s *SpeechStream) readError(err error) error {
	switch {
	case errors.Is(err, sse.ErrEventTooLarge):
		return &Error{Kind: KindMalformed, Endpoint: s.call.endpoint, RequestID: s.RequestID,
			Message: "a frame exceeded " + strconv.Itoa(maxFrame) + " bytes"}
	case s.ctx.Err() != nil:
		return s.withRequestID(s.call.transportError(s.ctx, err))
	case errors.Is(err, io.EOF):
		return s.broken()
	default:
		return &Error{Kind: KindStreamBroken, Endpoint: s.call.endpoint, RequestID: s.RequestID,
			Message: scrub(rootCause(err), s.call.secret), cause: err}
	}
}

func (s *SpeechStream) broken() *Error {
	return &Error{Kind: KindStreamBroken, Endpoint: s.call.endpoint, RequestID: s.RequestID,
		Message: "the stream ended before its final frame"}
}

func (s *SpeechStream) withRequestID(err error) error {
	var e *Error
	if errors.As(err, &e) && e.RequestID == "" {
		e.RequestID = s.RequestID
	}
	return err
}
