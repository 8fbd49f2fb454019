// Package server is speechgate's gRPC server: the speech.v1 services, health
// and reflection, behind one interceptor chain, with the keepalive, message
// size and drain behaviour that service meshes expect.
package server

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors"
	authmw "github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/auth"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/selector"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	noopmetric "go.opentelemetry.io/otel/metric/noop"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"

	speechv1 "github.com/speechgate/speechgate/gen/speech/v1"
	"github.com/speechgate/speechgate/internal/auth"
	"github.com/speechgate/speechgate/internal/correlation"
	"github.com/speechgate/speechgate/internal/metrics"
	"github.com/speechgate/speechgate/internal/rpcerror"
	"github.com/speechgate/speechgate/internal/tracing"
)

// Defaults for Config's zero values. They are documented in the README.
const (
	DefaultMaxRecvMsgBytes  = 32 << 20
	DefaultMaxSendMsgBytes  = 16 << 20
	DefaultKeepaliveMinTime = 10 * time.Second
	// DefaultMaxUploadBytes is Pulse's documented limit: 250 MB.
	DefaultMaxUploadBytes = 250 << 20
	// DefaultPieceChars is the size long text is split to: Smallest advises
	// at most 250 characters per request.
	DefaultPieceChars = 250
	// DefaultLookahead is how many pieces of a long text are requested
	// ahead of the one streaming.
	DefaultLookahead = 1
)

// Config configures a Server.
type Config struct {
	// Logger gets one line per call and the server's own events. Required.
	Logger *slog.Logger
	// Authenticate checks a call's credentials (an auth.AuthFunc); health and
	// reflection calls are exempt. Required.
	Authenticate func(context.Context) (context.Context, error)
	// Speech serves synthesis. Required unless SpeechUnavailable says why not.
	Speech SpeechUpstream
	// SpeechUnavailable, when set, makes the synthesis RPCs answer
	// UNIMPLEMENTED with this explanation (a backend without TTS).
	SpeechUnavailable string
	// Transcription serves speech-to-text. Required.
	Transcription TranscriptionUpstream
	// Live serves realtime recognition. Required unless LiveUnavailable says why not.
	Live LiveUpstream
	// LiveUnavailable, when set, makes TranscribeLive answer UNIMPLEMENTED
	// with this explanation.
	LiveUnavailable string
	// PieceChars is the size, in characters, that Synthesize splits longer
	// text to. Default DefaultPieceChars.
	PieceChars int
	// Lookahead is how many pieces of a long text are requested ahead of the
	// one streaming; negative: none. Default DefaultLookahead.
	Lookahead int
	// MaxUploadBytes is the largest recording the upstream accepts, enforced
	// on TranscribeUpload as the bytes arrive. Default DefaultMaxUploadBytes.
	MaxUploadBytes int64
	// MaxRecvMsgBytes bounds one request message (and so the audio of a unary
	// Transcribe). Default DefaultMaxRecvMsgBytes.
	MaxRecvMsgBytes int
	// MaxSendMsgBytes bounds one response message. Default DefaultMaxSendMsgBytes.
	MaxSendMsgBytes int
	// KeepaliveMinTime is the shortest interval between client pings the server
	// tolerates; sidecars ping, and a stricter policy makes the server close
	// their connections with ENHANCE_YOUR_CALM. Default DefaultKeepaliveMinTime.
	KeepaliveMinTime time.Duration
	// MaxConnectionAge, when positive, asks clients to reconnect after this
	// long, so that load spreads over new replicas. MaxConnectionAgeGrace is
	// how long streams in flight may then continue; it must outlast the
	// longest stream.
	MaxConnectionAge, MaxConnectionAgeGrace time.Duration
	// TLS, when set, serves TLS instead of plaintext h2c.
	TLS *tls.Config
	// Metrics records the gateway's Prometheus metrics. Default: discarded.
	Metrics *metrics.Metrics
	// Tracing, when set, traces calls (W3C context in, spans out). Health
	// and reflection calls are not traced.
	Tracing *tracing.Tracing
	// CallerStallTimeout is how long a caller may leave a stream unread
	// before the gateway stops the call's upstream work and ends it with
	// ABORTED, reason CALLER_TOO_SLOW. Zero: no limit.
	CallerStallTimeout time.Duration
}

