package main

import (
	"context"
	"fmt"
	"time"

	speechv1 "github.com/speechgate/speechgate/gen/speech/v1"
	"github.com/speechgate/speechgate/internal/emulator"
	"github.com/speechgate/speechgate/internal/smallest"
)

// saturationP99 is the time to first audio, at the 99th percentile, past
// which a level of real-time streams counts as more than the machine
// carries: a caller would hear the delay.
const saturationP99 = 100 * time.Millisecond

// saturation ramps real-time streams of 24 kHz PCM in 20 ms frames, as
// Smallest sends them, through the gateway and through the direct client,
// level by level (the two sides interleaved at each level, a level rerun
// when processes outside the rig took a noticeable share of a core), and reports
// the first level at which time to first audio p99 passes saturationP99.
func saturation(ctx context.Context, s *settings) ([]*result, error) {
	levels, callAudio := s.satLevels, 4*time.Second
	if s.quick {
		callAudio = time.Second
	}
	const frame = 960 // 20 ms of 24 kHz PCM16
	var flags []string
	if s.cpuProfile != "" {
		flags = append(flags, "--pprof")
	}
	r, err := newRig(ctx, s, emulator.Options{ChunkBytes: frame, Pace: 1, AudioPerChar: callAudio / time.Duration(len(shortText))}, 8, flags...)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	dreq := &smallest.SpeechRequest{Text: shortText, VoiceOptions: smallest.VoiceOptions{VoiceID: "avery", SampleRate: 24000}, OutputFormat: "pcm"}
	gatewayReq := s.gatewayRequest(&speechv1.SynthesizeRequest{CacheMode: fresh, Text: shortText, VoiceId: "avery", SampleRateHz: 24000})
	sides := []struct {
		name      string
		call      func(ctx context.Context, first func(time.Duration)) error
		saturated int // the first level past the limit; 0: none
		worst     string
		// cores is the CPU, in cores, of the process doing the side's
		// work at each level: the gateway's, or the bench's for the
		// direct client.
		cores map[int]float64
	}{
		{name: "direct", call: func(ctx context.Context, first func(time.Duration)) error {
			_, err := synthesizeDirect(ctx, r.dc, dreq, first)
			return err
		}},
		{name: "gateway", call: func(ctx context.Context, first func(time.Duration)) error {
			_, err := synthesizeGateway(ctx, r.gc.synth(), gatewayReq(), first, nil)
			return err
		}},
	}
	ref := levels[0] // the highest level the gateway carried
	for i := range sides {
		sides[i].cores = map[int]float64{}
	}
	for _, c := range levels {
		for i := range sides {
			if sides[i].saturated != 0 {
				continue
			}
			// measure runs the level on this side, and logs where the
			// cores went.
			measure := func() ([]time.Duration, cpuShares, error) {
				pids := []int{r.emu.cmd.Process.Pid, r.gw.cmd.Process.Pid}
				got, use, _, err := quietRound(s, fmt.Sprintf("a %s level", sides[i].name), pids, func() ([]time.Duration, error) {
					profiled := make(chan error, 1)
					if s.cpuProfile != "" && sides[i].name == "gateway" {
						go func() { profiled <- r.gw.profile(fmt.Sprintf("%s.sat%d", s.cpuProfile, c), callAudio) }()
					} else {
						profiled <- nil
					}
					got, err := sampleTTFA(ctx, c, 2*c, callAudio, 4*callAudio, sides[i].call)
					if perr := <-profiled; err == nil && perr != nil {
						err = fmt.Errorf("profile: %w", perr)
					}
					return got, err
				})
				if err != nil {
					return nil, use, fmt.Errorf("%s at %d streams: %w", sides[i].name, c, err)
				}
				p99 := time.Duration(percentile(got, 99) * float64(time.Millisecond))
				fmt.Fprintf(s.log, "  %s, %d real-time streams: TTFA p50 %v p99 %v over %d calls; cores used: gateway %.2f, emulator %.2f, bench %.2f, interrupts %.2f, outside %.2f, idle %.2f\n",
					sides[i].name, c, time.Duration(percentile(got, 50)*float64(time.Millisecond)).Round(10*time.Microsecond), p99.Round(10*time.Microsecond), len(got), use.rig[1], use.rig[0], use.rig[2], use.irq, use.outside, use.idle)
				return got, use, nil
			}
			got, use, err := measure()
			if err != nil {
				return nil, err
			}
			p99 := time.Duration(percentile(got, 99) * float64(time.Millisecond))
			if p99 > saturationP99 {
				// One stall of the shared VM once put a side "past" the limit
				// with its p50 under a millisecond and most of a core idle: a
				// level counts as passed only when it passes twice.
				fmt.Fprintf(s.log, "  %s passed %v at %d streams: the level runs again, to confirm\n", sides[i].name, saturationP99, c)
				if got, use, err = measure(); err != nil {
					return nil, err
				}
				p99 = time.Duration(percentile(got, 99) * float64(time.Millisecond))
			}
			sides[i].worst = fmt.Sprintf("%v at %d", p99.Round(100*time.Microsecond), c)
			sides[i].cores[c] = use.rig[2]
			if sides[i].name == "gateway" {
				sides[i].cores[c] = use.rig[1]
			}
			if p99 > saturationP99 {
				sides[i].saturated = c
			} else if sides[i].name == "gateway" {
				ref = c
			}
		}
	}
	level := func(i int) float64 {
		if sides[i].saturated == 0 {
			return float64(levels[len(levels)-1]) // not reached: at least the top level
		}
		return float64(sides[i].saturated)
	}
	name := fmt.Sprintf("real-time 24 kHz streams (20 ms frames) at which TTFA p99 passes %v (%s if never)", saturationP99,
		fmt.Sprint(levels[len(levels)-1], "+"))
	fmt.Fprintf(s.log, "  last levels measured: direct %s, gateway %s\n", sides[0].worst, sides[1].worst)
	perK := func(i int) float64 { return sides[i].cores[ref] / float64(ref) * 1000 }
	return []*result{
		{Phase: "saturation", Name: name, Unit: "streams", Gateway: level(1), Baseline: level(0),
			BaselineName: "direct SSE client", Compare: "ratio", Value: level(1) / level(0), Target: "gateway ≥ 2000"},
		{Phase: "saturation", Name: fmt.Sprintf("CPU per 1,000 real-time 24 kHz streams, per process, at %d streams", ref), Unit: "cores",
			Gateway: perK(1), Baseline: perK(0), BaselineName: "the direct client's process", Compare: "ratio", Value: perK(1) / perK(0)},
	}, nil
}
