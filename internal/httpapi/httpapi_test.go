package httpapi_test

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"

	speechv1 "github.com/speechgate/speechgate/gen/speech/v1"
	"github.com/speechgate/speechgate/internal/emulator"
	"github.com/speechgate/speechgate/internal/gatewaytest"
	"github.com/speechgate/speechgate/internal/httpapi"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const key = "sk_caller_key_0123456789"

// start runs a gateway in front of upstream with its HTTP access, and
// returns the HTTP access's base URL.
func start(t *testing.T, upstream http.Handler, origins ...string) string {
	t.Helper()
	g := gatewaytest.Start(t, upstream, gatewaytest.Options{})
	self, err := g.Server.InProcess(nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { self.Close() })
	h, err := httpapi.New(httpapi.Config{Server: g.Server.GRPCServer(), Conn: self, CORSOrigins: origins,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(h)
	srv.Config.Protocols = new(http.Protocols)
	srv.Config.Protocols.SetHTTP1(true)
	srv.Config.Protocols.SetUnencryptedHTTP2(true)
	srv.Start()
	t.Cleanup(srv.Close)
	return srv.URL
}

func do(t *testing.T, method, url, auth string, body io.Reader, header ...string) (*http.Response, []byte, error) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", "Bearer "+auth)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, b, err
}

func TestSynthesizeAudio(t *testing.T) {
	t.Parallel()
	base := start(t, emulator.New(emulator.Options{}))
	tests := []struct {
		name, method, path, body string
		wantType                 string
		wantBytes                int
	}{
		{name: "POST JSON, WAV by default", method: "POST", path: "/v1/speech:synthesize",
			body:     `{"text": "Hello there.", "voice_id": "avery", "sample_rate_hz": 16000}`,
			wantType: "audio/wav", wantBytes: 44 + 12*60*32},
		{name: "GET for an <audio> element, raw PCM", method: "GET",
			path:     "/v1/speech:synthesize?text=Hi%20you.&voiceId=avery&sample_rate_hz=8000&encoding=AUDIO_ENCODING_PCM_S16LE",
			wantType: "audio/L16;rate=8000;channels=1", wantBytes: 7 * 60 * 16},
		{name: "μ-law", method: "POST", path: "/v1/speech:synthesize",
			body:     `{"text": "Hello there.", "voice_id": "avery", "sample_rate_hz": 8000, "encoding": "AUDIO_ENCODING_MULAW"}`,
			wantType: "audio/PCMU;rate=8000", wantBytes: 12 * 60 * 8},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			resp, b, err := do(t, tt.method, base+tt.path, key, strings.NewReader(tt.body))
			if err != nil || resp.StatusCode != http.StatusOK {
				t.Fatalf("%v %v: %s", resp.Status, err, b)
			}
			if got := resp.Header.Get("Content-Type"); got != tt.wantType || len(b) != tt.wantBytes {
				t.Errorf("%s, %d bytes; want %s, %d bytes", got, len(b), tt.wantType, tt.wantBytes)
			}
			if tt.wantType == "audio/wav" && (string(b[:4]) != "RIFF" || bytes.Count(b, []byte("RIFF")) != 1) {
				t.Errorf("want one WAV header, at the start")
			}
		})
	}
}

// status is a google.rpc.Status as JSON.
type status struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
	Details []struct {
		Type            string `json:"@type"`
		Reason          string `json:"reason"`
		FieldViolations []struct {
			Field string `json:"field"`
		} `json:"fieldViolations"`
	} `json:"details"`
}

func (s status) reason() string {
	for _, d := range s.Details {
		if d.Reason != "" {
			return d.Reason
		}
	}
	return ""
}

func (s status) fields() []string {
	var out []string
	for _, d := range s.Details {
		for _, f := range d.FieldViolations {
			out = append(out, f.Field)
		}
	}
	return out
}

