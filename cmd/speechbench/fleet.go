package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	speechv1 "github.com/speechgate/speechgate/gen/speech/v1"
	"github.com/speechgate/speechgate/internal/emulator"
	"github.com/speechgate/speechgate/internal/gatewaytest"
	"github.com/speechgate/speechgate/internal/redistest"
	"github.com/speechgate/speechgate/internal/smallest"
)

// fleetPhase measures what admission does for replicas that share one
// Smallest account: three gateways and a Redis in front of the emulator
// limited to N syntheses at once, offered 2N callers. The baseline is the
// same callers calling the account directly, as services do with no
// gateway: every refusal reaches them. It reports the share of calls
// refused each way, the queue wait the fleet's callers saw, the most
// syntheses the account saw at once, and what Redis adds to the time to
// first audio at 64 streams.
func fleetPhase(ctx context.Context, s *settings) ([]*result, error) {
	n, runFor := 8, 15*time.Second
	if s.quick {
		n, runFor = 4, 3*time.Second
	}
	// One second of audio per call, streamed in real time.
	const text = "Ten chars."
	emu, err := startEmulator(emulator.Options{ChunkBytes: 800, Pace: 1, AudioPerChar: 100 * time.Millisecond, Concurrency: n})
	if err != nil {
		return nil, err
	}
	defer emu.Close()

	// Without a gateway: each caller calls the account and takes its 429s.
	dc, err := smallest.New(smallest.Config{BaseURL: emu.URL, HTTPClient: &http.Client{Transport: smallest.NewTransport(30*time.Second, 0)},
		Credential: func(context.Context) string { return benchKey }, MaxAttempts: 1})
	if err != nil {
		return nil, err
	}
	defer dc.Close()
	dreq := &smallest.SpeechRequest{Text: text, VoiceOptions: smallest.VoiceOptions{VoiceID: "avery", SampleRate: 8000}, OutputFormat: "ulaw"}
	resetStats(emu.URL)
	direct := offer(ctx, 2*n, runFor, func(ctx context.Context) (time.Duration, error) {
		_, err := synthesizeDirect(ctx, dc, dreq, nil)
		return 0, err
	})
	directPeak := peakOf(emu.URL)

	// Three replicas sharing Redis, or, without one, each its third of the
	// budget in process.
	shared, where := "", "Redis on loopback"
	rdb, err := redistest.Launch()
	switch {
	case errors.Is(err, redistest.ErrNotInstalled):
		fmt.Fprintf(s.log, "  %v: the replicas keep in-process shares instead\n", err)
		where = "in-process shares (no redis-server)"
	case err != nil:
		return nil, err
	default:
		defer rdb.Kill()
		shared = rdb.URL
	}
	flags := []string{"--admission-max-wait=30s", "--log-level=error"}
	if shared != "" {
		flags = append(flags, "--redis-url="+shared, "--fleet-size=3", "--budget-synthesis="+strconv.Itoa(n))
	} else {
		flags = append(flags, "--budget-synthesis="+strconv.Itoa(max(1, n/3)))
	}
	var replicas []*clients
	for range 3 {
		gw, err := startGateway(ctx, s, emu.URL, flags...)
		if err != nil {
			return nil, err
		}
		defer gw.Close()
		gc, err := dial(gw.addr, 2)
		if err != nil {
			return nil, err
		}
		defer gc.close()
		replicas = append(replicas, gc)
	}
	greq := &speechv1.SynthesizeRequest{CacheMode: fresh, Text: text, VoiceId: "avery", SampleRateHz: 8000, Encoding: speechv1.AudioEncoding_AUDIO_ENCODING_MULAW}
	var next int
	var mu sync.Mutex
	resetStats(emu.URL)
	fleet := offer(ctx, 2*n, runFor, func(ctx context.Context) (time.Duration, error) {
		mu.Lock()
		c := replicas[next%len(replicas)]
		next++
		mu.Unlock()
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		got := gatewaytest.Synthesize(withKey(ctx), c.synth(), greq)
		return time.Duration(got.Totals.GetAdmissionWaitMs()) * time.Millisecond, got.Err
	})
	fleetPeak := peakOf(emu.URL)
	fmt.Fprintf(s.log, "  account limit %d, %d callers for %v: %d direct calls (%d refused, %d completed), %d through the fleet (%d refused, %d completed)\n",
		n, 2*n, runFor, direct.calls, direct.refused, direct.completed, fleet.calls, fleet.refused, fleet.completed)

	out := []*result{
		{Phase: "fleet", Name: fmt.Sprintf("calls refused, %d callers on an account of %d (%s)", 2*n, n, where), Unit: "%",
			Gateway: fleet.refusedShare(), Baseline: direct.refusedShare(), BaselineName: "callers calling the account directly",
			Compare: "difference", Value: fleet.refusedShare() - direct.refusedShare(), Target: "0 refused whose deadline covered the wait"},
		{Phase: "fleet", Name: fmt.Sprintf("syntheses completed in %v", runFor), Unit: "calls", Gateway: float64(fleet.completed),
			Baseline: float64(direct.completed), BaselineName: "callers calling the account directly (retrying every 100 ms)",
			Compare: "ratio", Value: float64(fleet.completed) / max(1, float64(direct.completed)), Target: "1× (the account's capacity, used whole)"},
		{Phase: "fleet", Name: "most syntheses the account saw at once", Unit: "streams", Gateway: float64(fleetPeak), Baseline: float64(directPeak),
			BaselineName: "callers calling the account directly", Compare: "difference", Value: float64(fleetPeak - directPeak),
			Target: "≤ " + strconv.Itoa(n) + " (the budget)"},
	}
	for _, p := range []float64{50, 99} {
		out = append(out, &result{Phase: "fleet", Name: fmt.Sprintf("queue wait, p%g", p), Unit: "ms", Gateway: percentile(fleet.waits, p),
			BaselineName: "none: callers without a gateway are refused, not queued", Compare: "none"})
	}

	added, err := redisAddedTTFA(ctx, s, shared)
	if err != nil {
		return nil, err
	}
	return append(out, added...), nil
}

