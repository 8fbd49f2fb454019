package smallest_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"

	"github.com/speechgate/speechgate/internal/smallest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const testKey = "sk_test_0123456789abcdef"

// newClient returns a client of srv that sends testKey.
func newClient(t *testing.T, srv *httptest.Server, opts ...func(*smallest.Config)) *smallest.Client {
	t.Helper()
	cfg := smallest.Config{
		BaseURL:    srv.URL,
		HTTPClient: srv.Client(),
		Credential: func(context.Context) string { return testKey },
		UserAgent:  "speechgate-test",
	}
	for _, o := range opts {
		o(&cfg)
	}
	c, err := smallest.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func newServer(t *testing.T, h http.HandlerFunc) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

// sseFrames writes frames as Smallest does, flushing after each write of a
// piece so that frames reach the client split at awkward places.
func writeSplit(w http.ResponseWriter, s string, piece int) {
	for len(s) > 0 {
		n := min(piece, len(s))
		io.WriteString(w, s[:n])
		w.(http.Flusher).Flush()
		s = s[n:]
	}
}

func audioFrame(b []byte) string {
	return fmt.Sprintf("event: audio\ndata: {\"audio\": %q, \"done\": false, \"status\": \"206\"}\n\n", base64.StdEncoding.EncodeToString(b))
}

const doneFrame = "data: {\"status\": \"200\", \"done\": true}\n\n"

// readAll reads a stream to its end and returns the audio and the final error.
func readAll(s *smallest.SpeechStream) ([]byte, error) {
	var out []byte
	for {
		b, err := s.Next()
		if err != nil {
			return out, err
		}
		out = append(out, b...)
	}
}

func chunks(n, size int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i] = bytes.Repeat([]byte{byte(i + 1)}, size)
	}
	return out
}

func TestStreamSpeechRelaysEveryFrameShape(t *testing.T) {
	t.Parallel()
	pcm := chunks(5, 960)
	current := strings.Builder{}
	envelope := strings.Builder{}
	for _, c := range pcm {
		current.WriteString(audioFrame(c))
		fmt.Fprintf(&envelope, "data: {\"status\":\"chunk\",\"data\":{\"audio\":%q}}\n\n", base64.StdEncoding.EncodeToString(c))
	}
	tests := []struct {
		name  string
		body  string
		piece int
	}{
		{name: "current frames", body: current.String() + doneFrame, piece: 1 << 20},
		{name: "split every 7 bytes", body: current.String() + doneFrame, piece: 7},
		{name: "CRLF line ends", body: strings.ReplaceAll(current.String()+doneFrame, "\n", "\r\n"), piece: 100},
		{name: "legacy done-only terminator", body: current.String() + "data: {\"done\": true}\n\n", piece: 64},
		{name: "envelope frames", body: envelope.String() + "data: {\"status\":\"complete\",\"message\":\"All chunks sent\",\"done\":true}\n\n", piece: 50},
		{name: "terminator without blank line", body: current.String() + "data: {\"status\": \"200\", \"done\": true}", piece: 1 << 20},
		{name: "unpadded base64", body: strings.ReplaceAll(current.String(), "=", "") + doneFrame, piece: 1 << 20},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var got struct {
				auth, accept, ctype string
				body                map[string]any
			}
			srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
				if r.Method != http.MethodPost || r.URL.Path != "/waves/v1/tts/live" {
					http.NotFound(w, r)
					return
				}
				got.auth, got.accept, got.ctype = r.Header.Get("Authorization"), r.Header.Get("Accept"), r.Header.Get("Content-Type")
				json.NewDecoder(r.Body).Decode(&got.body)
				w.Header().Set("Content-Type", "text/event-stream")
				w.Header().Set("X-Request-Id", "req-123")
				w.Header().Set("X-Session-Id", "sess-9")
				writeSplit(w, tt.body, tt.piece)
			})
			c := newClient(t, srv)
			s, err := c.StreamSpeech(t.Context(), &smallest.SpeechRequest{Text: "Hello", VoiceOptions: smallest.VoiceOptions{VoiceID: "magnus", Model: "lightning_v3.1", SampleRate: 24000, Speed: 1.25, RequestID: "mine-1"}, OutputFormat: "pcm"})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			audio, err := readAll(s)
			if !errors.Is(err, io.EOF) {
				t.Fatalf("stream ended with %v, want io.EOF", err)
			}
			if want := bytes.Join(pcm, nil); !bytes.Equal(audio, want) {
				t.Fatalf("got %d audio bytes, want %d identical to what the upstream sent", len(audio), len(want))
			}
			if s.RequestID != "req-123" || s.SessionID != "sess-9" {
				t.Errorf("ids = %q, %q; want the response headers", s.RequestID, s.SessionID)
			}
			if s.FirstByte() <= 0 {
				t.Error("FirstByte() is zero after audio arrived")
			}
			wantBody := map[string]any{"text": "Hello", "voice_id": "magnus", "model": "lightning_v3.1",
				"sample_rate": 24000.0, "output_format": "pcm", "speed": 1.25, "request_id": "mine-1"}
			if diff := cmp.Diff(wantBody, got.body); diff != "" {
				t.Errorf("request body differs (-want +got):\n%s", diff)
			}
			if got.auth != "Bearer "+testKey || got.accept != "text/event-stream" || got.ctype != "application/json" {
				t.Errorf("headers: Authorization %q, Accept %q, Content-Type %q", got.auth, got.accept, got.ctype)
			}
		})
	}
}

