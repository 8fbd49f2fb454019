package quota_test

import (
	"context"
	"errors"
	"io"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	speechv1 "github.com/speechgate/speechgate/gen/speech/v1"
	"github.com/speechgate/speechgate/internal/audio"
	"github.com/speechgate/speechgate/internal/auth"
	"github.com/speechgate/speechgate/internal/emulator"
	"github.com/speechgate/speechgate/internal/gatewaytest"
	"github.com/speechgate/speechgate/internal/rpcerror"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	limitedKey   = "limited-key-0123456789"
	unlimitedKey = "unlimited-key-0123456789"
)

// start runs a keys-mode gateway in front of the emulator, where the client
// "limited" has limits and "unlimited" has none.
func start(t *testing.T, limits auth.Limits) *gatewaytest.Gateway {
	t.Helper()
	return gatewaytest.Start(t, emulator.New(emulator.Options{}), gatewaytest.Options{Auth: auth.ModeKeys,
		Keys: []auth.ClientKey{{Name: "limited", Key: limitedKey, Limits: limits}, {Name: "unlimited", Key: unlimitedKey}}})
}

// refusal checks that err is a quota refusal of the limited client, and
// returns its RetryInfo delay (0 when it has none).
func refusal(t *testing.T, err error, quota string) time.Duration {
	t.Helper()
	if status.Code(err) != codes.ResourceExhausted || rpcerror.ReasonOf(err) != rpcerror.ReasonQuotaExceeded {
		t.Fatalf("got %v; want RESOURCE_EXHAUSTED, QUOTA_EXCEEDED", err)
	}
	if info := gatewaytest.ErrorInfo(err); info.GetMetadata()["quota"] != quota || info.GetMetadata()["client"] != "limited" {
		t.Errorf("ErrorInfo metadata = %v; want quota %s, client limited", info.GetMetadata(), quota)
	}
	qf := gatewaytest.Detail[*errdetails.QuotaFailure](err)
	if qf == nil || qf.GetViolations()[0].GetSubject() != "client:limited" {
		t.Errorf("QuotaFailure = %v; want the subject client:limited", qf)
	}
	if strings.Contains(err.Error(), limitedKey) {
		t.Errorf("the refusal repeats the client's key: %v", err)
	}
	return gatewaytest.Detail[*errdetails.RetryInfo](err).GetRetryDelay().AsDuration()
}

func TestRequestsPerMinute(t *testing.T) {
	t.Parallel()
	g := start(t, auth.Limits{RequestsPerMinute: 3})
	for i := range 3 {
		var header metadata.MD
		if _, err := g.Synth.ListVoices(gatewaytest.WithKey(t.Context(), limitedKey), &speechv1.ListVoicesRequest{}, grpc.Header(&header)); err != nil {
			t.Fatalf("call %d of 3: %v", i+1, err)
		}
		if got, want := header.Get("x-speechgate-quota-remaining-requests"), []string{strconv.Itoa(2 - i)}; !equal(got, want) {
			t.Errorf("call %d: remaining %v, want %v", i+1, got, want)
		}
		if got := header.Get("x-speechgate-quota-limit-requests"); !equal(got, []string{"3"}) {
			t.Errorf("call %d: limit %v, want 3", i+1, got)
		}
		if r := header.Get("x-speechgate-quota-reset-requests"); len(r) != 1 || r[0] == "0" {
			t.Errorf("call %d: reset %v, want seconds until the quota is back", i+1, r)
		}
	}
	var header metadata.MD
	_, err := g.Synth.ListVoices(gatewaytest.WithKey(t.Context(), limitedKey), &speechv1.ListVoicesRequest{}, grpc.Header(&header))
	if retry := refusal(t, err, "requests_per_minute"); retry < 15*time.Second || retry > 21*time.Second {
		t.Errorf("RetryInfo %v; want about 20s (a minute's 3 requests come back one by one)", retry)
	}
	if got := header.Get("x-speechgate-quota-remaining-requests"); !equal(got, []string{"0"}) {
		t.Errorf("the refusal's headers say %v remain", got)
	}
	// Another client is not affected, and has no quota headers.
	header = nil
	if _, err := g.Synth.ListVoices(gatewaytest.WithKey(t.Context(), unlimitedKey), &speechv1.ListVoicesRequest{}, grpc.Header(&header)); err != nil {
		t.Fatal(err)
	}
	for k := range header {
		if strings.HasPrefix(k, "x-speechgate-quota-") {
			t.Errorf("a client without quotas got %s", k)
		}
	}
}

func equal(a, b []string) bool { return strings.Join(a, ",") == strings.Join(b, ",") }

func TestCharactersPerMinute(t *testing.T) {
	t.Parallel()
	g := start(t, auth.Limits{CharactersPerMinute: 30})
	say := func(text string) error {
		return gatewaytest.Synthesize(gatewaytest.WithKey(t.Context(), limitedKey), g.Synth, &speechv1.SynthesizeRequest{Text: text, VoiceId: "avery"}).Err
	}
	for range 2 {
		if err := say("Hello there."); err != nil { // 12 characters
			t.Fatal(err)
		}
	}
	if retry := refusal(t, say("Hello there."), "characters_per_minute"); retry <= 0 || retry > 30*time.Second {
		t.Errorf("12 more of the 6 left: RetryInfo %v; want the time until they fit", retry)
	}
	if retry := refusal(t, say(strings.Repeat("a", 31)), "characters_per_minute"); retry != 0 {
		t.Errorf("a text longer than the quota allows in a minute got RetryInfo %v; no wait helps", retry)
	}
	if err := gatewaytest.Synthesize(gatewaytest.WithKey(t.Context(), unlimitedKey), g.Synth, &speechv1.SynthesizeRequest{Text: "Hello there.", VoiceId: "avery"}).Err; err != nil {
		t.Errorf("another client: %v", err)
	}
}

