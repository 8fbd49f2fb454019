// Command speechbench measures what speechgate costs over calling Smallest
// directly. On loopback, against the built-in emulator, it runs the gateway
// binary as a separate process and compares it, in the same run, with a
// direct client of the same emulator (the gateway's own Smallest client
// code, so that the difference is the gateway): time to first audio,
// throughput and CPU, memory per stream, memory over a long stream, a large
// streamed upload, and realtime recognition latency. See BENCHMARKS.md.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/speechgate/speechgate/internal/buildinfo"
	"github.com/speechgate/speechgate/internal/emulator"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "speechbench:", err)
		os.Exit(1)
	}
}

// settings are the bench's knobs.
type settings struct {
	gatewayBin     string
	phases         map[string]bool
	jsonOut        string
	chunkBytes     int
	firstByteDelay time.Duration
	concurrency    []int
	memoryStreams  []int
	satLevels      []int
	phaseTime      time.Duration
	uploadBytes    int64
	quick          bool
	cpuProfile     string
	heapProfile    string
	gatewayArgs    []string // added to every gateway's flags
	// cacheMiss: the calls through the gateway leave cache_mode unset and
	// each send a text no call sent before (see gatewayRequest).
	cacheMiss bool
	texts     *atomic.Int64 // the texts made new so far
	log       io.Writer
	// outside is the most outside load seen in a kept round of the
	// current phase; -1 when the phase does not check.
	outside float64
}

// kept notes the outside load of a round that was kept.
func (s *settings) kept(load float64) { s.outside = max(s.outside, load) }

// report is the whole result, as written to the JSON file.
type report struct {
	Machine  machine     `json:"machine"`
	Settings any         `json:"settings"`
	Load     []phaseLoad `json:"load"`
	Results  []*result   `json:"results"`
}

// phaseLoad is how busy the machine was during a phase, in cores: the
// reader of a figure can tell a quiet run from a contended one.
type phaseLoad struct {
	Phase string `json:"phase"`
	// Busy is the whole machine's CPU (user, nice, system, steal), on
	// average over the phase, the rig's own processes included.
	Busy float64 `json:"busy_cores"`
	// Outside is the most that processes outside the rig took in a round
	// that was kept (phases that check their neighbours; -1 otherwise).
	Outside float64 `json:"outside_cores"`
}

type machine struct {
	GoVersion string `json:"go_version"`
	OS        string `json:"os"`
	CPUs      int    `json:"cpus"`
	CPUModel  string `json:"cpu_model"`
	Date      string `json:"date"`
}

