package emulator

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/coder/websocket"
)

// Faults are failures the emulator injects instead of a normal answer, so
// that callers can test their error handling with no key. A request gets a
// fault by naming it as its key ("Authorization: Bearer fault-http-429"),
// in an X-Emulator-Fault header, or at random at the rates in
// Options.Faults. Each is written as Smallest would send it (see the
// README's table of faults).
//
// Faults that happen before any answer apply to every endpoint, WebSocket
// upgrades included:
//
//	http-401 http-403 http-429 http-429-body http-400 http-410 http-413
//	http-500 http-503   an HTTP error with Smallest's body for it
//	plan-not-entitled   400: the plan lacks the feature ("... upgrade to a higher plan")
//	org-not-allowed     403: not available for the organization (an allow-list)
//	clone-limit         400: clone limit exceeded, consider upgrading
//	reset               the connection is reset before any answer
//	stall               no answer at all, until the client gives up
//
// Faults inside a stream apply to SSE synthesis and both WebSockets, after
// N frames when the name ends in -after-N (default 0):
//
//	reset-after-N       the connection is reset
//	stall-after-N       the stream goes silent
//	malformed           a frame that is not JSON (REST: a body that is not)
//	truncate            the stream ends cleanly before its final frame
//	ws-close-1008       WebSocket close 1008 (over the concurrency limit)
//	ws-close-1011       WebSocket close 1011 (server error)
//	ws-close-1000       an early, normal WebSocket close
//	ws-inactivity       the inactivity error, then a close
//
// Hydra's faults apply to its speech-to-speech socket:
//
//	hydra-server-full     error server_full, then close 1013 (at capacity)
//	hydra-invalid-audio   every audio message answered with error invalid_audio
//	hydra-idle            the idle timeout's close 1000, at once after configuring
//	hydra-internal-error  error internal_error, then close 1011
var faultNames = []string{
	"http-401", "http-403", "http-429", "http-429-body", "http-400", "http-410", "http-413", "http-500", "http-503",
	"plan-not-entitled", "org-not-allowed", "clone-limit",
	"reset", "stall", "reset-after", "stall-after", "malformed", "truncate",
	"ws-close-1008", "ws-close-1011", "ws-close-1000", "ws-inactivity",
	"hydra-server-full", "hydra-invalid-audio", "hydra-idle", "hydra-internal-error",
}

// FaultPrefix starts a key that names a fault.
const FaultPrefix = "fault-"

// FaultRate is a fault injected at random into a share of requests.
type FaultRate struct {
	// Fault is a fault's name, as in a key: "http-503", "reset-after-3".
	Fault string
	// Rate is the share of requests that get it, from 0 to 1.
	Rate float64
}

// ParseFaults reads a list of faults and rates: "http-503=0.02,reset-after-3=0.01".
func ParseFaults(s string) ([]FaultRate, error) {
	var out []FaultRate
	total := 0.0
	for _, item := range strings.Split(s, ",") {
		if item = strings.TrimSpace(item); item == "" {
			continue
		}
		name, rate, ok := strings.Cut(item, "=")
		r, err := strconv.ParseFloat(rate, 64)
		if !ok || err != nil || r < 0 || r > 1 {
			return nil, fmt.Errorf("%q: want <fault>=<rate from 0 to 1>", item)
		}
		if _, ok := parseFault(name); !ok {
			return nil, fmt.Errorf("%q: unknown fault; faults are %s (those after -after- take a frame count)", name, strings.Join(faultNames, ", "))
		}
		total += r
		out = append(out, FaultRate{Fault: name, Rate: r})
	}
	if total > 1 {
		return nil, fmt.Errorf("the rates add up to %g, more than 1", total)
	}
	return out, nil
}

// fault is a parsed fault: its kind and, inside a stream, after how many frames.
type fault struct {
	kind  string
	after int
}