// Server is the gRPC server.
type Server struct {
	grpc   *grpc.Server
	health *health.Server
	drain  *drainer
	log    *slog.Logger

	mu       sync.Mutex
	draining bool
	ready    bool // the whole server's health, as /readyz reports it
}

// LivenessService is a health service that reports SERVING for as long as
// the process runs, draining included: liveness probes check it, so that a
// pod finishing its streams is not restarted.
const LivenessService = "liveness"

// The services whose health is reported, besides the server as a whole ("").
var services = []string{
	speechv1.SynthesisService_ServiceDesc.ServiceName,
	speechv1.TranscriptionService_ServiceDesc.ServiceName,
}

// New returns a Server with every service registered and reporting SERVING.
func New(cfg Config) (*Server, error) {
	switch {
	case cfg.Logger == nil:
		return nil, errors.New("server: Config.Logger is required")
	case cfg.Authenticate == nil:
		return nil, errors.New("server: Config.Authenticate is required")
	case cfg.Speech == nil && cfg.SpeechUnavailable == "":
		return nil, errors.New("server: Config.Speech is required")
	case cfg.Transcription == nil:
		return nil, errors.New("server: Config.Transcription is required")
	case cfg.Live == nil && cfg.LiveUnavailable == "":
		return nil, errors.New("server: Config.Live is required")
	}
	cfg.MaxRecvMsgBytes = cmp.Or(cfg.MaxRecvMsgBytes, DefaultMaxRecvMsgBytes)
	cfg.MaxSendMsgBytes = cmp.Or(cfg.MaxSendMsgBytes, DefaultMaxSendMsgBytes)
	cfg.KeepaliveMinTime = cmp.Or(cfg.KeepaliveMinTime, DefaultKeepaliveMinTime)
	cfg.MaxUploadBytes = cmp.Or(cfg.MaxUploadBytes, DefaultMaxUploadBytes)
	cfg.PieceChars = cmp.Or(cfg.PieceChars, DefaultPieceChars)
	if cfg.Metrics == nil {
		cfg.Metrics = metrics.Discard()
	}
	cfg.Lookahead = cmp.Or(cfg.Lookahead, DefaultLookahead)

	drain := newDrainer(cfg.CallerStallTimeout)
	unary, stream := chain(cfg.Logger, cfg.Authenticate, drain, cfg.Metrics)
	opts := []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(unary...),
		grpc.ChainStreamInterceptor(stream...),
		grpc.MaxRecvMsgSize(cfg.MaxRecvMsgBytes),
		grpc.MaxSendMsgSize(cfg.MaxSendMsgBytes),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime:             cfg.KeepaliveMinTime,
			PermitWithoutStream: true,
		}),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			// Ping idle connections so that a vanished peer is noticed within
			// a minute and a half rather than the two-hour default.
			Time:                  time.Minute,
			Timeout:               20 * time.Second,
			MaxConnectionAge:      cfg.MaxConnectionAge,
			MaxConnectionAgeGrace: cfg.MaxConnectionAgeGrace,
		}),
	}
	if cfg.TLS != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(cfg.TLS)))
	}
	if t := cfg.Tracing; t != nil {
		opts = append(opts, grpc.StatsHandler(otelgrpc.NewServerHandler(
			otelgrpc.WithTracerProvider(t.Provider), otelgrpc.WithPropagators(t.Propagator),
			otelgrpc.WithMeterProvider(noopmetric.NewMeterProvider()), // metrics are Prometheus'
			otelgrpc.WithFilter(func(info *stats.RPCTagInfo) bool { return !exempt(serviceOf(info.FullMethodName)) }),
		)))
	}
	gs := grpc.NewServer(opts...)
	speechv1.RegisterSynthesisServiceServer(gs, &synthesisService{
		upstream: cfg.Speech, unavailable: cfg.SpeechUnavailable, pieceChars: cfg.PieceChars, lookahead: max(cfg.Lookahead, 0),
		metrics: cfg.Metrics,
	})
	speechv1.RegisterTranscriptionServiceServer(gs, &transcriptionService{
		upstream: cfg.Transcription, maxUpload: cfg.MaxUploadBytes, live: cfg.Live, liveUnavailable: cfg.LiveUnavailable,
		metrics: cfg.Metrics,
	})

	hs := health.NewServer()
	healthpb.RegisterHealthServer(gs, hs)
	for _, name := range append([]string{"", LivenessService}, services...) {
		hs.SetServingStatus(name, healthpb.HealthCheckResponse_SERVING)
	}
	reflection.Register(gs) // v1 and v1alpha
	cfg.Metrics.GRPC.InitializeMetrics(gs)
	return &Server{grpc: gs, health: hs, drain: drain, log: cfg.Logger, ready: true}, nil
}

