package server_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/speechgate/speechgate/internal/gatewaytest"
	"github.com/speechgate/speechgate/internal/speech"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	reflectionv1alpha "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/descriptorpb"

	speechv1 "github.com/speechgate/speechgate/gen/speech/v1"
	"github.com/speechgate/speechgate/internal/emulator"
	"github.com/speechgate/speechgate/internal/smallest"
	"github.com/speechgate/speechgate/server"
)

func TestHealthAndReflectionNeedNoCredentials(t *testing.T) {
	t.Parallel()
	g := gatewaytest.Start(t, emulator.New(emulator.Options{}), gatewaytest.Options{})
	for _, svc := range []string{"", "speech.v1.SynthesisService", "speech.v1.TranscriptionService"} {
		resp, err := g.Health.Check(t.Context(), &healthpb.HealthCheckRequest{Service: svc})
		if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("health of %q = %v, %v; want SERVING", svc, resp.GetStatus(), err)
		}
	}
	stream, err := reflectionpb.NewServerReflectionClient(g.Conn).ServerReflectionInfo(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	stream.CloseSend()
	var names []string
	for _, s := range resp.GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	for _, want := range []string{"speech.v1.SynthesisService", "speech.v1.TranscriptionService", "grpc.health.v1.Health"} {
		if !strings.Contains(strings.Join(names, " "), want) {
			t.Errorf("reflection lists %v; %s is missing", names, want)
		}
	}
}

