// Package gatewaytest runs a whole speechgate inside a test: the server
// with its interceptor chain, the speech services and the upstream client,
// in front of an upstream the test provides (the emulator, or a fake that
// speaks Smallest's wire format), with a client connected in memory (or
// over loopback, for tools that dial an address). Everything it starts is
// stopped by the test's cleanup.
package gatewaytest

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/test/bufconn"

	speechv1 "github.com/speechgate/speechgate/gen/speech/v1"
	"github.com/speechgate/speechgate/internal/admission"
	"github.com/speechgate/speechgate/internal/auth"
	"github.com/speechgate/speechgate/internal/contract"
	"github.com/speechgate/speechgate/internal/correlation"
	"github.com/speechgate/speechgate/internal/emulator"
	"github.com/speechgate/speechgate/internal/fleet"
	"github.com/speechgate/speechgate/internal/quota"
	"github.com/speechgate/speechgate/internal/smallest"
	"github.com/speechgate/speechgate/internal/speech"
	"github.com/speechgate/speechgate/internal/tokens"
	"github.com/speechgate/speechgate/server"
)

// UpstreamKey is the gateway's own Smallest key in keys and none modes.
const UpstreamKey = "sk_gateway_own_key_0123"

// Options tune a test gateway. The zero value is a passthrough gateway with
// no upstream timeouts, a look-ahead of one piece, and a client in memory.
type Options struct {
	// Auth is the authentication mode (default passthrough); Keys are the
	// client keys of keys mode.
	Auth auth.Mode
	Keys []auth.ClientKey
	// IdleTimeout is the upstream idle timeout.
	IdleTimeout time.Duration
	// UpstreamTimeout, when set, bounds the wait for Smallest's answers as
	// the gateway's own transport does (response headers, a WebSocket's
	// first message after a flush).
	UpstreamTimeout time.Duration
	// VoicesTTL is how long voice lists are cached.
	VoicesTTL time.Duration
	// Server adjusts the transport's settings.
	Server func(*server.Config)
	// Speech adjusts the services' options.
	Speech func(*speech.Options)
	// Client adjusts the upstream client's settings (its Gate, retries).
	Client func(*smallest.Config)
	// Upstream, when set, wraps the upstream client: a decorator, or a
	// fake that misbehaves.
	Upstream func(speech.Upstream) speech.Upstream
	// Loopback serves on a loopback TCP port (Addr) instead of in memory.
	Loopback bool
	// Tokens, in keys mode, sign and verify short-lived tokens.
	Tokens *auth.Signer
	// Store keeps the account's budgets and the quotas of keys mode, which
	// the gateway always applies. Default: a new fleet.Local.
	Store fleet.Store
}

// Gateway is a running test gateway and a client of it.
type Gateway struct {
	Server *server.Server
	Conn   *grpc.ClientConn
	Synth  speechv1.SynthesisServiceClient
	Trans  speechv1.TranscriptionServiceClient
	Conv   speechv1.ConversationServiceClient
	Tokens speechv1.TokenServiceClient
	Health healthpb.HealthClient
	// Logs holds every line the gateway logged, as JSON.
	Logs *Logs
	// Addr is the loopback address with Options.Loopback.
	Addr string
	lis  net.Listener
	mem  *bufconn.Listener
}

