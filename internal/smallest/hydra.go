package smallest

import (
	"bytes"
	"cmp"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// Hydra's audio, as its WebSocket documents it (docs/upstream.md §6.5):
// PCM16 mono, 16 kHz in and 48 kHz out.
const (
	HydraInputRate  = 16000
	HydraOutputRate = 48000
	// hydraFrameBytes is the size of the audio messages sent to Hydra:
	// 40 ms at 16 kHz, the top of its recommended 20–40 ms, so that the
	// fewest messages carry the audio.
	hydraFrameBytes = HydraInputRate * 2 * 40 / 1000
	// hydraMinFrameBytes is the shortest message Hydra accepts (20 ms):
	// it refuses shorter audio with invalid_audio ("need 320"; padded to
	// 20 ms to be safe).
	hydraMinFrameBytes = HydraInputRate * 2 * 20 / 1000
	// maxHydraMessage bounds one message from Hydra: an audio delta of a
	// few hundred milliseconds is tens of KB; 4 MiB leaves room and still
	// refuses a runaway.
	maxHydraMessage = 4 << 20
	// maxToolArguments bounds the arguments of one tool call as they are
	// joined from their deltas.
	maxToolArguments = 1 << 20
)

// CloseTryAgainLater is the WebSocket close code with which Hydra refuses a
// session over the organisation's session cap, after a server_full error.
const CloseTryAgainLater = 1013

// ConversationRequest opens a Hydra speech-to-speech session.
type ConversationRequest struct {
	// Model is Hydra's version tag: "hydra-v1.1" or "hydra-v1.0".
	Model string
	// Instructions is the persona; empty: Hydra's default.
	Instructions string
	// Voice is from the version's roster; empty: Hydra's default.
	Voice string
	// Tools are the functions the model may call.
	Tools []Tool
	// RespondFirst makes the model speak first.
	RespondFirst bool
}

// Tool is a function Hydra may call.
type Tool struct {
	Name        string
	Description string
	// Parameters is a JSON Schema object; nil: none.
	Parameters json.RawMessage
}

// MarshalJSON writes the tool as Hydra's session.configure takes it.
func (t Tool) MarshalJSON() ([]byte, error) {
	type wire struct {
		Type        string          `json:"type"`
		Name        string          `json:"name"`
		Description string          `json:"description,omitempty"`
		Parameters  json.RawMessage `json:"parameters,omitempty"`
	}
	return json.Marshal(wire{Type: "function", Name: t.Name, Description: t.Description, Parameters: t.Parameters})
}

// Conversation is a Hydra session. Send audio and commands from one
// goroutine and read with Next from another; Close ends it from either.
type Conversation struct {
	// SessionID is Hydra's id of the session.
	SessionID string
	// Voice is the voice Hydra applied ("" if it did not say); Tools how
	// many tools it accepted.
	Voice string
	Tools int
	// Warnings are the warnings Hydra sent before the session was
	// configured (a deprecated model), in order.
	Warnings []ConversationEvent

	*realtime
	refused func()

	pending []byte // audio short of a frame
	frame   []byte // the JSON of the next audio message, reused

	ended   atomic.Bool // the gateway ended the session (Finish or Close)
	lastErr *ConversationEvent
	args    map[string]*bytes.Buffer // tool arguments by call id, as their deltas arrive
}

// ConversationEvent is one message from Hydra, in its terms.
type ConversationEvent struct {
	// Type is Hydra's event type: "input_audio_buffer.speech_started",
	// "response.output_audio.delta", "response.done", "warning", "error"...
	Type string
	// ItemID and ResponseID are Hydra's ids of the turn and the response.
	ItemID, ResponseID string
	// AudioMS is when speech started or stopped, in ms of the input.
	AudioMS int
	// Audio is PCM16 at HydraOutputRate, for output audio deltas; the
	// caller may keep it.
	Audio []byte
	// CallID, Name and Arguments are a completed tool call's.
	CallID, Name, Arguments string
	// Status and Reason are how a response ended.
	Status, Reason string
	// Usage is a finished response's, if reported.
	Usage *Usage
	// Code, Message and Param are a warning's or a non-fatal error's.
	Code, Message, Param string
}

// Usage counts a response's tokens.
type Usage struct {
	InputTokens  int `json:"input_tokens"`
	OutputTokens int `json:"output_tokens"`
	TotalTokens  int `json:"total_tokens"`
}

// hydraFrame is the union of the JSON messages Hydra sends. Warnings are
// tolerated flat or nested under "warning", as the docs show neither.
type hydraFrame struct {
	Type       string `json:"type"`
	SessionID  string `json:"session_id"`
	ItemID     string `json:"item_id"`
	ResponseID string `json:"response_id"`
	AudioStart int    `json:"audio_start_ms"`
	AudioEnd   int    `json:"audio_end_ms"`
	Delta      string `json:"delta"`
	CallID     string `json:"call_id"`
	Name       string `json:"name"`
	Arguments  string `json:"arguments"`
	Code       string `json:"code"`
	Message    string `json:"message"`
	Session    *struct {
		Voice string            `json:"voice"`
		Tools []json.RawMessage `json:"tools"`
	} `json:"session"`
	Response *struct {
		ID            string `json:"id"`
		Status        string `json:"status"`
		StatusDetails *struct {
			Reason string `json:"reason"`
		} `json:"status_details"`
		Usage *Usage `json:"usage"`
	} `json:"response"`
	Error   *hydraNotice `json:"error"`
	Warning *hydraNotice `json:"warning"`
}

type hydraNotice struct {
	Type    string `json:"type"`
	Code    string `json:"code"`
	Message string `json:"message"`
	Param   string `json:"param"`
}

// fatalHydraCodes are the error codes that end a conversation at the
// gateway although Hydra may keep the socket open: audio it cannot read is
// the caller's fault to fix, not a turn to go on from; a full server closes
// the socket anyway.
var fatalHydraCodes = map[string]bool{"invalid_audio": true, "server_full": true}

// Converse opens a Hydra session and configures it. The key goes in the
// URL's query, as Hydra takes it, and so the URL is never logged or traced:
// see Traceable.
func (c *Client) Converse(ctx context.Context, r *ConversationRequest) (*Conversation, error) {
	u := *c.base
	u.Scheme = map[string]string{"http": "ws", "https": "wss"}[u.Scheme]
	u.Path += "/waves/v1/s2s"
	secret := c.credential(ctx)
	u.RawQuery = url.Values{"model": {r.Model}, "api_key": {secret}}.Encode()
	header := http.Header{}
	if c.userAgent != "" {
		header.Set("User-Agent", c.userAgent)
	}
	rt, err := c.openRealtime(ctx, &u, UseWebSocket, header, secret, maxHydraMessage)
	if err != nil {
		return nil, err
	}
	s := &Conversation{realtime: rt, args: map[string]*bytes.Buffer{}, refused: func() { c.refused(secret, UseWebSocket) }}
	if err := s.configure(r, c.responseTimeout); err != nil {
		s.Close()
		return nil, err
	}
	c.keepAlive(rt)
	return s, nil
}

// Traceable reports whether a request's URL may be recorded (in a trace, a
// log): Hydra's carries the key in its query.
func Traceable(r *http.Request) bool {
	return !r.URL.Query().Has("api_key")
}

// configure waits for session.created, sends session.configure, and waits
// for session.configured, within timeout (0: the context's).
func (s *Conversation) configure(r *ConversationRequest, timeout time.Duration) error {
	if timeout > 0 {
		t := time.AfterFunc(timeout, func() {
			s.cancel(&Error{Kind: KindTimeout, Endpoint: s.call.endpoint, Message: fmt.Sprintf("Hydra did not configure the session within %s", timeout)})
		})
		defer t.Stop()
	}
	if _, err := s.await("session.created"); err != nil {
		return err
	}
	session := map[string]any{"generate_initial_response": r.RespondFirst}
	if r.Instructions != "" {
		session["instructions"] = r.Instructions
	}
	if r.Voice != "" {
		session["voice"] = r.Voice
	}
	if len(r.Tools) > 0 {
		session["tools"] = r.Tools
	}
	if err := s.writeJSON(map[string]any{"type": "session.configure", "event_id": "evt_configure", "session": session}); err != nil {
		return err
	}
	f, err := s.await("session.configured")
	if err != nil {
		return err
	}
	if f.Session != nil {
		s.Voice, s.Tools = f.Session.Voice, len(f.Session.Tools)
	} else {
		s.Tools = len(r.Tools)
	}
	return nil
}

// await reads frames until one of type typ, keeping the session id and
// any warnings; an error frame ends the wait.
func (s *Conversation) await(typ string) (*hydraFrame, error) {
	for {
		f, err := s.read()
		if err != nil {
			return nil, err
		}
		if f == nil {
			continue
		}
		if f.SessionID != "" {
			s.SessionID = f.SessionID
		}
		switch f.Type {
		case typ:
			return f, nil
		case "warning":
			s.Warnings = append(s.Warnings, notice(f, f.Warning))
		case "error":
			ev := notice(f, f.Error)
			return nil, s.failure(&ev, 0)
		}
	}
}

// read reads one JSON frame; nil for a frame of another kind.
func (s *Conversation) read() (*hydraFrame, error) {
	typ, data, err := s.hear.read(s.conn)
	if err != nil {
		return nil, s.readError(err)
	}
	if typ != websocket.MessageText {
		return nil, nil // Hydra sends only JSON
	}
	var f hydraFrame
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, &Error{Kind: KindMalformed, Endpoint: s.call.endpoint, Message: "a message was not JSON"}
	}
	return &f, nil
}

