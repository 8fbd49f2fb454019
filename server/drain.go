package server

import (
	"context"
	"sync"

	"google.golang.org/grpc"

	"github.com/speechgate/speechgate/internal/rpcerror"
)

// drainer counts the speech calls in flight and, once draining, refuses new
// ones, so that a shutdown can wait for exactly the work it must finish while
// the server still answers health checks with NOT_SERVING.
type drainer struct {
	mu       sync.Mutex
	draining bool
	active   int
	idle     chan struct{} // closed when draining and nothing is active
}

func newDrainer() *drainer { return &drainer{idle: make(chan struct{})} }

// enter admits a call, or reports false when the server is draining.
func (d *drainer) enter() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.draining {
		return false
	}
	d.active++
	return true
}

func (d *drainer) leave() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.active--
	if d.draining && d.active == 0 {
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
		if d.active == 0 {
			close(d.idle)
		}
	}
	return d.idle
}

func (d *drainer) unary(exempt func(string) bool) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if exempt(serviceOf(info.FullMethod)) {
			return handler(ctx, req)
		}
		if !d.enter() {
			return nil, rpcerror.Draining()
		}
		defer d.leave()
		return handler(ctx, req)
	}
}

func (d *drainer) stream(exempt func(string) bool) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if exempt(serviceOf(info.FullMethod)) {
			return handler(srv, ss)
		}
		if !d.enter() {
			return rpcerror.Draining()
		}
		defer d.leave()
		return handler(srv, ss)
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