func TestAudioErrors(t *testing.T) {
	t.Parallel()
	base := start(t, emulator.New(emulator.Options{}))
	tests := []struct {
		name, method, path, auth, body string
		wantStatus                     int
		wantReason                     string
		wantField                      string
		wantRetryAfter                 string
		maxBody                        int // bytes; 0: any
	}{
		{name: "no credentials", method: "POST", path: "/v1/speech:synthesize", body: `{"text": "hi", "voice_id": "avery"}`,
			wantStatus: 401, wantReason: "MISSING_CREDENTIALS"},
		{name: "Smallest refuses the key", method: "POST", path: "/v1/speech:synthesize", auth: "fault-http-401",
			body: `{"text": "hi", "voice_id": "avery"}`, wantStatus: 401, wantReason: "UPSTREAM_UNAUTHENTICATED"},
		{name: "rate limited, with Retry-After", method: "POST", path: "/v1/speech:synthesize", auth: "fault-http-429",
			body: `{"text": "hi", "voice_id": "avery"}`, wantStatus: 429, wantReason: "UPSTREAM_RATE_LIMITED", wantRetryAfter: "2"},
		{name: "a field the request does not have", method: "POST", path: "/v1/speech:synthesize", auth: key,
			body: `{"txt": "hi", "voice_id": "avery"}`, wantStatus: 400, wantReason: "INVALID_REQUEST", wantField: "body"},
		{name: "empty text", method: "POST", path: "/v1/speech:synthesize", auth: key,
			body: `{"text": "", "voice_id": "avery"}`, wantStatus: 400, wantReason: "INVALID_REQUEST", wantField: "text"},
		{name: "a query parameter the request does not have", method: "GET", path: "/v1/speech:synthesize?text=hi&voice=avery",
			auth: key, wantStatus: 400, wantField: "voice"},
		{name: "a long value that is not a number, not echoed whole", method: "GET",
			path: "/v1/speech:synthesize?text=hi&voice_id=avery&sample_rate_hz=" + strings.Repeat("x", 2000),
			auth: key, wantStatus: 400, wantField: "sample_rate_hz", maxBody: 600},
		{name: "a transcription with no audio", method: "POST", path: "/v1/speech:transcribe?language=en", auth: key,
			wantStatus: 400, wantField: "audio"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			resp, b, err := do(t, tt.method, base+tt.path, tt.auth, strings.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			var st status
			if resp.Header.Get("Content-Type") != "application/json" || json.Unmarshal(b, &st) != nil {
				t.Fatalf("%s %s: %s; want a google.rpc.Status in JSON", resp.Status, resp.Header.Get("Content-Type"), b)
			}
			if resp.StatusCode != tt.wantStatus || st.Message == "" || (tt.wantReason != "" && st.reason() != tt.wantReason) {
				t.Errorf("%d, reason %q: %s; want %d, %s", resp.StatusCode, st.reason(), b, tt.wantStatus, tt.wantReason)
			}
			if tt.maxBody > 0 && len(b) > tt.maxBody {
				t.Errorf("the answer is %d bytes, want at most %d: the caller's value repeated whole?\n%.300s", len(b), tt.maxBody, b)
			}
			if tt.wantField != "" && (len(st.fields()) == 0 || st.fields()[0] != tt.wantField) {
				t.Errorf("field violations %v, want %s", st.fields(), tt.wantField)
			}
			if got := resp.Header.Get("Retry-After"); got != tt.wantRetryAfter {
				t.Errorf("Retry-After %q, want %q", got, tt.wantRetryAfter)
			}
		})
	}
}

// TestFailureAfterTheFirstByte: a synthesis that breaks mid-stream aborts
// the response, so that a client can never take it for complete.
func TestFailureAfterTheFirstByte(t *testing.T) {
	t.Parallel()
	base := start(t, emulator.New(emulator.Options{}))
	resp, b, err := do(t, "POST", base+"/v1/speech:synthesize", "fault-reset-after-3",
		strings.NewReader(`{"text": "A sentence long enough for several frames.", "voice_id": "avery"}`))
	if resp.StatusCode != http.StatusOK || err == nil {
		t.Fatalf("%s, %d bytes, read error %v: want 200 and then a broken body", resp.Status, len(b), err)
	}
}

