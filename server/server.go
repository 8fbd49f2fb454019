// Package server is speechgate's gRPC transport: the listener's options
// (keepalive, message sizes, TLS), the one interceptor chain every call goes
// through, health and reflection, and the drain a shutdown runs. The speech
// services register themselves on it; it knows nothing of speech.
package server

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	noopmetric "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/reflection"
	reflectionv1 "google.golang.org/grpc/reflection/grpc_reflection_v1"
	reflectionv1alpha "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"
	"google.golang.org/grpc/stats"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/speechgate/speechgate/internal/metrics"
)

// Defaults for Config's zero values. They are documented in the README.
const (
	DefaultMaxRecvMsgBytes  = 32 << 20
	DefaultMaxSendMsgBytes  = 16 << 20
	DefaultKeepaliveMinTime = 10 * time.Second
)

// Config configures a Server.
type Config struct {
	// Logger gets one line per call and the server's own events. Required.
	Logger *slog.Logger
	// Authenticate checks a call's credentials (the shape of
	// go-grpc-middleware's auth.AuthFunc); health and reflection calls are
	// exempt. Required.
	Authenticate func(context.Context) (context.Context, error)
	// Registerer, when set, gets the grpc_server_* metrics, failures by
	// reason and active streams.
	Registerer prometheus.Registerer
	// TracerProvider, when set, traces calls; leave it nil when spans are
	// not exported, since tracing with a provider that records nothing
	// still costs every call and message. Propagator, when set, reads the
	// caller's trace context into the call's context either way, so that
	// it reaches Smallest. Health and reflection calls are neither traced
	// nor read.
	TracerProvider trace.TracerProvider
	Propagator     propagation.TextMapPropagator
	// MaxRecvMsgBytes bounds one request message. Default DefaultMaxRecvMsgBytes.
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
	// Descriptors, when set, are what reflection serves for the services'
	// files, in place of the ones compiled into the Go code: descriptors
	// with source info carry the .proto's comments, so that `grpcurl
	// describe` shows the documentation.
	Descriptors *protoregistry.Files
	// Quota, when set, holds each caller to its quotas.
	Quota Quota
	// CallerStallTimeout is how long a caller may leave a stream unread
	// before the call's upstream work stops and the call ends with ABORTED,
	// reason CALLER_TOO_SLOW. Zero: no limit.
	CallerStallTimeout time.Duration
}

// Service is a gRPC service that registers itself on a server.
type Service interface {
	Register(*grpc.Server)
}

// Server is the gRPC server.
type Server struct {
	grpc     *grpc.Server
	health   *health.Server
	drain    *drainer
	log      *slog.Logger
	services []string // the names whose health follows the server's

	mu       sync.Mutex
	draining bool
	ready    bool // the whole server's health, as /readyz reports it
}

// LivenessService is a health service that reports SERVING for as long as
// the process runs, draining included: liveness probes check it, so that a
// pod finishing its streams is not restarted.
const LivenessService = "liveness"

