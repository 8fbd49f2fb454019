package emulator_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"

	"github.com/speechgate/speechgate/internal/emulator"
	"github.com/speechgate/speechgate/internal/smallest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// client returns a Smallest client of a fresh emulator: the emulator is
// checked through the same client the gateway uses.
func client(t *testing.T, opts emulator.Options) *smallest.Client {
	t.Helper()
	srv := httptest.NewServer(emulator.New(opts))
	t.Cleanup(srv.Close)
	c, err := smallest.New(smallest.Config{BaseURL: srv.URL, HTTPClient: srv.Client(),
		Credential: func(context.Context) string { return "any-key" }})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func synthesize(t *testing.T, c *smallest.Client, req *smallest.SpeechRequest) ([]byte, int, error) {
	t.Helper()
	s, err := c.StreamSpeech(t.Context(), req)
	if err != nil {
		return nil, 0, err
	}
	defer s.Close()
	var out []byte
	frames := 0
	for {
		b, err := s.Next()
		if errors.Is(err, io.EOF) {
			return out, frames, nil
		}
		if err != nil {
			return out, frames, err
		}
		frames++
		out = append(out, b...)
	}
}

func TestSynthesisFormats(t *testing.T) {
	t.Parallel()
	text := strings.Repeat("a", 50) // 50 chars × 60 ms = 3 s of audio
	tests := []struct {
		format    string
		rate      int
		wantBytes int
		check     func(t *testing.T, b []byte)
	}{
		{format: "pcm", rate: 24000, wantBytes: 3 * 24000 * 2},
		{format: "pcm", rate: 8000, wantBytes: 3 * 8000 * 2},
		{format: "ulaw", rate: 8000, wantBytes: 3 * 8000},
		{format: "alaw", rate: 16000, wantBytes: 3 * 16000},
		{format: "wav", rate: 44100, wantBytes: 44 + 3*44100*2, check: func(t *testing.T, b []byte) {
			if string(b[:4]) != "RIFF" || string(b[8:12]) != "WAVE" || binary.LittleEndian.Uint32(b[24:]) != 44100 {
				t.Errorf("not a 44.1 kHz WAV header: %x", b[:44])
			}
			if got := binary.LittleEndian.Uint32(b[40:]); int(got) != len(b)-44 {
				t.Errorf("data size %d, want %d", got, len(b)-44)
			}
		}},
		{format: "mp3", rate: 24000, wantBytes: (3*24000 + 575) / 576 * 96, check: func(t *testing.T, b []byte) {
			for off := 0; off < len(b); off += 96 {
				if b[off] != 0xFF || b[off+1]&0xE0 != 0xE0 {
					t.Fatalf("no MP3 frame sync at %d", off)
				}
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.format+"/"+strconv.Itoa(tt.rate), func(t *testing.T) {
			t.Parallel()
			b, frames, err := synthesize(t, client(t, emulator.Options{}), &smallest.SpeechRequest{Text: text, VoiceOptions: smallest.VoiceOptions{VoiceID: "avery", SampleRate: tt.rate}, OutputFormat: tt.format})
			if err != nil {
				t.Fatal(err)
			}
			if len(b) != tt.wantBytes {
				t.Errorf("got %d bytes, want %d", len(b), tt.wantBytes)
			}
			if frames < 2 {
				t.Errorf("got %d frames; the audio must be streamed in chunks", frames)
			}
			if tt.check != nil {
				tt.check(t, b)
			}
		})
	}
}

func TestSynthesisPacing(t *testing.T) {
	t.Parallel()
	// 10 chars × 60 ms = 600 ms of audio, sent at 4× real time: at least 150 ms.
	c := client(t, emulator.Options{Pace: 4, FirstByteDelay: 20 * time.Millisecond})
	start := time.Now()
	if _, _, err := synthesize(t, c, &smallest.SpeechRequest{Text: "abcdefghij", VoiceOptions: smallest.VoiceOptions{VoiceID: "avery", SampleRate: 8000}}); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Fatalf("600 ms of audio at pace 4 took %v; pacing is not applied", d)
	}
}

func TestSynthesisErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		req  smallest.SpeechRequest
		want smallest.Error
	}{
		{name: "unknown voice", req: smallest.SpeechRequest{Text: "hi", VoiceOptions: smallest.VoiceOptions{VoiceID: "nobody"}},
			want: smallest.Error{HTTPStatus: 400, Message: "Invalid Voice ID", Violations: []smallest.FieldViolation{{Field: "voice_id", Description: "Invalid Voice ID"}}}},
		{name: "mulaw is not a format", req: smallest.SpeechRequest{Text: "hi", VoiceOptions: smallest.VoiceOptions{VoiceID: "avery"}, OutputFormat: "mulaw"},
			want: smallest.Error{HTTPStatus: 400, Message: "Invalid enum value. Expected 'wav' | 'ulaw' | 'alaw' | 'pcm' | 'mp3', received 'mulaw'",
				Violations: []smallest.FieldViolation{{Field: "output_format", Description: "Invalid enum value. Expected 'wav' | 'ulaw' | 'alaw' | 'pcm' | 'mp3', received 'mulaw'"}}}},
		{name: "empty text", req: smallest.SpeechRequest{Text: " ", VoiceOptions: smallest.VoiceOptions{VoiceID: "avery"}},
			want: smallest.Error{HTTPStatus: 400, Message: "The 'text' field is required.; InvalidRequest"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, _, err := synthesize(t, client(t, emulator.Options{}), &tt.req)
			var got *smallest.Error
			if !errors.As(err, &got) {
				t.Fatalf("err = %v, want *smallest.Error", err)
			}
			got.RequestID, got.Endpoint, got.Kind = "", "", 0
			want := tt.want
			want.Attempts = 1 // a 400 is not retried
			if diff := cmp.Diff(&want, got, cmp.AllowUnexported(smallest.Error{}), cmp.FilterPath(func(p cmp.Path) bool { return p.Last().String() == ".cause" }, cmp.Ignore())); diff != "" {
				t.Fatalf("error differs (-want +got):\n%s", diff)
			}
		})
	}
}

