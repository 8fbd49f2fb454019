package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	speechv1 "github.com/speechgate/speechgate/gen/speech/v1"
	"github.com/speechgate/speechgate/internal/audio"
	"github.com/speechgate/speechgate/internal/emulator"
	"github.com/speechgate/speechgate/internal/smallest"
)

const benchKey = "sk_bench_key"

// fresh asks the gateway for a synthesis of its own, neither from its
// cache nor shared with an identical one in flight: the phases but cache
// measure the gateway's path to Smallest, with the same text every call.
const fresh = speechv1.CacheMode_CACHE_MODE_BYPASS

// gatewayRequest returns the request of each call through the gateway in
// the ttfa, throughput, saturation and chaos phases: req itself, which asks for
// a fresh synthesis; or with --cache-mode=miss, req in the default mode
// with a text no call sent before, of the same length (its audio is as
// long), which is what a caller that leaves cache_mode unset pays for a
// new text: a cache miss, stored as it streams.
func (s *settings) gatewayRequest(req *speechv1.SynthesizeRequest) func() *speechv1.SynthesizeRequest {
	if !s.cacheMiss {
		return func() *speechv1.SynthesizeRequest { return req }
	}
	return func() *speechv1.SynthesizeRequest {
		id := strconv.FormatInt(s.texts.Add(1), 36)
		r := proto.Clone(req).(*speechv1.SynthesizeRequest)
		r.CacheMode, r.Text = speechv1.CacheMode_CACHE_MODE_UNSPECIFIED, req.Text[:len(req.Text)-len(id)]+id
		return r
	}
}

// direct is the baseline: the gateway's own Smallest client, calling the
// emulator with no gateway in between.
func direct(baseURL string) (*smallest.Client, error) {
	return smallest.New(smallest.Config{BaseURL: baseURL, HTTPClient: &http.Client{Transport: smallest.NewTransport(30*time.Second, 0)},
		Credential: func(context.Context) string { return benchKey }})
}

// rig is what most phases run on: an emulator, a gateway in front of it,
// the direct client of the same emulator, and connections to the gateway.
type rig struct {
	emu *upstream
	gw  *gateway
	dc  *smallest.Client
	gc  *clients
}

// newRig starts a rig whose emulator has opts, whose gateway has the extra
// flags, with conns connections to the gateway.
func newRig(ctx context.Context, s *settings, opts emulator.Options, conns int, flags ...string) (r *rig, err error) {
	r = &rig{}
	defer func() {
		if err != nil {
			r.Close()
		}
	}()
	if r.emu, err = startEmulator(opts); err != nil {
		return nil, err
	}
	if r.gw, err = startGateway(ctx, s, r.emu.URL, flags...); err != nil {
		return nil, err
	}
	if r.dc, err = direct(r.emu.URL); err != nil {
		return nil, err
	}
	if r.gc, err = dial(r.gw.addr, conns); err != nil {
		return nil, err
	}
	return r, nil
}

// Close stops what the rig started, in reverse order.
func (r *rig) Close() {
	if r.gc != nil {
		r.gc.close()
	}
	if r.dc != nil {
		r.dc.Close()
	}
	if r.gw != nil {
		r.gw.Close()
	}
	if r.emu != nil {
		r.emu.Close()
	}
}

// clients spreads calls over a few connections to the gateway, as a fleet of
// callers would; one HTTP/2 connection would serialize their writes.
type clients struct {
	conns []*grpc.ClientConn
	next  atomic.Uint64
}

func dial(addr string, n int) (*clients, error) {
	c := &clients{}
	for range n {
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)))
		if err != nil {
			return nil, err
		}
		c.conns = append(c.conns, conn)
	}
	return c, nil
}

func (c *clients) synth() speechv1.SynthesisServiceClient {
	return speechv1.NewSynthesisServiceClient(c.conns[c.next.Add(1)%uint64(len(c.conns))])
}

func (c *clients) trans() speechv1.TranscriptionServiceClient {
	return speechv1.NewTranscriptionServiceClient(c.conns[c.next.Add(1)%uint64(len(c.conns))])
}

func (c *clients) close() {
	for _, conn := range c.conns {
		conn.Close()
	}
}

func withKey(ctx context.Context) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+benchKey)
}

// synthesizeDirect runs one synthesis on the direct client; onFirst is told
// the time to first audio, and it returns the audio bytes received.
func synthesizeDirect(ctx context.Context, c *smallest.Client, req *smallest.SpeechRequest, onFirst func(time.Duration)) (int64, error) {
	start := time.Now()
	s, err := c.StreamSpeech(ctx, req)
	if err != nil {
		return 0, err
	}
	defer s.Close()
	var n int64
	var b []byte // each piece decoded into the last one's storage, as the gateway does
	for {
		b, err = s.NextInto(b)
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil {
			return n, err
		}
		if n == 0 && onFirst != nil {
			onFirst(time.Since(start))
		}
		n += int64(len(b))
	}
}

