package server_test

import (
	"context"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/speechgate/speechgate/internal/gatewaytest"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	speechv1 "github.com/speechgate/speechgate/gen/speech/v1"
	"github.com/speechgate/speechgate/internal/emulator"
)

// Bounds a refusal must keep, whatever the caller sent: small enough for any
// HTTP/2 peer's header limit (the status travels in the trailers).
const (
	maxStatusMessage = 1100
	maxStatusBytes   = 16 << 10
	maxLogGrowth     = 16 << 10
)

// TestRefusalsNeverEchoInputAtFullSize sends a megabyte in each field that
// validation checks and names, and expects a refusal of bounded size in the
// status, its details and the log, before anything reaches the upstream.
func TestRefusalsNeverEchoInputAtFullSize(t *testing.T) {
	t.Parallel()
	huge := strings.Repeat("x", 1<<20)
	var upstreamCalls atomic.Int64
	counting := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		upstreamCalls.Add(1)
		emulator.New(emulator.Options{}).ServeHTTP(w, r)
	})
	g := gatewaytest.Start(t, counting, gatewaytest.Options{})
	ctx := gatewaytest.WithKey(t.Context(), callerKey)

	keywords := make([]*speechv1.Keyword, 10000)
	for i := range keywords {
		keywords[i] = &speechv1.Keyword{Text: "bad,word"}
	}
	tests := []struct {
		name string
		call func(ctx context.Context) error
	}{
		{"Synthesize language", func(ctx context.Context) error {
			return gatewaytest.Synthesize(ctx, g.Synth, &speechv1.SynthesizeRequest{Text: "hi", VoiceId: "avery", Language: huge}).Err
		}},
		{"Synthesize every identifier", func(ctx context.Context) error {
			return gatewaytest.Synthesize(ctx, g.Synth, &speechv1.SynthesizeRequest{Text: "hi", VoiceId: huge, RequestId: huge, SessionId: huge,
				NumberPronunciationLanguage: huge, PronunciationDictIds: []string{huge, huge}}).Err
		}},
		{"SynthesizeStream language", func(ctx context.Context) error {
			stream, err := g.Synth.SynthesizeStream(ctx)
			if err != nil {
				return err
			}
			stream.Send(&speechv1.SynthesizeStreamRequest{Part: &speechv1.SynthesizeStreamRequest_Config{
				Config: &speechv1.SynthesisConfig{VoiceId: "avery", Language: huge}}})
			stream.CloseSend()
			_, err = stream.Recv()
			return err
		}},
		{"Transcribe language and webhook", func(ctx context.Context) error {
			_, err := g.Trans.Transcribe(ctx, &speechv1.TranscribeRequest{Source: &speechv1.TranscribeRequest_Audio{Audio: []byte("RIFF")},
				Config: &speechv1.TranscriptionConfig{Language: huge, Model: speechv1.TranscriptionModel_TRANSCRIPTION_MODEL_PULSE_PRO,
					WebhookUrl: "https://example.com/" + huge, WebhookMethod: huge, WebhookExtra: map[string]string{huge: huge}}})
			return err
		}},
		{"TranscribeLive 10,000 bad keywords and a huge language", func(ctx context.Context) error {
			stream, err := g.Trans.TranscribeLive(ctx)
			if err != nil {
				return err
			}
			stream.Send(&speechv1.TranscribeLiveRequest{Part: &speechv1.TranscribeLiveRequest_Config{
				Config: &speechv1.LiveTranscriptionConfig{Language: huge, Keywords: keywords}}})
			stream.CloseSend()
			_, err = stream.Recv()
			return err
		}},
		{"ListVoices filters", func(ctx context.Context) error {
			_, err := g.Synth.ListVoices(ctx, &speechv1.ListVoicesRequest{Language: huge, Gender: huge})
			return err
		}},
		{"CreatePronunciationDictionary duplicate huge words", func(ctx context.Context) error {
			_, err := g.Synth.CreatePronunciationDictionary(ctx, &speechv1.CreatePronunciationDictionaryRequest{
				Entries: []*speechv1.PronunciationEntry{{Word: huge, Pronunciation: "a"}, {Word: huge, Pronunciation: "b"}}})
			return err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			logBefore := len(g.Logs.String())
			err := tt.call(ctx)
			st := status.Convert(err)
			if st.Code() != codes.InvalidArgument {
				t.Fatalf("code %v (%.200s), want InvalidArgument", st.Code(), st.Message())
			}
			if n := len(st.Message()); n > maxStatusMessage {
				t.Errorf("status message is %d bytes, want at most %d", n, maxStatusMessage)
			}
			if n := proto.Size(st.Proto()); n > maxStatusBytes {
				t.Errorf("status with details is %d bytes, want at most %d", n, maxStatusBytes)
			}
			if br := gatewaytest.Detail[*errdetails.BadRequest](err); len(br.GetFieldViolations()) == 0 {
				t.Error("no BadRequest violations")
			}
			if n := len(g.Logs.String()) - logBefore; n > maxLogGrowth {
				t.Errorf("the call logged %d bytes, want at most %d", n, maxLogGrowth)
			}
		})
	}
	if n := upstreamCalls.Load(); n != 0 {
		t.Errorf("the upstream was called %d times for refused requests", n)
	}
}

// TestAbsurdCredentialsAreRefusedLocally: a megabyte bearer token used to
// reach Smallest, which answered 431, and the caller got INTERNAL.
func TestAbsurdCredentialsAreRefusedLocally(t *testing.T) {
	t.Parallel()
	var upstreamCalls atomic.Int64
	g := gatewaytest.Start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		upstreamCalls.Add(1)
		w.WriteHeader(http.StatusRequestHeaderFieldsTooLarge)
	}), gatewaytest.Options{})
	for _, token := range []string{strings.Repeat("k", 1<<20), strings.Repeat("k", 5000)} {
		err := gatewaytest.Synthesize(gatewaytest.WithKey(t.Context(), token), g.Synth, &speechv1.SynthesizeRequest{Text: "hi", VoiceId: "avery"}).Err
		if st := status.Convert(err); st.Code() != codes.Unauthenticated || gatewaytest.ErrorInfo(err).GetReason() != "INVALID_CREDENTIALS" {
			t.Errorf("token of %d bytes: %v %s (%v), want Unauthenticated INVALID_CREDENTIALS", len(token), st.Code(), gatewaytest.ErrorInfo(err).GetReason(), st.Message())
		}
		if n := len(status.Convert(err).Message()); n > maxStatusMessage {
			t.Errorf("status message is %d bytes", n)
		}
	}
	if n := upstreamCalls.Load(); n != 0 {
		t.Errorf("the upstream was called %d times", n)
	}
}
