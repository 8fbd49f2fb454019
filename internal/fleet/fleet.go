// Package fleet keeps the state that the gateway's replicas share about
// the upstream account and their callers: concurrency leases handed out
// first come, first served; rate limits (GCRA); and concurrency limits
// learned from the upstream's refusals.
//
// Local keeps that state in the process, the whole truth for a single
// replica. Redis keeps it in Redis, shared by every replica; while Redis
// cannot be reached, each replica falls back to its own share of every
// limit, and it goes back to the shared state by itself when Redis
// answers again.
//
// Keys name what is limited (an account's synthesis streams, a client's
// requests); they must not hold a secret, since Redis stores them as they
// are.
package fleet

import (
	"context"
	"time"
)

// Store keeps the fleet's state. Its methods are safe for concurrent use.
type Store interface {
	// Acquire asks for one of limit slots of key (0: no limit) for a
	// waiter, who holds t once it has asked before (zero the first time).
	// A slot is granted when one is free and no waiter that asked earlier
	// still waits. Otherwise, with queue, the waiter keeps, or gets, its
	// place in key's queue, to ask again when Changed says a slot may have
	// freed; without queue it is refused and holds no place. The error is
	// the context's, or nil: a store that cannot reach shared state falls
	// back to a local share instead of failing.
	Acquire(ctx context.Context, key string, limit int, t Ticket, queue bool) (Grant, error)
	// Leave gives up a waiter's place in key's queue.
	Leave(key string, t Ticket)
	// Release gives a lease's slot back. It is safe to call once per lease.
	Release(l Lease)
	// Waiting returns how many waiters key's queue holds, across the fleet.
	Waiting(ctx context.Context, key string) (int, error)
	// Changed returns a channel that is closed when a slot of key may have
	// become free. A waiter takes it before asking, so that it misses no
	// change; Acquire's answer may already reflect the change.
	Changed(key string) <-chan struct{}
	// Refused records that the upstream refused one of key's leases for
	// its concurrency (HTTP 429, WebSocket close 1008): the limit in force
	// drops below the leases held now, then recovers by one slot every
	// RecoverEvery, and is forgotten LearnFor after the last refusal. It
	// returns the limit now in force. Call it before releasing the lease.
	Refused(ctx context.Context, key string) (int, error)
	// Rate charges cost units to key under the rate r. It is allowed if it
	// fits what r leaves now, and is then charged. With force it is charged
	// whatever it leaves, into debt: for usage measured only afterwards.
	Rate(ctx context.Context, key string, r Rate, cost float64, force bool) (RateState, error)
}

// How leases and learned limits age.
const (
	// LeaseTTL is how long a lease, or a place in a queue, outlives the
	// replica that holds it: a replica renews them every LeaseTTL/3, so the
	// slots of one that crashed come back within LeaseTTL.
	LeaseTTL = 10 * time.Second
	// RecoverEvery is how often a learned limit grows back by one slot.
	RecoverEvery = 5 * time.Second
	// LearnFor is how long a learned limit lasts after the last refusal.
	LearnFor = 60 * time.Second
)

// Grant is Acquire's answer.
type Grant struct {
	// Lease is the slot granted; zero when none was.
	Lease Lease
	// Ticket is the waiter's place in the queue when no slot was granted
	// and it queued.
	Ticket Ticket
	// Ahead is how many waiters are ahead of this one.
	Ahead int
	// InUse is how many leases of the key are held, this one included.
	InUse int
	// Limit is the limit in force: the one asked for, or lower while a
	// learned limit applies; 0 for none.
	Limit int
}

// Granted reports whether a slot was granted.
func (g Grant) Granted() bool { return g.Lease.id != "" }

// Lease is a slot held.
type Lease struct {
	key, id string
	shared  bool // held in Redis, not in the process
}

// Ticket is a waiter's place in a queue.
type Ticket struct {
	id     string
	shared bool
}

// Rate is a limit of Count units per Period, any of which may be spent at
// once.
type Rate struct {
	Count  float64
	Period time.Duration
}

// RateState is what a key's rate leaves after a charge.
type RateState struct {
	// Allowed reports whether the charge was made.
	Allowed bool
	// Remaining is what could be charged now.
	Remaining float64
	// Reset is how long until the full Count is available again.
	Reset time.Duration
	// RetryAfter, when the charge was refused, is how long until it would fit.
	RetryAfter time.Duration
}

// gcra applies the generic cell rate algorithm: tat is the key's
// theoretical arrival time, when all that was charged has been earned back.
// A charge is allowed when it leaves tat no more than a Period ahead of now.
// It returns the new tat and the state.
func gcra(r Rate, now, tat time.Time, cost float64, force bool) (time.Time, RateState) {
	if tat.Before(now) {
		tat = now
	}
	interval := float64(r.Period) / r.Count
	next := tat.Add(time.Duration(cost * interval))
	allowed := next.Sub(now) <= r.Period
	st := RateState{Allowed: allowed}
	if allowed || force {
		tat = next
	} else {
		st.RetryAfter = next.Sub(now) - r.Period
	}
	st.Reset = tat.Sub(now)
	st.Remaining = max(0, float64(r.Period-st.Reset)/interval)
	return tat, st
}

// inForce is a key's limit with a learned limit applied: learned at
// learnedAt, plus a slot per RecoverEvery since, never above limit (0: no
// limit). A learned limit older than LearnFor no longer applies.
func inForce(limit, learned int, learnedAt, now time.Time) int {
	if learned == 0 || now.Sub(learnedAt) > LearnFor {
		return limit
	}
	l := learned + int(now.Sub(learnedAt)/RecoverEvery)
	if limit > 0 && l >= limit {
		return limit
	}
	return l
}