// synthesizeGateway runs one synthesis through the gateway.
func synthesizeGateway(ctx context.Context, c speechv1.SynthesisServiceClient, req *speechv1.SynthesizeRequest, onFirst func(time.Duration), onAudio func(int64)) (int64, error) {
	start := time.Now()
	stream, err := c.Synthesize(withKey(ctx), req)
	if err != nil {
		return 0, err
	}
	var n int64
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil {
			return n, err
		}
		if a := msg.GetAudio(); a != nil {
			if n == 0 && onFirst != nil {
				onFirst(time.Since(start))
			}
			n += int64(len(a.GetData()))
			if onAudio != nil {
				onAudio(n)
			}
		}
	}
}

// percentile returns the p-th percentile of sorted durations, in ms.
func percentile(sorted []time.Duration, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p / 100 * float64(len(sorted)-1))
	return float64(sorted[i]) / float64(time.Millisecond)
}

// sampleTTFA runs total calls on workers goroutines, within limit, and
// returns the sorted times to first audio. The workers start spread over
// one call's length, as independent callers would, not in one burst.
func sampleTTFA(ctx context.Context, workers, total int, spread, limit time.Duration, call func(ctx context.Context, onFirst func(time.Duration)) error) ([]time.Duration, error) {
	ctx, cancel := stopAfter(ctx, limit)
	defer cancel()
	var mu sync.Mutex
	var got []time.Duration
	var next atomic.Int64
	var firstErr error
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if !sleepCtx(ctx, spread*time.Duration(w)/time.Duration(workers)) {
				return
			}
			for next.Add(1) <= int64(total) && ctx.Err() == nil {
				err := call(ctx, func(d time.Duration) {
					mu.Lock()
					got = append(got, d)
					mu.Unlock()
				})
				if err != nil && ctx.Err() == nil {
					mu.Lock()
					firstErr = errors.Join(firstErr, err)
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	slices.Sort(got)
	return got, firstErr
}

// streams says "1 stream" or "n streams".
func streams(n int) string {
	if n == 1 {
		return "1 stream"
	}
	return fmt.Sprintf("%d streams", n)
}

// stopAfter returns a context canceled after d. Unlike a deadline, which
// gRPC sends to the server, where it may expire a moment before the
// caller's, a cancel is seen here first: calls it ends are not failures.
func stopAfter(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	t := time.AfterFunc(d, cancel)
	return ctx, func() { t.Stop(); cancel() }
}

// sleepCtx waits d unless ctx ends first; it reports whether d passed.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// concurrently runs n calls at once and waits for them all.
func concurrently(n int, call func() error) error {
	errs := make(chan error, n)
	for range n {
		go func() { errs <- call() }()
	}
	var err error
	for range n {
		err = errors.Join(err, <-errs)
	}
	return err
}

// probeRoundTrips runs health checks on conn, one every gap, until ctx
// ends, and then returns their sorted latencies: the cost of a bare gRPC hop
// on this machine under the load of the moment, whatever the gateway does.
func probeRoundTrips(ctx context.Context, conn *grpc.ClientConn, gap time.Duration) []time.Duration {
	hc := healthpb.NewHealthClient(conn)
	var got []time.Duration
	for {
		start := time.Now()
		if _, err := hc.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
			break
		}
		got = append(got, time.Since(start))
		if !sleepCtx(ctx, gap) {
			break
		}
	}
	slices.Sort(got)
	return got
}

const shortText = "Hello there, how can I help you today?"

// ttfaCallAudio is how long one call's audio lasts at c concurrent streams:
// short with few streams, so that one stream yields enough samples in the
// phase's time, and longer with many, so that new calls arrive at about
// 200 a second rather than faster than any voice fleet starts them.
func ttfaCallAudio(c int) time.Duration {
	return max(200*time.Millisecond, time.Duration(c)*5*time.Millisecond) // the emulator speaks at least 200 ms
}

func timeToFirstAudio(ctx context.Context, s *settings) ([]*result, error) {
	var out []*result
	for _, c := range s.concurrency {
		res, err := ttfaAt(ctx, s, c)
		if err != nil {
			return nil, fmt.Errorf("%d streams: %w", c, err)
		}
		out = append(out, res...)
	}
	return out, nil
}

// ttfaAt measures time to first audio at c concurrent streams, on its own
// emulator and gateway: the gateway, the direct client, and a bare grpc-go
// server in a process of its own (the floor any gRPC hop adds), in rounds
// interleaved A/B/C, at least 1,000 calls a side. A round during which
// something outside the rig took a noticeable share of a core is discarded
// and run again (twice at most; the load is reported either way).
func ttfaAt(ctx context.Context, s *settings, c int) ([]*result, error) {
	// Streams paced at real time, as voice traffic is: the figure is then the
	// gateway's overhead, not queueing on a saturated machine.
	callAudio := ttfaCallAudio(c)
	r, err := newRig(ctx, s, emulator.Options{ChunkBytes: s.chunkBytes, FirstByteDelay: s.firstByteDelay, Pace: 1,
		AudioPerChar: callAudio / time.Duration(len(shortText))}, 4)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	floor, err := startFloor(s.chunkBytes, callAudio)
	if err != nil {
		return nil, err
	}
	defer floor.stop(5 * time.Second)
	fc, err := dial(floor.addr, 4)
	if err != nil {
		return nil, err
	}
	defer fc.close()
	dc, gc := r.dc, r.gc

	dreq := &smallest.SpeechRequest{Text: shortText, VoiceOptions: smallest.VoiceOptions{VoiceID: "avery", SampleRate: 24000}, OutputFormat: "pcm"}
	greq := &speechv1.SynthesizeRequest{CacheMode: fresh, Text: shortText, VoiceId: "avery", SampleRateHz: 24000}
	gatewayReq := s.gatewayRequest(greq)
	sides := []struct {
		name string
		call func(ctx context.Context, first func(time.Duration)) error
		got  []time.Duration
	}{
		{name: "direct", call: func(ctx context.Context, first func(time.Duration)) error {
			_, err := synthesizeDirect(ctx, dc, dreq, first)
			return err
		}},
		{name: "gateway", call: func(ctx context.Context, first func(time.Duration)) error {
			_, err := synthesizeGateway(ctx, gc.synth(), gatewayReq(), first, nil)
			return err
		}},
		{name: "floor", call: func(ctx context.Context, first func(time.Duration)) error {
			_, err := synthesizeGateway(ctx, fc.synth(), greq, first, nil)
			return err
		}},
	}
	if c == 1 {
		// One stream puts no load to keep up: each call stops at its first
		// audio, so that 1,000 calls a side take seconds, not minutes.
		for i := range sides {
			sides[i].call = firstAudioOnly(sides[i].call)
		}
	}
	// Warm up every side: connections are dialed and pools filled on first
	// use, and neither belongs in the figures.
	for _, side := range sides {
		if err := concurrently(c, func() error { return side.call(ctx, nil) }); err != nil {
			return nil, fmt.Errorf("warm-up, %s: %w", side.name, err)
		}
	}
	total, rounds := max(minTTFACalls, 4*c), 4
	if s.quick {
		total, rounds = 2*c, 1
	}
	per := (total + rounds - 1) / rounds
	// A round has the time its calls take, twice over: with one stream,
	// 250 calls of 200 ms take most of a minute.
	limit := max(3*s.phaseTime, 2*time.Duration(per/c+1)*(callAudio+50*time.Millisecond))
	pids := []int{r.emu.cmd.Process.Pid, r.gw.cmd.Process.Pid, floor.cmd.Process.Pid}
	var worst float64
	discarded := 0
	for range rounds {
		for i := range sides {
			got, use, reruns, err := quietRound(s, "a "+sides[i].name+" round", pids, func() ([]time.Duration, error) {
				return sampleTTFA(ctx, c, per, callAudio, limit, sides[i].call)
			})
			if err != nil {
				return nil, fmt.Errorf("%s: %w", sides[i].name, err)
			}
			discarded += reruns
			worst = max(worst, use.outside)
			sides[i].got = append(sides[i].got, got...)
		}
	}
	for i := range sides {
		slices.Sort(sides[i].got)
	}
	d, g, f := sides[0].got, sides[1].got, sides[2].got
	fmt.Fprintf(s.log, "  %d streams of %v: %d direct, %d gateway and %d floor calls in %d interleaved rounds (%d discarded); outside load at most %.2f cores\n",
		c, callAudio, len(d), len(g), len(f), rounds, discarded, worst)
	var out []*result
	for _, p := range []float64{50, 90, 99} {
		r := &result{Phase: "ttfa", Name: fmt.Sprintf("time to first audio, p%g, %s", p, streams(c)), Unit: "ms",
			Gateway: percentile(g, p), Baseline: percentile(d, p), BaselineName: "direct SSE client", Compare: "difference"}
		r.Value = r.Gateway - r.Baseline
		if c == 64 && p == 50 {
			r.Target = "added ≤ 0.5 ms"
		}
		if c == 64 && p == 99 {
			r.Target = "added ≤ 2 ms"
		}
		out = append(out, r)
	}
	for _, p := range []float64{50, 99} {
		out = append(out, &result{Phase: "ttfa", Name: fmt.Sprintf("bare grpc-go hop (own process, same messages), p%g, %s", p, streams(c)),
			Unit: "ms", Gateway: percentile(f, p), BaselineName: "none: the floor any gRPC hop adds here", Compare: "none"})
	}
	// What the gateway adds beyond the direct path and the bare hop: its own share.
	own := &result{Phase: "ttfa", Name: fmt.Sprintf("the gateway's own share, p50, %s", streams(c)), Unit: "ms",
		Gateway: percentile(g, 50) - percentile(d, 50), Baseline: percentile(f, 50), BaselineName: "the bare hop", Compare: "difference"}
	own.Value = own.Gateway - own.Baseline
	if c == 64 {
		own.Target = "≤ 0.1 ms"
	}
	return append(out, own), nil
}

// firstAudioOnly makes call end at its first audio.
func firstAudioOnly(call func(context.Context, func(time.Duration)) error) func(context.Context, func(time.Duration)) error {
	return func(ctx context.Context, first func(time.Duration)) error {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		var got bool
		err := call(ctx, func(d time.Duration) {
			got = true
			if first != nil {
				first(d)
			}
			cancel()
		})
		if got {
			return nil // the error is the cancel that ended it
		}
		return err
	}
}

// minTTFACalls is the fewest calls a side the ttfa phase makes: enough for
// a p99 that is not one unlucky call.
const minTTFACalls = 1000

// maxNeighbourCores is the outside load that discards a round: a quarter of
// a core, enough to halve a side's figures on two cores.
const maxNeighbourCores = 0.25

// quietRound runs round, and runs it again, twice at most, while processes
// outside the rig (pids, and the bench) took more than maxNeighbourCores:
// such a round is not comparable with the others. It logs each rerun
// (what names the round), notes the kept round's outside load (s.kept),
// and returns that round's result, where the machine's CPU went during
// it, and how many rounds it discarded.
func quietRound[T any](s *settings, what string, pids []int, round func() (T, error)) (T, cpuShares, int, error) {
	for attempt := 0; ; attempt++ {
		watch := watchNeighbours(pids...)
		got, err := round()
		if err != nil {
			return got, cpuShares{}, attempt, err
		}
		use := watch.shares()
		if use.outside > maxNeighbourCores && attempt < 2 {
			fmt.Fprintf(s.log, "  %s ran while %.2f cores went to processes outside the rig: run again\n", what, use.outside)
			continue
		}
		s.kept(use.outside)
		return got, use, attempt, nil
	}
}

// pcmBytesPerSecond is 24 kHz PCM16, the throughput phase's format.
const pcmBytesPerSecond = 48000

func throughput(ctx context.Context, s *settings) ([]*result, error) {
	// 200 characters at 1 s each: 200 s (9.6 MB) of audio per call, sent
	// as fast as the emulator can, so that the gateway is the bottleneck.
	r, err := newRig(ctx, s, emulator.Options{ChunkBytes: s.chunkBytes, AudioPerChar: time.Second}, 4, "--pprof")
	if err != nil {
		return nil, err
	}
	defer r.Close()
	gw, dc, gc := r.gw, r.dc, r.gc
	text := strings.Repeat("a", 200)
	workers := 4 * runtime.GOMAXPROCS(0)

	// A side's run: its bytes, its time, the CPU of the process doing its
	// work (the bench's for the direct client, the gateway's through it),
	// and the emulator's.
	type run struct {
		bytes               int64
		seconds, cpu, upCPU float64
	}
	measure := func(d time.Duration, cpu func() float64, call func(ctx context.Context, count func(int64)) error) (run, error) {
		ctx, cancel := stopAfter(ctx, d)
		defer cancel()
		var total atomic.Int64
		var wg sync.WaitGroup
		var errs atomic.Value
		cpu0, up0 := cpu(), pidCPU(r.emu.cmd.Process.Pid)
		start := time.Now()
		for range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for ctx.Err() == nil {
					if err := call(ctx, func(n int64) { total.Add(n) }); err != nil && ctx.Err() == nil {
						errs.Store(err)
						return
					}
				}
			}()
		}
		wg.Wait()
		if e, ok := errs.Load().(error); ok {
			return run{}, e
		}
		return run{bytes: total.Load(), seconds: time.Since(start).Seconds(), cpu: cpu() - cpu0,
			upCPU: pidCPU(r.emu.cmd.Process.Pid) - up0}, nil
	}

	dreq := &smallest.SpeechRequest{Text: text, VoiceOptions: smallest.VoiceOptions{VoiceID: "avery", SampleRate: 24000}, OutputFormat: "pcm"}
	directCall := func(ctx context.Context, count func(int64)) error {
		s, err := dc.StreamSpeech(ctx, dreq)
		if err != nil {
			return err
		}
		defer s.Close()
		var b []byte // each piece decoded into the last one's storage, as the gateway does
		for {
			b, err = s.NextInto(b)
			if err != nil {
				if errors.Is(err, io.EOF) {
					return nil
				}
				return err
			}
			count(int64(len(b)))
		}
	}
	gatewayReq := s.gatewayRequest(&speechv1.SynthesizeRequest{CacheMode: fresh, Text: text, VoiceId: "avery", SampleRateHz: 24000})
	gatewayCall := func(ctx context.Context, count func(int64)) error {
		var last int64
		_, err := synthesizeGateway(ctx, gc.synth(), gatewayReq(), nil, func(n int64) { count(n - last); last = n })
		return err
	}
	profiled := make(chan error, 1)
	if s.cpuProfile != "" {
		go func() { profiled <- gw.profile(s.cpuProfile, s.phaseTime*8/10) }()
	} else {
		profiled <- nil
	}

	// Rounds alternate direct and gateway, so that a neighbour's load falls
	// on both alike, and a round during which processes outside the rig
	// took a noticeable share of a core is run again.
	rounds := 3
	if s.quick {
		rounds = 1
	}
	each := s.phaseTime / time.Duration(rounds)
	pids := []int{r.emu.cmd.Process.Pid, gw.cmd.Process.Pid}
	var d, g run
	var worst float64
	discarded := 0
	for range rounds {
		for _, side := range []struct {
			into *run
			cpu  func() float64
			call func(context.Context, func(int64)) error
		}{{&d, processCPU, directCall}, {&g, gw.cpuSeconds, gatewayCall}} {
			got, use, reruns, err := quietRound(s, "a throughput round", pids, func() (run, error) { return measure(each, side.cpu, side.call) })
			if err != nil {
				return nil, err
			}
			discarded += reruns
			worst = max(worst, use.outside)
			side.into.bytes += got.bytes
			side.into.seconds += got.seconds
			side.into.cpu += got.cpu
			side.into.upCPU += got.upCPU
		}
	}
	if err := <-profiled; err != nil {
		return nil, fmt.Errorf("profile: %w", err)
	}
	gb := func(b int64) float64 { return float64(b) / 1e9 }
	hours := func(b int64) float64 { return float64(b) / pcmBytesPerSecond / 3600 }
	fmt.Fprintf(s.log, "  %d streams, %d interleaved rounds a side (%d discarded, outside load at most %.2f cores): %.0f MB direct, %.0f MB through the gateway\n",
		workers, rounds, discarded, worst, float64(d.bytes)/1e6, float64(g.bytes)/1e6)
	dMBps, gMBps := float64(d.bytes)/d.seconds/1e6, float64(g.bytes)/g.seconds/1e6
	return []*result{
		{Phase: "throughput", Name: "CPU seconds per GB of audio relayed, per process", Unit: "s/GB",
			Gateway: g.cpu / gb(g.bytes), Baseline: d.cpu / gb(d.bytes), BaselineName: "the direct client's process", Compare: "ratio",
			Value: (g.cpu / gb(g.bytes)) / (d.cpu / gb(d.bytes)), Target: "≤ 1.2×"},
		{Phase: "throughput", Name: "CPU seconds per hour of 24 kHz audio relayed", Unit: "s",
			Gateway: g.cpu / hours(g.bytes), Baseline: d.cpu / hours(d.bytes), BaselineName: "the direct client's process", Compare: "ratio",
			Value: (g.cpu / hours(g.bytes)) / (d.cpu / hours(d.bytes))},
		{Phase: "throughput", Name: fmt.Sprintf("decoded audio throughput, %s (shares two cores with the emulator)", streams(workers)), Unit: "MB/s",
			Gateway: gMBps, Baseline: dMBps, BaselineName: "direct SSE client", Compare: "ratio", Value: gMBps / dMBps, Target: "≥ 0.75×"},
		{Phase: "throughput", Name: "the emulator's CPU seconds per GB, gateway rounds vs direct", Unit: "s/GB",
			Gateway: g.upCPU / gb(g.bytes), Baseline: d.upCPU / gb(d.bytes), BaselineName: "in the direct rounds", Compare: "ratio",
			Value: (g.upCPU / gb(g.bytes)) / (d.upCPU / gb(d.bytes))},
	}, nil
}