// offered is what offer counts.
type offered struct {
	calls, refused, completed int
	waits                     []time.Duration // sorted
}

func (o offered) refusedShare() float64 {
	if o.calls == 0 {
		return 0
	}
	return 100 * float64(o.refused) / float64(o.calls)
}

// offer runs callers goroutines calling call back to back for d. A call
// that fails with RESOURCE_EXHAUSTED (or a 429) is counted as refused; any
// other failure is counted as a call and logged.
func offer(ctx context.Context, callers int, d time.Duration, call func(context.Context) (time.Duration, error)) offered {
	ctx, cancel := stopAfter(ctx, d)
	defer cancel()
	var mu sync.Mutex
	var o offered
	var wg sync.WaitGroup
	for range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				wait, err := call(ctx)
				if ctx.Err() != nil {
					return // cut by the end of the phase
				}
				mu.Lock()
				o.calls++
				if refused(err) {
					o.refused++
				} else if err == nil {
					o.completed++
					o.waits = append(o.waits, wait)
				}
				mu.Unlock()
				if refused(err) {
					sleepCtx(ctx, 100*time.Millisecond) // as a client backs off
				}
			}
		}()
	}
	wg.Wait()
	slices.Sort(o.waits)
	return o
}

func refused(err error) bool {
	return status.Code(err) == codes.ResourceExhausted || smallest.IsRateLimited(err)
}

// resetStats and peakOf read the emulator's own counts.
func resetStats(emuURL string) {
	if resp, err := http.Post(emuURL+"/_emulator/stats", "", nil); err == nil {
		resp.Body.Close()
	}
}

func peakOf(emuURL string) int { return statsOf(emuURL).Peak["synthesis"] }

// requestsOf returns how many syntheses the emulator was asked for.
func requestsOf(emuURL string) int { return statsOf(emuURL).Requests["synthesis"] }

func statsOf(emuURL string) emulator.Stats {
	var st emulator.Stats
	resp, err := http.Get(emuURL + "/_emulator/stats")
	if err != nil {
		return st
	}
	defer resp.Body.Close()
	_ = json.NewDecoder(resp.Body).Decode(&st) // an empty Stats says nothing was counted
	return st
}

// redisAddedTTFA compares the time to first audio at 64 streams through a
// gateway whose budget is kept in process with one kept in Redis, the
// budget large enough never to fill: what Redis adds to admission.
// Admission's own cost in process is BenchmarkAdmission's.
func redisAddedTTFA(ctx context.Context, s *settings, redisURL string) ([]*result, error) {
	if redisURL == "" {
		return nil, nil
	}
	const c = 64
	callAudio := ttfaCallAudio(c)
	emu, err := startEmulator(emulator.Options{ChunkBytes: s.chunkBytes, Pace: 1, AudioPerChar: callAudio / time.Duration(len(shortText))})
	if err != nil {
		return nil, err
	}
	defer emu.Close()
	total := 4 * c
	if s.quick {
		total = c
	}
	greq := &speechv1.SynthesizeRequest{CacheMode: fresh, Text: shortText, VoiceId: "avery", SampleRateHz: 24000}
	measure := func(flags ...string) ([]time.Duration, error) {
		gw, err := startGateway(ctx, s, emu.URL, append([]string{"--budget-synthesis=1000"}, flags...)...)
		if err != nil {
			return nil, err
		}
		defer gw.Close()
		gc, err := dial(gw.addr, 4)
		if err != nil {
			return nil, err
		}
		defer gc.close()
		call := func(ctx context.Context, first func(time.Duration)) error {
			_, err := synthesizeGateway(ctx, gc.synth(), greq, first, nil)
			return err
		}
		if err := concurrently(c, func() error { return call(ctx, nil) }); err != nil {
			return nil, fmt.Errorf("warm-up: %w", err)
		}
		return sampleTTFA(ctx, c, total, callAudio, 3*s.phaseTime, call)
	}
	local, err := measure()
	if err != nil {
		return nil, fmt.Errorf("in process: %w", err)
	}
	redis, err := measure("--redis-url=" + redisURL)
	if err != nil {
		return nil, fmt.Errorf("with Redis: %w", err)
	}
	r := &result{Phase: "fleet", Name: "time to first audio, p50, 64 streams, budget in Redis", Unit: "ms",
		Gateway: percentile(redis, 50), Baseline: percentile(local, 50), BaselineName: "the same gateway, budget in process",
		Compare: "difference", Target: "added ≤ 1 ms"}
	r.Value = r.Gateway - r.Baseline
	return []*result{r}, nil
}