func TestTranscribeBody(t *testing.T) {
	t.Parallel()
	base := start(t, emulator.New(emulator.Options{}))
	const text = "Curl can transcribe this."
	_, wav, err := do(t, "POST", base+"/v1/speech:synthesize", key, strings.NewReader(`{"text": "`+text+`", "voice_id": "avery", "sample_rate_hz": 16000}`))
	if err != nil {
		t.Fatal(err)
	}
	resp, b, err := do(t, "POST", base+"/v1/speech:transcribe?language=en&word_timestamps=true", key, bytes.NewReader(wav),
		"Content-Type", "audio/wav")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("%s %v: %s", resp.Status, err, b)
	}
	var got struct {
		Transcript struct {
			Text  string `json:"text"`
			Words []any  `json:"words"`
		} `json:"transcript"`
	}
	if err := json.Unmarshal(b, &got); err != nil || got.Transcript.Text != text || len(got.Transcript.Words) != 4 {
		t.Errorf("%s: want the text with 4 words", b)
	}
}

// TestConnectGRPCWebAndREST calls one RPC in each protocol the transcoder
// serves.
func TestConnectGRPCWebAndREST(t *testing.T) {
	t.Parallel()
	base := start(t, emulator.New(emulator.Options{}))
	t.Run("Connect, JSON", func(t *testing.T) {
		resp, b, err := do(t, "POST", base+"/speech.v1.SynthesisService/ListVoices", key, strings.NewReader(`{"language": "hi"}`),
			"Content-Type", "application/json", "Connect-Protocol-Version", "1")
		if err != nil || resp.StatusCode != 200 || !strings.Contains(string(b), `"voiceId":"meher"`) {
			t.Errorf("%s %v: %s; want the Hindi voices", resp.Status, err, b)
		}
	})
	t.Run("Connect, an error", func(t *testing.T) {
		resp, b, err := do(t, "POST", base+"/speech.v1.SynthesisService/ListVoices", "", strings.NewReader(`{}`),
			"Content-Type", "application/json", "Connect-Protocol-Version", "1")
		if err != nil || resp.StatusCode != 401 || !strings.Contains(string(b), `"code":"unauthenticated"`) ||
			!strings.Contains(string(b), "MISSING_CREDENTIALS") {
			t.Errorf("%s %v: %s; want 401 with the ErrorInfo", resp.Status, err, b)
		}
	})
	t.Run("REST", func(t *testing.T) {
		resp, b, err := do(t, "GET", base+"/v1/voices?language=hi", key, nil)
		if err != nil || resp.StatusCode != 200 || !strings.Contains(string(b), `"voiceId":"meher"`) || strings.Contains(string(b), `"voiceId":"avery"`) {
			t.Errorf("%s %v: %s; want the Hindi voices only", resp.Status, err, b)
		}
	})
	t.Run("REST with a body: a unary transcription", func(t *testing.T) {
		_, wav, err := do(t, "POST", base+"/v1/speech:synthesize", key, strings.NewReader(`{"text": "Rest is easy.", "voice_id": "avery", "sample_rate_hz": 16000}`))
		if err != nil {
			t.Fatal(err)
		}
		body := `{"config": {"language": "en"}, "audio": "` + base64.StdEncoding.EncodeToString(wav) + `"}`
		resp, b, err := do(t, "POST", base+"/v1/transcriptions", key, strings.NewReader(body), "Content-Type", "application/json")
		if err != nil || resp.StatusCode != 200 || !strings.Contains(string(b), `"text":"Rest is easy."`) {
			t.Errorf("%s %v: %s", resp.Status, err, b)
		}
	})
	t.Run("gRPC-Web", func(t *testing.T) {
		msg, _ := proto.Marshal(&speechv1.ListVoicesRequest{Language: "hi"})
		frame := append([]byte{0, 0, 0, 0, 0}, msg...)
		binary.BigEndian.PutUint32(frame[1:5], uint32(len(msg)))
		resp, b, err := do(t, "POST", base+"/speech.v1.SynthesisService/ListVoices", key, bytes.NewReader(frame),
			"Content-Type", "application/grpc-web+proto", "X-Grpc-Web", "1")
		if err != nil || resp.StatusCode != 200 || len(b) < 5 || b[0] != 0 {
			t.Fatalf("%s %v: %q", resp.Status, err, b)
		}
		n := binary.BigEndian.Uint32(b[1:5])
		var got speechv1.ListVoicesResponse
		if err := proto.Unmarshal(b[5:5+n], &got); err != nil || len(got.GetVoices()) == 0 {
			t.Fatalf("%v, %d voices", err, len(got.GetVoices()))
		}
		if trailer := strings.ToLower(string(b[5+n:])); b[5+n] != 0x80 || !strings.Contains(trailer, "grpc-status: 0\r\n") {
			t.Errorf("trailer frame %q, want grpc-status 0", trailer)
		}
	})
}