// processCPU returns this process's CPU time in seconds.
func processCPU() float64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0 // cannot happen for RUSAGE_SELF
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// profile writes a CPU profile of the gateway over d.
func (g *gateway) profile(file string, d time.Duration) error {
	return g.fetch(fmt.Sprintf("/debug/pprof/profile?seconds=%d", max(int(d/time.Second), 1)), file)
}

// fetch writes what the gateway's admin server answers at path to file.
func (g *gateway) fetch(path, file string) error {
	resp, err := http.Get("http://" + g.adminAddr + path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(f, resp.Body)
	return err
}

// gcHeap makes the gateway collect garbage (through pprof) and returns its
// in-use heap, so that the figure is live memory, not garbage in waiting.
func (g *gateway) gcHeap() int64 {
	// Twice: the first collection moves sync.Pool contents to the pools'
	// victim caches, the second frees them.
	for range 2 {
		if resp, err := http.Get("http://" + g.adminAddr + "/debug/pprof/heap?gc=1"); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}
	return g.heapInuse()
}

func memoryPerStream(ctx context.Context, s *settings) ([]*result, error) {
	// Real-time streams, cheap enough that thousands fit on two cores: 8 kHz
	// μ-law in one-second chunks, each stream two minutes long.
	cheap, err := memoryOf(ctx, s, "8 kHz μ-law, 1 s frames", emulator.Options{ChunkBytes: 8000, Pace: 1, AudioPerChar: time.Second},
		&speechv1.SynthesizeRequest{CacheMode: fresh, Text: strings.Repeat("a", 120), VoiceId: "avery", SampleRateHz: 8000,
			Encoding: speechv1.AudioEncoding_AUDIO_ENCODING_MULAW}, s.memoryStreams, "≤ 64 KiB")
	if err != nil {
		return nil, err
	}
	// And as Smallest sends them: 24 kHz PCM in 20 ms frames, at a level
	// below the gateway's saturation point.
	n := []int{512}
	if s.quick {
		n = []int{50}
	}
	real, err := memoryOf(ctx, s, "24 kHz PCM, 20 ms frames", emulator.Options{ChunkBytes: 960, Pace: 1, AudioPerChar: time.Second},
		&speechv1.SynthesizeRequest{CacheMode: fresh, Text: strings.Repeat("a", 120), VoiceId: "avery", SampleRateHz: 24000}, n, "≤ 48 KiB")
	return append(cheap, real...), err
}

// memoryOf measures heap and RSS per active stream of req, at each count
// of streams, each on a new gateway in front of an emulator with opts.
func memoryOf(ctx context.Context, s *settings, label string, opts emulator.Options, req *speechv1.SynthesizeRequest, counts []int,
	target string) ([]*result, error) {
	emu, err := startEmulator(opts)
	if err != nil {
		return nil, err
	}
	defer emu.Close()
	var out []*result
	for _, n := range counts {
		gw, err := startGateway(ctx, s, emu.URL, "--pprof")
		if err != nil {
			return nil, err
		}
		gc, err := dial(gw.addr, 8)
		if err != nil {
			gw.Close()
			return nil, err
		}
		time.Sleep(500 * time.Millisecond)
		idleHeap := gw.gcHeap()
		idleRSS, _ := gw.rssBytes()
		// Heap and RSS do not depend on the machine's other load as times
		// do, so no level is discarded; the load is reported all the same.
		watch := watchNeighbours(emu.cmd.Process.Pid, gw.cmd.Process.Pid)

		sctx, cancel := context.WithCancel(ctx)
		var started atomic.Int64
		var wg sync.WaitGroup
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				// The calls are cancelled mid-stream on purpose: only their start counts.
				_, _ = synthesizeGateway(sctx, gc.synth(), req, func(time.Duration) { started.Add(1) }, nil)
			}()
			if i%200 == 199 {
				time.Sleep(100 * time.Millisecond) // ramp up, as real traffic does
			}
		}
		deadline := time.Now().Add(60 * time.Second)
		for started.Load() < int64(n) && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
		}
		time.Sleep(2 * time.Second) // let every stream settle into its steady state
		heap := gw.gcHeap()
		rss, _ := gw.rssBytes()
		active := started.Load()
		if s.heapProfile != "" && n == s.memoryStreams[len(s.memoryStreams)-1] {
			if err := gw.fetch("/debug/pprof/heap", s.heapProfile); err != nil {
				fmt.Fprintln(s.log, "  heap profile:", err)
			}
		}
		cancel()
		wg.Wait()
		gc.close()
		gw.Close()
		if active < int64(n) {
			return nil, fmt.Errorf("%s: only %d of %d streams started within 60 s", label, active, n)
		}
		load := watch.cores()
		s.kept(load)
		fmt.Fprintf(s.log, "  %s, %d streams: heap %d → %d KiB, RSS %d → %d KiB (outside load %.2f cores)\n", label, n, idleHeap>>10, heap>>10, idleRSS>>10, rss>>10, load)
		perHeap := float64(heap-idleHeap) / float64(n) / 1024
		perRSS := float64(rss-idleRSS) / float64(n) / 1024
		out = append(out,
			&result{Phase: "memory", Name: fmt.Sprintf("heap per active stream, %s, %s", streams(n), label), Unit: "KiB",
				Gateway: float64(heap) / 1024, Baseline: float64(idleHeap) / 1024, BaselineName: "idle gateway", Compare: "difference per stream",
				Value: perHeap, Target: target},
			&result{Phase: "memory", Name: fmt.Sprintf("RSS per active stream, %s, %s", streams(n), label), Unit: "KiB",
				Gateway: float64(rss) / 1024, Baseline: float64(idleRSS) / 1024, BaselineName: "idle gateway", Compare: "difference per stream",
				Value: perRSS})
	}
	return out, nil
}

