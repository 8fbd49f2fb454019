package emulator

import (
	"cmp"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// hydraVoices are Hydra's rosters per version (docs/upstream.md §6.5), each
// with the voice applied when none is asked for.
var hydraVoices = map[string]struct {
	voices       []string
	defaultVoice string
}{
	"hydra-v1.1": {[]string{"zoe", "maya", "elena", "ivy", "grace", "alex", "aria", "leo", "sam", "kai"}, "zoe"},
	"hydra-v1.0": {[]string{"vaughn", "brooks", "cole", "hayes", "pierce", "sterling", "ellis", "lane", "quinn",
		"arden", "rowan", "blair", "emery", "sawyer"}, "sterling"},
	"hydra": {[]string{"wren", "sloane", "marlowe", "reed", "knox", "tate"}, "wren"},
}

// How the emulated Hydra hears turns: a 20 ms window louder than
// hydraSpeechRMS is speech, and hydraTurnEnd of quiet after speech ends the
// user's turn. What it says back is the turn itself, an echo, raised from
// 16 to 48 kHz, at most hydraMaxTurn long.
const (
	hydraSpeechRMS     = 500
	hydraTurnEnd       = 300 * time.Millisecond
	hydraMaxTurn       = 10 * time.Second
	hydraInputRate     = 16000
	hydraOutputRate    = 48000
	hydraDeltaBytes    = hydraOutputRate * 2 * 40 / 1000 // 40 ms per audio delta
	hydraMinAppend     = 320
	hydraGreeting      = 600 * time.Millisecond // the length of a response with nothing to echo
	hydraIdleDefault   = 30 * time.Second
	hydraToolDefault   = 10 * time.Second
	hydraTokensPerTurn = 40
)

// hydra serves wss://…/waves/v1/s2s (docs/upstream.md §6.5): Hydra's
// speech-to-speech session. It echoes each turn it hears, calls the first
// configured tool once per user turn before answering, barges in when the
// user speaks over it, and closes after its idle timeout. Faults named
// hydra-* inject its errors.
func (e *Emulator) hydra(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	key := q.Get("api_key")
	if key == "" {
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "Unauthorized", "message": "api_key is missing or invalid."})
		return
	}
	model := q.Get("model")
	roster, ok := hydraVoices[model]
	if !ok {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": fmt.Sprintf("Invalid model %q: expected hydra-v1.1 or hydra-v1.0.", model)})
		return
	}
	admitted := e.accounts.enter(key, useWebSocket)
	if admitted {
		defer e.accounts.leave(key, useWebSocket)
	}
	conn, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	defer conn.CloseNow()
	conn.SetReadLimit(1 << 20)
	// A hijacked connection outlives the request's context: this one ends
	// with the session.
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	f, _ := faultOf(r.Context())
	h := &hydraSession{e: e, conn: conn, ctx: ctx, roster: roster.voices, voice: roster.defaultVoice, fault: f.kind,
		idle: cmp.Or(e.opts.HydraIdleTimeout, hydraIdleDefault), toolWait: cmp.Or(e.opts.HydraToolTimeout, hydraToolDefault)}
	defer h.stopResponse("")
	if model == "hydra" {
		h.send(map[string]any{"type": "warning", "event_id": h.eventID(), "warning": map[string]string{"code": "model_deprecated",
			"message": "model=hydra is deprecated; use hydra-v1.0 or hydra-v1.1"}})
	}
	h.send(map[string]any{"type": "session.created", "event_id": h.eventID(), "session_id": "sess_" + newID()})
	if !admitted || f.kind == "hydra-server-full" {
		h.send(map[string]any{"type": "error", "event_id": h.eventID(), "error": map[string]string{"type": "server_error", "code": "server_full",
			"message": "Server is at capacity. Please retry with backoff."}})
		conn.Close(CloseTryAgainLater, "server full")
		return
	}
	h.run()
}

// CloseTryAgainLater is the close code of a full Hydra.
const CloseTryAgainLater websocket.StatusCode = 1013

type hydraSession struct {
	e        *Emulator
	conn     *websocket.Conn
	ctx      context.Context
	roster   []string
	voice    string
	fault    string
	idle     time.Duration
	toolWait time.Duration

	configured bool
	tools      []json.RawMessage
	events     int
	heardMS    int    // input audio received, in ms
	turn       []byte // the user's current or last turn, 16 kHz PCM16
	speaking   bool
	quietMS    int
	turnStart  int
	itemID     string
	toolCalled bool // the turn's tool call awaits its output
	toolTimer  *time.Timer
	last       atomic.Int64 // unix nanoseconds of the last traffic either way

	mu       sync.Mutex // guards the response in flight
	respID   string
	stopResp context.CancelFunc
	respDone chan struct{}
}

