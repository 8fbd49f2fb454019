package admission_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"go.uber.org/goleak"

	"github.com/speechgate/speechgate/internal/admission"
	"github.com/speechgate/speechgate/internal/fleet"
	"github.com/speechgate/speechgate/internal/redistest"
	"github.com/speechgate/speechgate/internal/rpcerror"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const account = "acct:0123456789abcdef"

func controller(budget int, maxWait time.Duration) *admission.Controller {
	return admission.New(admission.Config{Budgets: map[string]int{"synthesis": budget}, MaxWait: maxWait, Store: fleet.NewLocal()})
}

func mustAcquire(t *testing.T, c *admission.Controller, ctx context.Context) func() {
	t.Helper()
	release, err := c.Acquire(ctx, account, "synthesis")
	if err != nil {
		t.Fatal(err)
	}
	return release
}

func TestUnderBudgetAdmitsAtOnce(t *testing.T) {
	t.Parallel()
	c := controller(3, time.Second)
	for range 3 {
		mustAcquire(t, c, t.Context())
	}
	// Other uses and accounts have their own budgets.
	if _, err := c.Acquire(t.Context(), "acct:other", "synthesis"); err != nil {
		t.Errorf("another account was refused: %v", err)
	}
	if _, err := c.Acquire(t.Context(), account, "live"); err != nil {
		t.Errorf("an unbudgeted use was refused: %v", err)
	}
}

// TestQueueIsFirstComeFirstServed: calls that wait are admitted in the
// order they arrived, whoever they are.
func TestQueueIsFirstComeFirstServed(t *testing.T) {
	t.Parallel()
	c := controller(1, 10*time.Second)
	release := mustAcquire(t, c, t.Context())
	const waiters = 6
	var mu sync.Mutex
	var order []int
	var wg sync.WaitGroup
	for i := range waiters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := c.Acquire(t.Context(), account, "synthesis")
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			order = append(order, i)
			mu.Unlock()
			time.Sleep(5 * time.Millisecond)
			r()
		}()
		waitFor(t, func() bool { return c.WaitingCount(account, "synthesis") == i+1 })
	}
	release()
	wg.Wait()
	for i, got := range order {
		if got != i {
			t.Fatalf("admitted in the order %v; want the order of arrival", order)
		}
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(time.Millisecond)
	}
}

func TestRefusedWithinTheDeadline(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		deadline time.Duration // 0: none
		maxWait  time.Duration
		// the call gives up after about this long
		within, atLeast time.Duration
	}{
		{"the deadline bounds the wait, keeping time for the work", time.Second, 10 * time.Second, time.Second, 600 * time.Millisecond},
		{"a deadline too short to wait is refused at once", 200 * time.Millisecond, 10 * time.Second, 50 * time.Millisecond, 0},
		{"the maximum wait bounds a call with no deadline", 0, 300 * time.Millisecond, 600 * time.Millisecond, 300 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := controller(1, tt.maxWait)
			mustAcquire(t, c, t.Context())
			ctx := t.Context()
			if tt.deadline > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tt.deadline)
				defer cancel()
			}
			start := time.Now()
			_, err := c.Acquire(ctx, account, "synthesis")
			took := time.Since(start)
			if took > tt.within || took < tt.atLeast {
				t.Errorf("gave up after %v; want between %v and %v", took, tt.atLeast, tt.within)
			}
			st := status.Convert(err)
			if st.Code() != codes.ResourceExhausted || rpcerror.ReasonOf(err) != rpcerror.ReasonUpstreamBusy {
				t.Fatalf("got %v; want RESOURCE_EXHAUSTED, UPSTREAM_BUSY", err)
			}
			var quota *errdetails.QuotaFailure
			var retry *errdetails.RetryInfo
			for _, d := range st.Details() {
				switch d := d.(type) {
				case *errdetails.QuotaFailure:
					quota = d
				case *errdetails.RetryInfo:
					retry = d
				}
			}
			if quota == nil || quota.GetViolations()[0].GetSubject() != "smallest-account:synthesis" {
				t.Errorf("QuotaFailure = %v; want the subject smallest-account:synthesis", quota)
			}
			if retry == nil || retry.GetRetryDelay().AsDuration() <= 0 {
				t.Errorf("RetryInfo = %v; want an estimated delay", retry)
			}
		})
	}
}

// TestCancelledWaiterLeavesAtOnce: a waiter that gives up does not hold up
// the ones behind it.
func TestCancelledWaiterLeavesAtOnce(t *testing.T) {
	t.Parallel()
	c := controller(1, 10*time.Second)
	release := mustAcquire(t, c, t.Context())
	ctx, cancel := context.WithCancel(t.Context())
	first := make(chan error, 1)
	go func() {
		_, err := c.Acquire(ctx, account, "synthesis")
		first <- err
	}()
	waitFor(t, func() bool { return c.WaitingCount(account, "synthesis") == 1 })
	second := make(chan error, 1)
	go func() {
		r, err := c.Acquire(t.Context(), account, "synthesis")
		if err == nil {
			r()
		}
		second <- err
	}()
	waitFor(t, func() bool { return c.WaitingCount(account, "synthesis") == 2 })
	cancel()
	if err := <-first; !errors.Is(err, context.Canceled) {
		t.Fatalf("the cancelled waiter got %v", err)
	}
	if n := c.WaitingCount(account, "synthesis"); n != 1 {
		t.Fatalf("after a cancel %d wait; want 1", n)
	}
	start := time.Now()
	release()
	if err := <-second; err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 100*time.Millisecond {
		t.Errorf("the next waiter took %v to get the freed slot; want at once", took)
	}
}

// TestRefusalShrinksTheBudget: after the upstream refuses a call for its
// concurrency, fewer run at once, though the budget configured is higher.
func TestRefusalShrinksTheBudget(t *testing.T) {
	t.Parallel()
	c := controller(4, 200*time.Millisecond)
	var held []func()
	for range 4 {
		held = append(held, mustAcquire(t, c, t.Context()))
	}
	c.Refused(account, "synthesis") // the fourth was refused: 3 at most
	held[3]()
	if _, err := c.Acquire(t.Context(), account, "synthesis"); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("with 3 held under a learned budget of 3, got %v; want RESOURCE_EXHAUSTED", err)
	}
	held[2]()
	if _, err := c.Acquire(t.Context(), account, "synthesis"); err != nil {
		t.Errorf("with 2 held under a learned budget of 3: %v", err)
	}
}

// TestFleetKeepsToOneBudget: controllers of two replicas sharing a Redis
// never run more than the budget at once between them, and admit every
// call whose deadline covers the wait.
func TestFleetKeepsToOneBudget(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	var replicas []*admission.Controller
	for range 2 {
		store, err := fleet.NewRedis(fleet.RedisConfig{URL: srv.URL, FleetSize: 2, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { store.Close() })
		replicas = append(replicas, admission.New(admission.Config{Budgets: map[string]int{"synthesis": 3}, Store: store}))
	}
	var running, peak atomic.Int64
	var wg sync.WaitGroup
	for i := range 18 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			release, err := replicas[i%2].Acquire(ctx, account, "synthesis")
			if err != nil {
				t.Errorf("call %d: %v", i, err)
				return
			}
			n := running.Add(1)
			for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
			}
			time.Sleep(50 * time.Millisecond)
			running.Add(-1)
			release()
		}()
	}
	wg.Wait()
	if p := peak.Load(); p > 3 || p < 2 {
		t.Errorf("at most %d ran at once across the replicas; want 3 (the budget)", p)
	}
}
