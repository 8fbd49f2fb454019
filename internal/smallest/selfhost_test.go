package smallest_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/speechgate/speechgate/internal/audio"
	"github.com/speechgate/speechgate/internal/smallest"
)

// selfHostFake records one request to a self-hosted server and answers it.
type selfHostFake struct {
	mu      sync.Mutex
	auth    string
	path    string
	query   url.Values
	fields  map[string]string
	audio   []byte
	json    map[string]any
	status  int
	answer  string
	healthy string // the body of GET /health
}

func (f *selfHostFake) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodGet {
		io.WriteString(w, f.healthy)
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.auth, f.path, f.query, f.fields = r.Header.Get("Authorization"), r.URL.Path, r.URL.Query(), map[string]string{}
	mt, params, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	switch mt {
	case "multipart/form-data":
		mr := multipart.NewReader(r.Body, params["boundary"])
		for {
			p, err := mr.NextPart()
			if err != nil {
				break
			}
			b, _ := io.ReadAll(p)
			if p.FormName() == "audio" {
				f.audio = b
			} else {
				f.fields[p.FormName()] = string(b)
			}
		}
	case "application/json":
		json.NewDecoder(r.Body).Decode(&f.json)
	default:
		f.audio, _ = io.ReadAll(r.Body)
	}
	w.WriteHeader(f.status)
	io.WriteString(w, f.answer)
}