// New returns a Server with the services registered, every one reporting
// SERVING, and health and reflection beside them.
func New(cfg Config, services ...Service) (*Server, error) {
	switch {
	case cfg.Logger == nil:
		return nil, errors.New("server: Config.Logger is required")
	case cfg.Authenticate == nil:
		return nil, errors.New("server: Config.Authenticate is required")
	}
	cfg.MaxRecvMsgBytes = cmp.Or(cfg.MaxRecvMsgBytes, DefaultMaxRecvMsgBytes)
	cfg.MaxSendMsgBytes = cmp.Or(cfg.MaxSendMsgBytes, DefaultMaxSendMsgBytes)
	cfg.KeepaliveMinTime = cmp.Or(cfg.KeepaliveMinTime, DefaultKeepaliveMinTime)
	reg := cfg.Registerer
	if reg == nil {
		reg = prometheus.NewRegistry() // counted, and never read
	}
	calls := metrics.NewCalls(reg)

	drain := newDrainer(cfg.CallerStallTimeout)
	unary, stream := chain(cfg.Logger, cfg.Authenticate, cfg.Quota, drain, calls)
	opts := []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(unary...),
		grpc.ChainStreamInterceptor(stream...),
		grpc.MaxRecvMsgSize(cfg.MaxRecvMsgBytes),
		grpc.MaxSendMsgSize(cfg.MaxSendMsgBytes),
		grpc.ForceServerCodecV2(newPooledCodec(mem.DefaultBufferPool())),
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
	switch {
	case cfg.TracerProvider != nil:
		opts = append(opts, grpc.StatsHandler(otelgrpc.NewServerHandler(
			otelgrpc.WithTracerProvider(cfg.TracerProvider), otelgrpc.WithPropagators(cfg.Propagator),
			otelgrpc.WithMeterProvider(noopmetric.NewMeterProvider()), // metrics are Prometheus'
			otelgrpc.WithFilter(func(info *stats.RPCTagInfo) bool { return !exempt(serviceOf(info.FullMethodName)) }),
		)))
	case cfg.Propagator != nil:
		opts = append(opts, grpc.StatsHandler(propagating{cfg.Propagator}))
	}
	gs := grpc.NewServer(opts...)
	for _, svc := range services {
		svc.Register(gs)
	}
	names := slices.Sorted(func(yield func(string) bool) {
		for name := range gs.GetServiceInfo() {
			if !yield(name) {
				return
			}
		}
	})

	hs := health.NewServer()
	healthpb.RegisterHealthServer(gs, hs)
	for _, name := range append([]string{"", LivenessService}, names...) {
		hs.SetServingStatus(name, healthpb.HealthCheckResponse_SERVING)
	}
	registerReflection(gs, cfg.Descriptors)
	calls.GRPC.InitializeMetrics(gs)
	return &Server{grpc: gs, health: hs, drain: drain, log: cfg.Logger, services: names, ready: true}, nil
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
// so that probes and load balancers see it leave; new calls are refused with
// UNAVAILABLE (reason DRAINING), which clients retry elsewhere; calls in
// flight run to completion for up to grace. Those still running then end
// with UNAVAILABLE, reason DRAINING, and the server stops. It reports
// whether every call finished within the grace.
func (s *Server) Shutdown(grace time.Duration) bool {
	idle := s.drain.drain() // before health flips, so that no call slips in between
	s.mu.Lock()
	s.draining = true
	for _, name := range append([]string{""}, s.services...) {
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
		s.drain.cut(grace)
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

// registerReflection serves reflection, v1 and v1alpha (some tools still
// ask for the older), from files first if set, then from the descriptors
// compiled in (health and reflection's own, the well-known types).
func registerReflection(gs *grpc.Server, files *protoregistry.Files) {
	opts := reflection.ServerOptions{Services: gs}
	if files != nil {
		opts.DescriptorResolver = resolvers{files, protoregistry.GlobalFiles}
	}
	reflectionv1.RegisterServerReflectionServer(gs, reflection.NewServerV1(opts))
	reflectionv1alpha.RegisterServerReflectionServer(gs, reflection.NewServer(opts))
}

// resolvers looks descriptors up in each resolver in turn.
type resolvers []protodesc.Resolver

func (rs resolvers) FindFileByPath(path string) (protoreflect.FileDescriptor, error) {
	for _, r := range rs {
		if fd, err := r.FindFileByPath(path); err == nil {
			return fd, nil
		}
	}
	return nil, protoregistry.NotFound
}

func (rs resolvers) FindDescriptorByName(name protoreflect.FullName) (protoreflect.Descriptor, error) {
	for _, r := range rs {
		if d, err := r.FindDescriptorByName(name); err == nil {
			return d, nil
		}
	}
	return nil, protoregistry.NotFound
}

// cutWait bounds how long calls cut off at the end of a drain have to
// return their status before the server stops regardless.
const cutWait = 2 * time.Second

func isHealth(service string) bool { return service == healthpb.Health_ServiceDesc.ServiceName }

// exempt reports whether a service is open without credentials.
func exempt(service string) bool {
	return isHealth(service) || strings.HasPrefix(service, "grpc.reflection.")
}