func TestCORS(t *testing.T) {
	t.Parallel()
	base := start(t, emulator.New(emulator.Options{}), "https://app.example.com")
	tests := []struct {
		name, method, origin string
		wantStatus           int
		wantAllowed          bool
	}{
		{name: "preflight from an allowed origin", method: "OPTIONS", origin: "https://app.example.com", wantStatus: 204, wantAllowed: true},
		{name: "preflight from another origin", method: "OPTIONS", origin: "https://evil.example.com", wantStatus: 403},
		{name: "a call from an allowed origin", method: "GET", origin: "https://app.example.com", wantStatus: 200, wantAllowed: true},
		{name: "a call from another origin gets no CORS headers", method: "GET", origin: "https://evil.example.com", wantStatus: 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			header := []string{"Origin", tt.origin}
			if tt.method == "OPTIONS" {
				header = append(header, "Access-Control-Request-Method", "POST", "Access-Control-Request-Headers", "authorization,content-type")
			}
			resp, b, err := do(t, tt.method, base+"/v1/voices", key, nil, header...)
			if err != nil || resp.StatusCode != tt.wantStatus {
				t.Fatalf("%s %v: %s", resp.Status, err, b)
			}
			allowed := resp.Header.Get("Access-Control-Allow-Origin") == tt.origin
			if allowed != tt.wantAllowed {
				t.Errorf("Access-Control-Allow-Origin %q, want allowed %v", resp.Header.Get("Access-Control-Allow-Origin"), tt.wantAllowed)
			}
			if tt.wantAllowed && tt.method == "OPTIONS" && !strings.Contains(resp.Header.Get("Access-Control-Allow-Headers"), "Authorization") {
				t.Errorf("Access-Control-Allow-Headers %q", resp.Header.Get("Access-Control-Allow-Headers"))
			}
		})
	}
}

// TestPlaygroundIsServed checks what the browser test relies on: the page
// and its script, from the binary, under a policy that keeps it to its origin.
func TestPlaygroundIsServed(t *testing.T) {
	t.Parallel()
	base := start(t, emulator.New(emulator.Options{}))
	for _, path := range []string{"/playground/", "/playground/playground.js", "/playground/playground.css"} {
		resp, b, err := do(t, "GET", base+path, "", nil)
		if err != nil || resp.StatusCode != 200 || len(b) == 0 || !strings.Contains(resp.Header.Get("Content-Security-Policy"), "default-src 'self'") {
			t.Errorf("%s: %s %v, %d bytes, CSP %q", path, resp.Status, err, len(b), resp.Header.Get("Content-Security-Policy"))
		}
	}
	if resp, _, _ := do(t, "GET", base+"/playground/missing.js", "", nil); resp.StatusCode != 404 {
		t.Errorf("a file that is not there: %s", resp.Status)
	}
}