// result is one measured figure next to its baseline.
type result struct {
	Phase    string  `json:"phase"`
	Name     string  `json:"name"`
	Unit     string  `json:"unit"`
	Gateway  float64 `json:"gateway"`
	Baseline float64 `json:"baseline"`
	// BaselineName says what Baseline is: the direct client, an idle
	// gateway, the start of the stream, ...
	BaselineName string `json:"baseline_name"`
	// Compare is how the two are compared: "difference" or "ratio".
	Compare string  `json:"compare"`
	Value   float64 `json:"value"`
	Target  string  `json:"target,omitempty"`
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "emulator" {
		return serveEmulator(ctx, args[1:], stdout, stderr)
	}
	if len(args) > 0 && args[0] == "floor" {
		return serveFloor(ctx, args[1:], stdout, stderr)
	}
	fs := flag.NewFlagSet("speechbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	s := &settings{log: stderr}
	fs.StringVar(&s.gatewayBin, "gateway-bin", "", "the speechgate binary to measure (default: built from ./cmd/speechgate)")
	phases := fs.String("phases", "ttfa,throughput,memory,saturation,longstream,upload,live,converse,chaos,fleet,cache", "phases to run, comma-separated")
	fs.StringVar(&s.jsonOut, "json", "bench.json", "where to write the results as JSON")
	fs.IntVar(&s.chunkBytes, "chunk-bytes", 960, "decoded audio per upstream SSE frame (Smallest sends about 960)")
	fs.DurationVar(&s.firstByteDelay, "first-byte-delay", 0, "simulated upstream time to first byte")
	conc := fs.String("concurrency", "1,64,512", "concurrent streams for time to first audio")
	mem := fs.String("memory-streams", "1,1000,5000", "concurrent real-time streams for memory per stream")
	sat := fs.String("saturation-levels", "256,512,768,1024,1280,1536,2048,2560", "real-time 24 kHz streams the saturation phase ramps through")
	fs.DurationVar(&s.phaseTime, "phase-time", 10*time.Second, "how long each timed measurement runs")
	fs.Int64Var(&s.uploadBytes, "upload-bytes", 250<<20, "size of the streamed upload")
	cacheMode := fs.String("cache-mode", "bypass", "how the calls through the gateway meet its synthesis cache in the ttfa, throughput, saturation and chaos phases: bypass (CACHE_MODE_BYPASS, the same text each call) or miss (the default mode, a new text each call)")
	fs.BoolVar(&s.quick, "quick", false, "small counts and short times: a smoke run, not a measurement")
	fs.StringVar(&s.cpuProfile, "cpuprofile", "", "write a CPU profile of the gateway, taken during the throughput phase, to this file (and one per saturation level, to this file with .sat<streams> added)")
	fs.StringVar(&s.heapProfile, "heapprofile", "", "write a heap profile of the gateway, taken at the memory phase's largest stream count, to this file")
	fs.Func("gateway-arg", "a flag for every gateway the bench starts, such as --gateway-arg=--http-addr=127.0.0.1:0 (repeatable)", func(v string) error {
		s.gatewayArgs = append(s.gatewayArgs, v)
		return nil
	})
	showVersion := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil // the usage has been printed
		}
		return err
	}
	if *showVersion {
		fmt.Fprintln(stdout, "speechbench", buildinfo.Read(""))
		return nil
	}
	var err error
	if s.concurrency, err = ints(*conc); err != nil {
		return fmt.Errorf("--concurrency: %w", err)
	}
	if s.memoryStreams, err = ints(*mem); err != nil {
		return fmt.Errorf("--memory-streams: %w", err)
	}
	if s.satLevels, err = ints(*sat); err != nil {
		return fmt.Errorf("--saturation-levels: %w", err)
	}
	switch *cacheMode {
	case "bypass":
	case "miss":
		s.cacheMiss, s.texts = true, new(atomic.Int64)
	default:
		return fmt.Errorf("--cache-mode: %q is neither bypass nor miss", *cacheMode)
	}
	s.phases = map[string]bool{}
	for _, p := range strings.Split(*phases, ",") {
		s.phases[strings.TrimSpace(p)] = true
	}
	if s.quick {
		s.concurrency, s.memoryStreams, s.satLevels, s.phaseTime, s.uploadBytes = []int{1, 8}, []int{1, 50}, []int{8, 16}, time.Second, 16<<20
	}
	if s.gatewayBin == "" {
		dir, err := os.MkdirTemp("", "speechbench")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		s.gatewayBin = filepath.Join(dir, "speechgate")
		fmt.Fprintln(stderr, "building ./cmd/speechgate ...")
		if out, err := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", s.gatewayBin, "./cmd/speechgate").CombinedOutput(); err != nil {
			return fmt.Errorf("go build: %w\n%s", err, out)
		}
	}

	rep := &report{Machine: machine{GoVersion: runtime.Version(), OS: runtime.GOOS + "/" + runtime.GOARCH, CPUs: runtime.NumCPU(),
		CPUModel: cpuModel(), Date: time.Now().UTC().Format(time.RFC3339)},
		Settings: map[string]any{"chunk_bytes": s.chunkBytes, "first_byte_delay_ms": s.firstByteDelay.Milliseconds(),
			"concurrency": s.concurrency, "memory_streams": s.memoryStreams, "phase_time_s": s.phaseTime.Seconds(),
			"upload_bytes": s.uploadBytes, "quick": s.quick, "cache_mode": *cacheMode}}
	for _, ph := range []struct {
		name string
		run  func(context.Context, *settings) ([]*result, error)
	}{
		{"ttfa", timeToFirstAudio},
		{"throughput", throughput},
		{"memory", memoryPerStream},
		{"saturation", saturation},
		{"longstream", longStream},
		{"upload", upload},
		{"live", liveLatency},
		{"converse", conversePhase},
		{"chaos", chaos},
		{"fleet", fleetPhase},
		{"cache", cachePhase},
	} {
		if !s.phases[ph.name] {
			continue
		}
		fmt.Fprintf(stderr, "== %s\n", ph.name)
		s.outside = -1
		busy0, start := machineCPU(), time.Now()
		res, err := ph.run(ctx, s)
		if err != nil {
			return fmt.Errorf("%s: %w", ph.name, err)
		}
		rep.Load = append(rep.Load, phaseLoad{Phase: ph.name, Busy: (machineCPU() - busy0) / time.Since(start).Seconds(), Outside: s.outside})
		rep.Results = append(rep.Results, res...)
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	printTable(stdout, rep)
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(s.jsonOut, append(b, '\n'), 0o644)
}

func ints(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%q is not a positive number", f)
		}
		out = append(out, n)
	}
	return out, nil
}

func cpuModel() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

// upstream is an emulator serving on loopback for one phase, in a process
// of its own, as Smallest is remote to its callers: in this process it
// would share the direct client's runtime, and answer it without the
// process wake-ups that every call through the gateway pays.
type upstream struct {
	URL string
	*child
}

