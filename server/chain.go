package server

import (
	"context"
	"errors"
	"log/slog"
	"runtime/debug"
	"slices"
	"strconv"
	"time"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors"
	authmw "github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/auth"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/selector"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"

	"github.com/speechgate/speechgate/internal/auth"
	"github.com/speechgate/speechgate/internal/correlation"
	"github.com/speechgate/speechgate/internal/metrics"
	"github.com/speechgate/speechgate/internal/rpcerror"
	"github.com/speechgate/speechgate/internal/translate"
)

// chain builds the server's one interceptor chain, outermost first:
//
//  0. correlation: the call's x-request-id, in every log line after it;
//     then the Prometheus interceptors (grpc_server_*, active streams),
//     which see the final status;
//  1. logging: one line per call, with the final code; health checks at
//     debug level, since probes call every few seconds;
//  2. outcome: a failed call's status read once, for its log line, its
//     failure metric and its retry pushback;
//  3. calls (drain.go): counts calls in flight and refuses new ones during
//     a shutdown (after logging, so that refusals are logged), and gives
//     each the context its handler works in;
//  4. auth: every call but health and reflection, which probes and grpcurl
//     make without credentials;
//  5. quota, when set: the caller's quotas (after auth, which names the
//     caller), with their state in the response headers;
//  6. translation: upstream failures become statuses with details;
//  7. recovery: a panic becomes an INTERNAL status (innermost, so that the
//     layers above still see and log the call).
func chain(log *slog.Logger, authenticate func(context.Context) (context.Context, error), q Quota, drain *drainer, m *metrics.Calls) ([]grpc.UnaryServerInterceptor, []grpc.StreamServerInterceptor) {
	logger := logging.LoggerFunc(func(ctx context.Context, lvl logging.Level, msg string, fields ...any) {
		log.Log(ctx, slog.Level(lvl), msg, fields...)
	})
	callLog := []logging.Option{logging.WithLogOnEvents(logging.FinishCall), logging.WithDurationField(durationField)}
	probeLog := append(slices.Clip(callLog), logging.WithLevels(func(codes.Code) logging.Level { return logging.LevelDebug }))

	authFunc := authmw.AuthFunc(func(ctx context.Context) (context.Context, error) {
		method, _ := grpc.Method(ctx)
		ctx, err := authenticate(auth.WithMethod(ctx, method)) // a token's scope is per method
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
	out := outcome{calls: m}

	unary := []grpc.UnaryServerInterceptor{
		correlation.UnaryServerInterceptor(),
		m.GRPC.UnaryServerInterceptor(),
		selector.UnaryServerInterceptor(logging.UnaryServerInterceptor(logger, callLog...), notProbe),
		selector.UnaryServerInterceptor(logging.UnaryServerInterceptor(logger, probeLog...), isProbe),
		out.unary,
		drain.unary(exempt),
		selector.UnaryServerInterceptor(authmw.UnaryServerInterceptor(authFunc), needsAuth),
	}
	if q != nil {
		unary = append(unary, quotaUnary(q, exempt))
	}
	unary = append(unary,
		translate.UnaryServerInterceptor(),
		recovery.UnaryServerInterceptor(panicked),
	)
	stream := []grpc.StreamServerInterceptor{
		correlation.StreamServerInterceptor(),
		m.GRPC.StreamServerInterceptor(),
		m.StreamServerInterceptor(),
		selector.StreamServerInterceptor(logging.StreamServerInterceptor(logger, callLog...), notProbe),
		selector.StreamServerInterceptor(logging.StreamServerInterceptor(logger, probeLog...), isProbe),
		out.stream,
		drain.stream(exempt),
		selector.StreamServerInterceptor(authmw.StreamServerInterceptor(authFunc), needsAuth),
	}
	if q != nil {
		stream = append(stream, quotaStream(q, exempt))
	}
	stream = append(stream,
		translate.StreamServerInterceptor(),
		recovery.StreamServerInterceptor(panicked),
	)
	return unary, stream
}

// durationField logs a call's duration in milliseconds, as a number.
func durationField(d time.Duration) logging.Fields {
	return logging.Fields{"grpc.time_ms", float64(d.Microseconds()) / 1000}
}

// outcome reads a failed call's final status once, and gives what it
// holds to the call's log line (error_reason, upstream_request_id), the
// failure metric, and gRPC's retry pushback: a RetryInfo delay goes out as
// grpc-retry-pushback-ms too, which clients with a retry policy (see the
// published service config) honour with no code of their own.
type outcome struct {
	calls *metrics.Calls
}

func (o outcome) note(ctx context.Context, fullMethod string, err error, setTrailer func(metadata.MD)) {
	if err == nil {
		return
	}
	sum := rpcerror.Summarize(err)
	fields := logging.Fields{"error_reason", sum.Reason}
	if sum.UpstreamRequestID != "" {
		fields = append(fields, "upstream_request_id", sum.UpstreamRequestID)
	}
	logging.AddFields(ctx, fields)
	o.calls.Failed(fullMethod, sum.Code, sum.Reason)
	if sum.RetryDelay > 0 {
		setTrailer(metadata.Pairs("grpc-retry-pushback-ms", strconv.FormatInt(sum.RetryDelay.Milliseconds(), 10)))
	}
}

func (o outcome) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	resp, err := handler(ctx, req)
	o.note(ctx, info.FullMethod, err, func(md metadata.MD) { grpc.SetTrailer(ctx, md) })
	return resp, err
}

func (o outcome) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	err := handler(srv, ss)
	o.note(ss.Context(), info.FullMethod, err, ss.SetTrailer)
	return err
}
