package main

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	speechv1 "github.com/speechgate/speechgate/gen/speech/v1"
	"github.com/speechgate/speechgate/internal/redistest"
	"github.com/speechgate/speechgate/internal/rpcerror"
)

// limitedAccount is an independent stand-in for Lightning's SSE synthesis
// under an account concurrency limit: beyond limit syntheses at once it
// answers 429 with Lightning's error body, as Smallest does. It counts
// the most it had in flight and what it refused.
type limitedAccount struct {
	limit int

	mu       sync.Mutex
	inFlight int
	peak     int
	refused  int
}

// frameGap paces the stand-in's frames; a synthesis of text "long" lasts
// 100 frames, any other 5.
const frameGap = 60 * time.Millisecond

func (a *limitedAccount) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	a.mu.Lock()
	if a.inFlight >= a.limit {
		a.refused++
		a.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusTooManyRequests)
		io.WriteString(w, `{"error":"TooManyRequests","message":"Concurrency limit exceeded for this account."}`)
		return
	}
	a.inFlight++
	a.peak = max(a.peak, a.inFlight)
	a.mu.Unlock()
	// A synthesis stops counting when its last frame is sent, before the
	// caller can read it and start another.
	var once sync.Once
	done := func() {
		once.Do(func() {
			a.mu.Lock()
			a.inFlight--
			a.mu.Unlock()
		})
	}
	defer done()
	frames := 5
	if strings.Contains(string(body), `"text":"long`) {
		frames = 100
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("X-Request-Id", "standin")
	chunk := base64.StdEncoding.EncodeToString(make([]byte, 960))
	for range frames {
		select {
		case <-r.Context().Done():
			return
		case <-time.After(frameGap):
		}
		fmt.Fprintf(w, "event: audio\ndata: {\"audio\": %q, \"done\": false, \"status\": \"206\"}\n\n", chunk)
		w.(http.Flusher).Flush()
	}
	done()
	io.WriteString(w, "data: {\"status\": \"200\", \"done\": true}\n\n")
}

// seen returns and resets the peak and the refusals.
func (a *limitedAccount) seen() (peak, refused int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	peak, refused = a.peak, a.refused
	a.peak, a.refused = a.inFlight, 0
	return peak, refused
}

func (a *limitedAccount) inflight() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.inFlight
}

// replica is one gateway process of the fleet.
type replica struct {
	cmd   *exec.Cmd
	logs  *logWatcher
	synth speechv1.SynthesisServiceClient
}

func startReplica(t *testing.T, bin string, args ...string) *replica {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"--grpc-addr=127.0.0.1:0", "--admin-addr=", "--http-addr=", "--auth=none", "--log-format=json"}, args...)...)
	cmd.Env = append(os.Environ(), "SMALLEST_API_KEY=sk_fleet_account_0123456789")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r := &replica{cmd: cmd, logs: newLogWatcher()}
	consumed := make(chan struct{})
	go func() { r.logs.consume(stderr); close(consumed) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-consumed
		cmd.Wait()
	})
	r.synth = speechv1.NewSynthesisServiceClient(dial(t, r.logs.waitAddr(t)))
	return r
}

// speak runs one Synthesize through r to its end.
func (r *replica) speak(ctx context.Context, text string) error {
	ctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer caller"), 30*time.Second)
	defer cancel()
	stream, err := r.synth.Synthesize(ctx, &speechv1.SynthesizeRequest{Text: text, VoiceId: "avery"})
	if err != nil {
		return err
	}
	_, err = finish(stream)
	return err
}

// bursts numbers the bursts, so that no two calls ask for the same text:
// the synthesis cache would serve a repeat without the account.
var bursts atomic.Int64

// burst makes n calls at once, spread over the replicas, and returns the
// first failure.
func burst(ctx context.Context, replicas []*replica, n int) error {
	if errs := burstAll(ctx, replicas, n); len(errs) > 0 {
		return errs[0]
	}
	return nil
}