func TestStreamSpeechFailures(t *testing.T) {
	t.Parallel()
	one := audioFrame([]byte{1, 2, 3, 4})
	tests := []struct {
		name    string
		status  int
		headers map[string]string
		body    string
		want    smallest.Error
	}{
		{
			name: "cut before done", status: 200, body: one + one,
			want: smallest.Error{Kind: smallest.KindStreamBroken, RequestID: "req-1", Message: "the stream ended before its final frame"},
		},
		{
			name: "cut inside a frame", status: 200, body: one + "event: audio\ndata: {\"audio\": \"AAAA",
			want: smallest.Error{Kind: smallest.KindStreamBroken, RequestID: "req-1", Message: "the stream ended before its final frame"},
		},
		{
			name: "garbage frame", status: 200, body: one + "data: <html>\n\n" + doneFrame,
			want: smallest.Error{Kind: smallest.KindMalformed, RequestID: "req-1", Message: "a frame was not JSON"},
		},
		{
			name: "error frame with message", status: 200, body: one + "data: {\"status\":\"error\",\"message\":\"Connection timed out\"}\n\n",
			want: smallest.Error{Kind: smallest.KindStreamError, RequestID: "req-1", Message: "Connection timed out"},
		},
		{
			name: "error frame with nested error", status: 200, body: one + "data: {\"status\":\"error\",\"error\":{\"message\":\"over capacity\",\"code\":\"CONCURRENCY_LIMIT\"}}\n\n",
			want: smallest.Error{Kind: smallest.KindStreamError, RequestID: "req-1", Code: "CONCURRENCY_LIMIT", Message: "over capacity"},
		},
		{
			name: "frame with an error status on a 200 (not an HTTP status)", status: 200, body: one + "data: {\"status\":\"500\",\"done\":true,\"error\":\"InternalServerError\"}\n\n",
			want: smallest.Error{Kind: smallest.KindStreamError, FrameStatus: 500, RequestID: "req-1", Message: "InternalServerError"},
		},
		{
			name: "401 spec shape", status: 401, body: `{"error":"Unauthorized","message":"Bearer token is missing or invalid."}`,
			want: smallest.Error{Kind: smallest.KindHTTP, HTTPStatus: 401, RequestID: "req-1", Message: "Bearer token is missing or invalid.; Unauthorized"},
		},
		{
			name: "400 zod issues", status: 400, body: `{"error":[{"code":"custom","path":["voice_id"],"message":"Invalid Voice ID"}]}`,
			want: smallest.Error{Kind: smallest.KindHTTP, HTTPStatus: 400, RequestID: "req-1", Message: "Invalid Voice ID",
				Violations: []smallest.FieldViolation{{Field: "voice_id", Description: "Invalid Voice ID"}}},
		},
		{
			name: "400 enum issue", status: 400,
			body: `{"error":[{"received":"mulaw","code":"invalid_enum_value","options":["wav","ulaw","alaw","pcm","mp3"],"path":["output_format"],"message":"Invalid enum value. Expected 'wav' | 'ulaw', received 'mulaw'"}]}`,
			want: smallest.Error{Kind: smallest.KindHTTP, HTTPStatus: 400, RequestID: "req-1", Message: "Invalid enum value. Expected 'wav' | 'ulaw', received 'mulaw'",
				Violations: []smallest.FieldViolation{{Field: "output_format", Description: "Invalid enum value. Expected 'wav' | 'ulaw', received 'mulaw'"}}},
		},
		{
			name: "410 retired", status: 410,
			body: `{"status":"error","error_code":"MODEL_DEPRECATED","message":"This model is retired.","recommended_endpoint":"/waves/v1/lightning-v3.1/get_speech"}`,
			want: smallest.Error{Kind: smallest.KindHTTP, HTTPStatus: 410, RequestID: "req-1", Code: "MODEL_DEPRECATED", Message: "This model is retired.",
				Details: map[string]string{"recommended_endpoint": "/waves/v1/lightning-v3.1/get_speech"}},
		},
		{
			name: "429 with Retry-After header", status: 429, headers: map[string]string{"Retry-After": "7"},
			body: `{"error":"Too many requests"}`,
			want: smallest.Error{Kind: smallest.KindHTTP, HTTPStatus: 429, RequestID: "req-1", Message: "Too many requests", RetryAfter: 7 * time.Second},
		},
		{
			name: "429 with retry_after body", status: 429,
			body: `{"error":"Rate limit exceeded","code":"RATE_LIMIT_EXCEEDED","retry_after":60}`,
			want: smallest.Error{Kind: smallest.KindHTTP, HTTPStatus: 429, RequestID: "req-1", Code: "RATE_LIMIT_EXCEEDED", Message: "Rate limit exceeded", RetryAfter: time.Minute},
		},
		{
			name: "400 legacy coded", status: 400,
			body: `{"status":"error","error_code":"LANGUAGE_NOT_ENABLED_IN_REGION","message":"Language not enabled","language":"multi-asian","region":"ap-south-1"}`,
			want: smallest.Error{Kind: smallest.KindHTTP, HTTPStatus: 400, RequestID: "req-1", Code: "LANGUAGE_NOT_ENABLED_IN_REGION", Message: "Language not enabled",
				Details: map[string]string{"language": "multi-asian", "region": "ap-south-1"}},
		},
		{
			name: "400 plan gate", status: 400, body: `{"status":false,"errors":["please upgrade to a higher plan"]}`,
			want: smallest.Error{Kind: smallest.KindHTTP, HTTPStatus: 400, RequestID: "req-1", Message: "please upgrade to a higher plan"},
		},
		{
			name: "header request id wins over the body", status: 500, body: `{"error":"Internal server error","request_id":"body-id"}`,
			want: smallest.Error{Kind: smallest.KindHTTP, HTTPStatus: 500, RequestID: "req-1", Message: "Internal server error"},
		},
		{
			name: "502 HTML from a proxy", status: 502, body: "<html>bad gateway</html>",
			want: smallest.Error{Kind: smallest.KindHTTP, HTTPStatus: 502, RequestID: "req-1", Message: "the response body was not JSON"},
		},
		{
			name: "key echoed by upstream is scrubbed", status: 401, body: `{"error":"unauthorized","message":"key ` + testKey + ` is invalid; Bearer abcdefgh12345"}`,
			want: smallest.Error{Kind: smallest.KindHTTP, HTTPStatus: 401, RequestID: "req-1", Message: "key [redacted] is invalid; Bearer [redacted]; unauthorized"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("X-Request-Id", "req-1")
				for k, v := range tt.headers {
					w.Header().Set(k, v)
				}
				w.WriteHeader(tt.status)
				writeSplit(w, tt.body, 1<<20)
			})
			s, err := newClient(t, srv).StreamSpeech(t.Context(), &smallest.SpeechRequest{Text: "x", VoiceOptions: smallest.VoiceOptions{VoiceID: "v"}})
			if err == nil {
				defer s.Close()
				_, err = readAll(s)
			}
			var got *smallest.Error
			if !errors.As(err, &got) {
				t.Fatalf("err = %v (%T), want *smallest.Error", err, err)
			}
			want := tt.want
			want.Endpoint = "POST /waves/v1/tts/live"
			if tt.status != http.StatusOK {
				want.Attempts = 1 // refused before the stream began: none of these is retried
			}
			if diff := cmp.Diff(&want, got, cmp.AllowUnexported(smallest.Error{}), cmpIgnoreCause); diff != "" {
				t.Fatalf("error differs (-want +got):\n%s", diff)
			}
			if strings.Contains(got.Error(), testKey) {
				t.Fatalf("error text %q contains the key", got.Error())
			}
		})
	}
}

