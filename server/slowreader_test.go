package server_test

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/speechgate/speechgate/internal/gatewaytest"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	speechv1 "github.com/speechgate/speechgate/gen/speech/v1"
	"github.com/speechgate/speechgate/internal/emulator"
	"github.com/speechgate/speechgate/server"
)

// tightClient is a client whose HTTP/2 windows stay at 64 KiB (no BDP
// growth), so that a pause in reading stops the gateway's sends at once.
func tightClient(t *testing.T, g *gatewaytest.Gateway) speechv1.SynthesisServiceClient {
	t.Helper()
	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return g.DialRaw(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return speechv1.NewSynthesisServiceClient(conn)
}

// readAfterPause reads the first message of a long synthesis, pauses, then
// reads the rest; it returns the audio bytes and the final status.
func readAfterPause(ctx context.Context, c speechv1.SynthesisServiceClient, pause time.Duration) (int, error) {
	stream, err := c.Synthesize(ctx, &speechv1.SynthesizeRequest{Text: strings.Repeat("a", 2000), VoiceId: "avery", SampleRateHz: 8000})
	if err != nil {
		return 0, err
	}
	if _, err := stream.Recv(); err != nil {
		return 0, err
	}
	time.Sleep(pause)
	n := 0
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil {
			return n, err
		}
		n += len(msg.GetAudio().GetData())
	}
}

// TestSlowReaderIsNotUpstreamSilence: a caller that pauses reading longer
// than the upstream idle timeout still gets its whole stream: the idle
// timer counts only time the gateway is ready to read.
func TestSlowReaderIsNotUpstreamSilence(t *testing.T) {
	t.Parallel()
	g := gatewaytest.Start(t, emulator.New(emulator.Options{}), gatewaytest.Options{IdleTimeout: 200 * time.Millisecond,
		Server: func(c *server.Config) { c.CallerStallTimeout = 10 * time.Second }})
	n, err := readAfterPause(gatewaytest.WithKey(t.Context(), callerKey), tightClient(t, g), 700*time.Millisecond)
	if err != nil {
		t.Fatalf("after a 700 ms pause in reading: %v (reason %s); the upstream was not silent, the caller was slow", err, gatewaytest.ErrorInfo(err).GetReason())
	}
	if want := 2000 * 60 * 8 * 2; n != want { // 60 ms of 8 kHz PCM16 per character
		t.Errorf("got %d bytes of audio, want %d", n, want)
	}
}

// TestStalledCallerIsNamed: a caller that leaves its stream unread past the
// stall limit ends with ABORTED / CALLER_TOO_SLOW once it reads again, and
// the gateway lets go of the upstream request meanwhile.
func TestStalledCallerIsNamed(t *testing.T) {
	t.Parallel()
	g := gatewaytest.Start(t, emulator.New(emulator.Options{}), gatewaytest.Options{IdleTimeout: 100 * time.Millisecond,
		Server: func(c *server.Config) { c.CallerStallTimeout = 300 * time.Millisecond }})
	_, err := readAfterPause(gatewaytest.WithKey(t.Context(), callerKey), tightClient(t, g), time.Second)
	if status.Code(err) != codes.Aborted || gatewaytest.ErrorInfo(err).GetReason() != "CALLER_TOO_SLOW" {
		t.Fatalf("err = %v (reason %q), want ABORTED with reason CALLER_TOO_SLOW", err, gatewaytest.ErrorInfo(err).GetReason())
	}
}