func (h *hydraSession) eventID() string {
	h.events++
	return fmt.Sprintf("sv_%s_%d", newID()[:8], h.events)
}

// traffic notes traffic either way, which holds off the idle timeout.
func (h *hydraSession) traffic() { h.last.Store(time.Now().UnixNano()) }

func (h *hydraSession) send(v any) {
	h.traffic()
	b, _ := json.Marshal(v)
	h.conn.Write(h.ctx, websocket.MessageText, b)
}

func (h *hydraSession) fail(code, message, param string) {
	h.send(map[string]any{"type": "error", "event_id": h.eventID(), "error": map[string]string{
		"type": "invalid_request_error", "code": code, "message": message, "param": param}})
}

// run reads the client's messages until the session ends: the client
// leaves, or the idle timeout passes with no traffic either way.
func (h *hydraSession) run() {
	// Idleness is timed apart from Read, whose expiring context would
	// close the socket with another code.
	h.traffic()
	var timer *time.Timer
	timer = time.AfterFunc(h.idle, func() {
		if quiet := time.Since(time.Unix(0, h.last.Load())); quiet < h.idle {
			timer.Reset(h.idle - quiet)
			return
		}
		h.conn.Close(websocket.StatusNormalClosure, "")
	})
	defer timer.Stop()
	defer func() {
		if h.toolTimer != nil {
			h.toolTimer.Stop()
		}
	}()
	for {
		typ, data, err := h.conn.Read(h.ctx)
		if err != nil {
			return
		}
		h.traffic()
		if typ != websocket.MessageText {
			h.fail("invalid_frame", "binary frames are not accepted; send JSON text frames", "")
			continue
		}
		var m struct {
			Type    string `json:"type"`
			Audio   string `json:"audio"`
			Session *struct {
				Instructions            string            `json:"instructions"`
				Voice                   string            `json:"voice"`
				Tools                   []json.RawMessage `json:"tools"`
				GenerateInitialResponse bool              `json:"generate_initial_response"`
			} `json:"session"`
			Item *struct {
				Type   string `json:"type"`
				CallID string `json:"call_id"`
				Output string `json:"output"`
			} `json:"item"`
		}
		if err := json.Unmarshal(data, &m); err != nil {
			h.fail("invalid_frame", "malformed JSON", "")
			continue
		}
		if m.Type != "session.configure" && !h.configured {
			h.fail("invalid_request_error", "send session.configure first", "type")
			continue
		}
		switch m.Type {
		case "session.configure":
			if !h.configure(m.Session) {
				continue
			}
			if h.fault == "hydra-idle" {
				h.conn.Close(websocket.StatusNormalClosure, "")
				return
			}
			if h.fault == "hydra-internal-error" {
				h.send(map[string]any{"type": "error", "event_id": h.eventID(), "error": map[string]string{
					"type": "server_error", "code": "internal_error", "message": "Internal server error."}})
				h.conn.Close(websocket.StatusInternalError, "")
				return
			}
			if m.Session.GenerateInitialResponse {
				h.respond(nil)
			}
		case "session.update":
			if m.Session != nil && m.Session.Tools != nil {
				h.tools = m.Session.Tools
				h.send(map[string]any{"type": "session.updated", "event_id": h.eventID(), "session": map[string]any{"tools": h.tools}})
			}
		case "input_audio_buffer.append":
			h.hear(m.Audio)
		case "conversation.item.create":
			if m.Item == nil || m.Item.Type != "function_call_output" || m.Item.CallID == "" {
				h.fail("invalid_request_error", "item must be a function_call_output with a call_id", "item")
				continue
			}
			h.send(map[string]any{"type": "conversation.item.added", "event_id": h.eventID(), "item": m.Item})
		case "response.create":
			if h.toolTimer != nil {
				h.toolTimer.Stop()
			}
			h.toolCalled = false
			h.respond(h.turn)
		case "response.cancel":
			h.stopResponse("client_cancelled")
		default:
			h.fail("invalid_frame", fmt.Sprintf("unknown event type %q", m.Type), "type")
		}
	}
}