func parseFault(name string) (fault, bool) {
	f := fault{kind: name}
	if head, n, ok := strings.Cut(name, "-after-"); ok {
		count, err := strconv.Atoi(n)
		if err != nil || count < 0 {
			return fault{}, false
		}
		f.kind, f.after = head, count
		if f.kind == "reset" || f.kind == "stall" {
			f.kind += "-after"
		}
	}
	return f, slices.Contains(faultNames, f.kind)
}

type faultKey struct{}

// faultOf returns the fault a request carries, if any.
func faultOf(ctx context.Context) (fault, bool) {
	f, ok := ctx.Value(faultKey{}).(fault)
	return f, ok
}

// pickFault returns the fault r asks for, or one drawn at the configured rates.
func (e *Emulator) pickFault(r *http.Request) (fault, bool) {
	name := r.Header.Get("X-Emulator-Fault")
	if key := keyOf(r); strings.HasPrefix(key, FaultPrefix) {
		name = strings.TrimPrefix(key, FaultPrefix)
	}
	if name != "" {
		return parseFault(name)
	}
	if len(e.opts.Faults) == 0 {
		return fault{}, false
	}
	x := rand.Float64()
	for _, fr := range e.opts.Faults {
		if x < fr.Rate {
			return parseFault(fr.Fault)
		}
		x -= fr.Rate
	}
	return fault{}, false
}

// answerFault injects the faults that come before any answer, and reports
// whether it did.
func (e *Emulator) answerFault(f fault, w http.ResponseWriter, r *http.Request) bool {
	if status, body, ok := httpFault(f.kind, r); ok {
		if f.kind == "http-429" || f.kind == "http-503" {
			w.Header().Set("Retry-After", "2")
		}
		writeJSON(w, status, body)
		return true
	}
	switch f.kind {
	case "reset":
		// The whole request arrives, then the connection drops: Smallest
		// may have acted on it, which the gateway must not call unreachable.
		io.Copy(io.Discard, io.LimitReader(r.Body, MaxUpload+1))
		reset(w)
		return true
	case "stall":
		io.Copy(io.Discard, io.LimitReader(r.Body, MaxUpload+1))
		<-r.Context().Done()
		return true
	}
	return false
}

// httpFault is the status and body Smallest documents for each HTTP error,
// in the shape of the endpoint r calls.
func httpFault(kind string, r *http.Request) (int, any, bool) {
	stt := strings.Contains(r.URL.Path, "/stt")
	switch kind {
	case "http-401":
		return http.StatusUnauthorized, map[string]string{"error": "Unauthorized", "message": "Bearer token is missing or invalid."}, true
	case "http-403":
		return http.StatusForbidden, map[string]string{"error": "Forbidden", "message": "Plan does not include access to the requested model"}, true
	case "http-429":
		return http.StatusTooManyRequests, map[string]string{"error": "Too many concurrent requests"}, true
	case "http-429-body":
		return http.StatusTooManyRequests, map[string]any{"error": "Rate limit exceeded", "code": "RATE_LIMIT_EXCEEDED", "retry_after": 3}, true
	case "http-400":
		if stt {
			return http.StatusBadRequest, map[string]string{"error": "Invalid parameters.", "request_id": newID()}, true
		}
		return http.StatusBadRequest, map[string]any{"error": []zodIssue{{Code: "custom", Path: []string{"voice_id"}, Message: "Invalid Voice ID"}}}, true
	case "http-410":
		return http.StatusGone, map[string]string{"status": "error", "error_code": "MODEL_DEPRECATED",
			"message": "This model is retired.", "recommended_endpoint": "/waves/v1/tts"}, true
	case "http-413":
		return http.StatusRequestEntityTooLarge, map[string]string{"error": "File size exceeds maximum limit of 250MB.", "request_id": newID()}, true
	case "http-500":
		return http.StatusInternalServerError, map[string]string{"error": "InternalServerError", "message": "Internal server error"}, true
	case "http-503":
		return http.StatusServiceUnavailable, map[string]string{"error": "Worker temporarily unavailable", "request_id": newID()}, true
	case "plan-not-entitled":
		// The platform's plan gate (docs/upstream.md §6.1).
		return http.StatusBadRequest, map[string]any{"status": false,
			"errors": []string{"Your plan has no access to this feature, please upgrade to a higher plan to use it."}}, true
	case "org-not-allowed":
		return http.StatusForbidden, map[string]string{"error": "Forbidden", "message": "This feature is not available for your organization."}, true
	case "clone-limit":
		return http.StatusBadRequest, map[string]string{"error": "clone limit exceeded, consider upgrading"}, true
	}
	return 0, nil, false
}