func longStream(ctx context.Context, s *settings) ([]*result, error) {
	// One hour of 24 kHz PCM (172.8 MB): 60 characters at 60 s each, sent
	// as fast as possible.
	perChar := 60 * time.Second
	if s.quick {
		perChar = 2 * time.Second
	}
	r, err := newRig(ctx, s, emulator.Options{ChunkBytes: s.chunkBytes, AudioPerChar: perChar}, 1)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	gw, gc := r.gw, r.gc
	total := int64(60*perChar/time.Second) * pcmBytesPerSecond
	// The garbage collector makes RSS swing by a megabyte or two around its
	// level however long the stream, so a single early sample against the
	// later peak would measure that swing. Peaks are compared instead: the
	// first half of the stream (after the first 10 %, while it warms up)
	// against the second. Memory that grew with the stream's length shows as
	// a higher second peak.
	// Samples are taken by position in the stream, 200 of them however fast
	// the machine streams it: a smoke run must not fail on a fast machine.
	var firstPeak, secondPeak int64
	var samples int
	nextSample := int64(0)
	start := time.Now()
	_, err = synthesizeGateway(ctx, gc.synth(), &speechv1.SynthesizeRequest{CacheMode: fresh, Text: strings.Repeat("a", 60), VoiceId: "avery", SampleRateHz: 24000},
		nil, func(n int64) {
			if n < nextSample {
				return
			}
			nextSample = n + total/200
			rss, _ := gw.rssBytes()
			samples++
			switch {
			case n < total/10:
			case n < total/2:
				firstPeak = max(firstPeak, rss)
			default:
				secondPeak = max(secondPeak, rss)
			}
		})
	if err != nil {
		return nil, err
	}
	endRSS, _ := gw.rssBytes()
	secondPeak = max(secondPeak, endRSS)
	if firstPeak == 0 {
		return nil, fmt.Errorf("no RSS sample in the stream's first half (%d samples)", samples)
	}
	fmt.Fprintf(s.log, "  %.0f s of audio in %.1f s; %d RSS samples: peak %d KiB in the first half, %d KiB in the second, %d KiB at the end\n",
		float64(total)/pcmBytesPerSecond, time.Since(start).Seconds(), samples, firstPeak>>10, secondPeak>>10, endRSS>>10)
	return []*result{{Phase: "longstream", Name: fmt.Sprintf("peak RSS over a %.0f s stream, second half", float64(total)/pcmBytesPerSecond),
		Unit: "MiB", Gateway: float64(secondPeak) / (1 << 20), Baseline: float64(firstPeak) / (1 << 20),
		BaselineName: "peak RSS, first half (after 10 %)", Compare: "growth", Value: float64(secondPeak-firstPeak) / float64(firstPeak), Target: "≤ 5 %"}}, nil
}