// Serve accepts connections on l until Shutdown. It returns nil after a
// shutdown and the listener's error otherwise.
func (s *Server) Serve(l net.Listener) error {
	err := s.grpc.Serve(l)
	if errors.Is(err, grpc.ErrServerStopped) {
		return nil
	}
	return err
}

// SetServing reports a service's health: "" for the server as a whole.
// Once the server drains, everything but LivenessService stays NOT_SERVING.
func (s *Server) SetServing(service string, serving bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.draining {
		return
	}
	s.setServing(service, serving)
}

func (s *Server) setServing(service string, serving bool) {
	st := healthpb.HealthCheckResponse_NOT_SERVING
	if serving {
		st = healthpb.HealthCheckResponse_SERVING
	}
	s.health.SetServingStatus(service, st)
	if service == "" {
		s.ready = serving
	}
}

// Ready reports whether the server takes new calls: the health of "".
func (s *Server) Ready() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ready
}

// Shutdown drains the server and stops it. Health turns NOT_SERVING at once
// (but for LivenessService), and the server keeps answering health checks,
// so that probes and load balancers see it leave; new speech calls are refused with UNAVAILABLE
// (reason DRAINING), which clients retry elsewhere; calls in flight run to
// completion for up to grace. Then the server stops, cutting off whatever
// remains. It reports whether every call finished within the grace.
func (s *Server) Shutdown(grace time.Duration) bool {
	idle := s.drain.drain() // before health flips, so that no call slips in between
	s.mu.Lock()
	s.draining = true
	for _, name := range append([]string{""}, services...) {
		s.setServing(name, false)
	}
	s.mu.Unlock()
	timer := time.NewTimer(grace)
	defer timer.Stop()
	drained := true
	select {
	case <-idle:
	case <-timer.C:
		drained = false
		s.log.Warn("drain grace expired; cutting off the calls still in flight", "grace", grace)
		// Each call ends with a status that says why, rather than with the
		// bare UNAVAILABLE of a transport closing under it.
		s.drain.cut(rpcerror.DrainCut(grace))
		select {
		case <-idle:
		case <-time.After(cutWait):
		}
	}
	// Only health and reflection calls remain, and the statuses of the calls
	// just ended still to be written: GracefulStop sends GOAWAY and waits for
	// them, briefly, since a health Watch never ends by itself.
	stopped := make(chan struct{})
	go func() {
		s.grpc.GracefulStop()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-time.After(time.Second):
		s.grpc.Stop()
		<-stopped
	}
	return drained
}

// cutWait bounds how long calls cut off at the end of a drain have to
// return their status before the server stops regardless.
const cutWait = 2 * time.Second

