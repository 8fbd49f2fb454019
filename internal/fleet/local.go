package fleet

import (
	"context"
	"slices"
	"strconv"
	"sync"
	"time"
)

// Local is a Store in the process: exact for one replica, and what Redis
// falls back to.
type Local struct {
	now func() time.Time

	mu    sync.Mutex
	seq   uint64
	slots map[string]*slots
	rates map[string]time.Time // each key's GCRA theoretical arrival time
}

// slots is one key's leases and queue.
type slots struct {
	leases    map[string]struct{}
	queue     []string // tickets, oldest first
	changed   chan struct{}
	learned   int // 0: none
	learnedAt time.Time
}

// NewLocal returns an empty Local store.
func NewLocal() *Local {
	return &Local{now: time.Now, slots: map[string]*slots{}, rates: map[string]time.Time{}}
}

// slot returns key's slots, made on first use. l.mu is held.
func (l *Local) slot(key string) *slots {
	s, ok := l.slots[key]
	if !ok {
		s = &slots{leases: map[string]struct{}{}, changed: make(chan struct{})}
		l.slots[key] = s
	}
	return s
}

// forget drops key's slots when nothing of them is left. l.mu is held.
// A waiter still holding the old Changed channel then learns of changes
// by polling.
func (l *Local) forget(key string, s *slots, now time.Time) {
	if len(s.leases) == 0 && len(s.queue) == 0 && inForce(0, s.learned, s.learnedAt, now) == 0 {
		delete(l.slots, key)
	}
}

func (l *Local) next() string {
	l.seq++
	return strconv.FormatUint(l.seq, 10)
}

// Acquire implements Store.
func (l *Local) Acquire(ctx context.Context, key string, limit int, t Ticket, queue bool) (Grant, error) {
	return l.acquire(ctx, key, limit, 0, t, queue)
}

// acquire is Acquire with held slots taken already, outside this store:
// the leases a replica still holds in Redis when it falls back.
func (l *Local) acquire(_ context.Context, key string, limit, held int, t Ticket, queue bool) (Grant, error) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.slot(key)
	limit = inForce(limit, s.learned, s.learnedAt, now)
	at := -1
	if t.id != "" && !t.shared {
		at = slices.Index(s.queue, t.id)
	}
	ahead := len(s.queue)
	if at >= 0 {
		ahead = at
	}
	if limit == 0 || held+len(s.leases)+ahead < limit {
		if at >= 0 {
			s.queue = slices.Delete(s.queue, at, at+1)
		}
		id := l.next()
		s.leases[id] = struct{}{}
		return Grant{Lease: Lease{key: key, id: id}, InUse: held + len(s.leases), Ahead: ahead, Limit: limit}, nil
	}
	g := Grant{Ahead: ahead, InUse: held + len(s.leases), Limit: limit}
	if !queue {
		return g, nil
	}
	if at < 0 {
		t = Ticket{id: l.next()}
		s.queue = append(s.queue, t.id)
	}
	g.Ticket = t
	return g, nil
}

// Leave implements Store.
func (l *Local) Leave(key string, t Ticket) {
	if t.id == "" || t.shared {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	s, ok := l.slots[key]
	if !ok {
		return
	}
	if i := slices.Index(s.queue, t.id); i >= 0 {
		s.queue = slices.Delete(s.queue, i, i+1)
		// Those behind it move up, and may now be first for a free slot.
		l.notifyLocked(s)
	}
	l.forget(key, s, l.now())
}

// Release implements Store.
func (l *Local) Release(le Lease) {
	if le.id == "" || le.shared {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	s, ok := l.slots[le.key]
	if !ok {
		return
	}
	if _, held := s.leases[le.id]; held {
		delete(s.leases, le.id)
		l.notifyLocked(s)
	}
	l.forget(le.key, s, l.now())
}

// Waiting implements Store.
func (l *Local) Waiting(_ context.Context, key string) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if s, ok := l.slots[key]; ok {
		return len(s.queue), nil
	}
	return 0, nil
}

// Changed implements Store.
func (l *Local) Changed(key string) <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.slot(key).changed
}

// notify wakes key's waiters.
func (l *Local) notify(key string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if s, ok := l.slots[key]; ok {
		l.notifyLocked(s)
	}
}

func (l *Local) notifyLocked(s *slots) {
	close(s.changed)
	s.changed = make(chan struct{})
}

// Refused implements Store.
func (l *Local) Refused(ctx context.Context, key string) (int, error) {
	return l.refused(ctx, key, 0)
}

// refused is Refused with held slots taken outside this store (see acquire).
func (l *Local) refused(_ context.Context, key string, held int) (int, error) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.slot(key)
	s.learned, s.learnedAt = learn(held+len(s.leases), inForce(0, s.learned, s.learnedAt, now)), now
	return s.learned, nil
}

// learn is the limit to learn from a refusal while used leases are held
// (the refused one included) and current is in force (0: none): one below
// what the upstream just refused, and never above what it refused before,
// since a refusal of a lease granted under an older, higher limit says
// nothing new.
func learn(used, current int) int {
	l := max(1, used-1)
	if current > 0 {
		l = min(l, current)
	}
	return l
}

// Rate implements Store.
func (l *Local) Rate(_ context.Context, key string, r Rate, cost float64, force bool) (RateState, error) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	tat, st := gcra(r, now, l.rates[key], cost, force)
	if tat.After(now) {
		l.rates[key] = tat
	} else {
		delete(l.rates, key)
	}
	if len(l.rates) > 4096 {
		// Keys whose charges have all been earned back hold nothing.
		for k, t := range l.rates {
			if !t.After(now) {
				delete(l.rates, k)
			}
		}
	}
	return st, nil
}