// recording is a WAV header followed by silence, produced as it is read.
type recording struct {
	size, read int64
	header     []byte
}

func newRecording(size int64) *recording {
	return &recording{size: size, header: audio.AppendWAVHeader(nil, 16000, 1, 16, uint32(size-audio.WAVHeaderSize))}
}

func (r *recording) Read(p []byte) (int, error) {
	if r.read >= r.size {
		return 0, io.EOF
	}
	p = p[:min(int64(len(p)), r.size-r.read)]
	n := 0
	if r.read < int64(len(r.header)) {
		n = copy(p, r.header[r.read:])
	}
	clear(p[n:])
	r.read += int64(len(p))
	return len(p), nil
}

func upload(ctx context.Context, s *settings) ([]*result, error) {
	r, err := newRig(ctx, s, emulator.Options{}, 1)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	gw, dc, gc := r.gw, r.dc, r.gc
	start := time.Now()
	if _, err := dc.Transcribe(ctx, &smallest.TranscribeRequest{Audio: newRecording(s.uploadBytes), AudioSize: -1, Model: "pulse", Language: "en"}); err != nil {
		return nil, fmt.Errorf("direct: %w", err)
	}
	directTime := time.Since(start)
	before, _ := gw.rssBytes()
	start = time.Now()
	stream, err := gc.trans().TranscribeUpload(withKey(ctx))
	if err != nil {
		return nil, err
	}
	// A failed Send ends the call, whose status CloseAndRecv returns.
	_ = stream.Send(&speechv1.TranscribeUploadRequest{Part: &speechv1.TranscribeUploadRequest_Config{Config: &speechv1.TranscriptionConfig{Language: "en"}}})
	rec := newRecording(s.uploadBytes)
	piece := make([]byte, 1<<20)
	for {
		n, rerr := io.ReadFull(rec, piece)
		if n > 0 {
			if err := stream.Send(&speechv1.TranscribeUploadRequest{Part: &speechv1.TranscribeUploadRequest_Audio{Audio: piece[:n]}}); err != nil {
				break
			}
		}
		if rerr != nil {
			break
		}
	}
	if _, err := stream.CloseAndRecv(); err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	gatewayTime := time.Since(start)
	_, peak := gw.rssBytes()
	mb := float64(s.uploadBytes) / (1 << 20)
	fmt.Fprintf(s.log, "  %.0f MiB: %.2f s direct, %.2f s through the gateway; RSS %d → peak %d KiB\n",
		mb, directTime.Seconds(), gatewayTime.Seconds(), before>>10, peak>>10)
	return []*result{
		{Phase: "upload", Name: fmt.Sprintf("%.0f MiB streamed upload, wall time", mb), Unit: "s", Gateway: gatewayTime.Seconds(),
			Baseline: directTime.Seconds(), BaselineName: "direct HTTP upload", Compare: "ratio", Value: gatewayTime.Seconds() / directTime.Seconds()},
		{Phase: "upload", Name: fmt.Sprintf("%.0f MiB streamed upload, peak RSS growth", mb), Unit: "MiB", Gateway: float64(peak) / (1 << 20),
			Baseline: float64(before) / (1 << 20), BaselineName: "gateway RSS before the upload", Compare: "difference",
			Value: float64(peak-before) / (1 << 20), Target: "≤ 32 MiB"},
	}, nil
}