// burstAll is burst returning every failure.
func burstAll(ctx context.Context, replicas []*replica, n int) []error {
	b := bursts.Add(1)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := replicas[i%len(replicas)].speak(ctx, fmt.Sprintf("Call %d of burst %d.", i, b)); err != nil {
				errs <- fmt.Errorf("call %d via replica %d: %w", i, i%len(replicas), err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	var all []error
	for err := range errs {
		all = append(all, err)
	}
	return all
}

// TestFleetSharesOneAccount runs three gateways sharing one Redis in front
// of an account that admits N syntheses at once: with 3N calls whose
// deadlines allow the wait, every call completes and the account never
// sees more than N; with Redis killed, calls go on under each replica's
// share; with Redis back, the budget is shared again; and the slots of a
// replica killed mid-stream come back within the lease lifetime.
func TestFleetSharesOneAccount(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds the binary and runs three of it")
	}
	rdb := redistest.Start(t)
	const n = 6
	account := &limitedAccount{limit: n}
	upstream := httptest.NewServer(account)
	t.Cleanup(upstream.Close)
	bin := filepath.Join(t.TempDir(), "speechgate")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	var fleet []*replica
	for range 3 {
		fleet = append(fleet, startReplica(t, bin, "--smallest-base-url="+upstream.URL, "--redis-url="+rdb.URL,
			"--fleet-size=3", fmt.Sprintf("--budget-synthesis=%d", n), "--admission-max-wait=25s"))
	}
	ctx := t.Context()

	// 3N calls at once: all complete, and the account never sees more than N.
	if err := burst(ctx, fleet, 3*n); err != nil {
		t.Fatal(err)
	}
	if peak, refused := account.seen(); peak > n || refused > 0 {
		t.Fatalf("3N calls through the fleet: the account saw %d at once and refused %d; want at most %d and none", peak, refused, n)
	}

	// Redis killed mid-run: the calls go on, each replica keeping to its
	// share. The shares cannot know how the calls already running are
	// spread over the replicas, so in that moment the account may refuse a
	// few (which the gateway retries): a call may end RESOURCE_EXHAUSTED,
	// with RetryInfo, but with nothing else, and none may hang.
	errs := make(chan []error, 1)
	go func() { errs <- burstAll(ctx, fleet, 3*n) }()
	time.Sleep(3 * frameGap)
	rdb.Kill()
	failed := <-errs
	for _, err := range failed {
		if status.Code(err) != codes.ResourceExhausted || rpcerror.Summarize(err).RetryDelay <= 0 && rpcerror.ReasonOf(err) != rpcerror.ReasonUpstreamRateLimited {
			t.Errorf("with Redis killed mid-run: %v; want success, or RESOURCE_EXHAUSTED to retry", err)
		}
	}
	if len(failed) > n {
		t.Errorf("with Redis killed mid-run %d of %d calls failed; the retries should absorb most refusals", len(failed), 3*n)
	}
	t.Logf("with Redis killed mid-run, %d of %d calls were refused", len(failed), 3*n)
	// Once it is down, the shares hold.
	account.seen()
	if err := burst(ctx, fleet, 3*n); err != nil {
		t.Fatalf("with Redis down: %v", err)
	}
	if peak, _ := account.seen(); peak > n {
		t.Errorf("with Redis down the account saw %d at once; the shares add up to %d", peak, n)
	}
	for i, r := range fleet {
		if !r.logs.has("Redis is unreachable") {
			t.Errorf("replica %d did not say it fell back to its share", i)
		}
	}

	// Redis back: shared again.
	if err := rdb.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, func() bool {
		for _, r := range fleet {
			if !r.logs.has("Redis is reachable again") {
				return false
			}
		}
		return true
	})
	account.seen()
	if err := burst(ctx, fleet, 3*n); err != nil {
		t.Fatalf("after Redis came back: %v", err)
	}
	if peak, refused := account.seen(); peak > n || refused > 0 {
		t.Errorf("after Redis came back the account saw %d at once and refused %d; want at most %d and none", peak, refused, n)
	}

	// A replica killed while it holds every slot: they come back when its
	// leases expire, within their lifetime, and not before.
	crashed := fleet[2]
	for i := range n {
		go crashed.speak(ctx, fmt.Sprintf("long %d", i))
	}
	waitUntil(t, func() bool { return account.inflight() == n })
	crashed.cmd.Process.Kill()
	killed := time.Now()
	if err := fleet[0].speak(ctx, "After the crash."); err != nil {
		t.Fatalf("a call after a replica crashed holding every slot: %v", err)
	}
	took := time.Since(killed)
	t.Logf("the crashed replica's slots came back after %v", took.Round(100*time.Millisecond))
	if took > 15*time.Second {
		t.Errorf("the crashed replica's slots took %v to come back; want within the 10s lease lifetime", took)
	}
}
