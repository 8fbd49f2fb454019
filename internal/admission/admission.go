// Package admission decides when the gateway may use a slot of an upstream
// account. Each kind of use (synthesis streams, WebSocket connections,
// realtime sessions, transcriptions) has a concurrency budget per account.
// A call that finds its budget full waits in a first come, first served
// queue, for no longer than its deadline leaves room for and a maximum
// wait, and is refused with RESOURCE_EXHAUSTED, QuotaFailure and an
// estimated RetryInfo if no slot frees in time. A refusal by the upstream
// for its concurrency (HTTP 429, WebSocket close 1008) lowers the budget in
// force for a while, so that a budget set too high still stops a stampede.
//
// The state is a fleet.Store: in the process, or shared by every replica
// through Redis, so that a fleet of gateways keeps to one account's limits
// together.
package admission

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"sync"
	"time"

	"github.com/speechgate/speechgate/internal/fleet"
	"github.com/speechgate/speechgate/internal/metrics"
	"github.com/speechgate/speechgate/internal/rpcerror"
)

// Config configures a Controller.
type Config struct {
	// Budgets are the concurrency budgets per account, by use; a use that
	// is missing, or 0, is unlimited (until the upstream refuses one).
	Budgets map[string]int
	// MaxWait bounds how long a call waits for a slot. Default DefaultMaxWait.
	MaxWait time.Duration
	// Store keeps the leases and queues. Required.
	Store fleet.Store
	// Metrics, when set, records the queue and the decisions.
	Metrics *metrics.Admission
}

// DefaultMaxWait is Config.MaxWait's default.
const DefaultMaxWait = 10 * time.Second

// pollEvery is how often a waiter asks again with no sign of a freed slot:
// a backstop for the signs a replica cannot get (slots of a crashed
// replica expiring, a learned budget growing back).
const pollEvery = 250 * time.Millisecond

// Controller admits uses of upstream accounts. It is safe for concurrent
// use, and implements the upstream client's Gate.
type Controller struct {
	budgets map[string]int
	maxWait time.Duration
	store   fleet.Store
	metrics *metrics.Admission

	mu    sync.Mutex
	holds map[string]time.Duration // key → how long leases are held, on average
}

// New returns a Controller for cfg.
func New(cfg Config) *Controller {
	if cfg.MaxWait <= 0 {
		cfg.MaxWait = DefaultMaxWait
	}
	return &Controller{budgets: cfg.Budgets, maxWait: cfg.MaxWait, store: cfg.Store, metrics: cfg.Metrics,
		holds: map[string]time.Duration{}}
}

// key is the store's key for a use of an account. Accounts are digests of
// keys, never keys.
func key(account, use string) string { return "admission:" + account + ":" + use }

// Acquire waits for a slot of use on account, and returns the function that
// gives it back. It fails with the context's error when ctx ends while it
// waits, or with a RESOURCE_EXHAUSTED status when no slot frees in the time
// the call can wait.
func (c *Controller) Acquire(ctx context.Context, account, use string) (release func(), err error) {
	k, limit, start := key(account, use), c.budgets[use], time.Now()
	changed := c.store.Changed(k)
	g, err := c.store.Acquire(ctx, k, limit, fleet.Ticket{}, true)
	if err != nil {
		return nil, err
	}
	if g.Granted() {
		c.metrics.Decided(use, "admitted", 0, g.Limit)
		return c.releaser(k, g.Lease), nil
	}
	wait := c.allowance(ctx)
	if wait <= 0 {
		c.store.Leave(k, g.Ticket)
		c.metrics.Decided(use, "rejected", 0, g.Limit)
		return nil, c.busy(k, use, g, 0)
	}
	c.metrics.Queued(use, 1)
	defer c.metrics.Queued(use, -1)
	timeout := time.NewTimer(wait)
	defer timeout.Stop()
	poll := time.NewTicker(pollEvery)
	defer poll.Stop()
	for {
		select {
		case <-ctx.Done():
			c.store.Leave(k, g.Ticket)
			c.metrics.Decided(use, "cancelled", 0, g.Limit)
			return nil, context.Cause(ctx)
		case <-timeout.C:
			c.store.Leave(k, g.Ticket)
			c.metrics.Decided(use, "timed_out", 0, g.Limit)
			return nil, c.busy(k, use, g, time.Since(start))
		case <-changed:
		case <-poll.C:
		}
		changed = c.store.Changed(k)
		if g, err = c.store.Acquire(ctx, k, limit, g.Ticket, true); err != nil {
			c.store.Leave(k, g.Ticket)
			return nil, err
		}
		if g.Granted() {
			c.metrics.Decided(use, "admitted", time.Since(start), g.Limit)
			return c.releaser(k, g.Lease), nil
		}
	}
}