func liveLatency(ctx context.Context, s *settings) ([]*result, error) {
	r, err := newRig(ctx, s, emulator.Options{}, 1)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	dc, gc := r.dc, r.gc
	// Speech for the sessions: 16 kHz PCM that the emulator can read back.
	var pcm []byte
	st, err := dc.StreamSpeech(ctx, &smallest.SpeechRequest{Text: strings.Repeat("one two three four five six seven eight nine ten ", 2),
		VoiceOptions: smallest.VoiceOptions{VoiceID: "avery", SampleRate: 16000}, OutputFormat: "pcm"})
	if err != nil {
		return nil, err
	}
	for {
		b, err := st.Next()
		if err != nil {
			break
		}
		pcm = append(pcm, b...)
	}
	st.Close()

	sessions := 4
	if s.quick {
		sessions = 1
	}
	d, err := finalizeLatencies(ctx, sessions, pcm, func(ctx context.Context) (liveSession, error) { return directLive(ctx, dc) })
	if err != nil {
		return nil, fmt.Errorf("direct: %w", err)
	}
	g, err := finalizeLatencies(ctx, sessions, pcm, func(ctx context.Context) (liveSession, error) { return gatewayLive(ctx, gc.trans()) })
	if err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	fmt.Fprintf(s.log, "  %d finalized utterances direct, %d through the gateway\n", len(d), len(g))
	var out []*result
	for _, p := range []float64{50, 90} {
		r := &result{Phase: "live", Name: fmt.Sprintf("finalize to final transcript, p%g", p), Unit: "ms",
			Gateway: percentile(g, p), Baseline: percentile(d, p), BaselineName: "direct WebSocket client", Compare: "difference"}
		r.Value = r.Gateway - r.Baseline
		out = append(out, r)
	}
	return out, nil
}

