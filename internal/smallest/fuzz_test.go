package smallest

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

// fuzzSecret is the key a fuzzed exchange is made with: nothing Smallest
// sends may carry it into an error.
const fuzzSecret = "sk_fuzz_secret_key_0123456789"

// checkError holds what every *Error must: a known kind, and a bounded,
// scrubbed message.
func checkError(t *testing.T, err error) {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error %T is not an *Error: %v", err, err)
	}
	if e.Kind < KindHTTP || e.Kind > KindNoAnswer {
		t.Fatalf("unknown kind %d", e.Kind)
	}
	for _, text := range append([]string{e.Message}, violationTexts(e)...) {
		if len(text) > maxMessage+len("…") {
			t.Fatalf("a message of %d bytes reached the error", len(text))
		}
		if strings.Contains(text, fuzzSecret) {
			t.Fatalf("the key reached the error: %q", text)
		}
	}
}

func violationTexts(e *Error) []string {
	var out []string
	for _, v := range e.Violations {
		out = append(out, v.Description)
	}
	return out
}

// FuzzErrorBody feeds error bodies of any shape to the parser that reads
// every documented one.
func FuzzErrorBody(f *testing.F) {
	for _, seed := range []string{
		`{"error":"Unauthorized","message":"Bearer token is missing or invalid."}`,
		`{"error":[{"received":"mulaw","code":"invalid_enum_value","options":["wav"],"path":["output_format"],"message":"Invalid enum value."}]}`,
		`{"status":"error","error_code":"MODEL_DEPRECATED","message":"retired","recommended_endpoint":"/waves/v1/tts"}`,
		`{"error":"Rate limit exceeded","code":"RATE_LIMIT_EXCEEDED","retry_after":60}`,
		`{"error":"License expired","code":"LICENSE_EXPIRED","expires_at":"2024-12-31T23:59:59Z"}`,
		`{"errors":["please upgrade to a higher plan"],"status":false}`,
		`{"status":"error","error":{"message":"over the limit","code":"RATE_LIMIT_EXCEEDED"}}`,
		`{"message":"your key sk_fuzz_secret_key_0123456789 is wrong","error":"Bearer abcdefgh12345678"}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		e := &Error{Kind: KindHTTP, Endpoint: "POST /x", HTTPStatus: 400}
		e.parseBody(body, fuzzSecret)
		checkError(t, e)
		if e.RetryAfter < 0 {
			t.Fatalf("negative RetryAfter %v", e.RetryAfter)
		}
		_ = e.Status()
	})
}

// FuzzLiveMessage feeds Pulse realtime messages of any shape to their parser.
func FuzzLiveMessage(f *testing.F) {
	for _, seed := range []string{
		`{"type":"transcription","status":"success","session_id":"s","transcript":"Hi","is_final":false,"is_last":false}`,
		`{"type":"transcription","transcript":"Hi there.","is_final":true,"is_last":true,"words":[{"word":"Hi","start":0,"end":0.2,"speaker":"speaker_1"}],"utterances":[{"text":"Hi","start":0,"end":1,"speaker":0}]}`,
		`{"type":"speech_started","session_id":"s","timestamp":1.84}`,
		`{"type":"error","error_code":"LANGUAGE_NOT_ENABLED_IN_REGION","message":"Language 'zh' has not been enabled in this region."}`,
		`{"type":"error","status":"error","message":"Connection timed out after 60 seconds of inactivity"}`,
		`{"type":"something_new"}`,
	} {
		f.Add([]byte(seed))
	}
	cl := newCall("WS /waves/v1/stt/live", fuzzSecret)
	f.Fuzz(func(t *testing.T, data []byte) {
		ev, err := cl.liveEvent(data)
		if err != nil {
			checkError(t, err)
			return
		}
		if ev == nil {
			return
		}
		switch ev.Type {
		case "transcription":
			if ev.Transcript == nil {
				t.Fatal("a transcription event without its transcript")
			}
		case "speech_started", "speech_ended":
		default:
			t.Fatalf("event type %q", ev.Type)
		}
	})
}

// FuzzSpeechMessage feeds Lightning WebSocket messages of any shape to the
// session, which must turn each into an event, nothing, or an *Error, and
// keep its accounting of flushes consistent.
func FuzzSpeechMessage(f *testing.F) {
	for _, seed := range []string{
		`{"session_id":"s","request_id":"r1","status":"chunk","data":{"audio":"AAECAw=="}}`,
		`{"session_id":"s","request_id":"r1","status":"word_timestamp","data":{"id":2,"word":"$100","start":1.12,"end":1.92}}`,
		`{"session_id":"s","request_id":"r1","status":"complete"}`,
		`{"status":"error","message":"Connection timed out after 60 seconds of inactivity"}`,
		`{"status":"error","error":{"message":"too many","code":"RATE_LIMIT_EXCEEDED"}}`,
		`{"status":"chunk","data":"not an object"}`,
	} {
		f.Add([]byte(seed), true)
	}
	f.Fuzz(func(t *testing.T, data []byte, ended bool) {
		s := &SpeechSession{call: newCall("WS /waves/v1/tts/live", fuzzSecret), ended: ended,
			segments: []segment{{text: []byte("One.")}, {text: []byte("Two."), end: ended}}}
		ev, err := s.event(nil, data)
		if err != nil {
			checkError(t, err)
			return
		}
		var head struct {
			Status string `json:"status"`
		}
		json.Unmarshal(data, &head)
		if ev != nil && len(ev.Audio) > 0 && head.Status != "chunk" {
			t.Fatalf("audio from a message that is not a chunk: %q", data)
		}
		if len(s.segments) > 2 || (s.done && !ended) {
			t.Fatalf("after %q: %d segments, done %v (ended %v)", data, len(s.segments), s.done, ended)
		}
	})
}