// Start runs a gateway in front of upstream for the life of the test.
func Start(t testing.TB, upstream http.Handler, o Options) *Gateway {
	t.Helper()
	up := httptest.NewServer(upstream)
	t.Cleanup(up.Close)
	if o.Auth == "" {
		o.Auth = auth.ModePassthrough
	}
	key := ""
	if o.Auth != auth.ModePassthrough {
		key = UpstreamKey
	}
	authn, err := auth.New(o.Auth, key, o.Keys)
	if err != nil {
		t.Fatal(err)
	}
	authn.EnableTokens(o.Tokens)
	hc := up.Client()
	if o.UpstreamTimeout > 0 {
		hc = &http.Client{Transport: smallest.NewTransport(o.UpstreamTimeout, 0)}
		t.Cleanup(hc.CloseIdleConnections)
	}
	if o.Store == nil {
		o.Store = fleet.NewLocal()
	}
	// Admission as the gateway wires it: no budget set, limits learned from
	// the upstream's refusals.
	clientCfg := smallest.Config{
		BaseURL: up.URL, USBaseURL: up.URL + emulator.USPrefix, HTTPClient: hc, Credential: authn.UpstreamKey,
		IdleTimeout: o.IdleTimeout, ResponseTimeout: o.UpstreamTimeout, VoicesTTL: o.VoicesTTL, StreamPoolSize: 2,
		Gate: admission.New(admission.Config{Store: o.Store}),
	}
	if o.Client != nil {
		o.Client(&clientCfg)
	}
	client, err := smallest.New(clientCfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	var upstreamClient speech.Upstream = client
	if o.Upstream != nil {
		upstreamClient = o.Upstream(client)
	}

	docs, err := contract.Descriptors()
	if err != nil {
		t.Fatal(err)
	}
	logs := &Logs{}
	cfg := server.Config{
		Descriptors:  docs,
		Logger:       slog.New(correlation.Handler{Handler: slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})}),
		Authenticate: authn.Authenticate,
	}
	if o.Auth == auth.ModeKeys {
		cfg.Quota = quota.New(quota.Config{Limits: authn.Limits, Store: o.Store})
	}
	if o.Server != nil {
		o.Server(&cfg)
	}
	opts := speech.Options{Lookahead: 1}
	if o.Speech != nil {
		o.Speech(&opts)
	}
	srv, err := server.New(cfg, speech.NewSynthesis(upstreamClient, opts), speech.NewTranscription(upstreamClient, opts),
		speech.NewConversation(upstreamClient, opts), tokens.New(authn.Tokens()))
	if err != nil {
		t.Fatal(err)
	}
	g := &Gateway{Server: srv, Logs: logs}
	if o.Loopback {
		if g.lis, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		g.Addr = g.lis.Addr().String()
	} else {
		g.mem = bufconn.Listen(1 << 20)
		g.lis = g.mem
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(g.lis) }()
	t.Cleanup(func() {
		srv.Shutdown(5 * time.Second)
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	g.Conn = g.Dial(t)
	g.Synth = speechv1.NewSynthesisServiceClient(g.Conn)
	g.Trans = speechv1.NewTranscriptionServiceClient(g.Conn)
	g.Conv = speechv1.NewConversationServiceClient(g.Conn)
	g.Tokens = speechv1.NewTokenServiceClient(g.Conn)
	g.Health = healthpb.NewHealthClient(g.Conn)
	return g
}

// Dial opens a new client connection to the gateway, closed with the test.
func (g *Gateway) Dial(t testing.TB, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	target := g.Addr
	opts = append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...)
	if g.mem != nil {
		target = "passthrough:///bufnet"
		opts = append(opts, grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return g.mem.DialContext(ctx) }))
	}
	conn, err := grpc.NewClient(target, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// DialRaw opens a raw connection to the gateway, for a client of the test's own.
func (g *Gateway) DialRaw(ctx context.Context) (net.Conn, error) {
	if g.mem != nil {
		return g.mem.DialContext(ctx)
	}
	var d net.Dialer
	return d.DialContext(ctx, "tcp", g.Addr)
}

// WithKey returns ctx carrying a caller's bearer token.
func WithKey(ctx context.Context, key string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+key)
}

// Logs is a log sink safe for the gateway's concurrent writes.
type Logs struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *Logs) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *Logs) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Lines returns the JSON log lines of one method ("Synthesize"), or all
// lines for "", decoded.
func (l *Logs) Lines(method string) []map[string]any {
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(l.String()), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && (method == "" || m["grpc.method"] == method) {
			out = append(out, m)
		}
	}
	return out
}

// Capabilities returns an Options.Upstream that changes what the upstream
// says it can do, as another backend would.
func Capabilities(change func(*smallest.Capabilities)) func(speech.Upstream) speech.Upstream {
	return func(up speech.Upstream) speech.Upstream {
		caps := up.Capabilities()
		change(&caps)
		return capable{up, caps}
	}
}

type capable struct {
	speech.Upstream
	caps smallest.Capabilities
}

func (c capable) Capabilities() smallest.Capabilities { return c.caps }
