package smallest

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// LiveRequest configures a realtime recognition session on Pulse's WebSocket
// (docs/upstream.md §2.4). Every option travels in the query string; nil and zero
// values are left out so that Smallest applies its defaults.
type LiveRequest struct {
	Model, Language, Encoding string
	SampleRate                int

	WordTimestamps, SentenceTimestamps, Diarize, VADEvents bool
	Endpointing                                            *bool
	EOUTimeoutMS                                           int
	Format, Punctuate, Capitalize                          *bool
	ITNNormalize                                           bool
	FinalizeOnWords                                        *bool
	MaxWords                                               int
	RedactPII, RedactPCI                                   bool
	// Keywords are "word:intensifier" pairs.
	Keywords      []string
	SessionID     string
	ExpireContent bool
}

func (r *LiveRequest) query() url.Values {
	q := url.Values{}
	set := func(k, v string) {
		if v != "" {
			q.Set(k, v)
		}
	}
	flag := func(k string, v bool) {
		if v {
			q.Set(k, "true")
		}
	}
	opt := func(k string, v *bool) {
		if v != nil {
			q.Set(k, strconv.FormatBool(*v))
		}
	}
	set("model", r.Model)
	set("language", r.Language)
	set("encoding", r.Encoding)
	if r.SampleRate > 0 {
		q.Set("sample_rate", strconv.Itoa(r.SampleRate))
	}
	flag("word_timestamps", r.WordTimestamps)
	flag("sentence_timestamps", r.SentenceTimestamps)
	flag("diarize", r.Diarize)
	flag("vad_events", r.VADEvents)
	opt("endpointing", r.Endpointing)
	if r.EOUTimeoutMS > 0 {
		q.Set("eou_timeout_ms", strconv.Itoa(r.EOUTimeoutMS))
	}
	opt("format", r.Format)
	opt("punctuate", r.Punctuate)
	opt("capitalize", r.Capitalize)
	flag("itn_normalize", r.ITNNormalize)
	opt("finalize_on_words", r.FinalizeOnWords)
	if r.MaxWords > 0 {
		q.Set("max_words", strconv.Itoa(r.MaxWords))
	}
	flag("redact_pii", r.RedactPII)
	flag("redact_pci", r.RedactPCI)
	set("keywords", strings.Join(r.Keywords, ","))
	set("external_session_id", r.SessionID)
	return q
}

// usLanguages are served for realtime recognition only by Smallest's US host.
var usLanguages = []string{"zh", "yue", "ja", "ko", "multi-asian"}

// NeedsUSHost reports whether realtime recognition of lang must use the US host.
func NeedsUSHost(lang string) bool { return slices.Contains(usLanguages, lang) }

// maxLiveMessage bounds one message from Smallest: final transcripts with
// words and utterances are a few KB.
const maxLiveMessage = 4 << 20

// LiveSession is a realtime recognition session. Send audio, Finalize and
// CloseStream from one goroutine and read with Next from another; Close ends
// the session from either.
type LiveSession struct {
	// Attempts is how many handshakes it took, retries included; Waited
	// is the time they waited for a slot of the account's realtime budget.
	Attempts int
	Waited   time.Duration

	*realtime
	last        bool
	idleTimeout time.Duration
	closing     atomic.Pointer[time.Timer] // set by CloseStream, stopped by Close
	refused     func()                     // tells the Gate of a close 1008
}

// Listen opens a realtime session. Languages only Smallest's US host serves
// go to Config.USBaseURL.
func (c *Client) Listen(ctx context.Context, r *LiveRequest) (*LiveSession, error) {
	base := c.base
	if NeedsUSHost(r.Language) && c.usBase != nil {
		base = c.usBase
	}
	u := *base
	u.Scheme = map[string]string{"http": "ws", "https": "wss"}[u.Scheme]
	u.Path += "/waves/v1/stt/live"
	u.RawQuery = r.query().Encode()
	secret := c.credential(ctx)
	header := c.header(secret)
	if r.ExpireContent {
		header.Set("x-expire-content", "true")
	}

	rt, err := c.openRealtime(ctx, &u, UseLive, header, secret, maxLiveMessage)
	if err != nil {
		return nil, err
	}
	s := &LiveSession{realtime: rt, idleTimeout: c.idleTimeout,
		Attempts: rt.granted.attempts, Waited: rt.granted.waited, refused: func() { c.refused(secret, UseLive) }}
	c.keepAlive(rt)
	return s, nil
}

// SendAudio sends one piece of audio. b is not retained.
func (s *LiveSession) SendAudio(b []byte) error {
	return s.write(websocket.MessageBinary, b)
}

// Finalize asks Smallest to end the current utterance with a final transcript.
func (s *LiveSession) Finalize() error {
	return s.write(websocket.MessageText, []byte(`{"type":"finalize"}`))
}

// CloseStream ends the input: Smallest flushes, sends the last transcript
// (is_last) and closes the socket. A live session may be silent for as long
// as its speaker is, but once the input has ended, Smallest has the client's
// idle timeout to finish: after that, Next fails with KindTimeout.
func (s *LiveSession) CloseStream() error {
	if s.idleTimeout > 0 {
		s.closing.Store(time.AfterFunc(s.idleTimeout, func() { s.cancel(errIdle) }))
	}
	return s.write(websocket.MessageText, []byte(`{"type":"close_stream"}`))
}

