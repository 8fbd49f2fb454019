package server_test

import (
	"context"
	"errors"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/speechgate/speechgate/internal/gatewaytest"

	"go.uber.org/goleak"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	speechv1 "github.com/speechgate/speechgate/gen/speech/v1"
	"github.com/speechgate/speechgate/internal/audio"
	"github.com/speechgate/speechgate/internal/emulator"
)

// faultRPCs call each RPC once in a way that reaches the upstream, and
// return the call's final status (nil for OK).
var faultRPCs = map[string]func(ctx context.Context, g *gatewaytest.Gateway) error{
	"Synthesize": func(ctx context.Context, g *gatewaytest.Gateway) error {
		return gatewaytest.Synthesize(ctx, g.Synth, &speechv1.SynthesizeRequest{Text: "Faults are part of the plan.", VoiceId: "avery"}).Err
	},
	"SynthesizeStream": func(ctx context.Context, g *gatewaytest.Gateway) error {
		stream, err := g.Synth.SynthesizeStream(ctx)
		if err != nil {
			return err
		}
		stream.Send(gatewaytest.TextConfig(&speechv1.SynthesisConfig{VoiceId: "avery"}))
		stream.Send(gatewaytest.TextPiece("Faults are part of the plan.", true))
		stream.CloseSend()
		got := gatewaytest.Receive(stream, nil)
		if got.Err == nil && got.Totals == nil {
			return errors.New("the stream ended OK without its totals")
		}
		return got.Err
	},
	"ListVoices": func(ctx context.Context, g *gatewaytest.Gateway) error {
		_, err := g.Synth.ListVoices(ctx, &speechv1.ListVoicesRequest{})
		return err
	},
	"CreatePronunciationDictionary": func(ctx context.Context, g *gatewaytest.Gateway) error {
		_, err := g.Synth.CreatePronunciationDictionary(ctx, &speechv1.CreatePronunciationDictionaryRequest{
			Entries: []*speechv1.PronunciationEntry{{Word: "gif", Pronunciation: "jif"}}})
		return err
	},
	"Transcribe": func(ctx context.Context, g *gatewaytest.Gateway) error {
		_, err := g.Trans.Transcribe(ctx, &speechv1.TranscribeRequest{Source: &speechv1.TranscribeRequest_Audio{Audio: oneSecondWAV()},
			Config: &speechv1.TranscriptionConfig{Language: "en"}})
		return err
	},
	"TranscribeUpload": func(ctx context.Context, g *gatewaytest.Gateway) error {
		stream, err := g.Trans.TranscribeUpload(ctx)
		if err != nil {
			return err
		}
		wav := oneSecondWAV()
		stream.Send(&speechv1.TranscribeUploadRequest{Part: &speechv1.TranscribeUploadRequest_Config{Config: &speechv1.TranscriptionConfig{Language: "en"}}})
		stream.Send(&speechv1.TranscribeUploadRequest{Part: &speechv1.TranscribeUploadRequest_Audio{Audio: wav[:len(wav)/2]}})
		stream.Send(&speechv1.TranscribeUploadRequest{Part: &speechv1.TranscribeUploadRequest_Audio{Audio: wav[len(wav)/2:]}})
		_, err = stream.CloseAndRecv()
		return err
	},
	"TranscribeLive": func(ctx context.Context, g *gatewaytest.Gateway) error {
		stream, err := g.Trans.TranscribeLive(ctx)
		if err != nil {
			return err
		}
		stream.Send(&speechv1.TranscribeLiveRequest{Part: &speechv1.TranscribeLiveRequest_Config{Config: &speechv1.LiveTranscriptionConfig{Language: "en"}}})
		stream.Send(&speechv1.TranscribeLiveRequest{Part: &speechv1.TranscribeLiveRequest_Audio{Audio: make([]byte, 32000)}})
		stream.CloseSend()
		last := false
		for {
			msg, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				if !last {
					return errors.New("the session ended OK without its last transcript")
				}
				return nil
			}
			if err != nil {
				return err
			}
			last = last || msg.GetTranscript().GetIsLast()
		}
	},
}

func oneSecondWAV() []byte {
	return append(audio.AppendWAVHeader(nil, 16000, 1, 16, 32000), make([]byte, 32000)...)
}

// outcome is the documented answer to a fault.
type outcome struct {
	code   codes.Code
	reason string
	retry  time.Duration // the RetryInfo delay, if one is due
	quota  bool          // a QuotaFailure is due
}

var (
	allRPCs    = []string{"Synthesize", "SynthesizeStream", "ListVoices", "CreatePronunciationDictionary", "Transcribe", "TranscribeUpload", "TranscribeLive"}
	streamRPCs = []string{"Synthesize", "SynthesizeStream", "TranscribeLive"}
	wsRPCs     = []string{"SynthesizeStream", "TranscribeLive"}
)