var cmpIgnoreCause = cmp.FilterPath(func(p cmp.Path) bool { return p.Last().String() == ".cause" }, cmp.Ignore())

func TestStreamSpeechCancelReachesUpstream(t *testing.T) {
	t.Parallel()
	upstreamDone := make(chan struct{})
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		defer close(upstreamDone)
		w.WriteHeader(200)
		writeSplit(w, audioFrame([]byte{1, 2}), 1<<20)
		<-r.Context().Done() // a slow upstream: it only stops when the client goes away
	})
	ctx, cancel := context.WithCancel(t.Context())
	s, err := newClient(t, srv).StreamSpeech(ctx, &smallest.SpeechRequest{Text: "x", VoiceOptions: smallest.VoiceOptions{VoiceID: "v"}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Next(); err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { _, err := s.Next(); errc <- err }()
	cancel()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Next after cancel = %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Next did not return after the context was cancelled")
	}
	select {
	case <-upstreamDone:
	case <-time.After(5 * time.Second):
		t.Fatal("the upstream request was not ended by the cancel")
	}
}

func TestStreamSpeechDeadline(t *testing.T) {
	t.Parallel()
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	})
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	s, err := newClient(t, srv).StreamSpeech(ctx, &smallest.SpeechRequest{Text: "x", VoiceOptions: smallest.VoiceOptions{VoiceID: "v"}})
	if err == nil {
		defer s.Close()
		_, err = s.Next()
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want context.DeadlineExceeded", err)
	}
}