// chain builds the server's one interceptor chain, outermost first:
//
//  0. correlation: the call's x-request-id, in every log line after it;
//     then the Prometheus interceptors (grpc_server_*, errors by reason,
//     active streams), which see the final status;
//  1. logging: one line per call, with the final code; health checks at
//     debug level, since probes call every few seconds;
//  2. drain: counts speech calls in flight and refuses new ones during a
//     shutdown (after logging, so that refusals are logged);
//  3. auth: every call but health and reflection, which probes and grpcurl
//     make without credentials;
//  4. error translation: upstream failures become statuses with details;
//  5. recovery: a panic becomes an INTERNAL status (innermost, so that the
//     layers above still see and log the call).
func chain(log *slog.Logger, authenticate func(context.Context) (context.Context, error), drain *drainer, m *metrics.Metrics) ([]grpc.UnaryServerInterceptor, []grpc.StreamServerInterceptor) {
	logger := logging.LoggerFunc(func(ctx context.Context, lvl logging.Level, msg string, fields ...any) {
		log.Log(ctx, slog.Level(lvl), msg, fields...)
	})
	callLog := []logging.Option{logging.WithLogOnEvents(logging.FinishCall), logging.WithErrorFields(errorFields)}
	probeLog := append(slices.Clip(callLog), logging.WithLevels(func(codes.Code) logging.Level { return logging.LevelDebug }))

	authFunc := authmw.AuthFunc(func(ctx context.Context) (context.Context, error) {
		ctx, err := authenticate(ctx)
		if err != nil {
			return nil, err
		}
		logging.AddFields(ctx, logging.Fields{"caller", auth.Caller(ctx)})
		return ctx, nil
	})
	needsAuth := selector.MatchFunc(func(_ context.Context, c interceptors.CallMeta) bool { return !exempt(c.Service) })
	isProbe := selector.MatchFunc(func(_ context.Context, c interceptors.CallMeta) bool { return isHealth(c.Service) })
	notProbe := selector.MatchFunc(func(_ context.Context, c interceptors.CallMeta) bool { return !isHealth(c.Service) })

	panicked := recovery.WithRecoveryHandlerContext(func(ctx context.Context, p any) error {
		log.ErrorContext(ctx, "handler panicked", "panic", p, "stack", string(debug.Stack()))
		return errors.New("the handler failed unexpectedly; the gateway's log has the details")
	})

	unary := []grpc.UnaryServerInterceptor{
		correlation.UnaryServerInterceptor(),
		m.GRPC.UnaryServerInterceptor(),
		m.UnaryServerInterceptor(),
		selector.UnaryServerInterceptor(logging.UnaryServerInterceptor(logger, callLog...), notProbe),
		selector.UnaryServerInterceptor(logging.UnaryServerInterceptor(logger, probeLog...), isProbe),
		drain.unary(exempt),
		selector.UnaryServerInterceptor(authmw.UnaryServerInterceptor(authFunc), needsAuth),
		rpcerror.UnaryServerInterceptor(),
		recovery.UnaryServerInterceptor(panicked),
	}
	stream := []grpc.StreamServerInterceptor{
		correlation.StreamServerInterceptor(),
		m.GRPC.StreamServerInterceptor(),
		m.StreamServerInterceptor(),
		selector.StreamServerInterceptor(logging.StreamServerInterceptor(logger, callLog...), notProbe),
		selector.StreamServerInterceptor(logging.StreamServerInterceptor(logger, probeLog...), isProbe),
		drain.stream(exempt),
		selector.StreamServerInterceptor(authmw.StreamServerInterceptor(authFunc), needsAuth),
		rpcerror.StreamServerInterceptor(),
		recovery.StreamServerInterceptor(panicked),
	}
	return unary, stream
}

// errorFields adds a failed call's ErrorInfo reason and Smallest's request id
// to its log line, so that on-call can grep for either.
func errorFields(err error) logging.Fields {
	for _, d := range status.Convert(err).Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			f := logging.Fields{"error_reason", info.GetReason()}
			if id := info.GetMetadata()["upstreamRequestId"]; id != "" {
				f = append(f, "upstream_request_id", id)
			}
			return f
		}
	}
	return nil
}

func isHealth(service string) bool { return service == healthpb.Health_ServiceDesc.ServiceName }

// exempt reports whether a service is open without credentials.
func exempt(service string) bool {
	return isHealth(service) || strings.HasPrefix(service, "grpc.reflection.")
}