// SendAudio sends PCM16 mono 16 kHz audio, in Hydra's 40 ms messages: what
// does not fill one waits for the next call, or for EndAudio. b is not
// retained.
func (s *Conversation) SendAudio(b []byte) error {
	if n := len(s.pending); n > 0 {
		take := min(hydraFrameBytes-n, len(b))
		s.pending = append(s.pending, b[:take]...)
		b = b[take:]
		if len(s.pending) < hydraFrameBytes {
			return nil
		}
		if err := s.sendFrame(s.pending); err != nil {
			return err
		}
		s.pending = s.pending[:0]
	}
	for len(b) >= hydraFrameBytes {
		if err := s.sendFrame(b[:hydraFrameBytes]); err != nil {
			return err
		}
		b = b[hydraFrameBytes:]
	}
	s.pending = append(s.pending, b...)
	return nil
}

// EndAudio sends the audio short of a frame, padded with silence to
// Hydra's shortest message.
func (s *Conversation) EndAudio() error {
	n := len(s.pending) &^ 1 // an odd last byte is half a sample
	if n == 0 {
		return nil
	}
	s.pending = append(s.pending[:n], make([]byte, max(0, hydraMinFrameBytes-n))...)
	err := s.sendFrame(s.pending)
	s.pending = s.pending[:0]
	return err
}

