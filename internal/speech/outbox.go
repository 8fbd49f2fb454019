package speech

import (
	"sync"
	"time"

	speechv1 "github.com/speechgate/speechgate/gen/speech/v1"
	"github.com/speechgate/speechgate/internal/rpcerror"

	"google.golang.org/grpc/codes"
)

// outbox sends a stream's messages one at a time for the goroutines that
// make them (gRPC allows one sender at a time), and, when the caller asked
// for heartbeats, sends one whenever the stream has been quiet for the
// interval. Holding it (do) lets a goroutine act between two messages: a
// barge-in takes effect so, with nothing sent half before and half after.
type outbox[M any] struct {
	mu     sync.Mutex
	send   func(M) error
	last   time.Time // when the last message went out
	closed bool
	beats  uint32

	wrap func(*speechv1.Heartbeat) M
	stop chan struct{} // closed by Close
	done chan struct{} // closed when the heartbeat goroutine has ended; nil: none
}

// newOutbox returns an outbox sending with send; every > 0 starts the
// heartbeat, which Close ends.
func newOutbox[M any](send func(M) error, every time.Duration, wrap func(*speechv1.Heartbeat) M) *outbox[M] {
	o := &outbox[M]{send: send, last: time.Now(), wrap: wrap, stop: make(chan struct{})}
	if every > 0 {
		o.done = make(chan struct{})
		go o.beat(every)
	}
	return o
}

// errOutboxClosed is what a send after Close returns; the handler has
// returned by then, so no caller sees it.
var errOutboxClosed = rpcerror.New(codes.Canceled, "the call has ended", rpcerror.ReasonCancelled, nil)

// Send sends m.
func (o *outbox[M]) Send(m M) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.sendLocked(m)
}

// do runs f with the outbox held; f sends with the function it is given.
func (o *outbox[M]) do(f func(send func(M) error) error) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	return f(o.sendLocked)
}

func (o *outbox[M]) sendLocked(m M) error {
	if o.closed {
		return errOutboxClosed
	}
	err := o.send(m)
	o.last = time.Now()
	return err
}

// Close stops the heartbeat and every send after it. The handler calls it
// before returning: gRPC forbids sending on a stream whose handler has
// returned.
func (o *outbox[M]) Close() {
	o.mu.Lock()
	o.closed = true
	o.mu.Unlock()
	close(o.stop)
	if o.done != nil {
		<-o.done
	}
}

func (o *outbox[M]) beat(every time.Duration) {
	defer close(o.done)
	t := time.NewTimer(every)
	defer t.Stop()
	for {
		select {
		case <-o.stop:
			return
		case <-t.C:
		}
		o.mu.Lock()
		idle := time.Since(o.last)
		if idle >= every && !o.closed {
			// A failed send is the stream's end, which the handler sees.
			if o.sendLocked(o.wrap(&speechv1.Heartbeat{IdleMs: uint32(idle / time.Millisecond), Sequence: o.beats})) == nil {
				o.beats++
			}
			idle = 0
		}
		o.mu.Unlock()
		t.Reset(every - idle)
	}
}
