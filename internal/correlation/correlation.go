// Package correlation gives every call an id that ties together the
// caller's logs, the gateway's and Smallest's: the caller's x-request-id
// metadata when it sends a usable one, a new random id otherwise. The id is
// returned in the response metadata and added to every log line written
// with the call's context.
//
// The id always travels in the trailer, and in the headers only once a
// response message goes out: a failed call then ends with a trailers-only
// response, which gRPC clients may retry. Headers sent before a failure
// would commit the call and rule retries out.
package correlation

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"regexp"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
)

// Header is the metadata key of the id, in requests and responses.
const Header = "x-request-id"

// UpstreamHeader is the response metadata key of Smallest's own request id.
const UpstreamHeader = "x-upstream-request-id"

type ctxKey struct{}

// valid is the form of id the gateway accepts from callers: the form
// Smallest accepts for its request_id, so the id can be passed on.
var valid = regexp.MustCompile(`^[A-Za-z0-9_.\-]{1,128}$`)

// ID returns the call's id, or "" outside a call.
func ID(ctx context.Context) string {
	id, _ := ctx.Value(ctxKey{}).(string)
	return id
}

func begin(ctx context.Context) (context.Context, metadata.MD) {
	id := ""
	if vals := metadata.ValueFromIncomingContext(ctx, Header); len(vals) > 0 && valid.MatchString(vals[0]) {
		id = vals[0]
	} else {
		var b [12]byte
		rand.Read(b[:])
		id = hex.EncodeToString(b[:])
	}
	return context.WithValue(ctx, ctxKey{}, id), metadata.Pairs(Header, id)
}

// UnaryServerInterceptor gives each call its id. It goes first in the chain,
// so that everything after it logs with the id.
func UnaryServerInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		ctx, md := begin(ctx)
		resp, err := handler(ctx, req)
		if err == nil {
			grpc.SetHeader(ctx, md) // goes out with the response
		}
		grpc.SetTrailer(ctx, md)
		return resp, err
	}
}

// StreamServerInterceptor gives each stream its id.
func StreamServerInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		ctx, md := begin(ss.Context())
		err := handler(srv, &stream{ServerStream: ss, ctx: ctx, md: md})
		ss.SetTrailer(md)
		return err
	}
}

type stream struct {
	grpc.ServerStream
	ctx  context.Context
	md   metadata.MD
	sent bool
}

func (s *stream) Context() context.Context { return s.ctx }

// SendMsg adds the id to the headers, which go out with the first message.
func (s *stream) SendMsg(m any) error {
	if !s.sent {
		s.sent = true
		s.SetHeader(s.md)
	}
	return s.ServerStream.SendMsg(m)
}

// Handler adds the call's id, as request_id, to every record logged with a
// call's context.
type Handler struct{ slog.Handler }

// Handle implements slog.Handler.
func (h Handler) Handle(ctx context.Context, r slog.Record) error {
	if id := ID(ctx); id != "" {
		r.AddAttrs(slog.String("request_id", id))
	}
	return h.Handler.Handle(ctx, r)
}

// WithAttrs implements slog.Handler.
func (h Handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return Handler{h.Handler.WithAttrs(attrs)}
}

// WithGroup implements slog.Handler.
func (h Handler) WithGroup(name string) slog.Handler { return Handler{h.Handler.WithGroup(name)} }
