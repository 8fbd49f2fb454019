package server_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/speechgate/speechgate/internal/gatewaytest"

	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	speechv1 "github.com/speechgate/speechgate/gen/speech/v1"
	"github.com/speechgate/speechgate/internal/emulator"
)

// stalled is an upstream that never answers, until the request ends. It
// reads the body first: only then does net/http notice the client leaving.
var stalled = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	io.Copy(io.Discard, r.Body)
	<-r.Context().Done()
})

// rawCall makes a gRPC call over a bare HTTP/2 client that sends
// grpc-timeout and keeps no timer of its own, as many clients behave: the
// deadline is enforced by the gateway alone. It returns the status from the
// trailers, or the transport error when there were none.
func rawCall(ctx context.Context, g *gatewaytest.Gateway, method string, req proto.Message, timeout string) (*status.Status, error) {
	tr := &http.Transport{Protocols: new(http.Protocols), DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return g.DialRaw(ctx)
	}}
	tr.Protocols.SetUnencryptedHTTP2(true) // h2c, as gRPC without TLS
	defer tr.CloseIdleConnections()
	msg, err := proto.Marshal(req)
	if err != nil {
		return nil, err
	}
	body := make([]byte, 5, 5+len(msg))
	binary.BigEndian.PutUint32(body[1:], uint32(len(msg)))
	body = append(body, msg...)
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://bufnet"+method, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	hr.Header.Set("Content-Type", "application/grpc")
	hr.Header.Set("TE", "trailers")
	hr.Header.Set("Grpc-Timeout", timeout)
	hr.Header.Set("Authorization", "Bearer "+callerKey)
	resp, err := tr.RoundTrip(hr)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return nil, err // RST_STREAM: no status at all
	}
	code := resp.Trailer.Get("Grpc-Status")
	if code == "" {
		code = resp.Header.Get("Grpc-Status") // a trailers-only response
	}
	if code == "" {
		return nil, fmt.Errorf("no grpc-status in the response")
	}
	details := resp.Trailer.Get("Grpc-Status-Details-Bin")
	if details == "" {
		details = resp.Header.Get("Grpc-Status-Details-Bin")
	}
	raw, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(details, "="))
	if err != nil {
		return nil, err
	}
	var sp spb.Status
	if err := proto.Unmarshal(raw, &sp); err != nil {
		return nil, err
	}
	return status.FromProto(&sp), nil
}

// TestServerEnforcedDeadlineIsAStatus: when only the gateway enforces a
// deadline (grpc-timeout with no client timer), the caller must always get
// DEADLINE_EXCEEDED with its ErrorInfo, never a bare RST_STREAM(CANCEL),
// and the gateway must log the call as a deadline.
func TestServerEnforcedDeadlineIsAStatus(t *testing.T) {
	t.Parallel()
	g := gatewaytest.Start(t, stalled, gatewaytest.Options{})
	// At 1 s the margin is 100 ms, room enough for a loaded machine running
	// the race detector; without a margin nearly every call loses the race.
	const calls, timeout = 24, "1S"
	var wg sync.WaitGroup
	results := make([]string, calls)
	for i := range calls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var st *status.Status
			var err error
			if i%2 == 0 {
				st, err = rawCall(t.Context(), g, "/speech.v1.SynthesisService/Synthesize",
					&speechv1.SynthesizeRequest{Text: "hello", VoiceId: "avery"}, timeout)
			} else {
				st, err = rawCall(t.Context(), g, "/speech.v1.SynthesisService/ListVoices", &speechv1.ListVoicesRequest{}, timeout)
			}
			switch {
			case err != nil:
				results[i] = "transport error: " + err.Error()
			case st.Code() != codes.DeadlineExceeded:
				results[i] = "code " + st.Code().String()
			case reasonOf(st) != "DEADLINE_EXCEEDED":
				results[i] = "reason " + reasonOf(st)
			}
		}()
	}
	wg.Wait()
	for i, r := range results {
		if r != "" {
			t.Errorf("call %d: %s; want DEADLINE_EXCEEDED with reason DEADLINE_EXCEEDED", i, r)
		}
	}
	for _, l := range strings.Split(strings.TrimSpace(g.Logs.String()), "\n") {
		var m map[string]any
		json.Unmarshal([]byte(l), &m)
		if m["grpc.method"] == "Synthesize" || m["grpc.method"] == "ListVoices" {
			if m["grpc.code"] != "DeadlineExceeded" {
				t.Errorf("logged as %v: %s", m["grpc.code"], l)
			}
		}
	}
}

