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
	levels, callAudio := []int{256, 512, 768, 1024, 1280, 1536, 2048}, 4*time.Second
	if s.quick {
		levels, callAudio = []int{8, 16}, time.Second
	}
	const frame = 960 // 20 ms of 24 kHz PCM16
	r, err := newRig(ctx, s, emulator.Options{ChunkBytes: frame, Pace: 1, AudioPerChar: callAudio / time.Duration(len(shortText))}, 8)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	dreq := &smallest.SpeechRequest{Text: shortText, VoiceOptions: smallest.VoiceOptions{VoiceID: "avery", SampleRate: 24000}, OutputFormat: "pcm"}
	greq := &speechv1.SynthesizeRequest{CacheMode: fresh, Text: shortText, VoiceId: "avery", SampleRateHz: 24000}
	sides := []struct {
		name      string
		call      func(ctx context.Context, first func(time.Duration)) error
		saturated int // the first level past the limit; 0: none
		worst     string
	}{
		{name: "direct", call: func(ctx context.Context, first func(time.Duration)) error {
			_, err := synthesizeDirect(ctx, r.dc, dreq, first)
			return err
		}},
		{name: "gateway", call: func(ctx context.Context, first func(time.Duration)) error {
			_, err := synthesizeGateway(ctx, r.gc.synth(), greq, first, nil)
			return err
		}},
	}
	for _, c := range levels {
		for i := range sides {
			if sides[i].saturated != 0 {
				continue
			}
			var got []time.Duration
			for attempt := 0; ; attempt++ {
				watch := watchNeighbours(r.emu.cmd.Process.Pid, r.gw.cmd.Process.Pid)
				got, err = sampleTTFA(ctx, c, 2*c, callAudio, 4*callAudio, sides[i].call)
				if err != nil {
					return nil, fmt.Errorf("%s at %d streams: %w", sides[i].name, c, err)
				}
				if load := watch.cores(); load > maxNeighbourCores && attempt < 2 {
					fmt.Fprintf(s.log, "  a %s level ran while %.2f cores went to processes outside the rig: run again\n", sides[i].name, load)
					continue
				}
				break
			}
			p99 := time.Duration(percentile(got, 99) * float64(time.Millisecond))
			fmt.Fprintf(s.log, "  %s, %d real-time streams: TTFA p99 %v over %d calls\n", sides[i].name, c, p99.Round(10*time.Microsecond), len(got))
			sides[i].worst = fmt.Sprintf("%v at %d", p99.Round(100*time.Microsecond), c)
			if p99 > saturationP99 {
				sides[i].saturated = c
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
	return []*result{{Phase: "saturation", Name: name, Unit: "streams", Gateway: level(1), Baseline: level(0),
		BaselineName: "direct SSE client", Compare: "ratio", Value: level(1) / level(0), Target: "gateway ≥ 2000"}}, nil
}
