package smallest_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"testing"
	"testing/iotest"

	"github.com/google/go-cmp/cmp"

	"github.com/speechgate/speechgate/internal/smallest"
)

func ptr[T any](v T) *T { return &v }

func TestTranscribeSendsAudioAndOptions(t *testing.T) {
	t.Parallel()
	audio := bytes.Repeat([]byte("RIFFdata"), 4096)
	var got struct {
		query          url.Values
		body           []byte
		ctype, auth    string
		length         int64
		transferChunks bool
	}
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/waves/v1/stt/" {
			http.NotFound(w, r)
			return
		}
		got.query, got.ctype, got.auth, got.length = r.URL.Query(), r.Header.Get("Content-Type"), r.Header.Get("Authorization"), r.ContentLength
		got.body, _ = io.ReadAll(r.Body)
		w.Header().Set("X-Request-Id", "stt-1")
		io.WriteString(w, `{"status":"success","transcription":"Hello, how are you?",
			"words":[{"start":0.16,"end":1.12,"speaker":0,"speaker_confidence":1,"word":"Hello,","confidence":0.9975}],
			"utterances":[{"start":0.16,"end":2.88,"speaker":0,"text":"Hello, how are you?"}],
			"metadata":{"duration":5.28,"fileSize":465740}}`)
	})
	tests := []struct {
		name       string
		audio      io.Reader
		size       int64
		wantLength int64
	}{
		{name: "known size", audio: bytes.NewReader(audio), size: int64(len(audio)), wantLength: int64(len(audio))},
		// A streamed upload does not know its size: the body goes chunked.
		{name: "unknown size, read in pieces", audio: iotest.HalfReader(bytes.NewReader(audio)), size: -1, wantLength: -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Not parallel: the subtests share the fake's record of the request.
			tr, err := newClient(t, srv).Transcribe(t.Context(), &smallest.TranscribeRequest{
				Audio: tt.audio, AudioSize: tt.size, Model: "pulse", Language: "en",
				WordTimestamps: true, Diarize: true, Encoding: "linear16", SampleRate: 16000,
			})
			if err != nil {
				t.Fatal(err)
			}
			want := &smallest.Transcript{
				Status: "success", Text: "Hello, how are you?", Duration: 5.28, RequestID: "stt-1",
				Words:      []smallest.Word{{Word: "Hello,", Start: 0.16, End: 1.12, Confidence: 0.9975, Speaker: ptr(smallest.Speaker(0)), SpeakerConfidence: 1}},
				Utterances: []smallest.Utterance{{Text: "Hello, how are you?", Start: 0.16, End: 2.88, Speaker: ptr(smallest.Speaker(0))}},
			}
			if diff := cmp.Diff(want, tr); diff != "" {
				t.Errorf("transcript differs (-want +got):\n%s", diff)
			}
			if !bytes.Equal(got.body, audio) {
				t.Errorf("upstream received %d bytes, want the %d sent", len(got.body), len(audio))
			}
			if got.length != tt.wantLength {
				t.Errorf("Content-Length %d, want %d", got.length, tt.wantLength)
			}
			wantQuery := url.Values{
				"model": {"pulse"}, "language": {"en"}, "word_timestamps": {"true"}, "diarize": {"true"},
				"redact_pii": {"false"}, "redact_pci": {"false"}, "emotion_detection": {"false"}, "gender_detection": {"false"},
				"encoding": {"linear16"}, "sample_rate": {"16000"},
			}
			if diff := cmp.Diff(wantQuery, got.query); diff != "" {
				t.Errorf("query differs (-want +got):\n%s", diff)
			}
			if got.ctype != "application/octet-stream" || got.auth != "Bearer "+testKey {
				t.Errorf("Content-Type %q, Authorization %q", got.ctype, got.auth)
			}
		})
	}
}

