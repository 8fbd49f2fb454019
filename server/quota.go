package server

import (
	"context"

	middleware "github.com/grpc-ecosystem/go-grpc-middleware/v2"
	"google.golang.org/grpc"
)

// Quota admits calls against their caller's quotas (package quota).
type Quota interface {
	// Admit charges a call's start, and returns the context the call runs
	// in and the function to call when it ends; or a status error.
	Admit(ctx context.Context, fullMethod string, streaming bool) (context.Context, func(), error)
}

// quotaUnary and quotaStream apply q to every call that is not exempt.
func quotaUnary(q Quota, exempt func(string) bool) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if exempt(serviceOf(info.FullMethod)) {
			return handler(ctx, req)
		}
		ctx, done, err := q.Admit(ctx, info.FullMethod, false)
		if err != nil {
			return nil, err
		}
		defer done()
		return handler(ctx, req)
	}
}

func quotaStream(q Quota, exempt func(string) bool) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if exempt(serviceOf(info.FullMethod)) {
			return handler(srv, ss)
		}
		ctx, done, err := q.Admit(ss.Context(), info.FullMethod, true)
		if err != nil {
			return err
		}
		defer done()
		ws := middleware.WrapServerStream(ss)
		ws.WrappedContext = ctx
		return handler(srv, ws)
	}
}