// allowance is how long a call may wait: MaxWait, and no more than its
// deadline leaves once the time its upstream work needs is kept back (a
// fifth of what is left, at least 250 ms). A call admitted with no time
// left to use the slot would only waste it.
func (c *Controller) allowance(ctx context.Context) time.Duration {
	wait := c.maxWait
	if dl, ok := ctx.Deadline(); ok {
		left := time.Until(dl)
		wait = min(wait, left-max(left/5, 250*time.Millisecond))
	}
	return wait
}

// releaser returns the function that gives a lease back, once, and learns
// from how long it was held.
func (c *Controller) releaser(k string, l fleet.Lease) func() {
	start := time.Now()
	var once sync.Once
	return func() {
		once.Do(func() {
			c.store.Release(l)
			c.observeHold(k, time.Since(start))
		})
	}
}

// observeHold keeps a moving average of how long k's leases are held.
func (c *Controller) observeHold(k string, d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if avg, ok := c.holds[k]; ok {
		d = (avg*7 + d) / 8
	}
	c.holds[k] = d
}

// estimate is when a waiter with ahead others before it could expect a
// slot: each of limit slots frees every average hold.
func (c *Controller) estimate(k string, ahead, limit int) time.Duration {
	c.mu.Lock()
	hold, ok := c.holds[k]
	c.mu.Unlock()
	if !ok {
		hold = time.Second
	}
	d := time.Duration(float64(hold) * float64(ahead+1) / math.Max(1, float64(limit)))
	return min(max(d, 100*time.Millisecond), time.Minute).Round(time.Millisecond)
}

// busy is the refusal of a call that found no slot in the time it could
// wait.
func (c *Controller) busy(k, use string, g fleet.Grant, waited time.Duration) error {
	retry := c.estimate(k, g.Ahead, g.Limit)
	budget := "the budget in force"
	if g.Limit > 0 {
		budget = fmt.Sprintf("all %d", g.Limit)
	}
	msg := fmt.Sprintf("%s of the Smallest account's %s slots stayed busy", budget, describe(use))
	if waited > 0 {
		msg += fmt.Sprintf(" for the %s this call could wait", waited.Round(time.Millisecond))
	} else {
		msg += ", and the call's deadline left no time to wait"
	}
	msg += fmt.Sprintf("; %d calls were queued ahead of it. Retry after the RetryInfo delay, or give the call a longer deadline", g.Ahead)
	meta := map[string]string{"use": use, "budget": strconv.Itoa(g.Limit), "inUse": strconv.Itoa(g.InUse),
		"queuedAhead": strconv.Itoa(g.Ahead), "waitedMs": strconv.FormatInt(waited.Milliseconds(), 10)}
	return rpcerror.Exhausted(msg, rpcerror.ReasonUpstreamBusy, meta, "smallest-account:"+use,
		fmt.Sprintf("concurrent %s budget (%d in force)", describe(use), g.Limit), retry)
}

// describe names a use for people.
func describe(use string) string {
	switch use {
	case "synthesis":
		return "synthesis stream"
	case "websocket":
		return "Lightning WebSocket"
	case "live":
		return "realtime recognition"
	case "transcription":
		return "transcription"
	}
	return use
}

// Refused records that the upstream refused a use of account for its
// concurrency: the budget in force drops below the slots held now. Call it
// while the refused call still holds its slot.
func (c *Controller) Refused(account, use string) {
	c.metrics.Refused(use)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, _ = c.store.Refused(ctx, key(account, use))
}

// Waiting reports whether calls wait for a slot of use on account, here or
// on another replica: an idle pooled connection should then give its slot
// up.
func (c *Controller) Waiting(account, use string) bool { return c.WaitingCount(account, use) > 0 }

// WaitingCount returns how many calls wait for a slot of use on account,
// across the fleet.
func (c *Controller) WaitingCount(account, use string) int {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	n, _ := c.store.Waiting(ctx, key(account, use))
	return n
}