func TestTranscribeURLAndWebhook(t *testing.T) {
	t.Parallel()
	var body map[string]string
	var query url.Values
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		query = r.URL.Query()
		if r.Header.Get("Content-Type") != "application/json" {
			w.WriteHeader(415)
			return
		}
		json.NewDecoder(r.Body).Decode(&body)
		io.WriteString(w, `{"status":"processing","request_id":"job-7"}`)
	})
	tr, err := newClient(t, srv).Transcribe(t.Context(), &smallest.TranscribeRequest{
		URL: "https://example.com/a.wav", Model: "pulse-pro", Language: "en",
		WebhookURL: "https://hooks.example.com/x", WebhookExtra: map[string]string{"b": "2", "a": "1"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(&smallest.Transcript{Status: "processing", RequestID: "job-7"}, tr); diff != "" {
		t.Errorf("transcript differs (-want +got):\n%s", diff)
	}
	if body["url"] != "https://example.com/a.wav" {
		t.Errorf("body = %v, want the URL as JSON", body)
	}
	if query.Get("webhook_url") != "https://hooks.example.com/x" || query.Get("webhook_extra") != "a:1,b:2" {
		t.Errorf("webhook query = %v", query)
	}
}

func TestTranscriptShapes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		body string
		want *smallest.Transcript
	}{
		{
			name: "pulse pro",
			body: `{"status":"success","transcription":"Hi.","words":[{"word":"Hi.","start":0.24,"end":1.2,"confidence":0.96}],
				"language":"en","metadata":{"duration":5.28,"processing_time_ms":172.11},"request_id":"36e9"}`,
			want: &smallest.Transcript{Status: "success", Text: "Hi.", Language: "en", Duration: 5.28, RequestID: "36e9",
				Words: []smallest.Word{{Word: "Hi.", Start: 0.24, End: 1.2, Confidence: 0.96}}},
		},
		{
			name: "self-host docs shape",
			body: `{"request_id":"r","text":"Hello","confidence":0.9,"duration":2.5,"language":"en","words":[{"word":"Hello","start":0,"end":0.5,"confidence":0.9}]}`,
			want: &smallest.Transcript{Text: "Hello", Language: "en", Duration: 2.5, RequestID: "r",
				Words: []smallest.Word{{Word: "Hello", End: 0.5, Confidence: 0.9}}},
		},
		{
			name: "legacy word_timestamps and string speakers",
			body: `{"status":"success","transcription":"A B","word_timestamps":[{"word":"A","start":0,"end":1,"speaker":"speaker_1"}],
				"utterances":[{"text":"A B","start":0,"end":2,"speaker":"speaker_1"}],"audio_length":2,"gender":"female","emotions":{"happy":0.7}}`,
			want: &smallest.Transcript{Status: "success", Text: "A B", Duration: 2, Gender: "female", Emotions: map[string]float64{"happy": 0.7},
				Words:      []smallest.Word{{Word: "A", End: 1, Speaker: ptr(smallest.Speaker(1))}},
				Utterances: []smallest.Utterance{{Text: "A B", End: 2, Speaker: ptr(smallest.Speaker(1))}}},
		},
		{
			name: "empty transcript is not missing",
			body: `{"status":"success","transcription":"","transcript":"ignored"}`,
			want: &smallest.Transcript{Status: "success"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := newServer(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, tt.body) })
			got, err := newClient(t, srv).Transcribe(t.Context(), &smallest.TranscribeRequest{Audio: bytes.NewReader([]byte("x")), AudioSize: 1})
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("transcript differs (-want +got):\n%s", diff)
			}
		})
	}
}

func TestTranscribeErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		status int
		body   string
		want   smallest.Error
	}{
		{
			name: "413", status: 413, body: `{"error":"File size exceeds maximum limit of 250MB.","request_id":"r-413"}`,
			want: smallest.Error{Kind: smallest.KindHTTP, HTTPStatus: 413, Message: "File size exceeds maximum limit of 250MB.", RequestID: "r-413"},
		},
		{
			name: "self-host license expired", status: 403, body: `{"error":"License expired","code":"LICENSE_EXPIRED","expires_at":"2024-12-31T23:59:59Z"}`,
			want: smallest.Error{Kind: smallest.KindHTTP, HTTPStatus: 403, Code: "LICENSE_EXPIRED", Message: "License expired",
				Details: map[string]string{"expires_at": "2024-12-31T23:59:59Z"}},
		},
		{
			name: "self-host unsupported format", status: 415,
			body: `{"error":"Unsupported audio format","code":"UNSUPPORTED_FORMAT","supported_formats":["wav","mp3","flac","ogg","m4a"]}`,
			want: smallest.Error{Kind: smallest.KindHTTP, HTTPStatus: 415, Code: "UNSUPPORTED_FORMAT", Message: "Unsupported audio format",
				Details: map[string]string{"supported_formats": "wav,mp3,flac,ogg,m4a"}},
		},
		{
			name: "self-host too large", status: 422, body: `{"error":"Audio file too large","code":"FILE_TOO_LARGE","max_size_mb":100}`,
			want: smallest.Error{Kind: smallest.KindHTTP, HTTPStatus: 422, Code: "FILE_TOO_LARGE", Message: "Audio file too large",
				Details: map[string]string{"max_size_mb": "100"}},
		},
		{
			name: "legacy 401 without header", status: 401, body: `{"message":"Unauthorized: No tokens provided"}`,
			want: smallest.Error{Kind: smallest.KindHTTP, HTTPStatus: 401, Message: "Unauthorized: No tokens provided"},
		},
		{
			name: "legacy generic 400", status: 400, body: `{"errors":"Audio data too large","status":"error","message":"Error handling audio data"}`,
			want: smallest.Error{Kind: smallest.KindHTTP, HTTPStatus: 400, Message: "Error handling audio data; Audio data too large"},
		},
		{
			name: "dictionary validation details", status: 400,
			body: `{"error":"Invalid request body","details":[{"code":"too_small","path":["items",0,"word"],"message":"String must contain at least 1 character(s)"}]}`,
			want: smallest.Error{Kind: smallest.KindHTTP, HTTPStatus: 400, Message: "Invalid request body",
				Violations: []smallest.FieldViolation{{Field: "items.0.word", Description: "String must contain at least 1 character(s)"}}},
		},
		{
			name: "200 that is not JSON", status: 200, body: `<html>`,
			want: smallest.Error{Kind: smallest.KindMalformed, Message: "the response was not the expected JSON: invalid character '<' looking for beginning of value"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
				io.Copy(io.Discard, r.Body)
				w.WriteHeader(tt.status)
				io.WriteString(w, tt.body)
			})
			_, err := newClient(t, srv).Transcribe(t.Context(), &smallest.TranscribeRequest{Audio: bytes.NewReader([]byte("x")), AudioSize: 1})
			var got *smallest.Error
			if !errors.As(err, &got) {
				t.Fatalf("err = %v, want *smallest.Error", err)
			}
			want := tt.want
			want.Endpoint = "POST /waves/v1/stt/"
			want.Attempts = 1 // a recording's upload is never retried
			if diff := cmp.Diff(&want, got, cmp.AllowUnexported(smallest.Error{}), cmpIgnoreCause); diff != "" {
				t.Fatalf("error differs (-want +got):\n%s", diff)
			}
		})
	}
}

// TestListVoices: the voice list, with the browsing catalog's description
// and preview where it has them, and without them when it fails.
func TestListVoices(t *testing.T) {
	t.Parallel()
	const voices = `{"voices":[{"voiceId":"avery","displayName":"Avery","tags":{"language":["english"],"accent":"american",` +
		`"gender":"female","age":"young","emotions":[],"usecases":["conversational"]}},{"voiceId":"voice_x","displayName":"Mine","tags":{}}]}`
	const browsing = `{"voices":[{"_id":"1","voiceId":"avery","displayName":"Avery","description":"Warm and young.",` +
		`"audioPreview":"https://cdn.example/avery.mp3","tags":{"age":"young","emotions":[],"language":["english"]}}]}`
	for _, browse := range []bool{true, false} {
		srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
			switch {
			case r.URL.Path == "/waves/v1/lightning-v3.1/get_voices":
				io.WriteString(w, voices)
			case r.URL.Path == "/waves/v1/voice/get-all-models" && browse:
				io.WriteString(w, browsing)
			default:
				w.WriteHeader(http.StatusInternalServerError)
				io.WriteString(w, `{"error":"InternalServerError","message":"no"}`)
			}
		})
		got, err := newClient(t, srv, func(c *smallest.Config) { c.MaxAttempts = 1 }).ListVoices(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		want := []smallest.Voice{
			{VoiceID: "avery", DisplayName: "Avery", Tags: smallest.VoiceTags{Language: []string{"english"}, Accent: "american",
				Gender: "female", Age: "young", Emotions: []string{}, UseCases: []string{"conversational"}}},
			{VoiceID: "voice_x", DisplayName: "Mine"},
		}
		if browse {
			want[0].Description, want[0].PreviewURL = "Warm and young.", "https://cdn.example/avery.mp3"
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Fatalf("browsing catalog %v: voices differ (-want +got):\n%s", browse, diff)
		}
	}
}