// reset drops the connection under a response: no status, no end.
func reset(w http.ResponseWriter) {
	if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
		if tc, ok := conn.(interface{ SetLinger(int) error }); ok {
			_ = tc.SetLinger(0) // an RST, not a FIN; without it, a FIN still ends the response
		}
		conn.Close()
		return
	}
	panic(http.ErrAbortHandler) // HTTP/2: resets the stream
}

// frameFault applies a stream fault at its frame.
type frameFault struct {
	f    fault
	ok   bool
	sent int
}

func newFrameFault(ctx context.Context) *frameFault {
	f, ok := faultOf(ctx)
	return &frameFault{f: f, ok: ok}
}

// due reports whether the fault strikes before the next frame, counting it.
func (ff *frameFault) due() bool {
	if !ff.ok {
		return false
	}
	n := ff.sent
	ff.sent++
	return n == ff.f.after
}

// sse applies the fault before an SSE frame. It reports whether the stream
// must end here (the fault was injected).
func (ff *frameFault) sse(ctx context.Context, w http.ResponseWriter, r *http.Request) bool {
	if !ff.due() {
		return false
	}
	switch ff.f.kind {
	case "reset-after":
		reset(w)
	case "stall-after":
		io.Copy(io.Discard, r.Body) // net/http notices a client leaving only once the body is read
		<-ctx.Done()
	case "malformed":
		io.WriteString(w, "event: audio\ndata: {\"audio\": \"AAAA\", \"done\": fals\n\n")
		flush(w)
		io.Copy(io.Discard, r.Body)
		<-ctx.Done()
	case "truncate":
	default:
		ff.sent-- // not a fault of this transport: ignored
		ff.ok = false
		return false
	}
	return true
}

// ws applies the fault before a WebSocket message. It reports whether the
// session has failed: from then on it sends nothing more, but goes on
// reading, so that it notices the client leave.
func (ff *frameFault) ws(ctx context.Context, conn *websocket.Conn) bool {
	if !ff.due() {
		return false
	}
	switch ff.f.kind {
	case "reset-after":
		conn.CloseNow()
	case "stall-after":
	case "malformed":
		conn.Write(ctx, websocket.MessageText, []byte(`{"status":"chunk","data":`))
	case "truncate", "ws-close-1000":
		conn.Close(websocket.StatusNormalClosure, "")
	case "ws-close-1008":
		conn.Close(websocket.StatusPolicyViolation, "concurrency limit reached")
	case "ws-close-1011":
		conn.Close(websocket.StatusInternalError, "internal error")
	case "ws-inactivity":
		conn.Write(ctx, websocket.MessageText, []byte(`{"status":"error","message":"Connection timed out after 60 seconds of inactivity"}`))
		conn.Close(websocket.StatusNormalClosure, "idle")
	default:
		ff.ok = false
		return false
	}
	return true
}

// malformedBody answers a REST call with a body that is not JSON.
type malformedBody struct {
	http.ResponseWriter
	wrote bool
}

func (m *malformedBody) Write(p []byte) (int, error) {
	if !m.wrote {
		m.wrote = true
		m.ResponseWriter.Write([]byte(`{"voices": [{"voiceId": `))
	}
	return len(p), nil
}

func flush(w http.ResponseWriter) {
	if f, ok := w.(http.Flusher); ok {
		f.Flush()
	}
}
