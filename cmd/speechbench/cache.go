package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	speechv1 "github.com/speechgate/speechgate/gen/speech/v1"
	"github.com/speechgate/speechgate/internal/emulator"
	"github.com/speechgate/speechgate/internal/gatewaytest"
	"github.com/speechgate/speechgate/internal/redistest"
)

// cachePhase measures the synthesis cache: a hit's time to first audio
// against a miss's and against the bare gRPC round trip, at 1 and 64
// streams, from the process and from Redis; how many upstream calls 100
// identical requests at once make; and the memory a full cache takes
// against its budget.
func cachePhase(ctx context.Context, s *settings) ([]*result, error) {
	var out []*result
	rdb, err := redistest.Launch()
	switch {
	case errors.Is(err, redistest.ErrNotInstalled):
		fmt.Fprintf(s.log, "  %v: the Redis tier is not measured\n", err)
	case err != nil:
		return nil, err
	default:
		defer rdb.Kill()
	}
	tiers := []struct {
		name  string
		flags []string
	}{{"in process", nil}}
	if rdb != nil {
		// No memory in the process: every hit is read from Redis.
		tiers = append(tiers, struct {
			name  string
			flags []string
		}{"from Redis", []string{"--redis-url=" + rdb.URL, "--synthesis-cache-bytes=0"}})
	}
	for _, tier := range tiers {
		for _, c := range []int{1, 64} {
			res, err := cacheTTFA(ctx, s, c, tier.name, tier.flags)
			if err != nil {
				return nil, fmt.Errorf("%s, %d streams: %w", tier.name, c, err)
			}
			out = append(out, res...)
		}
	}
	res, err := coalescing(ctx, s)
	if err != nil {
		return nil, fmt.Errorf("coalescing: %w", err)
	}
	out = append(out, res...)
	res, err = fullCache(ctx, s)
	if err != nil {
		return nil, fmt.Errorf("full cache: %w", err)
	}
	return append(out, res...), nil
}

// cacheTTFA measures time to first audio at c streams for hits (one
// text, cached before) and misses (the same text with CACHE_MODE_BYPASS),
// with the bare round trip of a health check meanwhile.
func cacheTTFA(ctx context.Context, s *settings, c int, tier string, flags []string) ([]*result, error) {
	callAudio := ttfaCallAudio(c)
	r, err := newRig(ctx, s, emulator.Options{ChunkBytes: s.chunkBytes, FirstByteDelay: s.firstByteDelay, Pace: 1,
		AudioPerChar: callAudio / time.Duration(len(shortText))}, 4, flags...)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	hit := &speechv1.SynthesizeRequest{Text: shortText, VoiceId: "avery", SampleRateHz: 24000}
	miss := &speechv1.SynthesizeRequest{Text: shortText, VoiceId: "avery", SampleRateHz: 24000, CacheMode: speechv1.CacheMode_CACHE_MODE_BYPASS}
	if _, err := synthesizeGateway(ctx, r.gc.synth(), hit, nil, nil); err != nil { // stores it
		return nil, err
	}
	call := func(req *speechv1.SynthesizeRequest) func(context.Context, func(time.Duration)) error {
		return func(ctx context.Context, first func(time.Duration)) error {
			_, err := synthesizeGateway(ctx, r.gc.synth(), req, first, nil)
			return err
		}
	}
	if err := concurrently(c, func() error { return call(miss)(ctx, nil) }); err != nil {
		return nil, fmt.Errorf("warm-up: %w", err)
	}
	total := max(200, 4*c)
	if s.quick {
		total = 2 * c
	}
	misses, err := sampleTTFA(ctx, c, total, callAudio, 3*s.phaseTime, call(miss))
	if err != nil {
		return nil, fmt.Errorf("misses: %w", err)
	}
	probeCtx, stopProbe := context.WithCancel(ctx)
	probed := make(chan []time.Duration, 1)
	go func() { probed <- probeRoundTrips(probeCtx, r.gc.conns[0], 20*time.Millisecond) }()
	hits, err := sampleTTFA(ctx, c, total, callAudio, 3*s.phaseTime, call(hit))
	stopProbe()
	floor := <-probed
	if err != nil {
		return nil, fmt.Errorf("hits: %w", err)
	}
	target := "within 0.5 ms of the round trip"
	if strings.Contains(tier, "Redis") {
		target = "within 2 ms of the round trip"
	}
	out := []*result{{Phase: "cache", Name: fmt.Sprintf("time to first audio, p50, %s, hit %s vs miss", streams(c), tier), Unit: "ms",
		Gateway: percentile(hits, 50), Baseline: percentile(misses, 50), BaselineName: "the same request as a miss (CACHE_MODE_BYPASS)",
		Compare: "difference"}}
	out[0].Value = out[0].Gateway - out[0].Baseline
	floorResult := &result{Phase: "cache", Name: fmt.Sprintf("time to first audio, p50, %s, hit %s vs bare gRPC round trip", streams(c), tier), Unit: "ms",
		Gateway: percentile(hits, 50), Baseline: percentile(floor, 50), BaselineName: "health Check round trip meanwhile", Compare: "difference"}
	floorResult.Value = floorResult.Gateway - floorResult.Baseline
	if c == 64 {
		floorResult.Target = target
	}
	return append(out, floorResult), nil
}

