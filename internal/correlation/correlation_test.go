package correlation_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"regexp"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/speechgate/speechgate/internal/correlation"
)

var generated = regexp.MustCompile(`^[0-9a-f]{24}$`)

// fakeStream records what a handler's stream set and sent.
type fakeStream struct {
	grpc.ServerStream
	ctx              context.Context
	header, trailer  metadata.MD
	headerAtFirstMsg metadata.MD
}

func (f *fakeStream) Context() context.Context { return f.ctx }
func (f *fakeStream) SetHeader(md metadata.MD) error {
	f.header = metadata.Join(f.header, md)
	return nil
}
func (f *fakeStream) SetTrailer(md metadata.MD) { f.trailer = metadata.Join(f.trailer, md) }
func (f *fakeStream) SendMsg(any) error {
	if f.headerAtFirstMsg == nil {
		f.headerAtFirstMsg = f.header.Copy()
	}
	return nil
}

func TestStreamIDs(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, sent string
		keep       bool
	}{
		{"a usable id is kept", "checkout-42.a_b", true},
		{"spaces are refused", "has spaces", false},
		{"too long is refused", string(bytes.Repeat([]byte("a"), 129)), false},
		{"none gets one", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			if tt.sent != "" {
				ctx = metadata.NewIncomingContext(ctx, metadata.Pairs("x-request-id", tt.sent))
			}
			fs := &fakeStream{ctx: ctx}
			var seen string
			err := correlation.StreamServerInterceptor()(nil, fs, &grpc.StreamServerInfo{}, func(_ any, ss grpc.ServerStream) error {
				seen = correlation.ID(ss.Context())
				if len(fs.header) != 0 {
					t.Error("the id went into the headers before any message")
				}
				return ss.SendMsg(nil)
			})
			if err != nil {
				t.Fatal(err)
			}
			if tt.keep && seen != tt.sent || !tt.keep && !generated.MatchString(seen) {
				t.Fatalf("handler saw id %q (sent %q)", seen, tt.sent)
			}
			if got := fs.headerAtFirstMsg.Get(correlation.Header); len(got) != 1 || got[0] != seen {
				t.Errorf("headers with the first message: %v", got)
			}
			if got := fs.trailer.Get(correlation.Header); len(got) != 1 || got[0] != seen {
				t.Errorf("trailer: %v", got)
			}
		})
	}
}

// TestFailedUnaryCallSendsNoHeaders: a failure must stay a trailers-only
// response, which gRPC clients may retry.
func TestFailedUnaryCallSendsNoHeaders(t *testing.T) {
	t.Parallel()
	for _, fail := range []bool{false, true} {
		var header, trailer metadata.MD
		ctx := grpc.NewContextWithServerTransportStream(context.Background(), &fakeTransport{header: &header, trailer: &trailer})
		_, err := correlation.UnaryServerInterceptor()(ctx, nil, &grpc.UnaryServerInfo{}, func(ctx context.Context, _ any) (any, error) {
			if fail {
				return nil, errors.New("refused")
			}
			return "ok", nil
		})
		if (err != nil) != fail {
			t.Fatalf("err = %v", err)
		}
		if len(trailer.Get(correlation.Header)) != 1 {
			t.Errorf("fail %v: trailer %v", fail, trailer)
		}
		if got := len(header.Get(correlation.Header)); fail && got != 0 || !fail && got != 1 {
			t.Errorf("fail %v: %d ids in the headers", fail, got)
		}
	}
}

type fakeTransport struct{ header, trailer *metadata.MD }

func (f *fakeTransport) Method() string { return "/x/y" }
func (f *fakeTransport) SetHeader(md metadata.MD) error {
	*f.header = metadata.Join(*f.header, md)
	return nil
}
func (f *fakeTransport) SendHeader(md metadata.MD) error { return f.SetHeader(md) }
func (f *fakeTransport) SetTrailer(md metadata.MD) error {
	*f.trailer = metadata.Join(*f.trailer, md)
	return nil
}

// TestHandlerAddsTheID: every record logged with a call's context carries
// its id; others carry none.
func TestHandlerAddsTheID(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	log := slog.New(correlation.Handler{Handler: slog.NewJSONHandler(&buf, nil)}).With("component", "test")
	fs := &fakeStream{ctx: metadata.NewIncomingContext(context.Background(), metadata.Pairs("x-request-id", "req-7"))}
	correlation.StreamServerInterceptor()(nil, fs, &grpc.StreamServerInfo{}, func(_ any, ss grpc.ServerStream) error {
		log.InfoContext(ss.Context(), "inside")
		return nil
	})
	log.Info("outside")
	dec := json.NewDecoder(&buf)
	for _, want := range []any{"req-7", nil} {
		var line map[string]any
		if err := dec.Decode(&line); err != nil {
			t.Fatal(err)
		}
		if line["request_id"] != want || line["component"] != "test" {
			t.Errorf("%s: request_id %v, want %v (%v)", line["msg"], line["request_id"], want, line)
		}
	}
}