func TestShutdownDrainsStreamsInFlight(t *testing.T) {
	t.Parallel()
	// 25 characters at real time: 1.5 s of audio, sent in 20 ms chunks.
	g := gatewaytest.Start(t, emulator.New(emulator.Options{Pace: 1}), gatewaytest.Options{})
	ctx := gatewaytest.WithKey(t.Context(), callerKey)
	stream, err := g.Synth.Synthesize(ctx, &speechv1.SynthesizeRequest{Text: strings.Repeat("a", 25), VoiceId: "avery"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil { // the format: the stream is under way
		t.Fatal(err)
	}
	drained := make(chan bool, 1)
	go func() { drained <- g.Server.Shutdown(10 * time.Second) }()

	// While the stream runs, health says NOT_SERVING, also to a new
	// connection (a probe), and new work is turned away as retryable.
	probe := healthpb.NewHealthClient(g.Dial(t))
	gatewaytest.WaitFor(t, func() bool {
		resp, err := probe.Check(t.Context(), &healthpb.HealthCheckRequest{})
		return err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_NOT_SERVING
	})
	if g.Server.Ready() {
		t.Error("Ready() is true during the drain; /readyz must fail")
	}
	if resp, err := probe.Check(t.Context(), &healthpb.HealthCheckRequest{Service: server.LivenessService}); err != nil ||
		resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("liveness during the drain = %v, %v; a draining pod must stay alive", resp.GetStatus(), err)
	}
	g.Server.SetServing("", true) // a late health report must not undo the drain
	if g.Server.Ready() {
		t.Error("SetServing during the drain turned the server ready again")
	}
	refused := gatewaytest.Synthesize(ctx, g.Synth, &speechv1.SynthesizeRequest{Text: "hi", VoiceId: "avery"})
	if status.Code(refused.Err) != codes.Unavailable || gatewaytest.ErrorInfo(refused.Err).GetReason() != "DRAINING" {
		t.Errorf("a new call during the drain got %v, want Unavailable with reason DRAINING", refused.Err)
	}

	var audio, totals int
	for {
		msg, err := stream.Recv()
		if err != nil {
			if status.Code(err) != codes.OK && !errors.Is(err, context.Canceled) && err.Error() != "EOF" {
				t.Fatalf("the stream in flight ended with %v; the drain must let it finish", err)
			}
			break
		}
		if msg.GetAudio() != nil {
			audio++
		}
		if msg.GetTotals() != nil {
			totals++
		}
	}
	if totals != 1 || audio < 50 {
		t.Fatalf("the stream delivered %d audio messages and %d totals; want all 75 and one totals", audio, totals)
	}
	select {
	case ok := <-drained:
		if !ok {
			t.Fatal("Shutdown reported that calls were cut off")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown did not return after the stream finished")
	}
}

func TestShutdownCutsOffAfterGrace(t *testing.T) {
	t.Parallel()
	g := gatewaytest.Start(t, emulator.New(emulator.Options{Pace: 1}), gatewaytest.Options{})
	stream, err := g.Synth.Synthesize(gatewaytest.WithKey(t.Context(), callerKey), &speechv1.SynthesizeRequest{Text: strings.Repeat("a", 500), VoiceId: "avery"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	if g.Server.Shutdown(200 * time.Millisecond) {
		t.Fatal("Shutdown reported a clean drain while a 30 s stream was in flight")
	}
	for {
		if _, err := stream.Recv(); err != nil {
			if status.Code(err) == codes.OK {
				t.Fatal("the cut-off stream ended with OK")
			}
			return
		}
	}
}

// panicky is an upstream whose calls panic, as a bug would.
type panicky struct{ speech.Upstream }

func (panicky) StreamSpeech(context.Context, *smallest.SpeechRequest) (*smallest.SpeechStream, error) {
	panic("bug")
}

func (panicky) ListVoices(context.Context) ([]smallest.Voice, error) { panic("bug") }

// panicsAfterFirst synthesizes the first text piece and panics on the
// next, which runs in a look-ahead goroutine.
type panicsAfterFirst struct {
	speech.Upstream
	calls atomic.Int32
}

func (p *panicsAfterFirst) StreamSpeech(ctx context.Context, r *smallest.SpeechRequest) (*smallest.SpeechStream, error) {
	if p.calls.Add(1) > 1 {
		panic("bug in a later piece")
	}
	return p.Upstream.StreamSpeech(ctx, r)
}

func TestPanicInALookAheadPieceBecomesInternal(t *testing.T) {
	t.Parallel()
	g := gatewaytest.Start(t, emulator.New(emulator.Options{}), gatewaytest.Options{Upstream: func(up speech.Upstream) speech.Upstream { return &panicsAfterFirst{Upstream: up} }})
	text := strings.Repeat("A sentence of some length, to make several pieces. ", 20)
	got := gatewaytest.Synthesize(gatewaytest.WithKey(t.Context(), callerKey), g.Synth, &speechv1.SynthesizeRequest{Text: text, VoiceId: "avery"})
	if status.Code(got.Err) != codes.Internal || gatewaytest.ErrorInfo(got.Err).GetReason() != "INTERNAL" {
		t.Fatalf("Synthesize = %v, want Internal with ErrorInfo", got.Err)
	}
	if strings.Contains(status.Convert(got.Err).Message(), "goroutine") {
		t.Errorf("the caller was shown the stack: %q", status.Convert(got.Err).Message())
	}
	// The log has the panic and the stack of the goroutine it happened in.
	logs := g.Logs.String()
	for _, want := range []string{"handler panicked", "bug in a later piece", "in the goroutine of text piece 2", "pieces.go"} {
		if !strings.Contains(logs, want) {
			t.Errorf("the log lacks %q", want)
		}
	}
}

func TestPanicBecomesInternal(t *testing.T) {
	t.Parallel()
	g := gatewaytest.Start(t, emulator.New(emulator.Options{}), gatewaytest.Options{Upstream: func(up speech.Upstream) speech.Upstream { return panicky{up} }})
	ctx := gatewaytest.WithKey(t.Context(), callerKey)
	for range 2 { // the server survives the first
		_, err := g.Synth.ListVoices(ctx, &speechv1.ListVoicesRequest{})
		if status.Code(err) != codes.Internal || gatewaytest.ErrorInfo(err).GetReason() != "INTERNAL" {
			t.Fatalf("ListVoices = %v, want Internal with ErrorInfo", err)
		}
		got := gatewaytest.Synthesize(ctx, g.Synth, &speechv1.SynthesizeRequest{Text: "hi", VoiceId: "avery"})
		if status.Code(got.Err) != codes.Internal {
			t.Fatalf("Synthesize = %v, want Internal", got.Err)
		}
	}
	if !strings.Contains(g.Logs.String(), "handler panicked") {
		t.Error("the panic was not logged")
	}
}

func TestSynthesisUnavailableOnBackend(t *testing.T) {
	t.Parallel()
	const why = "the self-hosted server has no text-to-speech"
	g := gatewaytest.Start(t, emulator.New(emulator.Options{}), gatewaytest.Options{Upstream: gatewaytest.Capabilities(func(c *smallest.Capabilities) { c.Synthesis, c.SynthesisMissing = false, why })})
	got := gatewaytest.Synthesize(gatewaytest.WithKey(t.Context(), callerKey), g.Synth, &speechv1.SynthesizeRequest{Text: "hi", VoiceId: "avery"})
	if status.Code(got.Err) != codes.Unimplemented || !strings.Contains(status.Convert(got.Err).Message(), why) {
		t.Fatalf("Synthesize = %v, want Unimplemented saying why", got.Err)
	}
}

func TestOneLogLinePerCall(t *testing.T) {
	t.Parallel()
	g := gatewaytest.Start(t, emulator.New(emulator.Options{}), gatewaytest.Options{})
	ctx := gatewaytest.WithKey(t.Context(), callerKey)
	if got := gatewaytest.Synthesize(ctx, g.Synth, &speechv1.SynthesizeRequest{Text: "hi", VoiceId: "avery"}); got.Err != nil {
		t.Fatal(got.Err)
	}
	gatewaytest.Synthesize(ctx, g.Synth, &speechv1.SynthesizeRequest{Text: "hi", VoiceId: "nobody"})
	var lines []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(g.Logs.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line is not JSON: %q", l)
		}
		if m["grpc.method"] == "Synthesize" {
			lines = append(lines, m)
		}
	}
	if len(lines) != 2 {
		t.Fatalf("%d log lines for 2 calls:\n%s", len(lines), g.Logs.String())
	}
	for i, wantCode := range []string{"OK", "InvalidArgument"} {
		l := lines[i]
		if l["grpc.code"] != wantCode || l["caller"] == nil || l["upstream_request_id"] == nil || l["grpc.time_ms"] == nil {
			t.Errorf("line %d = %v; want code %s with caller, upstream_request_id and duration", i, l, wantCode)
		}
	}
}

// TestReflectionServesTheDocumentation: `grpcurl describe` shows the
// .proto's comments only if reflection serves descriptors with source info,
// which the generated Go code does not carry.
func TestReflectionServesTheDocumentation(t *testing.T) {
	t.Parallel()
	g := gatewaytest.Start(t, emulator.New(emulator.Options{}), gatewaytest.Options{})
	for _, version := range []string{"v1", "v1alpha"} {
		var file []byte
		switch version {
		case "v1":
			stream, err := reflectionpb.NewServerReflectionClient(g.Conn).ServerReflectionInfo(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			stream.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_FileContainingSymbol{
				FileContainingSymbol: "speech.v1.SynthesizeRequest"}})
			resp, err := stream.Recv()
			if err != nil {
				t.Fatal(err)
			}
			stream.CloseSend()
			file = resp.GetFileDescriptorResponse().GetFileDescriptorProto()[0]
		case "v1alpha":
			stream, err := reflectionv1alpha.NewServerReflectionClient(g.Conn).ServerReflectionInfo(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			stream.Send(&reflectionv1alpha.ServerReflectionRequest{MessageRequest: &reflectionv1alpha.ServerReflectionRequest_FileContainingSymbol{
				FileContainingSymbol: "speech.v1.TranscribeRequest"}})
			resp, err := stream.Recv()
			if err != nil {
				t.Fatal(err)
			}
			stream.CloseSend()
			file = resp.GetFileDescriptorResponse().GetFileDescriptorProto()[0]
		}
		var fd descriptorpb.FileDescriptorProto
		if err := proto.Unmarshal(file, &fd); err != nil {
			t.Fatal(err)
		}
		var comments []string
		for _, loc := range fd.GetSourceCodeInfo().GetLocation() {
			comments = append(comments, loc.GetLeadingComments())
		}
		joined := strings.Join(comments, "\n")
		if !strings.Contains(joined, "Required") || len(comments) < 50 {
			t.Errorf("%s: %s came without its documentation (%d comments)", version, fd.GetName(), len(comments))
		}
	}
}