func (s *Conversation) sendFrame(pcm []byte) error {
	s.frame = append(s.frame[:0], `{"type":"input_audio_buffer.append","audio":"`...)
	s.frame = base64.StdEncoding.AppendEncode(s.frame, pcm)
	s.frame = append(s.frame, `"}`...)
	return s.write(s.frame)
}

// SendToolResult posts a tool's output for the call callID.
func (s *Conversation) SendToolResult(callID, output string) error {
	return s.writeJSON(map[string]any{"type": "conversation.item.create",
		"item": map[string]string{"type": "function_call_output", "call_id": callID, "output": output}})
}

// RequestResponse asks the model to answer now.
func (s *Conversation) RequestResponse() error {
	return s.write([]byte(`{"type":"response.create"}`))
}

// CancelResponse stops the response in flight, if any.
func (s *Conversation) CancelResponse() error {
	return s.write([]byte(`{"type":"response.cancel"}`))
}

// UpdateTools replaces the tools the model may call.
func (s *Conversation) UpdateTools(tools []Tool) error {
	if tools == nil {
		tools = []Tool{} // an empty list removes them; an absent one would change nothing
	}
	return s.writeJSON(map[string]any{"type": "session.update", "session": map[string]any{"tools": tools}})
}

func (s *Conversation) writeJSON(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("smallest: encoding a Hydra message: %w", err)
	}
	return s.write(b)
}

func (s *Conversation) write(b []byte) error {
	if err := s.conn.Write(s.ctx, websocket.MessageText, b); err != nil {
		if s.ctx.Err() != nil {
			return s.call.transportError(s.ctx, err)
		}
		return &Error{Kind: KindStreamBroken, Endpoint: s.call.endpoint, Message: "sending to Hydra failed: " + scrub(rootCause(err), s.call.secret), cause: err}
	}
	return nil
}

// Next returns the next event. Tool calls come whole (their argument
// deltas are joined here); other types this client does not know are
// skipped. After Finish it returns io.EOF. An error that ends the session
// is an *Error: KindStreamError for an error frame that Hydra closes after
// or that the gateway cannot go on from (invalid_audio, server_full),
// KindIdleClosed when Hydra ends a session the caller still held,
// KindStreamBroken for any other close.
func (s *Conversation) Next() (*ConversationEvent, error) {
	for {
		f, err := s.read()
		if err != nil {
			return nil, err
		}
		if f == nil {
			continue
		}
		if ev, err := s.event(f); ev != nil || err != nil {
			return ev, err
		}
	}
}

