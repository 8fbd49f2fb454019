package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	speechv1 "github.com/speechgate/speechgate/gen/speech/v1"
	"github.com/speechgate/speechgate/internal/emulator"
)

// chaosFaults are the faults the chaos phase injects into a share of its
// Synthesize calls; each must end the call with an error, never OK.
var chaosFaults = []string{"http-429", "http-500", "http-503", "reset", "reset-after-3", "stall-after-3", "truncate", "malformed"}

// chaosTally is what the chaos phase counts.
type chaosTally struct {
	mu          sync.Mutex
	ok          int
	faulted     int            // calls given a fault
	codes       map[string]int // final codes of failed calls
	unexpected  []string       // calls that failed with no fault, or a faulted call that ended OK
	badBytes    int            // OK calls whose audio was not exactly what was synthesized
	badSequence int            // calls with missing or reordered sequence numbers, or broken offsets
	bytes       int64
}

// chaos runs thousands of real-time streams through the gateway for a
// bounded time, with about 5 % of the calls faulted by the emulator, and
// checks that every OK call delivered its audio exactly, in order, that no
// faulted call ended OK, and that goroutines and file descriptors return
// to their idle level once the calls end and idle connections expire.
func chaos(ctx context.Context, s *settings) ([]*result, error) {
	streamsN, runFor, seconds := 1000, 20*time.Second, 8
	if s.quick {
		streamsN, runFor, seconds = 100, 3*time.Second, 2
	}
	// 8 kHz μ-law in 100 ms frames, paced in real time: one second of audio
	// per character, so each call's audio is exactly known.
	emu, err := startEmulator(emulator.Options{ChunkBytes: 800, Pace: 1, AudioPerChar: time.Second})
	if err != nil {
		return nil, err
	}
	defer emu.Close()
	// The faulted calls are logged, as they should be: to a file, not the
	// bench's output.
	logFile, err := os.CreateTemp("", "speechbench-chaos-*.log")
	if err != nil {
		return nil, err
	}
	defer logFile.Close()
	quiet := *s
	quiet.log = logFile
	gw, err := startGateway(ctx, &quiet, emu.URL, "--upstream-timeout=2s", "--upstream-idle-timeout=2s", "--upstream-idle-conn-timeout=2s")
	if err != nil {
		return nil, err
	}
	defer gw.Close()
	gc, err := dial(gw.addr, 8)
	if err != nil {
		return nil, err
	}
	time.Sleep(time.Second)
	base := gw.resources()

	text := strings.Repeat("a", seconds)
	want := int64(seconds * 8000)
	gatewayReq := s.gatewayRequest(&speechv1.SynthesizeRequest{CacheMode: fresh, Text: text, VoiceId: "avery", SampleRateHz: 8000,
		Encoding: speechv1.AudioEncoding_AUDIO_ENCODING_MULAW})
	tally := &chaosTally{codes: map[string]int{}}
	rctx, cancel := context.WithCancel(ctx)
	deadline := time.Now().Add(runFor)
	var wg sync.WaitGroup
	var active atomic.Int64
	for i := range streamsN {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) && rctx.Err() == nil {
				fault := ""
				if rand.Float64() < 0.05 {
					fault = chaosFaults[rand.IntN(len(chaosFaults))]
				}
				active.Add(1)
				n, seqOK, err := checkedSynthesis(rctx, gc.synth(), gatewayReq(), fault)
				active.Add(-1)
				if rctx.Err() != nil {
					return
				}
				tally.record(fault, n, want, seqOK, err)
			}
		}()
		if i%100 == 99 {
			time.Sleep(100 * time.Millisecond) // ramp up, as real traffic does
		}
	}
	// Sample the gateway while the calls run.
	var peak resources
	peakActive := int64(0)
	for time.Now().Before(deadline) && sleepCtx(ctx, 500*time.Millisecond) {
		peak = peak.max(gw.resources())
		peakActive = max(peakActive, active.Load())
	}
	wg.Wait()
	cancel()
	gc.close()
	// Once idle connections expire (2 s upstream, the callers' closed), the
	// gateway must be back where it started.
	var after resources
	settled := false
	for range 40 {
		after = gw.resources()
		if after.goroutines <= base.goroutines+5 && after.fds <= base.fds+2 {
			settled = true
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	fmt.Fprintf(s.log, "  %d streams (peak %d at once) for %v: %d OK, %d faulted, errors %v; %d MiB relayed; the gateway's log is %s\n",
		streamsN, peakActive, runFor, tally.ok, tally.faulted, tally.codes, tally.bytes>>20, logFile.Name())
	fmt.Fprintf(s.log, "  goroutines %d → %d → %d, fds %d → %d → %d, RSS %d → %d → %d MiB\n",
		base.goroutines, peak.goroutines, after.goroutines, base.fds, peak.fds, after.fds, base.rss>>20, peak.rss>>20, after.rss>>20)

	out := []*result{
		{Phase: "chaos", Name: "streams at once (peak)", Unit: "streams", Gateway: float64(peakActive), Compare: "none"},
		{Phase: "chaos", Name: "calls completed OK", Unit: "calls", Gateway: float64(tally.ok), Compare: "none"},
		{Phase: "chaos", Name: "calls given a fault", Unit: "calls", Gateway: float64(tally.faulted), Compare: "none"},
		{Phase: "chaos", Name: "OK calls whose bytes differ from what was synthesized", Unit: "calls", Gateway: float64(tally.badBytes), Compare: "none", Target: "0"},
		{Phase: "chaos", Name: "calls with missing or reordered sequence numbers", Unit: "calls", Gateway: float64(tally.badSequence), Compare: "none", Target: "0"},
		{Phase: "chaos", Name: "goroutines after the run", Unit: "", Gateway: float64(after.goroutines), Baseline: float64(base.goroutines),
			BaselineName: "idle gateway before", Compare: "difference", Value: float64(after.goroutines - base.goroutines), Target: "back to idle"},
		{Phase: "chaos", Name: "goroutines during the run (peak)", Unit: "", Gateway: float64(peak.goroutines), Baseline: float64(base.goroutines),
			BaselineName: "idle gateway before", Compare: "difference", Value: float64(peak.goroutines - base.goroutines)},
		{Phase: "chaos", Name: "open files after the run", Unit: "", Gateway: float64(after.fds), Baseline: float64(base.fds),
			BaselineName: "idle gateway before", Compare: "difference", Value: float64(after.fds - base.fds), Target: "back to idle"},
		{Phase: "chaos", Name: "RSS during the run (peak)", Unit: "MiB", Gateway: float64(peak.rss) / (1 << 20), Baseline: float64(base.rss) / (1 << 20),
			BaselineName: "idle gateway before", Compare: "difference", Value: float64(peak.rss-base.rss) / (1 << 20)},
		{Phase: "chaos", Name: "RSS after the run", Unit: "MiB", Gateway: float64(after.rss) / (1 << 20), Baseline: float64(base.rss) / (1 << 20),
			BaselineName: "idle gateway before", Compare: "difference", Value: float64(after.rss-base.rss) / (1 << 20)},
	}
	for _, code := range slices.Sorted(maps.Keys(tally.codes)) {
		out = append(out, &result{Phase: "chaos", Name: "failed calls ending " + code, Unit: "calls", Gateway: float64(tally.codes[code]), Compare: "none"})
	}
	var problems []string
	if tally.badBytes > 0 || tally.badSequence > 0 {
		problems = append(problems, fmt.Sprintf("%d OK calls with the wrong audio, %d with sequence gaps", tally.badBytes, tally.badSequence))
	}
	if len(tally.unexpected) > 0 {
		problems = append(problems, fmt.Sprintf("%d calls ended unexpectedly, for example: %s", len(tally.unexpected), tally.unexpected[0]))
	}
	if !settled {
		problems = append(problems, fmt.Sprintf("the gateway did not return to idle in 20 s: goroutines %d (idle %d), open files %d (idle %d)",
			after.goroutines, base.goroutines, after.fds, base.fds))
	}
	if len(problems) > 0 {
		return out, errors.New(strings.Join(problems, "; "))
	}
	return out, nil
}

func (t *chaosTally) record(fault string, n, want int64, seqOK bool, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.bytes += n
	if fault != "" {
		t.faulted++
	}
	if !seqOK {
		t.badSequence++
	}
	if err != nil {
		code := status.Code(err).String()
		t.codes[code]++
		if fault == "" {
			t.unexpected = append(t.unexpected, "an unfaulted call: "+err.Error())
		}
		return
	}
	if fault != "" {
		t.unexpected = append(t.unexpected, "a call with fault "+fault+" ended OK")
		return
	}
	t.ok++
	if n != want {
		t.badBytes++
	}
}

// checkedSynthesis runs one Synthesize call with a fault's key, if any, and
// returns the audio bytes received and whether its sequence numbers and
// offsets ran without a gap.
func checkedSynthesis(ctx context.Context, c speechv1.SynthesisServiceClient, req *speechv1.SynthesizeRequest, fault string) (int64, bool, error) {
	key := benchKey
	if fault != "" {
		key = emulator.FaultPrefix + fault
	}
	stream, err := c.Synthesize(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+key), req)
	if err != nil {
		return 0, true, err
	}
	var n int64
	var next, nextOffset uint32
	seqOK := true
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return n, seqOK, nil
		}
		if err != nil {
			return n, seqOK, err
		}
		if a := msg.GetAudio(); a != nil {
			if a.GetSequence() != next || a.GetOffsetMs() != nextOffset {
				seqOK = false
			}
			next, nextOffset = a.GetSequence()+1, a.GetOffsetMs()+a.GetDurationMs()
			n += int64(len(a.GetData()))
		}
	}
}

// resources is a reading of the gateway process.
type resources struct {
	goroutines, fds int
	rss             int64
}

func (r resources) max(o resources) resources {
	return resources{max(r.goroutines, o.goroutines), max(r.fds, o.fds), max(r.rss, o.rss)}
}

// resources reads the gateway's goroutines (from its metrics), open files
// and resident set.
func (g *gateway) resources() resources {
	var r resources
	r.rss, _ = g.rssBytes()
	if entries, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", g.cmd.Process.Pid)); err == nil {
		r.fds = len(entries)
	}
	resp, err := http.Get("http://" + g.adminAddr + "/metrics")
	if err != nil {
		return r
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "go_goroutines "); ok {
			n, _ := strconv.ParseFloat(v, 64)
			r.goroutines = int(n)
		}
	}
	return r
}