// TestStreamedTextIsCharged: SynthesizeStream charges each piece as it
// comes, and ends the stream at the piece that does not fit.
func TestStreamedTextIsCharged(t *testing.T) {
	t.Parallel()
	g := start(t, auth.Limits{CharactersPerMinute: 20})
	stream, err := g.Synth.SynthesizeStream(gatewaytest.WithKey(t.Context(), limitedKey))
	if err != nil {
		t.Fatal(err)
	}
	stream.Send(gatewaytest.TextConfig(&speechv1.SynthesisConfig{VoiceId: "avery"}))
	stream.Send(gatewaytest.TextPiece("Hello there. ", true)) // 13
	stream.Send(gatewaytest.TextPiece("How are you today?", true))
	stream.CloseSend()
	got := gatewaytest.Receive(stream, nil)
	refusal(t, got.Err, "characters_per_minute")
	if len(got.Audio) == 0 {
		t.Error("the piece that fit was not spoken")
	}
}

func TestConcurrentStreams(t *testing.T) {
	t.Parallel()
	g := start(t, auth.Limits{ConcurrentStreams: 1})
	ctx, cancel := context.WithCancel(gatewaytest.WithKey(t.Context(), limitedKey))
	open, err := g.Synth.SynthesizeStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	open.Send(gatewaytest.TextConfig(&speechv1.SynthesisConfig{VoiceId: "avery"}))
	if _, err := open.Header(); err != nil { // the gateway has admitted it
		t.Fatal(err)
	}
	second := gatewaytest.Synthesize(gatewaytest.WithKey(t.Context(), limitedKey), g.Synth, &speechv1.SynthesizeRequest{Text: "Hi.", VoiceId: "avery"})
	refusal(t, second.Err, "concurrent_streams")
	// Unary calls are not streams.
	if _, err := g.Synth.ListVoices(gatewaytest.WithKey(t.Context(), limitedKey), &speechv1.ListVoicesRequest{}); err != nil {
		t.Errorf("a unary call was refused while a stream was open: %v", err)
	}
	cancel()
	gatewaytest.WaitFor(t, func() bool {
		return gatewaytest.Synthesize(gatewaytest.WithKey(t.Context(), limitedKey), g.Synth, &speechv1.SynthesizeRequest{Text: "Hi.", VoiceId: "avery"}).Err == nil
	})
}

// TestAudioSecondsPerMinute: live audio is charged as it arrives; an
// upload, whose length is known only from its transcript, is charged
// after, and the client's next call waits for the debt to be paid.
func TestAudioSecondsPerMinute(t *testing.T) {
	t.Parallel()
	t.Run("live", func(t *testing.T) {
		t.Parallel()
		g := start(t, auth.Limits{AudioSecondsPerMinute: 1})
		stream, err := g.Trans.TranscribeLive(gatewaytest.WithKey(t.Context(), limitedKey))
		if err != nil {
			t.Fatal(err)
		}
		stream.Send(&speechv1.TranscribeLiveRequest{Part: &speechv1.TranscribeLiveRequest_Config{Config: &speechv1.LiveTranscriptionConfig{Language: "en"}}})
		second := make([]byte, 32000) // a second of 16 kHz PCM16
		for range 3 {
			if stream.Send(&speechv1.TranscribeLiveRequest{Part: &speechv1.TranscribeLiveRequest_Audio{Audio: second[:16000]}}) != nil {
				break
			}
		}
		stream.CloseSend()
		for {
			_, err = stream.Recv()
			if err != nil {
				break
			}
		}
		if errors.Is(err, io.EOF) {
			t.Fatal("1.5 s of audio was transcribed under a quota of 1 s a minute")
		}
		refusal(t, err, "audio_seconds_per_minute")
	})
	t.Run("upload", func(t *testing.T) {
		t.Parallel()
		g := start(t, auth.Limits{AudioSecondsPerMinute: 2})
		upload := func() error {
			stream, err := g.Trans.TranscribeUpload(gatewaytest.WithKey(t.Context(), limitedKey))
			if err != nil {
				return err
			}
			stream.Send(&speechv1.TranscribeUploadRequest{Part: &speechv1.TranscribeUploadRequest_Config{Config: &speechv1.TranscriptionConfig{Language: "en"}}})
			wav := audio.AppendWAVHeader(nil, 16000, 1, 16, 3*32000) // 3 s of silence
			stream.Send(&speechv1.TranscribeUploadRequest{Part: &speechv1.TranscribeUploadRequest_Audio{Audio: append(wav, make([]byte, 3*32000)...)}})
			_, err = stream.CloseAndRecv()
			return err
		}
		if err := upload(); err != nil { // 3 s: over the quota, charged after
			t.Fatal(err)
		}
		refusal(t, upload(), "audio_seconds_per_minute")
	})
}
