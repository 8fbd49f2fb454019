package rpcerror

import (
	"context"

	"google.golang.org/grpc"
)

// UnaryServerInterceptor translates a handler's error with FromError.
func UnaryServerInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		resp, err := handler(ctx, req)
		return resp, FromError(err)
	}
}

// StreamServerInterceptor translates a stream handler's error with FromError.
func StreamServerInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		return FromError(handler(srv, ss))
	}
}
