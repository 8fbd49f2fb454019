package speech_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/speechgate/speechgate/internal/gatewaytest"
	"github.com/speechgate/speechgate/internal/smallest"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	speechv1 "github.com/speechgate/speechgate/gen/speech/v1"
	"github.com/speechgate/speechgate/internal/emulator"
	"github.com/speechgate/speechgate/server"
)

func en() *speechv1.TranscriptionConfig { return &speechv1.TranscriptionConfig{Language: "en"} }

func TestTranscribeWhatWasSynthesized(t *testing.T) {
	t.Parallel()
	g := gatewaytest.Start(t, emulator.New(emulator.Options{}), gatewaytest.Options{})
	ctx := gatewaytest.WithKey(t.Context(), callerKey)
	const text = "The quick brown fox jumps over the lazy dog."
	spoken := gatewaytest.Synthesize(ctx, g.Synth, &speechv1.SynthesizeRequest{Text: text, VoiceId: "avery",
		Encoding: speechv1.AudioEncoding_AUDIO_ENCODING_WAV, SampleRateHz: 16000})
	if spoken.Err != nil {
		t.Fatal(spoken.Err)
	}
	resp, err := g.Trans.Transcribe(ctx, &speechv1.TranscribeRequest{
		Source: &speechv1.TranscribeRequest_Audio{Audio: spoken.Bytes()},
		Config: &speechv1.TranscriptionConfig{Language: "en", WordTimestamps: true, Diarize: true},
	})
	if err != nil {
		t.Fatal(err)
	}
	tr := resp.GetTranscript()
	if tr.GetText() != text || tr.GetStatus() != speechv1.TranscriptionStatus_TRANSCRIPTION_STATUS_COMPLETED {
		t.Fatalf("transcript %q (%v), want %q", tr.GetText(), tr.GetStatus(), text)
	}
	if tr.GetAudioDurationMs() != spoken.Totals.GetAudioDurationMs() {
		t.Errorf("transcribed %d ms of audio; %d ms were synthesized", tr.GetAudioDurationMs(), spoken.Totals.GetAudioDurationMs())
	}
	words := tr.GetWords()
	if len(words) != 9 || words[0].GetWord() != "The" || words[0].Speaker == nil || words[8].GetEndMs() != tr.GetAudioDurationMs() {
		t.Errorf("words = %v", words)
	}
	if len(tr.GetUtterances()) != 1 {
		t.Errorf("utterances = %v", tr.GetUtterances())
	}
}

// recordSTT is an independent stand-in for POST /waves/v1/stt/ that records
// the request and answers with a fixed body.
type recordSTT struct {
	hits   atomic.Int32
	query  atomic.Value // url.Values
	body   atomic.Value // []byte
	status int
	answer string
}

func (f *recordSTT) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.hits.Add(1)
	f.query.Store(r.URL.Query())
	b, _ := io.ReadAll(r.Body)
	f.body.Store(b)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(f.status)
	io.WriteString(w, f.answer)
}

