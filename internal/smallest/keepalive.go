package smallest

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/url"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// Keepalive is how a realtime socket's peer is checked for: a WebSocket ping
// every Interval (0: never), answered by a pong within Timeout. Smallest
// documents no keep-alive of its own (docs/upstream.md §6.3); a ping finds a
// connection that died without a close (a NAT that forgot it, a peer that
// vanished), which would otherwise hang a quiet session until its deadline.
type Keepalive struct {
	Interval, Timeout time.Duration
}

// hearing is what a socket's reader has heard, for judging a missing pong:
// coder/websocket reads a pong only inside Read, so a reader that was busy
// elsewhere may have it waiting unread.
type hearing struct {
	last         atomic.Int64 // unix nanoseconds of the last message read
	readingSince atomic.Int64 // unix nanoseconds since Read has waited; 0: not in Read
	buf          bytes.Buffer // a message as it is read, reused
}

// maxKeptReadBuffer is the largest read buffer a socket keeps between
// messages: audio messages are a few KiB; a rare larger one is read into a
// buffer that is then let go.
const maxKeptReadBuffer = 64 << 10

// read reads the next message of ws into a slice of its own, noting when.
// The read has no context: what ends a session closes its socket (each
// opening arranges it), which ends the read. A context would cost
// coder/websocket a context.AfterFunc per message, and reading all of a
// message at once lets its buffer be reused, so that a message costs one
// allocation, not five or more (this runs for every 20 ms of audio).
func (h *hearing) read(ws *websocket.Conn) (websocket.MessageType, []byte, error) {
	h.readingSince.Store(time.Now().UnixNano())
	defer func() {
		h.readingSince.Store(0)
		h.last.Store(time.Now().UnixNano())
	}()
	typ, r, err := ws.Reader(context.Background())
	if err != nil {
		return 0, nil, err
	}
	h.buf.Reset()
	if _, err := h.buf.ReadFrom(r); err != nil {
		return 0, nil, err
	}
	data := bytes.Clone(h.buf.Bytes())
	if h.buf.Cap() > maxKeptReadBuffer {
		h.buf = bytes.Buffer{} // one large message must not stay with the session
	}
	return typ, data, nil
}

// run pings the socket current returns (nil: none now) every Interval
// until ctx ends. A ping whose pong does not come within Timeout, while the
// reader waited in Read for at least half of it and heard nothing, ends the
// session: dead is called with the *Error to end it with, and run returns.
func (k Keepalive) run(ctx context.Context, endpoint string, current func() (*websocket.Conn, *hearing), dead func(error)) {
	if k.Interval <= 0 {
		return
	}
	timeout := k.Timeout
	if timeout <= 0 {
		timeout = k.Interval
	}
	t := time.NewTicker(k.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		ws, h := current()
		if ws == nil {
			continue
		}
		sent := time.Now()
		pctx, cancel := context.WithTimeout(ctx, timeout)
		err := ws.Ping(pctx)
		timedOut := pctx.Err() != nil && ctx.Err() == nil
		cancel()
		if err == nil || !timedOut {
			continue // answered, or the socket closed, which its reader reports
		}
		since := h.readingSince.Load()
		waited := since != 0 && time.Since(time.Unix(0, since)) >= timeout/2
		if waited && h.last.Load() < sent.UnixNano() {
			dead(&Error{Kind: KindUnresponsive, Endpoint: endpoint, Message: fmt.Sprintf(
				"no answer to a WebSocket ping within %s, and nothing else from Smallest since: the connection is presumed dead", timeout)})
			return
		}
	}
}

// realtime is an open realtime socket (a recognition or a conversation
// session): the connection, the context whose end closes it and gives its
// Gate slot back, the call it is, and its keepalive.
type realtime struct {
	conn    *websocket.Conn
	ctx     context.Context
	cancel  context.CancelCauseFunc
	call    call
	granted granted
	hear    hearing
	pinged  chan struct{} // closed when the keepalive has stopped; nil: none
}

// openRealtime dials the socket at u, holding a slot of the account's
// budget for gated, with retries as attempt allows.
func (c *Client) openRealtime(ctx context.Context, u *url.URL, gated string, header http.Header, secret string, readLimit int64) (*realtime, error) {
	endpoint := "WS " + u.Path
	ctx, cancel := context.WithCancelCause(ctx)
	rt := &realtime{ctx: ctx, cancel: cancel}
	g, err := c.attempt(ctx, use{endpoint: endpoint, gated: gated, retries: true}, func() error {
		rt.call = newCall(endpoint, secret)
		var err error
		rt.conn, err = c.dialWS(ctx, rt.call, u.String(), header)
		return err
	})
	if err != nil {
		cancel(nil)
		return nil, err
	}
	rt.granted = g
	rt.conn.SetReadLimit(readLimit)
	// Whatever ends the context (the caller's cancel or deadline, Close, an
	// idle timer, a dead peer) closes the socket at once, so Smallest sees
	// the session end, and gives its slot back.
	context.AfterFunc(ctx, func() {
		rt.conn.CloseNow()
		g.release()
	})
	return rt, nil
}

// keepAlive starts the socket's keepalive, if the client has one.
func (c *Client) keepAlive(rt *realtime) {
	if c.keepalive.Interval <= 0 {
		return
	}
	rt.pinged = make(chan struct{})
	go func() {
		defer close(rt.pinged)
		c.keepalive.run(rt.ctx, rt.call.endpoint, func() (*websocket.Conn, *hearing) { return rt.conn, &rt.hear },
			func(err error) { rt.cancel(err) })
	}()
}

// close ends the session at once and waits for its keepalive to stop.
func (rt *realtime) close() error {
	rt.cancel(context.Canceled)
	if rt.pinged != nil {
		<-rt.pinged
	}
	return rt.conn.CloseNow()
}