func selfHost(t *testing.T, f *selfHostFake, cfg smallest.SelfHostConfig) *smallest.SelfHost {
	t.Helper()
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	cfg.BaseURL, cfg.HTTPClient = srv.URL, srv.Client()
	if cfg.Credential == nil {
		cfg.Credential = func(context.Context) string { return "license-123" }
	}
	s, err := smallest.NewSelfHost(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestSelfHostMultipart(t *testing.T) {
	t.Parallel()
	f := &selfHostFake{status: 200, answer: `{"request_id":"r1","text":"Hello world","confidence":0.9,"duration":2.5,"language":"en",
		"words":[{"word":"Hello","start":0,"end":0.5,"confidence":0.9}],"speakers":[{"speaker":"SPEAKER_01","text":"Hello world","start":0,"end":2.5}]}`}
	s := selfHost(t, f, smallest.SelfHostConfig{TranscribePath: "/v1/listen", Format: smallest.UploadMultipart})
	audio := bytes.Repeat([]byte("RIFF....WAVE"), 50000)
	punctuate := false
	tr, err := s.Transcribe(t.Context(), &smallest.TranscribeRequest{Audio: bytes.NewReader(audio), AudioSize: int64(len(audio)),
		Language: "en", Diarize: true, WordTimestamps: true, NumSpeakers: 2, Punctuate: &punctuate})
	if err != nil {
		t.Fatal(err)
	}
	one := smallest.Speaker(1)
	want := &smallest.Transcript{Text: "Hello world", Language: "en", Duration: 2.5, RequestID: "r1",
		Words:      []smallest.Word{{Word: "Hello", End: 0.5, Confidence: 0.9}},
		Utterances: []smallest.Utterance{{Text: "Hello world", End: 2.5, Speaker: &one}}}
	if d := cmp.Diff(want, tr); d != "" {
		t.Errorf("transcript (-want +got):\n%s", d)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if !bytes.Equal(f.audio, audio) {
		t.Errorf("the server got %d audio bytes, want the %d sent", len(f.audio), len(audio))
	}
	if d := cmp.Diff(map[string]string{"language": "en", "diarize": "true", "timestamps": "true", "num_speakers": "2", "punctuate": "false"}, f.fields); d != "" {
		t.Errorf("form fields (-want +got):\n%s", d)
	}
	if f.auth != "Token license-123" || f.path != "/v1/listen" {
		t.Errorf("Authorization %q, path %q; want the Token scheme on /v1/listen", f.auth, f.path)
	}
}

func TestSelfHostURLAndRaw(t *testing.T) {
	t.Parallel()
	f := &selfHostFake{status: 200, answer: `{"job_id":"job-9","status":"processing"}`}
	s := selfHost(t, f, smallest.SelfHostConfig{TranscribePath: "/v1/listen", Format: smallest.UploadMultipart, AuthScheme: "Bearer"})
	tr, err := s.Transcribe(t.Context(), &smallest.TranscribeRequest{URL: "https://x/a.wav", Language: "de", WebhookURL: "https://hook/x"})
	if err != nil {
		t.Fatal(err)
	}
	if tr.Status != "processing" || tr.RequestID != "job-9" {
		t.Errorf("transcript = %+v, want the accepted job", tr)
	}
	f.mu.Lock()
	if f.json["url"] != "https://x/a.wav" || f.json["callback_url"] != "https://hook/x" || f.auth != "Bearer license-123" {
		t.Errorf("JSON body %v, Authorization %q", f.json, f.auth)
	}
	f.mu.Unlock()

	raw := &selfHostFake{status: 200, answer: `{"status":"success","transcription":"hi","word_timestamps":[{"word":"hi","start":0,"end":1}],"metadata":{"duration":1}}`}
	rs := selfHost(t, raw, smallest.SelfHostConfig{TranscribePath: "/api/v1/lightning/get_text", Format: smallest.UploadRaw,
		Credential: func(context.Context) string { return "" }})
	tr, err = rs.Transcribe(t.Context(), &smallest.TranscribeRequest{Audio: bytes.NewReader([]byte{1, 2}), AudioSize: 2, Language: "en", WordTimestamps: true})
	if err != nil {
		t.Fatal(err)
	}
	if tr.Text != "hi" || len(tr.Words) != 1 {
		t.Errorf("transcript = %+v", tr)
	}
	raw.mu.Lock()
	defer raw.mu.Unlock()
	wantQuery := url.Values{"model": {"lightning"}, "language": {"en"}, "word_timestamps": {"true"}, "gender_detection": {"false"}, "emotion_detection": {"false"}}
	if d := cmp.Diff(wantQuery, raw.query); d != "" || raw.auth != "" || !bytes.Equal(raw.audio, []byte{1, 2}) {
		t.Errorf("raw request: query diff %s, Authorization %q, body %v", d, raw.auth, raw.audio)
	}
}

func TestSelfHostUnsupported(t *testing.T) {
	t.Parallel()
	f := &selfHostFake{}
	multi := selfHost(t, f, smallest.SelfHostConfig{TranscribePath: "/v1/listen", Format: smallest.UploadMultipart})
	raw := selfHost(t, f, smallest.SelfHostConfig{TranscribePath: "/x", Format: smallest.UploadRaw})
	all := &smallest.TranscribeRequest{Model: "pulse-pro", RedactPII: true, RedactPCI: true, Encoding: "linear16", EmotionDetection: true,
		GenderDetection: true, WebhookMethod: "GET", WebhookExtra: map[string]string{"a": "b"}, URL: "https://x", Diarize: true, WebhookURL: "https://h"}
	if d := cmp.Diff([]string{"model", "redact_pii", "redact_pci", "encoding", "webhook_method", "webhook_extra", "emotion_detection", "gender_detection"},
		multi.Unsupported(all)); d != "" {
		t.Errorf("multipart unsupported (-want +got):\n%s", d)
	}
	if d := cmp.Diff([]string{"model", "redact_pii", "redact_pci", "encoding", "webhook_method", "webhook_extra", "url", "diarize", "webhook_url"},
		raw.Unsupported(all)); d != "" {
		t.Errorf("raw unsupported (-want +got):\n%s", d)
	}
	if got := multi.Unsupported(&smallest.TranscribeRequest{Model: "pulse", Language: "en", Diarize: true, WordTimestamps: true}); len(got) != 0 {
		t.Errorf("plain request reported unsupported: %v", got)
	}
}

func TestSelfHostErrorsAndHealth(t *testing.T) {
	t.Parallel()
	f := &selfHostFake{status: 403, answer: `{"error":"License expired","code":"LICENSE_EXPIRED","expires_at":"2024-12-31T23:59:59Z"}`, healthy: `{"status":"healthy"}`}
	s := selfHost(t, f, smallest.SelfHostConfig{TranscribePath: "/v1/listen", Format: smallest.UploadMultipart})
	_, err := s.Transcribe(t.Context(), &smallest.TranscribeRequest{Audio: bytes.NewReader([]byte("x")), AudioSize: 1, Language: "en"})
	var e *smallest.Error
	if !errors.As(err, &e) || e.HTTPStatus != 403 || e.Code != "LICENSE_EXPIRED" || e.Details["expires_at"] != "2024-12-31T23:59:59Z" {
		t.Fatalf("err = %#v", err)
	}
	if err := s.Healthy(t.Context(), "/health"); err != nil {
		t.Errorf("healthy server: %v", err)
	}
	f.healthy = `{"status":"unhealthy","reason":"No ASR workers available"}`
	if err := s.Healthy(t.Context(), "/health"); err == nil {
		t.Error("an unhealthy body was read as healthy")
	}
}

func TestSelfHostSpeech(t *testing.T) {
	t.Parallel()
	pcm := make([]byte, 4000)
	for i := range pcm {
		pcm[i] = byte(i * 7)
	}
	wav := func(rate, bits int) []byte {
		return append(audio.AppendWAVHeader(nil, rate, 1, bits, uint32(len(pcm))), pcm...)
	}
	tests := []struct {
		name     string
		body     []byte
		pieces   int // the answer is written, and flushed, in this many odd-sized writes
		wantRate int
		wantKind smallest.Kind // non-zero: opening fails so
	}{
		{name: "WAV header gives the rate", body: wav(16000, 16), pieces: 1, wantRate: 16000},
		{name: "headerless audio is at the configured rate", body: pcm, pieces: 1, wantRate: 22050},
		{name: "odd-sized writes keep samples whole", body: wav(8000, 16), pieces: 7, wantRate: 8000},
		{name: "8-bit WAV is refused", body: wav(16000, 8), pieces: 1, wantKind: smallest.KindMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var got map[string]string
			var auth string
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				auth = r.Header.Get("Authorization")
				if r.URL.Path != "/v1/speak" || json.NewDecoder(r.Body).Decode(&got) != nil {
					http.Error(w, "not found", http.StatusNotFound)
					return
				}
				w.Header().Set("Content-Type", "audio/wav")
				size := len(tt.body)/tt.pieces | 1 // odd, so that a sample straddles writes
				for b := tt.body; len(b) > 0; {
					n := min(size, len(b))
					w.Write(b[:n])
					w.(http.Flusher).Flush()
					b = b[n:]
				}
			}))
			t.Cleanup(srv.Close)
			s, err := smallest.NewSelfHost(smallest.SelfHostConfig{BaseURL: srv.URL, HTTPClient: srv.Client(), TranscribePath: "/v1/listen",
				Format: smallest.UploadMultipart, Credential: func(context.Context) string { return "license-123" },
				SpeakPath: "/v1/speak", SpeakSampleRate: 22050})
			if err != nil {
				t.Fatal(err)
			}
			st, err := s.StreamSpeech(t.Context(), &smallest.SpeechRequest{Text: "Hello there.", VoiceOptions: smallest.VoiceOptions{VoiceID: "default"}})
			if tt.wantKind != 0 {
				if !smallest.IsKind(err, tt.wantKind) {
					t.Fatalf("StreamSpeech error = %v, want kind %v", err, tt.wantKind)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			var out []byte
			for {
				b, err := st.Next()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				if len(b)%2 != 0 {
					t.Errorf("a piece of %d bytes splits a sample", len(b))
				}
				out = append(out, b...)
			}
			if !bytes.Equal(out, pcm) {
				t.Errorf("got %d bytes of audio, want the %d sent, without the header", len(out), len(pcm))
			}
			if st.SampleRate != tt.wantRate {
				t.Errorf("SampleRate = %d, want %d", st.SampleRate, tt.wantRate)
			}
			if d := cmp.Diff(map[string]string{"text": "Hello there.", "voice": "default"}, got); d != "" || auth != "Token license-123" {
				t.Errorf("request body (-want +got):\n%s; Authorization %q", d, auth)
			}
		})
	}
}

func TestSelfHostWithoutSpeech(t *testing.T) {
	t.Parallel()
	s := selfHost(t, &selfHostFake{status: 200}, smallest.SelfHostConfig{TranscribePath: "/v1/listen", Format: smallest.UploadMultipart})
	if caps := s.Capabilities(); caps.Synthesis || caps.StreamingSynthesis || caps.SynthesisMissing == "" {
		t.Errorf("capabilities without a speech path = %+v, want no synthesis, with the reason", caps)
	}
	if _, err := s.StreamSpeech(t.Context(), &smallest.SpeechRequest{Text: "hi"}); err == nil {
		t.Error("StreamSpeech without a speech path succeeded")
	}
}
