package server

import (
	"context"
	"errors"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/speechgate/speechgate/internal/rpcerror"
)

// drainer counts the speech calls in flight and, once draining, refuses new
// ones, so that a shutdown can wait for exactly the work it must finish while
// the server still answers health checks with NOT_SERVING. It also gives
// each call the context its handler works in (see enter), through which a
// shutdown whose grace ran out ends the calls still in flight with a status
// that says so.
type drainer struct {
	// stallLimit is how long a caller may leave a stream unread (0: no limit).
	stallLimit time.Duration

	mu       sync.Mutex
	draining bool
	active   map[*call]struct{}
	idle     chan struct{} // closed when draining and nothing is active
}

// call is one admitted speech call.
type call struct {
	cancel context.CancelCauseFunc
}

func newDrainer(stallLimit time.Duration) *drainer {
	return &drainer{stallLimit: stallLimit, active: map[*call]struct{}{}, idle: make(chan struct{})}
}

// enter admits a call, or reports false when the server is draining. The
// returned context is the handler's: it ends a little before the call's
// deadline (see deadlineMargin), and when a shutdown cuts calls off.
func (d *drainer) enter(ctx context.Context) (context.Context, *call, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.draining {
		return nil, nil, false
	}
	ctx, cancel := context.WithCancelCause(ctx)
	c := &call{cancel: cancel}
	d.active[c] = struct{}{}
	return ctx, c, true
}

func (d *drainer) leave(c *call) {
	c.cancel(nil)
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.active, c)
	if d.draining && len(d.active) == 0 {
		close(d.idle)
	}
}

// drain stops admitting calls and returns a channel closed once every call
// in flight has finished.
func (d *drainer) drain() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.draining {
		d.draining = true
		if len(d.active) == 0 {
			close(d.idle)
		}
	}
	return d.idle
}

// cut ends every call in flight, once a drain's grace ran out: the
// handlers' upstream work stops, and each call ends with UNAVAILABLE,
// reason DRAINING, rather than the bare UNAVAILABLE of a closing transport.
func (d *drainer) cut(grace time.Duration) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for c := range d.active {
		c.cancel(rpcerror.DrainCut(grace))
	}
}

// deadlineMargin is how much earlier than the caller's deadline a handler's
// context ends. When grpc-timeout elapses, grpc-go's transport resets the
// stream (RST_STREAM CANCEL) in a race with the handler, and the caller then
// gets no status at all; a handler that gives up first answers
// DEADLINE_EXCEEDED with its details. A tenth of the time left, within 10
// to 200 ms, covers the handler's unwinding without taking much from the call.
func deadlineMargin(left time.Duration) time.Duration {
	return min(max(left/10, 10*time.Millisecond), 200*time.Millisecond)
}

// withDeadlineMargin returns ctx ending deadlineMargin before its deadline.
func withDeadlineMargin(ctx context.Context) (context.Context, context.CancelFunc) {
	dl, ok := ctx.Deadline()
	if !ok {
		return ctx, func() {}
	}
	return context.WithDeadline(ctx, dl.Add(-deadlineMargin(time.Until(dl))))
}

// settle gives a call's final status: a call this layer ended (cut off by
// a shutdown, or its caller too slow to read) ends with the status that
// says so, and one whose deadline passed with DEADLINE_EXCEEDED, even where
// the handler saw the end of its context as a cancel.
func settle(ctx context.Context, err error) error {
	if err == nil {
		return nil
	}
	// Only this layer ends a call's context with a status as its cause.
	if cause := context.Cause(ctx); cause != nil {
		if _, ok := status.FromError(cause); ok {
			return cause
		}
	}
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded) && status.Code(err) == codes.Canceled:
		return rpcerror.DeadlineExceeded()
	case errors.Is(ctx.Err(), context.Canceled):
		// The caller cancelled, or its connection went away: whatever the
		// handler saw last (often "transport is closing"), the call was
		// cancelled, and is logged and counted so, not as UNAVAILABLE.
		return rpcerror.Cancelled()
	}
	return err
}

// callStream is a speech call's stream as its handler sees it: in the
// call's context, and watched while it sends.
type callStream struct {
	grpc.ServerStream
	ctx   context.Context
	stall *time.Timer // nil: no limit
	limit time.Duration
}

func (s *callStream) Context() context.Context { return s.ctx }

// SendMsg sends m, and ends the call's upstream work if the caller leaves
// it unread for longer than the limit. A send blocks when the caller stops
// reading (HTTP/2 flow control); the gateway then stops reading upstream,
// so memory stays bounded, but the upstream request would be held open for
// as long as the caller dawdles. When the caller reads again it gets what
// was already sent, then ABORTED with reason CALLER_TOO_SLOW.
func (s *callStream) SendMsg(m any) error {
	if s.stall == nil {
		return callerGone(s.ServerStream.SendMsg(m))
	}
	s.stall.Reset(s.limit)
	err := s.ServerStream.SendMsg(m)
	s.stall.Stop()
	return callerGone(err)
}

// callerGone reads a failed send: a send fails when the caller's stream or
// connection has gone (grpc-go says UNAVAILABLE "transport is closing",
// sometimes before the stream's context ends), which is the caller
// leaving, not the gateway or Smallest failing.
func callerGone(err error) error {
	switch status.Code(err) {
	case codes.OK:
		return nil
	case codes.Unavailable, codes.Canceled:
		return rpcerror.Cancelled()
	}
	return err
}

func (d *drainer) unary(exempt func(string) bool) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if exempt(serviceOf(info.FullMethod)) {
			return handler(ctx, req)
		}
		ctx, c, ok := d.enter(ctx)
		if !ok {
			return nil, rpcerror.Draining()
		}
		defer d.leave(c)
		ctx, cancel := withDeadlineMargin(ctx)
		defer cancel()
		resp, err := handler(ctx, req)
		return resp, settle(ctx, err)
	}
}

func (d *drainer) stream(exempt func(string) bool) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if exempt(serviceOf(info.FullMethod)) {
			return handler(srv, ss)
		}
		ctx, c, ok := d.enter(ss.Context())
		if !ok {
			return rpcerror.Draining()
		}
		defer d.leave(c)
		ctx, cancel := withDeadlineMargin(ctx)
		defer cancel()
		cs := &callStream{ServerStream: ss, ctx: ctx, limit: d.stallLimit}
		if d.stallLimit > 0 {
			cs.stall = time.AfterFunc(d.stallLimit, func() { c.cancel(rpcerror.CallerTooSlow(d.stallLimit)) })
			cs.stall.Stop()
			defer cs.stall.Stop()
		}
		return settle(ctx, handler(srv, cs))
	}
}

// serviceOf returns the service of a full method name "/pkg.Service/Method".
func serviceOf(fullMethod string) string {
	for i := len(fullMethod) - 1; i > 0; i-- {
		if fullMethod[i] == '/' {
			return fullMethod[1:i]
		}
	}
	return fullMethod
}
