package server_test

import (
	"bytes"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	speechv1 "github.com/speechgate/speechgate/gen/speech/v1"
	"github.com/speechgate/speechgate/internal/emulator"
	"github.com/speechgate/speechgate/server"
)

func TestTranscribeWhatWasSynthesized(t *testing.T) {
	t.Parallel()
	g := start(t, emulator.New(emulator.Options{}), options{})
	ctx := withKey(t.Context(), callerKey)
	const text = "The quick brown fox jumps over the lazy dog."
	spoken := synthesize(ctx, g.synth, &speechv1.SynthesizeRequest{Text: text, VoiceId: "avery",
		Encoding: speechv1.AudioEncoding_AUDIO_ENCODING_WAV, SampleRateHz: 16000})
	if spoken.err != nil {
		t.Fatal(spoken.err)
	}
	resp, err := g.trans.Transcribe(ctx, &speechv1.TranscribeRequest{
		Source: &speechv1.TranscribeRequest_Audio{Audio: spoken.bytes()}, Language: "en", WordTimestamps: true, Diarize: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetTranscript() != text || resp.GetStatus() != speechv1.TranscriptionStatus_TRANSCRIPTION_STATUS_COMPLETED {
		t.Fatalf("transcript %q (%v), want %q", resp.GetTranscript(), resp.GetStatus(), text)
	}
	if resp.GetAudioDurationMs() != spoken.totals.GetAudioDurationMs() {
		t.Errorf("transcribed %d ms of audio; %d ms were synthesized", resp.GetAudioDurationMs(), spoken.totals.GetAudioDurationMs())
	}
	words := resp.GetWords()
	if len(words) != 9 || words[0].GetWord() != "The" || words[0].Speaker == nil || words[8].GetEndMs() != resp.GetAudioDurationMs() {
		t.Errorf("words = %v", words)
	}
	if len(resp.GetUtterances()) != 1 {
		t.Errorf("utterances = %v", resp.GetUtterances())
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
	g := start(t, fake, options{})
	resp, err := g.trans.Transcribe(withKey(t.Context(), callerKey), &speechv1.TranscribeRequest{
		Source: &speechv1.TranscribeRequest_Audio{Audio: []byte{1, 2, 3, 4}}, Language: "hi", WordTimestamps: true, Diarize: true,
		RedactPii: true, GenderDetection: true, EmotionDetection: true, Encoding: speechv1.AudioEncoding_AUDIO_ENCODING_MULAW, SampleRateHz: 8000,
	})
	if err != nil {
		t.Fatal(err)
	}
	want := &speechv1.TranscribeResponse{
		Status: speechv1.TranscriptionStatus_TRANSCRIPTION_STATUS_COMPLETED, Transcript: "Hello, world.", AudioDurationMs: 5280,
		Words:      []*speechv1.Word{{Word: "Hello,", StartMs: 160, EndMs: 1125, Confidence: 0.9975, Speaker: ptr[int32](1), SpeakerConfidence: 0.5}},
		Utterances: []*speechv1.Utterance{{Text: "Hello, world.", StartMs: 160, EndMs: 2880, Speaker: ptr[int32](1)}},
		Gender:     "male", Emotions: map[string]float64{"calm": 0.25},
	}
	if d := diff(want, resp); d != "" {
		t.Errorf("response (-want +got):\n%s", d)
	}
	wantQuery := url.Values{"model": {"pulse"}, "language": {"hi"}, "word_timestamps": {"true"}, "diarize": {"true"},
		"redact_pii": {"true"}, "redact_pci": {"false"}, "emotion_detection": {"true"}, "gender_detection": {"true"},
		"encoding": {"mulaw"}, "sample_rate": {"8000"}}
	if d := diff(wantQuery, fake.query.Load()); d != "" {
		t.Errorf("upstream query (-want +got):\n%s", d)
	}
	if b := fake.body.Load().([]byte); !bytes.Equal(b, []byte{1, 2, 3, 4}) {
		t.Errorf("upstream got body %v", b)
	}
}

func TestTranscribeValidatesBeforeCallingUpstream(t *testing.T) {
	t.Parallel()
	fake := &recordSTT{status: 200, answer: `{}`}
	g := start(t, fake, options{})
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
				{Field: "language", Reason: "REQUIRED", Description: "is required: one of en, hi, de, es, ru, it, fr, nl, pt, uk, pl, cs, sk, ro, fi, sv, bg, hu, lt, zh, ja, ko, multi-eu, multi-asian, multi-indic"},
			},
		},
		{
			name: "headerless audio needs its rate",
			req:  &speechv1.TranscribeRequest{Source: audio, Language: "en", Encoding: speechv1.AudioEncoding_AUDIO_ENCODING_PCM_S16LE},
			want: []*errdetails.BadRequest_FieldViolation{{Field: "sample_rate_hz", Reason: "REQUIRED",
				Description: "is required with encoding AUDIO_ENCODING_PCM_S16LE: headerless audio does not say its rate"}},
		},
		{
			name: "pro limits",
			req: &speechv1.TranscribeRequest{Source: &speechv1.TranscribeRequest_Url{Url: "ftp://x"}, Model: pro, Language: "de",
				Diarize: true, GenderDetection: true, SampleRateHz: 12345},
			want: []*errdetails.BadRequest_FieldViolation{
				{Field: "url", Reason: "BAD_FORMAT", Description: "must be an absolute http or https URL"},
				{Field: "language", Reason: "NOT_ALLOWED", Description: `must be "en" with TRANSCRIPTION_MODEL_PULSE_PRO, got "de"`},
				{Field: "diarize", Reason: "CONFLICT", Description: "is not supported by TRANSCRIPTION_MODEL_PULSE_PRO"},
				{Field: "gender_detection", Reason: "CONFLICT", Description: "is not supported by TRANSCRIPTION_MODEL_PULSE_PRO"},
				{Field: "url", Reason: "CONFLICT", Description: "is only supported by TRANSCRIPTION_MODEL_PULSE; send the audio instead"},
				{Field: "sample_rate_hz", Reason: "NOT_ALLOWED", Description: "must be one of 8000, 16000, 22050, 24000, 44100, 48000, got 12345"},
			},
		},
		{
			name: "webhooks",
			req: &speechv1.TranscribeRequest{Source: audio, Language: "en", WebhookUrl: "https://h.example/x", WebhookMethod: "PUT",
				WebhookExtra: map[string]string{"ok": "v", "bad key": "v", "k": "a,b"}},
			want: []*errdetails.BadRequest_FieldViolation{
				{Field: "webhook_url", Reason: "CONFLICT", Description: "is only supported by TRANSCRIPTION_MODEL_PULSE_PRO"},
				{Field: "webhook_method", Reason: "NOT_ALLOWED", Description: `must be "POST" or "GET", got "PUT"`},
				{Field: `webhook_extra["bad key"]`, Reason: "BAD_FORMAT", Description: "keys must be 1 to 64 characters from [A-Za-z0-9_.-]"},
				{Field: `webhook_extra["k"]`, Reason: "BAD_FORMAT", Description: "values must not contain ',' or ':', which Smallest uses as separators"},
			},
		},
		{
			name: "encoding with a URL; empty audio",
			req:  &speechv1.TranscribeRequest{Source: &speechv1.TranscribeRequest_Audio{}, Language: "en", Encoding: speechv1.AudioEncoding_AUDIO_ENCODING_OPUS, WebhookMethod: "GET"},
			want: []*errdetails.BadRequest_FieldViolation{
				{Field: "audio", Reason: "REQUIRED", Description: "must not be empty"},
				{Field: "webhook_method", Reason: "CONFLICT", Description: "is only used with webhook_url"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := g.trans.Transcribe(withKey(t.Context(), callerKey), tt.req)
			if status.Code(err) != codes.InvalidArgument {
				t.Fatalf("err = %v, want InvalidArgument", err)
			}
			if d := diff(tt.want, detail[*errdetails.BadRequest](err).GetFieldViolations()); d != "" {
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
		g := start(t, &recordSTT{status: 413, answer: `{"error":"File size exceeds maximum limit of 250MB.","request_id":"r-413"}`}, options{})
		_, err := g.trans.Transcribe(withKey(t.Context(), callerKey), &speechv1.TranscribeRequest{
			Source: &speechv1.TranscribeRequest_Audio{Audio: []byte{1}}, Language: "en"})
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), "250MB") {
			t.Fatalf("err = %v, want InvalidArgument stating the limit", err)
		}
		if v := detail[*errdetails.BadRequest](err).GetFieldViolations(); len(v) != 1 || v[0].GetField() != "audio" {
			t.Errorf("violations = %v, want one naming audio", v)
		}
	})
	t.Run("message size limit", func(t *testing.T) {
		t.Parallel()
		g := start(t, emulator.New(emulator.Options{}), options{cfg: func(c *server.Config) { c.MaxRecvMsgBytes = 1 << 20 }})
		_, err := g.trans.Transcribe(withKey(t.Context(), callerKey), &speechv1.TranscribeRequest{
			Source: &speechv1.TranscribeRequest_Audio{Audio: make([]byte, 2<<20)}, Language: "en"})
		if status.Code(err) != codes.ResourceExhausted {
			t.Fatalf("err = %v, want ResourceExhausted", err)
		}
	})
}

func TestListVoicesFilters(t *testing.T) {
	t.Parallel()
	g := start(t, emulator.New(emulator.Options{}), options{})
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
			resp, err := g.synth.ListVoices(withKey(t.Context(), callerKey), tt.req)
			if err != nil {
				t.Fatal(err)
			}
			var ids []string
			for _, v := range resp.GetVoices() {
				ids = append(ids, v.GetVoiceId())
			}
			if d := diff(tt.want, ids); d != "" {
				t.Errorf("voices (-want +got):\n%s", d)
			}
		})
	}
	resp, err := g.synth.ListVoices(withKey(t.Context(), callerKey), &speechv1.ListVoicesRequest{Language: "hi", Gender: "female"})
	if err != nil {
		t.Fatal(err)
	}
	want := &speechv1.Voice{VoiceId: "meher", DisplayName: "Meher", Languages: []string{"english", "hindi"}, LanguageCodes: []string{"en", "hi"},
		Accent: "indian", Gender: "female", Age: "young", UseCases: []string{"conversational"}}
	if d := diff(want, resp.GetVoices()[0]); d != "" {
		t.Errorf("voice (-want +got):\n%s", d)
	}
}