func TestRequiresAKey(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(emulator.New(emulator.Options{}))
	t.Cleanup(srv.Close)
	resp, err := srv.Client().Post(srv.URL+"/waves/v1/tts/live", "application/json", strings.NewReader(`{"text":"hi","voice_id":"avery"}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(string(body), `"error":"Unauthorized"`) {
		t.Fatalf("got %d %s, want the documented 401 body", resp.StatusCode, body)
	}
}

func TestTranscriptionReadsBackSynthesizedText(t *testing.T) {
	t.Parallel()
	c := client(t, emulator.Options{})
	text := "Hello from the emulator, où est la gare?"
	for _, format := range []string{"wav", "pcm"} {
		t.Run(format, func(t *testing.T) {
			t.Parallel()
			wav, _, err := synthesize(t, c, &smallest.SpeechRequest{Text: text, VoiceOptions: smallest.VoiceOptions{VoiceID: "avery", SampleRate: 16000}, OutputFormat: format})
			if err != nil {
				t.Fatal(err)
			}
			tr, err := c.Transcribe(t.Context(), &smallest.TranscribeRequest{Audio: bytes.NewReader(wav), AudioSize: int64(len(wav)),
				Model: "pulse", Language: "en", WordTimestamps: true, Diarize: true, Encoding: "linear16", SampleRate: 16000})
			if err != nil {
				t.Fatal(err)
			}
			if tr.Text != text {
				t.Fatalf("transcript %q, want the synthesized text %q", tr.Text, text)
			}
			if want := float64(len([]rune(text))) * 0.06; tr.Duration < want-0.01 || tr.Duration > want+0.01 {
				t.Errorf("duration %.2f s, want %.2f", tr.Duration, want)
			}
			if len(tr.Words) != len(strings.Fields(text)) || tr.Words[0].Speaker == nil {
				t.Errorf("words = %+v; want one per word, with speakers", tr.Words)
			}
		})
	}
}

func TestTranscriptionLimitsAndErrors(t *testing.T) {
	t.Parallel()
	c := client(t, emulator.Options{})
	tests := []struct {
		name       string
		req        smallest.TranscribeRequest
		wantStatus int
	}{
		{name: "over 250 MB", req: smallest.TranscribeRequest{Audio: io.LimitReader(zeros{}, emulator.MaxUpload+1), AudioSize: -1, Model: "pulse", Language: "en"}, wantStatus: 413},
		{name: "no model", req: smallest.TranscribeRequest{Audio: strings.NewReader("x"), AudioSize: 1, Language: "en"}, wantStatus: 400},
		{name: "pro is English only", req: smallest.TranscribeRequest{Audio: strings.NewReader("x"), AudioSize: 1, Model: "pulse-pro", Language: "de"}, wantStatus: 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := c.Transcribe(t.Context(), &tt.req)
			var e *smallest.Error
			if !errors.As(err, &e) || e.HTTPStatus != tt.wantStatus || e.RequestID == "" {
				t.Fatalf("err = %v, want HTTP %d with a request id", err, tt.wantStatus)
			}
		})
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

func TestVoicesAndRetiredRoutes(t *testing.T) {
	t.Parallel()
	c := client(t, emulator.Options{})
	voices, err := c.ListVoices(t.Context())
	if err != nil || len(voices) < 5 {
		t.Fatalf("ListVoices = %d voices, %v", len(voices), err)
	}
	srv := httptest.NewServer(emulator.New(emulator.Options{}))
	t.Cleanup(srv.Close)
	resp, err := srv.Client().Post(srv.URL+"/waves/v1/lightning-v2/get_speech", "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusGone || !strings.Contains(string(body), "MODEL_DEPRECATED") {
		t.Fatalf("retired route: %d %s", resp.StatusCode, body)
	}
}

func TestParseFaults(t *testing.T) {
	t.Parallel()
	got, err := emulator.ParseFaults("http-503=0.02, reset-after-3=0.01,ws-close-1008=0.5")
	if err != nil {
		t.Fatal(err)
	}
	want := []emulator.FaultRate{{Fault: "http-503", Rate: 0.02}, {Fault: "reset-after-3", Rate: 0.01}, {Fault: "ws-close-1008", Rate: 0.5}}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
	for _, bad := range []string{"http-999=0.1", "reset-after-x=0.1", "http-503", "http-503=2", "http-503=0.6,reset=0.6"} {
		if _, err := emulator.ParseFaults(bad); err == nil {
			t.Errorf("ParseFaults(%q) accepted it", bad)
		}
	}
}

// TestFaultsByKeyAndRate: a key names its fault; configured rates pick one
// for a share of the other requests.
func TestFaultsByKeyAndRate(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(emulator.New(emulator.Options{Faults: []emulator.FaultRate{{Fault: "http-503", Rate: 0.5}}}))
	defer srv.Close()
	get := func(key string) int {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"/waves/v1/lightning-v3.1/get_voices", nil)
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := get(emulator.FaultPrefix + "http-429"); code != http.StatusTooManyRequests {
		t.Errorf("a fault-http-429 key got %d", code)
	}
	failed := 0
	for range 200 {
		if get("ordinary-key") == http.StatusServiceUnavailable {
			failed++
		}
	}
	if failed < 60 || failed > 140 {
		t.Errorf("%d of 200 requests failed at a rate of 0.5", failed)
	}
}

// TestTranscribeRefusesWhatPulseCannotDecode: text, or raw audio without
// its encoding, is refused as Pulse would; containers and raw audio with
// its encoding are heard.
func TestTranscribeRefusesWhatPulseCannotDecode(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(emulator.New(emulator.Options{}))
	defer srv.Close()
	tests := []struct {
		name  string
		body  []byte
		query string
		want  int
	}{
		{"a README", []byte("# speechgate\n\nspeechgate puts Smallest AI's speech APIs behind gRPC."), "", 400},
		{"raw μ-law without its encoding", bytes.Repeat([]byte{0xFF, 0x7F}, 4000), "", 400},
		{"raw μ-law with its encoding", bytes.Repeat([]byte{0xFF, 0x7F}, 4000), "&encoding=mulaw&sample_rate=8000", 200},
		{"an MP3", append([]byte("ID3\x04\x00\x00\x00\x00\x00\x00"), make([]byte, 1000)...), "", 200},
	}
	for _, tt := range tests {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/waves/v1/stt/?model=pulse&language=en"+tt.query, bytes.NewReader(tt.body))
		req.Header.Set("Authorization", "Bearer k")
		req.Header.Set("Content-Type", "application/octet-stream")
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tt.want {
			t.Errorf("%s: %d %s, want %d", tt.name, resp.StatusCode, body, tt.want)
		}
	}
}