// faultMatrix is every fault the emulator injects, the RPCs it applies to,
// and what the caller must get: the README's error model, fault by fault.
var faultMatrix = []struct {
	fault string
	rpcs  []string
	want  outcome
	per   map[string]outcome // where an RPC's answer differs
}{
	{"http-401", allRPCs, outcome{code: codes.Unauthenticated, reason: "UPSTREAM_UNAUTHENTICATED"}, nil},
	{"http-403", allRPCs, outcome{code: codes.PermissionDenied, reason: "UPSTREAM_PERMISSION_DENIED"}, nil},
	{"http-429", allRPCs, outcome{code: codes.ResourceExhausted, reason: "UPSTREAM_RATE_LIMITED", retry: 2 * time.Second, quota: true}, nil},
	{"http-429-body", allRPCs, outcome{code: codes.ResourceExhausted, reason: "RATE_LIMIT_EXCEEDED", retry: 3 * time.Second, quota: true}, nil},
	{"http-400", allRPCs, outcome{code: codes.InvalidArgument, reason: "UPSTREAM_INVALID_ARGUMENT"}, nil},
	{"plan-not-entitled", allRPCs, outcome{code: codes.PermissionDenied, reason: "PLAN_NOT_ENTITLED"}, nil},
	{"org-not-allowed", allRPCs, outcome{code: codes.PermissionDenied, reason: "NOT_AVAILABLE_FOR_ORGANIZATION"}, nil},
	{"clone-limit", allRPCs, outcome{code: codes.ResourceExhausted, reason: "CLONE_LIMIT_EXCEEDED", quota: true}, nil},
	{"http-410", allRPCs, outcome{code: codes.FailedPrecondition, reason: "MODEL_DEPRECATED"}, nil},
	{"http-413", allRPCs, outcome{code: codes.InvalidArgument, reason: "UPSTREAM_PAYLOAD_TOO_LARGE"}, nil},
	{"http-500", allRPCs, outcome{code: codes.Unavailable, reason: "UPSTREAM_UNAVAILABLE"}, nil},
	{"http-503", allRPCs, outcome{code: codes.Unavailable, reason: "UPSTREAM_UNAVAILABLE", retry: 2 * time.Second}, nil},
	{"reset", allRPCs, outcome{code: codes.Unavailable, reason: "UPSTREAM_NO_ANSWER"}, nil},
	{"stall", allRPCs, outcome{code: codes.DeadlineExceeded, reason: "UPSTREAM_TIMEOUT"}, nil},
	{"reset-after-1", streamRPCs, outcome{code: codes.Unavailable, reason: "UPSTREAM_STREAM_BROKEN"}, nil},
	{"stall-after-1", streamRPCs, outcome{code: codes.DeadlineExceeded, reason: "UPSTREAM_TIMEOUT"}, nil},
	{"malformed", allRPCs, outcome{code: codes.Internal, reason: "UPSTREAM_MALFORMED_RESPONSE"}, nil},
	{"truncate", streamRPCs, outcome{code: codes.Unavailable, reason: "UPSTREAM_STREAM_BROKEN"}, nil},
	{"ws-close-1008", wsRPCs, outcome{code: codes.ResourceExhausted, reason: "UPSTREAM_RATE_LIMITED", quota: true}, nil},
	{"ws-close-1011", wsRPCs, outcome{code: codes.Unavailable, reason: "UPSTREAM_STREAM_BROKEN"}, nil},
	{"ws-close-1000", wsRPCs, outcome{code: codes.Unavailable, reason: "UPSTREAM_STREAM_BROKEN"}, nil},
	{"ws-inactivity", wsRPCs, outcome{code: codes.Unavailable, reason: "UPSTREAM_STREAM_BROKEN"},
		map[string]outcome{"TranscribeLive": {code: codes.Unavailable, reason: "UPSTREAM_STREAM_ERROR"}}},
}

// TestFaultMatrix injects every fault into every RPC it applies to, through
// the emulator, and checks the caller's status against the error model:
// the code, the ErrorInfo reason, RetryInfo and QuotaFailure where due, all
// within the configured timeouts, and never OK. No goroutine may outlive a
// fault's calls.
func TestFaultMatrix(t *testing.T) {
	const upstreamTimeout = 300 * time.Millisecond
	for _, tt := range faultMatrix {
		t.Run(tt.fault, func(t *testing.T) {
			before := goleak.IgnoreCurrent()
			t.Cleanup(func() { goleak.VerifyNone(t, before) }) // runs last, after the gateway's cleanups
			g := gatewaytest.Start(t, emulator.New(emulator.Options{}), gatewaytest.Options{UpstreamTimeout: upstreamTimeout, IdleTimeout: upstreamTimeout})
			ctx := gatewaytest.WithKey(t.Context(), emulator.FaultPrefix+tt.fault)
			var wg sync.WaitGroup
			for _, rpc := range tt.rpcs {
				want := tt.want
				if o, ok := tt.per[rpc]; ok {
					want = o
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					callCtx, cancel := context.WithTimeout(ctx, 20*time.Second)
					defer cancel()
					begin := time.Now()
					err := faultRPCs[rpc](callCtx, g)
					took := time.Since(begin)
					if problem := checkOutcome(err, want); problem != "" {
						t.Errorf("%s: %s", rpc, problem)
					}
					if took > 5*time.Second {
						t.Errorf("%s: took %v; the configured timeouts are %v", rpc, took, upstreamTimeout)
					}
				}()
			}
			wg.Wait()
		})
	}
}

func checkOutcome(err error, want outcome) string {
	if err == nil {
		return "ended OK"
	}
	st := status.Convert(err)
	info := gatewaytest.ErrorInfo(err)
	switch {
	case st.Code() != want.code || info.GetReason() != want.reason:
		return "got " + st.Code().String() + " / " + info.GetReason() + " (" + st.Message() + "), want " + want.code.String() + " / " + want.reason
	case info.GetDomain() != "speechgate":
		return "ErrorInfo domain " + info.GetDomain()
	}
	if want.retry > 0 {
		if d := gatewaytest.Detail[*errdetails.RetryInfo](err).GetRetryDelay().AsDuration(); d != want.retry {
			return "RetryInfo delay " + d.String() + ", want " + want.retry.String()
		}
	}
	if q := gatewaytest.Detail[*errdetails.QuotaFailure](err); want.quota != (q != nil) {
		return "QuotaFailure present: " + q.String()
	}
	return ""
}