// liveSession is the part of a realtime session the latency measure needs.
type liveSession interface {
	audio([]byte) error
	finalize() error
	end() error
	// next returns whether the next message is a final transcript answering
	// a finalize, and false with io.EOF at the end.
	next() (bool, error)
	close()
}

// finalizeLatencies runs sessions that send pcm in real time, finalizing
// every half second, and returns the sorted times from each finalize to its
// final transcript.
func finalizeLatencies(ctx context.Context, sessions int, pcm []byte, open func(context.Context) (liveSession, error)) ([]time.Duration, error) {
	var mu sync.Mutex
	var all []time.Duration
	var wg sync.WaitGroup
	errs := make(chan error, sessions)
	for range sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sess, err := open(ctx)
			if err != nil {
				errs <- err
				return
			}
			defer sess.close()
			sent := make(chan time.Time, 64)
			go func() {
				defer close(sent)
				const piece = 3200 // 100 ms of 16 kHz PCM16
				start := time.Now()
				for i := 0; i*piece < len(pcm); i++ {
					time.Sleep(time.Until(start.Add(time.Duration(i) * 100 * time.Millisecond)))
					if sess.audio(pcm[i*piece:min((i+1)*piece, len(pcm))]) != nil {
						return // the session broke; next reports why
					}
					if i%5 == 4 {
						sent <- time.Now()
						if sess.finalize() != nil {
							return
						}
					}
				}
				_ = sess.end() // if it fails, next reports why
			}()
			for {
				final, err := sess.next()
				if errors.Is(err, io.EOF) {
					return
				}
				if err != nil {
					errs <- err
					return
				}
				if final {
					if t, ok := <-sent; ok {
						mu.Lock()
						all = append(all, time.Since(t))
						mu.Unlock()
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return nil, err
	}
	slices.Sort(all)
	return all, nil
}

type directSession struct{ s *smallest.LiveSession }

func directLive(ctx context.Context, c *smallest.Client) (liveSession, error) {
	s, err := c.Listen(ctx, &smallest.LiveRequest{Model: "pulse", Language: "en", Encoding: "linear16", SampleRate: 16000})
	return directSession{s}, err
}

func (d directSession) audio(b []byte) error { return d.s.SendAudio(b) }
func (d directSession) finalize() error      { return d.s.Finalize() }
func (d directSession) end() error           { return d.s.CloseStream() }
func (d directSession) close()               { d.s.Close() }
func (d directSession) next() (bool, error) {
	ev, err := d.s.Next()
	if err != nil {
		return false, err
	}
	return ev.Transcript != nil && ev.Transcript.FromFinalize, nil
}

type gatewaySession struct {
	stream speechv1.TranscriptionService_TranscribeLiveClient
}

func gatewayLive(ctx context.Context, c speechv1.TranscriptionServiceClient) (liveSession, error) {
	stream, err := c.TranscribeLive(withKey(ctx))
	if err != nil {
		return nil, err
	}
	err = stream.Send(&speechv1.TranscribeLiveRequest{Part: &speechv1.TranscribeLiveRequest_Config{Config: &speechv1.LiveTranscriptionConfig{
		Language: "en", SampleRateHz: 16000}}})
	return &gatewaySession{stream: stream}, err
}

func (g *gatewaySession) audio(b []byte) error {
	return g.stream.Send(&speechv1.TranscribeLiveRequest{Part: &speechv1.TranscribeLiveRequest_Audio{Audio: b}})
}
func (g *gatewaySession) finalize() error {
	return g.stream.Send(&speechv1.TranscribeLiveRequest{Part: &speechv1.TranscribeLiveRequest_Finalize{Finalize: &speechv1.FinalizeUtterance{}}})
}
func (g *gatewaySession) end() error { return g.stream.CloseSend() }
func (g *gatewaySession) close()     {}
func (g *gatewaySession) next() (bool, error) {
	msg, err := g.stream.Recv()
	if err != nil {
		return false, err
	}
	return msg.GetTranscript().GetFromFinalize(), nil
}
