package rpcerror

import (
	"context"
	"strconv"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// UnaryServerInterceptor translates a handler's error with FromError, and
// passes a RetryInfo delay on as gRPC's retry pushback (see pushback).
func UnaryServerInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		resp, err := handler(ctx, req)
		err = FromError(err)
		if md := pushback(err); md != nil {
			grpc.SetTrailer(ctx, md)
		}
		return resp, err
	}
}

// StreamServerInterceptor translates a stream handler's error with FromError,
// and passes a RetryInfo delay on as gRPC's retry pushback.
func StreamServerInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		err := FromError(handler(srv, ss))
		if md := pushback(err); md != nil {
			ss.SetTrailer(md)
		}
		return err
	}
}

// pushback returns the grpc-retry-pushback-ms trailer for a status with a
// RetryInfo delay. gRPC clients with a retry policy (see the published
// service config) read it and wait that long before retrying, so Smallest's
// Retry-After is honoured without client code.
func pushback(err error) metadata.MD {
	if err == nil {
		return nil
	}
	for _, d := range status.Convert(err).Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok {
			return metadata.Pairs("grpc-retry-pushback-ms", strconv.FormatInt(ri.GetRetryDelay().AsDuration().Milliseconds(), 10))
		}
	}
	return nil
}