func (h *hydraSession) configure(s *struct {
	Instructions            string            `json:"instructions"`
	Voice                   string            `json:"voice"`
	Tools                   []json.RawMessage `json:"tools"`
	GenerateInitialResponse bool              `json:"generate_initial_response"`
}) bool {
	if h.configured {
		h.fail("invalid_request_error", "session.configure may be sent only once", "type")
		return false
	}
	if s == nil {
		h.fail("invalid_request_error", "session is required", "session")
		return false
	}
	if s.Voice != "" && !slices.Contains(h.roster, s.Voice) {
		h.fail("invalid_request_error", fmt.Sprintf("unknown voice %q for this model", s.Voice), "session.voice")
		return false
	}
	if s.Voice != "" {
		h.voice = s.Voice
	}
	h.configured, h.tools = true, s.Tools
	h.send(map[string]any{"type": "session.configured", "event_id": h.eventID(), "session": map[string]any{
		"instructions": s.Instructions, "voice": h.voice, "tools": h.tools, "generate_initial_response": s.GenerateInitialResponse}})
	return true
}

// hear takes one append: it checks the audio, and finds where turns start
// and end.
func (h *hydraSession) hear(b64 string) {
	pcm, err := base64.StdEncoding.DecodeString(b64)
	switch {
	case h.fault == "hydra-invalid-audio":
		h.fail("invalid_audio", "audio is not PCM16", "audio")
		return
	case err != nil:
		h.fail("invalid_audio", "audio is not valid base64", "audio")
		return
	case len(pcm) < hydraMinAppend || len(pcm)%2 != 0:
		h.fail("invalid_audio", fmt.Sprintf("audio frame too small (%d bytes, need %d)", len(pcm), hydraMinAppend), "audio")
		return
	}
	const window = hydraInputRate * 2 * 20 / 1000 // 20 ms
	for start := 0; start < len(pcm); start += window {
		w := pcm[start:min(start+window, len(pcm))]
		loud := rmsOf(w) > hydraSpeechRMS
		ms := len(w) * 1000 / (hydraInputRate * 2)
		switch {
		case loud && !h.speaking:
			h.speaking, h.quietMS, h.turnStart, h.itemID = true, 0, h.heardMS, "item_"+newID()[:12]
			h.turn = h.turn[:0]
			h.send(map[string]any{"type": "input_audio_buffer.speech_started", "event_id": h.eventID(),
				"audio_start_ms": h.heardMS, "item_id": h.itemID})
			h.stopResponse("interrupted") // the user speaks over the answer: a barge-in
		case loud:
			h.quietMS = 0
		case h.speaking:
			h.quietMS += ms
		}
		if h.speaking && len(h.turn) < int(hydraMaxTurn/time.Millisecond)*hydraInputRate*2/1000 {
			h.turn = append(h.turn, w...)
		}
		h.heardMS += ms
		if h.speaking && time.Duration(h.quietMS)*time.Millisecond >= hydraTurnEnd {
			h.speaking = false
			h.send(map[string]any{"type": "input_audio_buffer.speech_stopped", "event_id": h.eventID(),
				"audio_end_ms": h.heardMS, "item_id": h.itemID})
			if len(h.tools) > 0 {
				h.callTool()
			} else {
				h.respond(h.turn)
			}
		}
	}
}

func rmsOf(pcm []byte) float64 {
	var sum float64
	n := len(pcm) / 2
	for i := range n {
		s := float64(int16(binary.LittleEndian.Uint16(pcm[2*i:])))
		sum += s * s
	}
	return math.Sqrt(sum / float64(max(n, 1)))
}