func TestTranscribeMapsOptionsAndResponse(t *testing.T) {
	t.Parallel()
	fake := &recordSTT{status: 200, answer: `{"status":"success","transcription":"Hello, world.",
		"words":[{"start":0.16,"end":1.125,"speaker":1,"speaker_confidence":0.5,"word":"Hello,","confidence":0.9975}],
		"utterances":[{"start":0.16,"end":2.88,"speaker":"speaker_1","text":"Hello, world."}],
		"gender":"male","emotions":{"calm":0.25},"metadata":{"duration":5.28,"fileSize":4}}`}
	g := gatewaytest.Start(t, fake, gatewaytest.Options{})
	resp, err := g.Trans.Transcribe(gatewaytest.WithKey(t.Context(), callerKey), &speechv1.TranscribeRequest{
		Source: &speechv1.TranscribeRequest_Audio{Audio: []byte{1, 2, 3, 4}},
		Config: &speechv1.TranscriptionConfig{Language: "hi", WordTimestamps: true, Diarize: true, RedactPii: true, GenderDetection: true,
			EmotionDetection: true, Encoding: speechv1.AudioEncoding_AUDIO_ENCODING_MULAW, SampleRateHz: 8000},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := &speechv1.Transcript{
		Status: speechv1.TranscriptionStatus_TRANSCRIPTION_STATUS_COMPLETED, Text: "Hello, world.", AudioDurationMs: 5280,
		Words:      []*speechv1.Word{{Word: "Hello,", StartMs: 160, EndMs: 1125, Confidence: 0.9975, Speaker: ptr[int32](1), SpeakerConfidence: 0.5}},
		Utterances: []*speechv1.Utterance{{Text: "Hello, world.", StartMs: 160, EndMs: 2880, Speaker: ptr[int32](1)}},
		Gender:     "male", Emotions: map[string]float64{"calm": 0.25},
	}
	if d := gatewaytest.Diff(want, resp.GetTranscript()); d != "" {
		t.Errorf("transcript (-want +got):\n%s", d)
	}
	wantQuery := url.Values{"model": {"pulse"}, "language": {"hi"}, "word_timestamps": {"true"}, "diarize": {"true"},
		"redact_pii": {"true"}, "redact_pci": {"false"}, "emotion_detection": {"true"}, "gender_detection": {"true"},
		"encoding": {"mulaw"}, "sample_rate": {"8000"}}
	if d := gatewaytest.Diff(wantQuery, fake.query.Load()); d != "" {
		t.Errorf("upstream query (-want +got):\n%s", d)
	}
	if b := fake.body.Load().([]byte); !bytes.Equal(b, []byte{1, 2, 3, 4}) {
		t.Errorf("upstream got body %v", b)
	}
}

func TestTranscribeValidatesBeforeCallingUpstream(t *testing.T) {
	t.Parallel()
	fake := &recordSTT{status: 200, answer: `{}`}
	g := gatewaytest.Start(t, fake, gatewaytest.Options{})
	audio := &speechv1.TranscribeRequest_Audio{Audio: []byte{1}}
	pro := speechv1.TranscriptionModel_TRANSCRIPTION_MODEL_PULSE_PRO
	tests := []struct {
		name string
		req  *speechv1.TranscribeRequest
		want []*errdetails.BadRequest_FieldViolation
	}{
		{
			name: "nothing",
			req:  &speechv1.TranscribeRequest{},
			want: []*errdetails.BadRequest_FieldViolation{
				{Field: "source", Reason: "REQUIRED", Description: "set audio (the recording's bytes) or url"},
				{Field: "config.language", Reason: "REQUIRED", Description: "is required: one of en, hi, de, es, ru, it, fr, nl, pt, uk, pl, cs, sk, ro, fi, sv, bg, hu, lt, zh, ja, ko, multi-eu, multi-asian, multi-indic"},
			},
		},
		{
			name: "options of the self-hosted server only",
			req:  &speechv1.TranscribeRequest{Source: audio, Config: &speechv1.TranscriptionConfig{Language: "en", NumSpeakers: 2, Punctuate: proto.Bool(false)}},
			want: []*errdetails.BadRequest_FieldViolation{
				{Field: "config.num_speakers", Reason: "NOT_ALLOWED", Description: "is not supported by Smallest's cloud, which this gateway uses"},
				{Field: "config.punctuate", Reason: "NOT_ALLOWED", Description: "is not supported by Smallest's cloud, which this gateway uses"},
			},
		},
		{
			name: "headerless audio needs its rate",
			req:  &speechv1.TranscribeRequest{Source: audio, Config: &speechv1.TranscriptionConfig{Language: "en", Encoding: speechv1.AudioEncoding_AUDIO_ENCODING_PCM_S16LE}},
			want: []*errdetails.BadRequest_FieldViolation{{Field: "config.sample_rate_hz", Reason: "REQUIRED",
				Description: "is required with encoding AUDIO_ENCODING_PCM_S16LE: headerless audio does not say its rate"}},
		},
		{
			name: "pro limits",
			req: &speechv1.TranscribeRequest{Source: &speechv1.TranscribeRequest_Url{Url: "ftp://x"},
				Config: &speechv1.TranscriptionConfig{Model: pro, Language: "de", Diarize: true, GenderDetection: true, SampleRateHz: 12345}},
			want: []*errdetails.BadRequest_FieldViolation{
				{Field: "url", Reason: "BAD_FORMAT", Description: "must be an absolute http or https URL"},
				{Field: "config.language", Reason: "NOT_ALLOWED", Description: `must be "en" with TRANSCRIPTION_MODEL_PULSE_PRO, got "de"`},
				{Field: "config.diarize", Reason: "CONFLICT", Description: "is not supported by TRANSCRIPTION_MODEL_PULSE_PRO"},
				{Field: "config.gender_detection", Reason: "CONFLICT", Description: "is not supported by TRANSCRIPTION_MODEL_PULSE_PRO"},
				{Field: "config.model", Reason: "CONFLICT", Description: "TRANSCRIPTION_MODEL_PULSE_PRO cannot fetch a url; send the audio instead"},
				{Field: "config.sample_rate_hz", Reason: "NOT_ALLOWED", Description: "must be one of 8000, 16000, 22050, 24000, 44100, 48000, got 12345"},
			},
		},
		{
			name: "webhooks",
			req: &speechv1.TranscribeRequest{Source: audio, Config: &speechv1.TranscriptionConfig{Language: "en", WebhookUrl: "https://h.example/x",
				WebhookMethod: "PUT", WebhookExtra: map[string]string{"ok": "v", "bad key": "v", "k": "a,b"}}},
			want: []*errdetails.BadRequest_FieldViolation{
				{Field: "config.webhook_url", Reason: "CONFLICT", Description: "is only supported by TRANSCRIPTION_MODEL_PULSE_PRO"},
				{Field: "config.webhook_method", Reason: "NOT_ALLOWED", Description: `must be "POST" or "GET", got "PUT"`},
				{Field: `config.webhook_extra["bad key"]`, Reason: "BAD_FORMAT", Description: "keys must be 1 to 64 characters from [A-Za-z0-9_.-]"},
				{Field: `config.webhook_extra["k"]`, Reason: "BAD_FORMAT", Description: "values must not contain ',' or ':', which Smallest uses as separators"},
			},
		},
		{
			name: "empty audio, method without webhook",
			req: &speechv1.TranscribeRequest{Source: &speechv1.TranscribeRequest_Audio{},
				Config: &speechv1.TranscriptionConfig{Language: "en", Encoding: speechv1.AudioEncoding_AUDIO_ENCODING_OPUS, WebhookMethod: "GET"}},
			want: []*errdetails.BadRequest_FieldViolation{
				{Field: "audio", Reason: "REQUIRED", Description: "must not be empty"},
				{Field: "config.webhook_method", Reason: "CONFLICT", Description: "is only used with webhook_url"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := g.Trans.Transcribe(gatewaytest.WithKey(t.Context(), callerKey), tt.req)
			if status.Code(err) != codes.InvalidArgument {
				t.Fatalf("err = %v, want InvalidArgument", err)
			}
			if d := gatewaytest.Diff(tt.want, gatewaytest.Detail[*errdetails.BadRequest](err).GetFieldViolations()); d != "" {
				t.Errorf("field violations (-want +got):\n%s", d)
			}
		})
	}
	t.Cleanup(func() {
		if n := fake.hits.Load(); n != 0 {
			t.Errorf("the upstream was called %d times for invalid requests", n)
		}
	})
}

func TestTranscribeLimits(t *testing.T) {
	t.Parallel()
	t.Run("upstream 413 states the limit", func(t *testing.T) {
		t.Parallel()
		g := gatewaytest.Start(t, &recordSTT{status: 413, answer: `{"error":"File size exceeds maximum limit of 250MB.","request_id":"r-413"}`}, gatewaytest.Options{})
		_, err := g.Trans.Transcribe(gatewaytest.WithKey(t.Context(), callerKey), &speechv1.TranscribeRequest{
			Source: &speechv1.TranscribeRequest_Audio{Audio: []byte{1}}, Config: en()})
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), "250MB") {
			t.Fatalf("err = %v, want InvalidArgument stating the limit", err)
		}
		if v := gatewaytest.Detail[*errdetails.BadRequest](err).GetFieldViolations(); len(v) != 1 || v[0].GetField() != "audio" {
			t.Errorf("violations = %v, want one naming audio", v)
		}
	})
	t.Run("message size limit", func(t *testing.T) {
		t.Parallel()
		g := gatewaytest.Start(t, emulator.New(emulator.Options{}), gatewaytest.Options{Server: func(c *server.Config) { c.MaxRecvMsgBytes = 1 << 20 }})
		_, err := g.Trans.Transcribe(gatewaytest.WithKey(t.Context(), callerKey), &speechv1.TranscribeRequest{
			Source: &speechv1.TranscribeRequest_Audio{Audio: make([]byte, 2<<20)}, Config: en()})
		if status.Code(err) != codes.ResourceExhausted {
			t.Fatalf("err = %v, want ResourceExhausted", err)
		}
	})
}

// upload sends config then audio in pieces of size and returns the result.
func upload(ctx context.Context, c speechv1.TranscriptionServiceClient, cfg *speechv1.TranscriptionConfig, audio io.Reader, size int) (*speechv1.Transcript, error) {
	stream, err := c.TranscribeUpload(ctx)
	if err != nil {
		return nil, err
	}
	if cfg != nil {
		if err := stream.Send(&speechv1.TranscribeUploadRequest{Part: &speechv1.TranscribeUploadRequest_Config{Config: cfg}}); err != nil {
			return nil, err
		}
	}
	buf := make([]byte, size)
	for {
		n, rerr := io.ReadFull(audio, buf)
		if n > 0 {
			if err := stream.Send(&speechv1.TranscribeUploadRequest{Part: &speechv1.TranscribeUploadRequest_Audio{Audio: buf[:n]}}); err != nil {
				break // the server ended the call; CloseAndRecv has its status
			}
		}
		if rerr != nil {
			break
		}
	}
	resp, err := stream.CloseAndRecv()
	return resp.GetTranscript(), err
}

func TestTranscribeUploadOfSynthesizedAudio(t *testing.T) {
	t.Parallel()
	g := gatewaytest.Start(t, emulator.New(emulator.Options{}), gatewaytest.Options{})
	ctx := gatewaytest.WithKey(t.Context(), callerKey)
	text := strings.TrimSpace(strings.Repeat("Streamed uploads keep memory flat. ", 40))
	spoken := gatewaytest.Synthesize(ctx, g.Synth, &speechv1.SynthesizeRequest{Text: text, VoiceId: "avery",
		Encoding: speechv1.AudioEncoding_AUDIO_ENCODING_WAV, SampleRateHz: 16000})
	if spoken.Err != nil {
		t.Fatal(spoken.Err)
	}
	tr, err := upload(ctx, g.Trans, en(), bytes.NewReader(spoken.Bytes()), 4096)
	if err != nil {
		t.Fatal(err)
	}
	if tr.GetText() != text {
		t.Fatalf("transcript of %d characters, want the %d synthesized", len(tr.GetText()), len(text))
	}
}

// countingSTT stands in for POST /waves/v1/stt/: it counts the body as it
// streams in, and reports when its request ends.
type countingSTT struct {
	received atomic.Int64
	ended    chan struct{}
}

func (f *countingSTT) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	defer close(f.ended)
	_, err := io.Copy(io.Discard, countingReader{r.Body, &f.received})
	if err != nil {
		return // the gateway cut the upload off
	}
	w.Header().Set("Content-Type", "application/json")
	io.WriteString(w, `{"status":"success","transcription":"ok","metadata":{"duration":1}}`)
}