// coalescing sends 100 identical requests at once and counts the
// upstream's syntheses and the bytes that differ between the answers.
func coalescing(ctx context.Context, s *settings) ([]*result, error) {
	// Slow to start, as a real synthesis is, so that all arrive before it
	// has ended.
	r, err := newRig(ctx, s, emulator.Options{ChunkBytes: 800, FirstByteDelay: 300 * time.Millisecond, Pace: 1, AudioPerChar: 50 * time.Millisecond}, 8)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	resetStats(r.emu.URL)
	req := &speechv1.SynthesizeRequest{Text: "Thank you for holding; an agent will be with you shortly.", VoiceId: "avery",
		SampleRateHz: 8000, Encoding: speechv1.AudioEncoding_AUDIO_ENCODING_MULAW}
	const n = 100
	got := make([]*gatewaytest.Synthesis, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got[i] = gatewaytest.Synthesize(withKey(ctx), r.gc.synth(), req)
		}()
	}
	wg.Wait()
	differ, joined := 0, 0
	for _, g := range got {
		if g.Err != nil {
			return nil, g.Err
		}
		if !bytes.Equal(g.Bytes(), got[0].Bytes()) {
			differ++
		}
		if g.Totals.GetCacheResult() == speechv1.CacheResult_CACHE_RESULT_JOINED {
			joined++
		}
	}
	calls := requestsOf(r.emu.URL)
	fmt.Fprintf(s.log, "  %d identical requests: %d upstream syntheses, %d joined, %d with different audio\n", n, calls, joined, differ)
	return []*result{
		{Phase: "cache", Name: "upstream syntheses for 100 identical requests at once", Unit: "calls", Gateway: float64(calls), Baseline: n,
			BaselineName: "one per request, without coalescing", Compare: "ratio", Value: float64(calls) / n, Target: "exactly 1"},
		{Phase: "cache", Name: "answers whose audio differs from the first's", Unit: "calls", Gateway: float64(differ),
			BaselineName: "none", Compare: "none", Target: "0"},
	}, nil
}

// fullCache fills a cache with twice its budget of distinct syntheses and
// reports how much the gateway's resident memory grew.
func fullCache(ctx context.Context, s *settings) ([]*result, error) {
	budget, calls := 64<<20, 40
	if s.quick {
		budget, calls = 16<<20, 10
	}
	// 40 characters of 1 s each at 44.1 kHz PCM: 3.5 MB an entry.
	r, err := newRig(ctx, s, emulator.Options{ChunkBytes: 8820, AudioPerChar: time.Second}, 2,
		"--synthesis-cache-bytes="+strconv.Itoa(budget), "--synthesis-cache-max-entry-bytes=4194304")
	if err != nil {
		return nil, err
	}
	defer r.Close()
	if _, err := synthesizeGateway(ctx, r.gc.synth(), &speechv1.SynthesizeRequest{Text: "warm", VoiceId: "avery", SampleRateHz: 8000}, nil, nil); err != nil {
		return nil, err
	}
	time.Sleep(500 * time.Millisecond)
	before, _ := r.gw.rssBytes()
	for i := range calls {
		text := fmt.Sprintf("%040d", i)
		if _, err := synthesizeGateway(ctx, r.gc.synth(), &speechv1.SynthesizeRequest{Text: text, VoiceId: "avery", SampleRateHz: 44100}, nil, nil); err != nil {
			return nil, err
		}
	}
	time.Sleep(500 * time.Millisecond)
	after, _ := r.gw.rssBytes()
	grown := float64(after-before) / (1 << 20)
	fmt.Fprintf(s.log, "  %d syntheses of 3.5 MB into a %d MiB cache: resident memory %d → %d MiB\n", calls, budget>>20, before>>20, after>>20)
	return []*result{{Phase: "cache", Name: fmt.Sprintf("resident memory grown by filling a %d MiB cache twice over", budget>>20), Unit: "MiB",
		Gateway: grown, Baseline: float64(budget) / (1 << 20), BaselineName: "the cache's byte budget", Compare: "ratio",
		Value: grown / (float64(budget) / (1 << 20)), Target: "≤ 1.1×"}}, nil
}