// child is a process the bench started; it dies with the bench.
type child struct {
	cmd    *exec.Cmd
	exited chan struct{} // closed when it has exited, after err is set
	err    error         // how it exited
}

// start starts cmd as a child.
func start(cmd *exec.Cmd) (*child, error) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // never outlive the bench
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	c := &child{cmd: cmd, exited: make(chan struct{})}
	go func() {
		c.err = cmd.Wait()
		close(c.exited)
	}()
	return c, nil
}

// stop asks the child to end, as an orchestrator would, and kills it if it
// has not within grace.
func (c *child) stop(grace time.Duration) {
	// An error means the child has exited already, which c.exited tells.
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.exited:
	case <-time.After(grace):
		_ = c.cmd.Process.Kill()
		<-c.exited
	}
}

// startEmulator runs this program's emulator mode with opts.
func startEmulator(opts emulator.Options) (*upstream, error) {
	c, url, err := startMode("emulator",
		"--chunk-bytes="+strconv.Itoa(opts.ChunkBytes),
		"--pace="+strconv.FormatFloat(opts.Pace, 'g', -1, 64),
		"--first-byte-delay="+opts.FirstByteDelay.String(),
		"--audio-per-char="+opts.AudioPerChar.String(),
		"--concurrency="+strconv.Itoa(opts.Concurrency))
	if err != nil {
		return nil, err
	}
	return &upstream{URL: url, child: c}, nil
}

// Close stops the emulator.
func (u *upstream) Close() { u.stop(10 * time.Second) }

// serveEmulator is the emulator mode: it serves the emulator on a loopback
// port, prints its URL on stdout, and serves until ctx ends.
func serveEmulator(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("speechbench emulator", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var opts emulator.Options
	fs.IntVar(&opts.ChunkBytes, "chunk-bytes", 0, "decoded audio per SSE frame")
	fs.Float64Var(&opts.Pace, "pace", 0, "audio seconds sent per second; 0: as fast as possible")
	fs.DurationVar(&opts.FirstByteDelay, "first-byte-delay", 0, "wait before the first audio frame")
	fs.DurationVar(&opts.AudioPerChar, "audio-per-char", 0, "audio per character of text")
	fs.IntVar(&opts.Concurrency, "concurrency", 0, "the emulated account's concurrency limit (0: none)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: emulator.New(opts)}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	fmt.Fprintf(stdout, "http://%s\n", lis.Addr())
	if err := srv.Serve(lis); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// gateway is the speechgate binary running for one phase.
type gateway struct {
	addr      string
	adminAddr string
	*child
}

func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// startGateway runs the gateway in front of baseURL and waits until it serves.
func startGateway(ctx context.Context, s *settings, baseURL string, extra ...string) (*gateway, error) {
	addr, err := freePort()
	if err != nil {
		return nil, err
	}
	admin, err := freePort()
	if err != nil {
		return nil, err
	}
	args := append([]string{"--grpc-addr=" + addr, "--admin-addr=" + admin, "--http-addr=", "--smallest-base-url=" + baseURL,
		"--log-level=warn", "--upstream-idle-timeout=0s", "--voices-cache-ttl=0s"}, append(slices.Clone(s.gatewayArgs), extra...)...)
	cmd := exec.Command(s.gatewayBin, args...)
	cmd.Stderr = s.log
	c, err := start(cmd)
	if err != nil {
		return nil, err
	}
	g := &gateway{child: c, addr: addr, adminAddr: admin}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + admin + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return g, nil
			}
		}
		select {
		case <-g.exited:
			return nil, fmt.Errorf("the gateway exited: %w", g.err)
		case <-time.After(50 * time.Millisecond):
		case <-ctx.Done():
			g.Close()
			return nil, ctx.Err()
		}
		if time.Now().After(deadline) {
			g.Close()
			return nil, errors.New("the gateway did not become ready in 30 s")
		}
	}
}

// Close stops the gateway, letting it drain.
func (g *gateway) Close() { g.stop(15 * time.Second) }

// rssBytes returns the gateway process's resident set and its peak.
func (g *gateway) rssBytes() (rss, peak int64) {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", g.cmd.Process.Pid))
	for _, line := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(line, ":")
		kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		switch k {
		case "VmRSS":
			rss = kb << 10
		case "VmHWM":
			peak = kb << 10
		}
	}
	return rss, peak
}

// cpuSeconds returns the CPU time the gateway process has used.
func (g *gateway) cpuSeconds() float64 { return pidCPU(g.cmd.Process.Pid) }

// heapInuse reads the gateway's in-use heap from its /metrics.
func (g *gateway) heapInuse() int64 {
	resp, err := http.Get("http://" + g.adminAddr + "/metrics")
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "go_memstats_heap_inuse_bytes "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return int64(f)
		}
	}
	return 0
}