func reasonOf(st *status.Status) string {
	return gatewaytest.ErrorInfo(st.Err()).GetReason()
}

// TestCutOffCallsSayDraining: calls still running when the drain grace
// runs out end with reason DRAINING, in the status and in the log, not with
// the bare UNAVAILABLE of a closing transport.
func TestCutOffCallsSayDraining(t *testing.T) {
	t.Parallel()
	g := gatewaytest.Start(t, emulator.New(emulator.Options{Pace: 1}), gatewaytest.Options{})
	ctx := gatewaytest.WithKey(t.Context(), callerKey)
	synth, err := g.Synth.Synthesize(ctx, &speechv1.SynthesizeRequest{Text: strings.Repeat("a", 500), VoiceId: "avery"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := synth.Recv(); err != nil {
		t.Fatal(err)
	}
	live, err := g.Trans.TranscribeLive(ctx)
	if err != nil {
		t.Fatal(err)
	}
	live.Send(&speechv1.TranscribeLiveRequest{Part: &speechv1.TranscribeLiveRequest_Config{Config: &speechv1.LiveTranscriptionConfig{
		Language: "en", InterimResults: true}}})
	live.Send(&speechv1.TranscribeLiveRequest{Part: &speechv1.TranscribeLiveRequest_Audio{Audio: make([]byte, 32000)}})
	if _, err := live.Recv(); err != nil { // an interim transcript: the session is up
		t.Fatal(err)
	}
	if g.Server.Shutdown(200 * time.Millisecond) {
		t.Fatal("Shutdown reported a clean drain while calls were in flight")
	}
	recvErr := func(recv func() error) error {
		for {
			if err := recv(); err != nil {
				return err
			}
		}
	}
	for name, err := range map[string]error{
		"Synthesize":     recvErr(func() error { _, err := synth.Recv(); return err }),
		"TranscribeLive": recvErr(func() error { _, err := live.Recv(); return err }),
	} {
		if status.Code(err) != codes.Unavailable || gatewaytest.ErrorInfo(err).GetReason() != "DRAINING" {
			t.Errorf("%s ended with %v (%s), want UNAVAILABLE with reason DRAINING", name, err, gatewaytest.ErrorInfo(err).GetReason())
		}
	}
	for _, l := range strings.Split(strings.TrimSpace(g.Logs.String()), "\n") {
		var m map[string]any
		json.Unmarshal([]byte(l), &m)
		if m["grpc.method"] == "Synthesize" || m["grpc.method"] == "TranscribeLive" {
			if m["grpc.code"] != "Unavailable" || m["error_reason"] != "DRAINING" {
				t.Errorf("logged as %v/%v: %s", m["grpc.code"], m["error_reason"], l)
			}
		}
	}
}

// TestCallerLeavingIsACancel: a caller whose connection goes away mid-stream
// is logged as a cancel, not as UNAVAILABLE "transport is closing", which
// on-call would read as the gateway's or Smallest's fault.
func TestCallerLeavingIsACancel(t *testing.T) {
	t.Parallel()
	g := gatewaytest.Start(t, emulator.New(emulator.Options{Pace: 1}), gatewaytest.Options{})
	conn := g.Dial(t)
	stream, err := speechv1.NewSynthesisServiceClient(conn).Synthesize(gatewaytest.WithKey(t.Context(), callerKey),
		&speechv1.SynthesizeRequest{Text: strings.Repeat("a", 200), VoiceId: "avery"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	conn.Close()
	var line map[string]any
	gatewaytest.WaitFor(t, func() bool {
		for _, l := range strings.Split(strings.TrimSpace(g.Logs.String()), "\n") {
			var m map[string]any
			if json.Unmarshal([]byte(l), &m) == nil && m["grpc.method"] == "Synthesize" {
				line = m
				return true
			}
		}
		return false
	})
	if line["grpc.code"] != "Canceled" || line["level"] != "INFO" {
		t.Errorf("logged as %v at %v, want Canceled at INFO: %v", line["grpc.code"], line["level"], line)
	}
}