func (s *Conversation) event(f *hydraFrame) (*ConversationEvent, error) {
	ev := &ConversationEvent{Type: f.Type, ItemID: f.ItemID, ResponseID: f.ResponseID}
	switch f.Type {
	case "input_audio_buffer.speech_started":
		ev.AudioMS = f.AudioStart
	case "input_audio_buffer.speech_stopped":
		ev.AudioMS = f.AudioEnd
	case "response.created":
		if f.Response != nil {
			ev.ResponseID = f.Response.ID
		}
	case "response.output_audio.delta":
		audio, err := base64.StdEncoding.AppendDecode(nil, []byte(f.Delta))
		if err != nil || len(audio)%2 != 0 {
			return nil, &Error{Kind: KindMalformed, Endpoint: s.call.endpoint, Message: "an audio delta was not base64 PCM16"}
		}
		ev.Audio = audio
	case "response.output_audio.done":
	case "response.function_call_arguments.delta":
		b := s.args[f.CallID]
		if b == nil {
			b = new(bytes.Buffer)
			s.args[f.CallID] = b
		}
		if b.Len()+len(f.Delta) > maxToolArguments {
			return nil, &Error{Kind: KindMalformed, Endpoint: s.call.endpoint, Message: fmt.Sprintf("a tool call's arguments passed %d bytes", maxToolArguments)}
		}
		b.WriteString(f.Delta)
		return nil, nil
	case "response.function_call_arguments.done":
		ev.CallID, ev.Name, ev.Arguments = f.CallID, f.Name, f.Arguments
		if b := s.args[f.CallID]; b != nil && ev.Arguments == "" {
			ev.Arguments = b.String()
		}
		delete(s.args, f.CallID)
	case "response.done":
		if r := f.Response; r != nil {
			ev.ResponseID, ev.Status, ev.Usage = r.ID, r.Status, r.Usage
			if r.StatusDetails != nil {
				ev.Reason = r.StatusDetails.Reason
			}
		}
	case "warning":
		n := notice(f, f.Warning)
		return &n, nil
	case "error":
		n := notice(f, f.Error)
		if fatalHydraCodes[n.Code] {
			return nil, s.failure(&n, 0)
		}
		s.lastErr = &n // if a close follows, it says why
		return &n, nil
	default:
		return nil, nil // newer than this client, or nothing to relay (session.updated, conversation.item.*)
	}
	return ev, nil
}

// notice reads a warning or error frame, flat or nested.
func notice(f *hydraFrame, nested *hydraNotice) ConversationEvent {
	ev := ConversationEvent{Type: f.Type, Code: f.Code, Message: f.Message}
	if nested != nil {
		ev.Code, ev.Message, ev.Param = cmp.Or(nested.Code, nested.Type, ev.Code), cmp.Or(nested.Message, ev.Message), nested.Param
	}
	return ev
}

// failure is the *Error for an error frame ev, closed with code (0: none yet).
func (s *Conversation) failure(ev *ConversationEvent, code int) error {
	e := &Error{Kind: KindStreamError, Endpoint: s.call.endpoint, Code: ev.Code, CloseCode: code,
		Message: scrub(cmp.Or(ev.Message, "Hydra reported "+ev.Code), s.call.secret)}
	if ev.Code == "invalid_audio" {
		e.Violations = []FieldViolation{{Field: "audio", Description: e.Message}}
	}
	if e.Status() == http.StatusTooManyRequests {
		s.refused()
	}
	return e
}

func (s *Conversation) readError(err error) error {
	if s.ended.Load() {
		return io.EOF
	}
	if s.ctx.Err() != nil {
		return s.call.transportError(s.ctx, err)
	}
	var ce websocket.CloseError
	if !errors.As(err, &ce) {
		return &Error{Kind: KindStreamBroken, Endpoint: s.call.endpoint, Message: "the Hydra session broke off: " + scrub(rootCause(err), s.call.secret), cause: err}
	}
	if s.lastErr != nil {
		return s.failure(s.lastErr, int(ce.Code))
	}
	msg := "Hydra closed the session"
	if ce.Reason != "" {
		msg += ": " + scrub(ce.Reason, s.call.secret)
	}
	switch ce.Code {
	case websocket.StatusNormalClosure:
		return &Error{Kind: KindIdleClosed, Endpoint: s.call.endpoint, CloseCode: int(ce.Code),
			Message: msg + " (its idle timeout, about 30 s with no audio either way: stream silence to hold a quiet conversation)", cause: err}
	case CloseTryAgainLater:
		s.refused()
		return &Error{Kind: KindStreamError, Endpoint: s.call.endpoint, CloseCode: int(ce.Code), Code: "server_full",
			Message: msg + " (at capacity)", cause: err}
	}
	return &Error{Kind: KindStreamBroken, Endpoint: s.call.endpoint, CloseCode: int(ce.Code), Message: msg, cause: err}
}

// Finish ends the session normally: Next then returns io.EOF.
func (s *Conversation) Finish() {
	s.ended.Store(true)
	s.conn.Close(websocket.StatusNormalClosure, "")
	s.cancel(context.Canceled)
}

// Close ends the session at once. It is safe to call more than once.
func (s *Conversation) Close() error {
	s.ended.Store(true)
	return s.close()
}
