package server_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	speechv1 "github.com/speechgate/speechgate/gen/speech/v1"
	"github.com/speechgate/speechgate/internal/auth"
	"github.com/speechgate/speechgate/internal/correlation"
	"github.com/speechgate/speechgate/internal/emulator"
	"github.com/speechgate/speechgate/internal/smallest"
	"github.com/speechgate/speechgate/server"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// callerKey is the caller's own Smallest key in passthrough tests.
const callerKey = "sk_caller_secret_0123456789"

// gateway is a speechgate server on an in-memory listener in front of an
// upstream, with clients of it.
type gateway struct {
	srv    *server.Server
	conn   *grpc.ClientConn
	synth  speechv1.SynthesisServiceClient
	trans  speechv1.TranscriptionServiceClient
	health healthpb.HealthClient
	logs   *syncBuffer
	lis    *bufconn.Listener
}

type options struct {
	mode        auth.Mode
	keys        []auth.ClientKey
	idleTimeout time.Duration
	voicesTTL   time.Duration
	// upstreamTimeout, when set, bounds the wait for Smallest's answers as
	// the gateway's own transport does (response headers, a WebSocket's
	// first message after a flush).
	upstreamTimeout time.Duration
	cfg             func(*server.Config)
}

// start runs a gateway in front of upstream for the life of the test.
func start(t testing.TB, upstream http.Handler, o options) *gateway {
	t.Helper()
	up := httptest.NewServer(upstream)
	t.Cleanup(up.Close)

	if o.mode == "" {
		o.mode = auth.ModePassthrough
	}
	upstreamKey := ""
	if o.mode != auth.ModePassthrough {
		upstreamKey = "sk_gateway_own_key_0123"
	}
	authn, err := auth.New(o.mode, upstreamKey, o.keys)
	if err != nil {
		t.Fatal(err)
	}
	hc := up.Client()
	if o.upstreamTimeout > 0 {
		hc = &http.Client{Transport: smallest.NewTransport(o.upstreamTimeout, 0)}
		t.Cleanup(hc.CloseIdleConnections)
	}
	client, err := smallest.New(smallest.Config{
		BaseURL: up.URL, USBaseURL: up.URL + emulator.USPrefix, HTTPClient: hc, Credential: authn.UpstreamKey,
		IdleTimeout: o.idleTimeout, ResponseTimeout: o.upstreamTimeout, VoicesTTL: o.voicesTTL, StreamPoolSize: 2,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	logs := &syncBuffer{}
	cfg := server.Config{
		Logger:        slog.New(correlation.Handler{Handler: slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})}),
		Authenticate:  authn.Authenticate,
		Speech:        client,
		Transcription: client,
		Live:          client,
	}
	if o.cfg != nil {
		o.cfg(&cfg)
	}
	srv, err := server.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	lis := bufconn.Listen(1 << 20)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	t.Cleanup(func() {
		srv.Shutdown(5 * time.Second)
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	g := &gateway{srv: srv, logs: logs, lis: lis}
	g.conn = g.dial(t)
	g.synth = speechv1.NewSynthesisServiceClient(g.conn)
	g.trans = speechv1.NewTranscriptionServiceClient(g.conn)
	g.health = healthpb.NewHealthClient(g.conn)
	return g
}

// dial opens a new client connection to the gateway, closed with the test.
func (g *gateway) dial(t testing.TB) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return g.lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// withKey returns ctx carrying the caller's bearer token.
func withKey(ctx context.Context, key string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+key)
}

// synthesis is everything a Synthesize stream delivered.
type synthesis struct {
	format *speechv1.SynthesisFormat
	audio  []*speechv1.AudioChunk
	totals *speechv1.SynthesisTotals
	order  []string // the kinds of message, in order
	err    error    // the status the stream ended with; nil for OK
}

func (s *synthesis) bytes() []byte {
	var b []byte
	for _, c := range s.audio {
		b = append(b, c.GetData()...)
	}
	return b
}

// synthesize runs one Synthesize call to its end.
func synthesize(ctx context.Context, c speechv1.SynthesisServiceClient, req *speechv1.SynthesizeRequest) *synthesis {
	out := &synthesis{}
	stream, err := c.Synthesize(ctx, req)
	if err != nil {
		out.err = err
		return out
	}
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			out.err = err
			return out
		}
		switch ev := msg.GetEvent().(type) {
		case *speechv1.SynthesizeResponse_Format:
			out.format = ev.Format
			out.order = append(out.order, "format")
		case *speechv1.SynthesizeResponse_Audio:
			out.audio = append(out.audio, ev.Audio)
			if len(out.order) == 0 || out.order[len(out.order)-1] != "audio" {
				out.order = append(out.order, "audio")
			}
		case *speechv1.SynthesizeResponse_Totals:
			out.totals = ev.Totals
			out.order = append(out.order, "totals")
		}
	}
}

// detail returns the first detail of type T in a status error.
func detail[T proto.Message](err error) T {
	var zero T
	for _, d := range status.Convert(err).Details() {
		if m, ok := d.(T); ok {
			return m
		}
	}
	return zero
}

func errorInfo(err error) *errdetails.ErrorInfo { return detail[*errdetails.ErrorInfo](err) }

// diff compares protos and plain values alike.
func diff(want, got any) string { return cmp.Diff(want, got, protocmp.Transform()) }

// syncBuffer is a bytes.Buffer safe for the server's concurrent log writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
