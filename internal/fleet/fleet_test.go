package fleet_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/speechgate/speechgate/internal/fleet"
	"github.com/speechgate/speechgate/internal/gatewaytest"
	"github.com/speechgate/speechgate/internal/metrics"
	"github.com/speechgate/speechgate/internal/redistest"
)

func TestMain(m *testing.M) {
	// Redis killed on purpose makes go-redis log its dial failures.
	fleet.SetLibraryLogger(slog.New(slog.DiscardHandler))
	goleak.VerifyTestMain(m)
}

// stores runs a test against every Store: in process, and in a real Redis.
func stores(t *testing.T, test func(t *testing.T, s fleet.Store)) {
	t.Run("local", func(t *testing.T) {
		t.Parallel()
		test(t, fleet.NewLocal())
	})
	t.Run("redis", func(t *testing.T) {
		t.Parallel()
		srv := redistest.Start(t)
		test(t, newRedis(t, srv.URL, 1, nil, nil))
	})
}

func newRedis(t *testing.T, url string, size int, log *gatewaytest.Logs, m *metrics.Fleet) *fleet.Redis {
	t.Helper()
	if log == nil {
		log = new(gatewaytest.Logs)
	}
	r, err := fleet.NewRedis(fleet.RedisConfig{URL: url, FleetSize: size, Metrics: m, LeaseTTL: time.Second,
		Log: slog.New(slog.NewTextHandler(log, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func acquire(t *testing.T, s fleet.Store, key string, limit int, tk fleet.Ticket, queue bool) fleet.Grant {
	t.Helper()
	g, err := s.Acquire(t.Context(), key, limit, tk, queue)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func TestFirstComeFirstServed(t *testing.T) {
	t.Parallel()
	stores(t, func(t *testing.T, s fleet.Store) {
		const key = "acct:synthesis"
		a := acquire(t, s, key, 2, fleet.Ticket{}, true)
		b := acquire(t, s, key, 2, fleet.Ticket{}, true)
		if !a.Granted() || !b.Granted() || b.InUse != 2 {
			t.Fatalf("the first two of a limit of 2: %+v, %+v", a, b)
		}
		c := acquire(t, s, key, 2, fleet.Ticket{}, true)
		d := acquire(t, s, key, 2, fleet.Ticket{}, true)
		if c.Granted() || d.Granted() || c.Ahead != 0 || d.Ahead != 1 {
			t.Fatalf("the third and fourth should queue, 0 and 1 ahead: %+v, %+v", c, d)
		}
		changed := s.Changed(key)
		s.Release(a.Lease)
		select {
		case <-changed:
		case <-time.After(5 * time.Second):
			t.Fatal("a release did not signal Changed")
		}
		// A newcomer, and the second in the queue, cannot take the slot
		// that the first in the queue is owed.
		if e := acquire(t, s, key, 2, fleet.Ticket{}, false); e.Granted() || e.Ahead != 2 {
			t.Errorf("a newcomer took a slot owed to the queue: %+v", e)
		}
		if d2 := acquire(t, s, key, 2, d.Ticket, true); d2.Granted() || d2.Ahead != 1 {
			t.Errorf("the second in the queue jumped the first: %+v", d2)
		}
		if c2 := acquire(t, s, key, 2, c.Ticket, true); !c2.Granted() {
			t.Errorf("the first in the queue was not granted the free slot: %+v", c2)
		}
		// The first in the queue leaving moves the next up.
		s.Release(b.Lease)
		f := acquire(t, s, key, 2, fleet.Ticket{}, true)
		if f.Granted() {
			t.Fatalf("a newcomer was granted while one waited: %+v", f)
		}
		s.Leave(key, d.Ticket)
		if f2 := acquire(t, s, key, 2, f.Ticket, true); !f2.Granted() {
			t.Errorf("after the one ahead left, the next was not granted: %+v", f2)
		}
	})
}

func TestNoLimitAndNoQueue(t *testing.T) {
	t.Parallel()
	stores(t, func(t *testing.T, s fleet.Store) {
		for i := range 50 {
			if g := acquire(t, s, "unlimited", 0, fleet.Ticket{}, true); !g.Granted() || g.InUse != i+1 || g.Limit != 0 {
				t.Fatalf("limit 0 should grant every request: %+v", g)
			}
		}
		held := acquire(t, s, "one", 1, fleet.Ticket{}, false)
		refused := acquire(t, s, "one", 1, fleet.Ticket{}, false)
		if !held.Granted() || refused.Granted() || refused.Ticket != (fleet.Ticket{}) {
			t.Fatalf("without queue a full key should refuse and hold no place: %+v", refused)
		}
		s.Release(held.Lease)
		if g := acquire(t, s, "one", 1, fleet.Ticket{}, false); !g.Granted() {
			t.Errorf("the released slot was not granted: %+v", g)
		}
	})
}

func TestRefusalsLowerTheLimit(t *testing.T) {
	t.Parallel()
	stores(t, func(t *testing.T, s fleet.Store) {
		const key = "acct:websocket"
		var held []fleet.Grant
		for range 6 {
			held = append(held, acquire(t, s, key, 10, fleet.Ticket{}, true))
		}
		// The upstream refused the sixth: it takes five at most.
		n, err := s.Refused(t.Context(), key)
		if err != nil || n != 5 {
			t.Fatalf("Refused with 6 held = %d, %v; want 5", n, err)
		}
		s.Release(held[5].Lease)
		if g := acquire(t, s, key, 10, fleet.Ticket{}, true); g.Granted() || g.Limit != 5 {
			t.Errorf("with 5 held under a learned limit of 5, another was granted: %+v", g)
		}
		// A refusal of a lease granted under the old limit says nothing new.
		if n, _ := s.Refused(t.Context(), key); n != 4 {
			t.Errorf("a second refusal with 5 held: limit %d, want 4", n)
		}
	})
}

func TestRate(t *testing.T) {
	t.Parallel()
	stores(t, func(t *testing.T, s fleet.Store) {
		perMinute := fleet.Rate{Count: 60, Period: time.Minute}
		for i := range 60 {
			st, err := s.Rate(t.Context(), "client:requests", perMinute, 1, false)
			if err != nil || !st.Allowed {
				t.Fatalf("request %d of 60 per minute refused: %+v, %v", i+1, st, err)
			}
		}
		st, _ := s.Rate(t.Context(), "client:requests", perMinute, 1, false)
		if st.Allowed || st.RetryAfter <= 0 || st.RetryAfter > 1100*time.Millisecond || st.Remaining >= 1 {
			t.Fatalf("the 61st: %+v; want refused, retry within about a second, nothing remaining", st)
		}
		// A charge bigger than what is left is refused whole, unless forced.
		chars := fleet.Rate{Count: 1000, Period: time.Minute}
		if st, _ := s.Rate(t.Context(), "client:chars", chars, 800, false); !st.Allowed || st.Remaining < 199 || st.Remaining > 201 {
			t.Fatalf("800 of 1000: %+v", st)
		}
		if st, _ := s.Rate(t.Context(), "client:chars", chars, 300, false); st.Allowed {
			t.Fatalf("300 more of the 200 left was allowed: %+v", st)
		}
		st, _ = s.Rate(t.Context(), "client:chars", chars, 300, true)
		if !st.Allowed && st.Reset <= time.Minute {
			t.Fatalf("a forced charge should go into debt: %+v", st)
		}
		if st, _ := s.Rate(t.Context(), "client:chars", chars, 1, false); st.Allowed {
			t.Errorf("a client in debt was allowed more: %+v", st)
		}
	})
}

// TestReplicasShare: two stores on one Redis are one fleet: a lease on one
// counts on the other, and a release on one wakes the other's waiters.
func TestReplicasShare(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	a, b := newRedis(t, srv.URL, 2, nil, nil), newRedis(t, srv.URL, 2, nil, nil)
	held := acquire(t, a, "acct:live", 1, fleet.Ticket{}, true)
	changed := b.Changed("acct:live")
	waiting := acquire(t, b, "acct:live", 1, fleet.Ticket{}, true)
	if !held.Granted() || waiting.Granted() {
		t.Fatalf("a lease on one replica did not count on the other: %+v, %+v", held, waiting)
	}
	a.Release(held.Lease)
	select {
	case <-changed:
	case <-time.After(5 * time.Second):
		t.Fatal("a release on one replica did not wake the other's waiter")
	}
	if g := acquire(t, b, "acct:live", 1, waiting.Ticket, true); !g.Granted() {
		t.Errorf("the waiter on the other replica was not granted the slot: %+v", g)
	}
}

// TestCrashedReplicaSlotsReturn: a replica that stops renewing (it
// crashed) loses its leases and places within the lease lifetime.
func TestCrashedReplicaSlotsReturn(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	survivor := newRedis(t, srv.URL, 2, nil, nil)
	crashed := newRedis(t, srv.URL, 2, nil, nil)
	for range 2 {
		acquire(t, crashed, "acct:synthesis", 2, fleet.Ticket{}, true)
	}
	queued := acquire(t, crashed, "acct:synthesis", 2, fleet.Ticket{}, true)
	if queued.Granted() {
		t.Fatal("a third lease of 2 was granted")
	}
	// Renewed meanwhile: still held after more than a lifetime.
	time.Sleep(1500 * time.Millisecond)
	if g := acquire(t, survivor, "acct:synthesis", 2, fleet.Ticket{}, false); g.Granted() || g.Ahead != 1 {
		t.Fatalf("leases renewed by a live replica were lost: %+v", g)
	}
	crashed.Close() // no releases: as a crash
	start := time.Now()
	for {
		g := acquire(t, survivor, "acct:synthesis", 2, fleet.Ticket{}, false)
		if g.Granted() && g.Ahead == 0 {
			t.Logf("the crashed replica's slots came back after %v", time.Since(start).Round(100*time.Millisecond))
			return
		}
		if time.Since(start) > 3*time.Second {
			t.Fatalf("the crashed replica's slots did not come back: %+v", g)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestRedisDownFallsBackToShare: with Redis gone each replica keeps to its
// share of the limit, says so once, and goes back to Redis by itself.
func TestRedisDownFallsBackToShare(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	log := new(gatewaytest.Logs)
	reg := prometheus.NewRegistry()
	m := metrics.NewFleet(reg)
	r := newRedis(t, srv.URL, 3, log, m)
	if !r.Shared() || redisUp(t, reg) != 1 {
		t.Fatal("not shared with Redis up")
	}
	srv.Kill()
	granted := 0
	for range 10 {
		if g := acquire(t, r, "acct:synthesis", 9, fleet.Ticket{}, false); g.Granted() {
			granted++
		}
	}
	if granted != 3 || r.Shared() {
		t.Fatalf("with Redis down, %d of a limit of 9 shared by 3 were granted; want 3", granted)
	}
	if n := strings.Count(log.String(), "Redis is unreachable"); n != 1 {
		t.Errorf("the fall back was logged %d times; want once:\n%s", n, log.String())
	}
	st, err := r.Rate(t.Context(), "client:requests", fleet.Rate{Count: 30, Period: time.Minute}, 11, false)
	if err != nil || st.Allowed {
		t.Errorf("11 of a rate of 30 shared by 3 was allowed while Redis was down: %+v", st)
	}
	if err := srv.Restart(t.Context()); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !r.Shared() {
		if time.Now().After(deadline) {
			t.Fatal("the store did not go back to Redis")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if g := acquire(t, r, "acct:other", 1, fleet.Ticket{}, false); !g.Granted() {
		t.Errorf("after Redis came back: %+v", g)
	}
	if !strings.Contains(log.String(), "reachable again") || redisUp(t, reg) != 1 {
		t.Errorf("the return was not logged or measured:\n%s", log.String())
	}
}

// redisUp reads speechgate_fleet_redis_up from reg.
func redisUp(t *testing.T, reg *prometheus.Registry) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "speechgate_fleet_redis_up" {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatal("no speechgate_fleet_redis_up")
	return 0
}

// TestContextCancelled: the caller's cancel is its own, not a sign that
// Redis is down.
func TestContextCancelled(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	r := newRedis(t, srv.URL, 1, nil, nil)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := r.Acquire(ctx, "k", 1, fleet.Ticket{}, true); err == nil {
		t.Fatal("Acquire with a cancelled context succeeded")
	}
	if !r.Shared() {
		t.Error("the caller's cancel was taken for Redis being down")
	}
}

// TestFallbackCountsLeasesHeld: leases a replica took in Redis before it
// went down still count against its share, until they are released.
func TestFallbackCountsLeasesHeld(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	r := newRedis(t, srv.URL, 2, nil, nil)
	var held []fleet.Grant
	for range 3 {
		held = append(held, acquire(t, r, "acct:synthesis", 6, fleet.Ticket{}, false))
	}
	srv.Kill()
	if g := acquire(t, r, "acct:synthesis", 6, fleet.Ticket{}, false); g.Granted() {
		t.Fatalf("with 3 leases still held, a share of 3 of 6 granted another: %+v", g)
	}
	r.Release(held[0].Lease)
	if g := acquire(t, r, "acct:synthesis", 6, fleet.Ticket{}, false); !g.Granted() {
		t.Errorf("after one of the 3 was released, its slot was not: %+v", g)
	}
}