func TestStreamSpeechIdleTimeout(t *testing.T) {
	t.Parallel()
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(200)
		writeSplit(w, audioFrame([]byte{1, 2}), 1<<20)
		<-r.Context().Done() // then silence
	})
	c := newClient(t, srv, func(cfg *smallest.Config) { cfg.IdleTimeout = 100 * time.Millisecond })
	s, err := c.StreamSpeech(t.Context(), &smallest.SpeechRequest{Text: "x", VoiceOptions: smallest.VoiceOptions{VoiceID: "v"}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	_, err = readAll(s)
	if !smallest.IsKind(err, smallest.KindTimeout) {
		t.Fatalf("err = %v, want a KindTimeout error", err)
	}
}

func TestStreamSpeechUnreachable(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens here now
	c, err := smallest.New(smallest.Config{BaseURL: "http://" + addr, HTTPClient: &http.Client{},
		Credential: func(context.Context) string { return testKey }})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.StreamSpeech(t.Context(), &smallest.SpeechRequest{Text: "x", VoiceOptions: smallest.VoiceOptions{VoiceID: "v"}})
	if !smallest.IsKind(err, smallest.KindUnreachable) {
		t.Fatalf("err = %v, want a KindUnreachable error", err)
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	t.Parallel()
	cred := func(context.Context) string { return "" }
	tests := []struct {
		name string
		cfg  smallest.Config
	}{
		{name: "relative URL", cfg: smallest.Config{BaseURL: "api.smallest.ai", HTTPClient: http.DefaultClient, Credential: cred}},
		{name: "ftp URL", cfg: smallest.Config{BaseURL: "ftp://x", HTTPClient: http.DefaultClient, Credential: cred}},
		{name: "no HTTP client", cfg: smallest.Config{BaseURL: "https://x", Credential: cred}},
		{name: "no credential", cfg: smallest.Config{BaseURL: "https://x", HTTPClient: http.DefaultClient}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if _, err := smallest.New(tt.cfg); err == nil {
				t.Fatal("New accepted a bad config")
			}
		})
	}
}

// TestConnectionsAreReused checks that consecutive calls share one upstream
// connection: a new one per call would cost a TCP and TLS handshake before
// every synthesis's first audio.
func TestConnectionsAreReused(t *testing.T) {
	t.Parallel()
	var conns atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if r.URL.Path == "/waves/v1/stt/" {
			io.WriteString(w, "{\"status\":\"success\",\"transcription\":\"hi\"}\n\n")
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		writeSplit(w, audioFrame([]byte{1, 2})+doneFrame, 1<<20)
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	c := newClient(t, srv)
	for range 3 {
		s, err := c.StreamSpeech(t.Context(), &smallest.SpeechRequest{Text: "x", VoiceOptions: smallest.VoiceOptions{VoiceID: "v"}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := readAll(s); !errors.Is(err, io.EOF) {
			t.Fatal(err)
		}
		s.Close()
		if _, err := c.Transcribe(t.Context(), &smallest.TranscribeRequest{Audio: bytes.NewReader([]byte("x")), AudioSize: 1}); err != nil {
			t.Fatal(err)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("%d upstream connections for 6 calls, want 1", n)
	}
}

// TestNextJoinsOnlyFramesAlreadyReceived checks that Next hands over the
// frames that have arrived together as one piece, never waits for one that
// has not, and returns the audio before a failure ahead of the failure.
func TestNextJoinsOnlyFramesAlreadyReceived(t *testing.T) {
	t.Parallel()
	pcm := chunks(4, 200)
	tests := []struct {
		name string
		// burst is written at once; the rest only after the first Next.
		burst, rest string
		want        [][]byte // what successive Next calls return
		wantErr     smallest.Kind
	}{
		{
			name:  "a burst, then a frame later",
			burst: audioFrame(pcm[0]) + audioFrame(pcm[1]) + audioFrame(pcm[2]),
			rest:  audioFrame(pcm[3]) + doneFrame,
			want:  [][]byte{bytes.Join(pcm[:3], nil), pcm[3]},
		},
		{
			name:  "audio and the end together",
			burst: audioFrame(pcm[0]) + audioFrame(pcm[1]) + doneFrame,
			want:  [][]byte{bytes.Join(pcm[:2], nil)},
		},
		{
			name:  "audio, then an error frame in the same burst",
			burst: audioFrame(pcm[0]) + audioFrame(pcm[1]) + "data: {\"status\":\"error\",\"message\":\"synthesis failed\"}\n\n",
			want:  [][]byte{bytes.Join(pcm[:2], nil)}, wantErr: smallest.KindStreamError,
		},
		{
			name:  "a frame cut off after a whole one",
			burst: audioFrame(pcm[0]) + "event: audio\ndata: {\"audio\": \"AAE",
			want:  [][]byte{pcm[0]}, wantErr: smallest.KindStreamBroken,
		},
	}
	for _, tt := range tests {
		for _, reuse := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/reuse=%v", tt.name, reuse), func(t *testing.T) {
				t.Parallel()
				nextJoins(t, tt.burst, tt.rest, tt.want, tt.wantErr, reuse)
			})
		}
	}
}

// nextJoins reads a synthesis whose burst arrives at once and the rest
// after the first piece is read, with Next or, reusing each piece's
// storage for the next, with NextInto.
func nextJoins(t *testing.T, burst, rest string, want [][]byte, wantErr smallest.Kind, reuse bool) {
	release := make(chan struct{})
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		writeSplit(w, burst, 1<<20)
		if rest != "" {
			select {
			case <-release:
			case <-r.Context().Done():
				return
			}
			writeSplit(w, rest, 1<<20)
		}
	})
	s, err := newClient(t, srv).StreamSpeech(t.Context(), &smallest.SpeechRequest{Text: "x", VoiceOptions: smallest.VoiceOptions{VoiceID: "v"}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var got [][]byte
	var last []byte
	for {
		var b []byte
		var err error
		if reuse {
			b, err = s.NextInto(last)
		} else {
			b, err = s.Next() // the first returns before release: it cannot wait for rest
		}
		if len(got) == 0 {
			close(release)
		}
		if err != nil {
			if wantErr == 0 && !errors.Is(err, io.EOF) || wantErr != 0 && !smallest.IsKind(err, wantErr) {
				t.Fatalf("stream ended with %v, want kind %v", err, wantErr)
			}
			break
		}
		if reuse && len(b) <= cap(last) && &b[:1][0] != &last[:1][0] {
			t.Errorf("piece %d: NextInto allocated although the last piece's %d bytes had room for its %d", len(got)+1, cap(last), len(b))
		}
		got = append(got, bytes.Clone(b))
		last = b
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("pieces (-want +got):\n%s", diff)
	}
}

// TestSentButUnansweredIsNotUnreachable: a connection that breaks after the
// request was written may have been acted on, so it must not read as
// "unreachable", which callers may retry for free.
func TestSentButUnansweredIsNotUnreachable(t *testing.T) {
	t.Parallel()
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body) // the whole request arrived
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			conn.Close() // and no answer: an empty reply
		}
	})
	c := newClient(t, srv)
	defer c.Close()
	calls := map[string]func() error{
		"SSE synthesis": func() error {
			_, err := c.StreamSpeech(t.Context(), &smallest.SpeechRequest{Text: "x", VoiceOptions: smallest.VoiceOptions{VoiceID: "v"}})
			return err
		},
		"REST": func() error { _, err := c.ListPronunciationDictionaries(t.Context()); return err },
		"transcription": func() error {
			_, err := c.Transcribe(t.Context(), &smallest.TranscribeRequest{Audio: strings.NewReader("RIFF"), AudioSize: 4, Model: "pulse", Language: "en"})
			return err
		},
		"realtime WebSocket": func() error {
			_, err := c.Listen(t.Context(), &smallest.LiveRequest{Model: "pulse", Language: "en"})
			return err
		},
		"synthesis WebSocket": func() error {
			_, err := c.StreamSpeechText(t.Context(), &smallest.StreamOptions{VoiceOptions: smallest.VoiceOptions{VoiceID: "v"}})
			return err
		},
	}
	for name, call := range calls {
		if err := call(); !smallest.IsKind(err, smallest.KindNoAnswer) {
			t.Errorf("%s: err = %v, want a KindNoAnswer error", name, err)
		}
	}
}