func (s *LiveSession) write(typ websocket.MessageType, b []byte) error {
	if err := s.conn.Write(s.ctx, typ, b); err != nil {
		if s.ctx.Err() != nil {
			return s.call.transportError(s.ctx, err)
		}
		return &Error{Kind: KindStreamBroken, Endpoint: s.call.endpoint, Message: "sending to Smallest failed: " + scrub(rootCause(err), s.call.secret), cause: err}
	}
	return nil
}

// Close ends the session at once. It is safe to call more than once.
func (s *LiveSession) Close() error {
	if t := s.closing.Load(); t != nil {
		t.Stop()
	}
	return s.close()
}

// LiveEvent is one message from Smallest.
type LiveEvent struct {
	// Type is "transcription", "speech_started" or "speech_ended".
	Type string
	// SessionID is Smallest's id for the session.
	SessionID string
	// Transcript is set for "transcription" events.
	Transcript *LiveTranscript
	// Timestamp is the time of a speech event, in seconds from the session's start.
	Timestamp float64
}

// LiveTranscript is the text of the current utterance.
type LiveTranscript struct {
	Text             string
	IsFinal, IsLast  bool
	FromFinalize     bool
	Language         string
	Languages        []string
	Words            []Word
	Utterances       []Utterance
	RedactedEntities []string
}

// liveFrame is the union of the JSON messages Pulse's WebSocket sends.
type liveFrame struct {
	Type             string      `json:"type"`
	Status           string      `json:"status"`
	SessionID        string      `json:"session_id"`
	Transcript       *string     `json:"transcript"`
	Transcription    *string     `json:"transcription"`
	IsFinal          bool        `json:"is_final"`
	IsLast           bool        `json:"is_last"`
	FromFinalize     bool        `json:"from_finalize"`
	Language         string      `json:"language"`
	Languages        []string    `json:"languages"`
	Words            []Word      `json:"words"`
	Utterances       []Utterance `json:"utterances"`
	RedactedEntities []string    `json:"redacted_entities"`
	Timestamp        float64     `json:"timestamp"`
}

// Next returns the next event. After the event with IsLast it returns
// io.EOF. A session that ends before that is an *Error: KindStreamError for
// an error message or a refusal (CloseCode 1008: the concurrency limit),
// KindStreamBroken for a close without the last transcript.
func (s *LiveSession) Next() (*LiveEvent, error) {
	for {
		if s.last {
			return nil, io.EOF
		}
		typ, data, err := s.hear.read(s.conn)
		if err != nil {
			return nil, s.readError(err)
		}
		if typ != websocket.MessageText {
			continue // Pulse sends only JSON; anything else carries nothing for us
		}
		ev, err := s.call.liveEvent(data)
		if err != nil {
			return nil, err
		}
		if ev != nil {
			s.last = ev.Transcript != nil && ev.Transcript.IsLast
			return ev, nil
		}
		// Unknown message types are newer than this client; skip them.
	}
}

// liveEvent reads one of Pulse's messages: an event, nil for a message of a
// type this client does not know, or the *Error an error message reports.
func (cl call) liveEvent(data []byte) (*LiveEvent, error) {
	var f liveFrame
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, &Error{Kind: KindMalformed, Endpoint: cl.endpoint, Message: "a message was not JSON"}
	}
	switch {
	case f.Type == "error" || f.Status == "error":
		e := &Error{Kind: KindStreamError, Endpoint: cl.endpoint}
		e.parseBody(data, cl.secret)
		return nil, e
	case f.Type == "speech_started" || f.Type == "speech_ended":
		return &LiveEvent{Type: f.Type, SessionID: f.SessionID, Timestamp: f.Timestamp}, nil
	case f.Type == "transcription" || f.Transcript != nil || f.Transcription != nil:
		text := f.Transcript
		if text == nil {
			text = f.Transcription
		}
		return &LiveEvent{Type: "transcription", SessionID: f.SessionID, Transcript: &LiveTranscript{
			Text: deref(text), IsFinal: f.IsFinal, IsLast: f.IsLast, FromFinalize: f.FromFinalize,
			Language: f.Language, Languages: f.Languages, Words: f.Words, Utterances: f.Utterances,
			RedactedEntities: f.RedactedEntities,
		}}, nil
	}
	return nil, nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func (s *LiveSession) readError(err error) error {
	if s.ctx.Err() != nil {
		return s.call.transportError(s.ctx, err)
	}
	var ce websocket.CloseError
	if errors.As(err, &ce) {
		msg := "Smallest closed the session"
		if ce.Reason != "" {
			msg += ": " + scrub(ce.Reason, s.call.secret)
		}
		if ce.Code == websocket.StatusPolicyViolation {
			s.refused()
			return &Error{Kind: KindStreamError, Endpoint: s.call.endpoint, CloseCode: int(ce.Code),
				Message: msg + " (too many concurrent sessions)", cause: err}
		}
		return &Error{Kind: KindStreamBroken, Endpoint: s.call.endpoint, CloseCode: int(ce.Code),
			Message: msg + " before its last transcript", cause: err}
	}
	return &Error{Kind: KindStreamBroken, Endpoint: s.call.endpoint, Message: scrub(rootCause(err), s.call.secret), cause: err}
}