// callTool answers a turn with a call of the first tool, its arguments in
// two deltas, and starts the tool timeout.
func (h *hydraSession) callTool() {
	var tool struct {
		Name string `json:"name"`
	}
	_ = json.Unmarshal(h.tools[0], &tool) // a tool without a name is called without one
	id, callID := "resp_"+newID()[:12], "call_"+newID()[:12]
	args := fmt.Sprintf(`{"heard_ms": %d}`, h.heardMS-h.turnStart)
	h.send(map[string]any{"type": "response.created", "event_id": h.eventID(), "response": map[string]string{"id": id}})
	h.send(map[string]any{"type": "response.function_call_arguments.delta", "event_id": h.eventID(), "response_id": id,
		"call_id": callID, "name": tool.Name, "delta": args[:len(args)/2]})
	h.send(map[string]any{"type": "response.function_call_arguments.delta", "event_id": h.eventID(), "response_id": id,
		"call_id": callID, "delta": args[len(args)/2:]})
	h.send(map[string]any{"type": "response.function_call_arguments.done", "event_id": h.eventID(), "response_id": id,
		"call_id": callID, "name": tool.Name, "arguments": args})
	h.send(map[string]any{"type": "response.done", "event_id": h.eventID(), "response": map[string]any{
		"id": id, "status": "completed", "usage": usage(hydraTokensPerTurn / 4)}})
	h.toolCalled = true
	if h.toolTimer != nil {
		h.toolTimer.Stop()
	}
	h.toolTimer = time.AfterFunc(h.toolWait, func() {
		h.send(map[string]any{"type": "error", "event_id": "sv_tool_timeout", "error": map[string]string{"type": "invalid_request_error",
			"code": "tool_response_timeout", "message": fmt.Sprintf("no function_call_output and response.create within %s", h.toolWait)}})
	})
}

func usage(out int) map[string]int {
	return map[string]int{"input_tokens": hydraTokensPerTurn, "output_tokens": out, "total_tokens": hydraTokensPerTurn + out}
}

// respond speaks a response: the echo of turn at 48 kHz, or a tone when
// there is nothing to echo. A response already in flight is replaced.
func (h *hydraSession) respond(turn []byte) {
	h.stopResponse("interrupted")
	var audio []byte
	if len(turn) > 0 {
		audio = make([]byte, 0, 3*len(turn))
		for i := 0; i+1 < len(turn); i += 2 {
			audio = append(audio, turn[i], turn[i+1], turn[i], turn[i+1], turn[i], turn[i+1])
		}
	} else {
		n := int(hydraGreeting / time.Millisecond * hydraOutputRate / 1000)
		audio = make([]byte, 2*n)
		for i := range n {
			binary.LittleEndian.PutUint16(audio[2*i:], uint16(int16(4000*math.Sin(2*math.Pi*220*float64(i)/hydraOutputRate))))
		}
	}
	id := "resp_" + newID()[:12]
	ctx, stop := context.WithCancel(h.ctx)
	done := make(chan struct{})
	h.mu.Lock()
	h.respID, h.stopResp, h.respDone = id, stop, done
	h.mu.Unlock()
	h.send(map[string]any{"type": "response.created", "event_id": h.eventID(), "response": map[string]string{"id": id}})
	go func() {
		defer close(done)
		if d := h.e.opts.FirstByteDelay; d > 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(d):
			}
		}
		start := time.Now()
		for sent := 0; sent < len(audio); sent += hydraDeltaBytes {
			if pace := h.e.opts.Pace; pace > 0 {
				due := start.Add(time.Duration(float64(sent/2) / hydraOutputRate / pace * float64(time.Second)))
				select {
				case <-ctx.Done():
					return
				case <-time.After(time.Until(due)):
				}
			}
			if ctx.Err() != nil {
				return
			}
			chunk := audio[sent:min(sent+hydraDeltaBytes, len(audio))]
			h.send(map[string]any{"type": "response.output_audio.delta", "response_id": id, "item_id": "item_" + id,
				"delta": base64.StdEncoding.EncodeToString(chunk)})
		}
		h.mu.Lock()
		defer h.mu.Unlock()
		if ctx.Err() != nil {
			return
		}
		h.send(map[string]any{"type": "response.output_audio.done", "response_id": id, "item_id": "item_" + id})
		h.send(map[string]any{"type": "response.done", "response": map[string]any{"id": id, "status": "completed",
			"usage": usage(hydraTokensPerTurn + len(audio)/hydraDeltaBytes)}})
		h.stopResp = nil
	}()
}

// stopResponse cancels the response in flight, if any, and reports it done
// with reason (""; nothing reported: the session is ending).
func (h *hydraSession) stopResponse(reason string) {
	h.mu.Lock()
	stop, done, id := h.stopResp, h.respDone, h.respID
	h.stopResp = nil
	if stop != nil {
		stop() // under the lock: the response cannot finish in between, and be reported twice
	}
	h.mu.Unlock()
	if stop == nil {
		return
	}
	<-done
	if reason != "" {
		h.send(map[string]any{"type": "response.done", "event_id": h.eventID(), "response": map[string]any{
			"id": id, "status": "cancelled", "status_details": map[string]string{"type": "cancelled", "reason": reason}}})
	}
}