func TestTranscribeUploadLimitsAndCancels(t *testing.T) {
	t.Parallel()
	t.Run("crossing the limit is refused at once", func(t *testing.T) {
		t.Parallel()
		fake := &countingSTT{ended: make(chan struct{})}
		g := gatewaytest.Start(t, fake, gatewaytest.Options{Upstream: gatewaytest.Capabilities(func(c *smallest.Capabilities) { c.MaxUploadBytes = 1 << 20 })})
		_, err := upload(gatewaytest.WithKey(t.Context(), callerKey), g.Trans, en(), io.LimitReader(zeros{}, 4<<20), 64<<10)
		if status.Code(err) != codes.InvalidArgument {
			t.Fatalf("err = %v, want InvalidArgument", err)
		}
		want := []*errdetails.BadRequest_FieldViolation{{Field: "audio", Reason: "TOO_LONG",
			Description: "the recording must be at most 1 MB (1048576 bytes); the upload passed that at byte 1114112"}}
		if d := gatewaytest.Diff(want, gatewaytest.Detail[*errdetails.BadRequest](err).GetFieldViolations()); d != "" {
			t.Errorf("violations (-want +got):\n%s", d)
		}
		<-fake.ended
		if n := fake.received.Load(); n > 1<<20 {
			t.Errorf("the upstream received %d bytes; nothing past the limit may be sent", n)
		}
	})
	t.Run("a cancel reaches the upstream", func(t *testing.T) {
		t.Parallel()
		fake := &countingSTT{ended: make(chan struct{})}
		g := gatewaytest.Start(t, fake, gatewaytest.Options{})
		ctx, cancel := context.WithCancel(gatewaytest.WithKey(t.Context(), callerKey))
		stream, err := g.Trans.TranscribeUpload(ctx)
		if err != nil {
			t.Fatal(err)
		}
		stream.Send(&speechv1.TranscribeUploadRequest{Part: &speechv1.TranscribeUploadRequest_Config{Config: en()}})
		stream.Send(&speechv1.TranscribeUploadRequest{Part: &speechv1.TranscribeUploadRequest_Audio{Audio: make([]byte, 1000)}})
		gatewaytest.WaitFor(t, func() bool { return fake.received.Load() == 1000 }) // the upload is under way upstream
		cancel()
		select {
		case <-fake.ended:
		case <-time.After(5 * time.Second):
			t.Fatal("the upstream request was still open 5 s after the caller cancelled")
		}
		if _, err := stream.CloseAndRecv(); status.Code(err) != codes.Canceled {
			t.Fatalf("err = %v, want Canceled", err)
		}
	})
	t.Run("config first and only once", func(t *testing.T) {
		t.Parallel()
		fake := &countingSTT{ended: make(chan struct{})}
		g := gatewaytest.Start(t, fake, gatewaytest.Options{})
		ctx := gatewaytest.WithKey(t.Context(), callerKey)
		_, err := upload(ctx, g.Trans, nil, bytes.NewReader([]byte{1}), 1)
		if v := gatewaytest.Detail[*errdetails.BadRequest](err).GetFieldViolations(); status.Code(err) != codes.InvalidArgument || len(v) != 1 || v[0].GetField() != "config" {
			t.Errorf("audio first: %v", err)
		}
		stream, err := g.Trans.TranscribeUpload(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for range 2 {
			stream.Send(&speechv1.TranscribeUploadRequest{Part: &speechv1.TranscribeUploadRequest_Config{Config: en()}})
		}
		_, err = stream.CloseAndRecv()
		if v := gatewaytest.Detail[*errdetails.BadRequest](err).GetFieldViolations(); status.Code(err) != codes.InvalidArgument || len(v) != 1 || v[0].GetReason() != "CONFLICT" {
			t.Errorf("two configs: %v", err)
		}
		_, err = upload(ctx, g.Trans, &speechv1.TranscriptionConfig{}, bytes.NewReader([]byte{1}), 1)
		if v := gatewaytest.Detail[*errdetails.BadRequest](err).GetFieldViolations(); len(v) != 1 || v[0].GetField() != "config.language" {
			t.Errorf("config without language: %v", err)
		}
	})
}

type countingReader struct {
	r io.Reader
	n *atomic.Int64
}

func (c countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

func TestListVoicesFilters(t *testing.T) {
	t.Parallel()
	g := gatewaytest.Start(t, emulator.New(emulator.Options{}), gatewaytest.Options{})
	tests := []struct {
		name string
		req  *speechv1.ListVoicesRequest
		want []string
	}{
		{name: "by ISO code", req: &speechv1.ListVoicesRequest{Language: "hi"}, want: []string{"meher", "devansh", "kartik", "maithili"}},
		{name: "by tag, any case", req: &speechv1.ListVoicesRequest{Language: "German"}, want: []string{"lukas"}},
		{name: "by gender and language", req: &speechv1.ListVoicesRequest{Language: "en", Gender: "FEMALE"}, want: []string{"avery", "meher", "maithili"}},
		{name: "no match", req: &speechv1.ListVoicesRequest{Language: "xx"}, want: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			resp, err := g.Synth.ListVoices(gatewaytest.WithKey(t.Context(), callerKey), tt.req)
			if err != nil {
				t.Fatal(err)
			}
			var ids []string
			for _, v := range resp.GetVoices() {
				ids = append(ids, v.GetVoiceId())
			}
			if d := gatewaytest.Diff(tt.want, ids); d != "" {
				t.Errorf("voices (-want +got):\n%s", d)
			}
		})
	}
	resp, err := g.Synth.ListVoices(gatewaytest.WithKey(t.Context(), callerKey), &speechv1.ListVoicesRequest{Language: "hi", Gender: "female"})
	if err != nil {
		t.Fatal(err)
	}
	meher := resp.GetVoices()[0]
	if !strings.HasSuffix(meher.GetPreviewUrl(), "/_emulator/previews/meher.wav") {
		t.Errorf("preview_url %q", meher.GetPreviewUrl())
	}
	meher.PreviewUrl = "" // its host is the test's
	want := &speechv1.Voice{VoiceId: "meher", DisplayName: "Meher", Languages: []string{"english", "hindi"}, LanguageCodes: []string{"en", "hi"},
		Accent: "indian", Gender: "female", Age: "young", UseCases: []string{"conversational"},
		Description: "Young indian female voice for conversational.",
		Capabilities: &speechv1.VoiceCapabilities{SampleRatesHz: []uint32{8000, 16000, 24000, 44100}, WordTimestamps: true, StreamingInput: true,
			Encodings: []speechv1.AudioEncoding{speechv1.AudioEncoding_AUDIO_ENCODING_PCM_S16LE, speechv1.AudioEncoding_AUDIO_ENCODING_WAV,
				speechv1.AudioEncoding_AUDIO_ENCODING_MP3, speechv1.AudioEncoding_AUDIO_ENCODING_MULAW, speechv1.AudioEncoding_AUDIO_ENCODING_ALAW}}}
	if d := gatewaytest.Diff(want, meher); d != "" {
		t.Errorf("voice (-want +got):\n%s", d)
	}
}

// TestEmptyUploadIsRefusedLocally: an upload that ends without audio is
// refused before Smallest is asked (it answered "No audio data received").
func TestEmptyUploadIsRefusedLocally(t *testing.T) {
	t.Parallel()
	var calls atomic.Int64
	g := gatewaytest.Start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		emulator.New(emulator.Options{}).ServeHTTP(w, r)
	}), gatewaytest.Options{})
	for _, pieces := range [][]byte{nil, {}} {
		stream, err := g.Trans.TranscribeUpload(gatewaytest.WithKey(t.Context(), callerKey))
		if err != nil {
			t.Fatal(err)
		}
		stream.Send(&speechv1.TranscribeUploadRequest{Part: &speechv1.TranscribeUploadRequest_Config{Config: en()}})
		if pieces != nil {
			stream.Send(&speechv1.TranscribeUploadRequest{Part: &speechv1.TranscribeUploadRequest_Audio{Audio: pieces}})
		}
		_, err = stream.CloseAndRecv()
		v := gatewaytest.Detail[*errdetails.BadRequest](err).GetFieldViolations()
		if status.Code(err) != codes.InvalidArgument || len(v) != 1 || v[0].GetField() != "audio" || v[0].GetReason() != "REQUIRED" {
			t.Errorf("err = %v, want InvalidArgument with a REQUIRED violation on audio", err)
		}
	}
	if n := calls.Load(); n != 0 {
		t.Errorf("Smallest was called %d times for empty uploads", n)
	}
}

// TestDeleteTranscription: a transcription is deleted from the account's
// history by Smallest's id for it; a bad id is refused first; a backend
// without a history says so.
func TestDeleteTranscription(t *testing.T) {
	t.Parallel()
	var deleted atomic.Value
	up := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		deleted.Store(r.Method + " " + r.URL.EscapedPath())
		io.WriteString(w, `{"request_id":"x","deleted":true}`)
	})
	g := gatewaytest.Start(t, up, gatewaytest.Options{})
	ctx := gatewaytest.WithKey(t.Context(), callerKey)
	resp, err := g.Trans.DeleteTranscription(ctx, &speechv1.DeleteTranscriptionRequest{RequestId: "36e977cf-abc"})
	if err != nil || resp.GetRequestId() != "36e977cf-abc" {
		t.Fatalf("%v, %v", resp, err)
	}
	if got := deleted.Load(); got != "DELETE /waves/v1/analytics/asr/history/36e977cf-abc" {
		t.Errorf("upstream request %v", got)
	}
	if _, err := g.Trans.DeleteTranscription(ctx, &speechv1.DeleteTranscriptionRequest{RequestId: "../stt"}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("a bad id: %v; want INVALID_ARGUMENT", err)
	}
	none := gatewaytest.Start(t, up, gatewaytest.Options{Upstream: gatewaytest.Capabilities(func(c *smallest.Capabilities) {
		c.History, c.HistoryMissing = false, "no history here"
	})})
	if _, err := none.Trans.DeleteTranscription(gatewaytest.WithKey(t.Context(), callerKey), &speechv1.DeleteTranscriptionRequest{RequestId: "a"}); status.Code(err) != codes.Unimplemented {
		t.Errorf("without a history: %v; want UNIMPLEMENTED", err)
	}
}
