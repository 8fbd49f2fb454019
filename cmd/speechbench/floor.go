package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"

	speechv1 "github.com/speechgate/speechgate/gen/speech/v1"
)

// The floor is a bare grpc-go server in a process of its own: Synthesize
// answers at once with the same messages the gateway sends (a format, then
// audio chunks of the same size at the same pace), with no interceptors
// and no upstream. Its time to first audio is what any gRPC hop costs on
// this machine at that concurrency, measured like the gateway's; the
// gateway's own share is what it adds over the direct client beyond that.
type floorServer struct {
	speechv1.UnimplementedSynthesisServiceServer
	chunkBytes int
	chunkEvery time.Duration
	audio      time.Duration
}

func (f *floorServer) Synthesize(_ *speechv1.SynthesizeRequest, stream grpc.ServerStreamingServer[speechv1.SynthesizeResponse]) error {
	ctx := stream.Context()
	if err := stream.Send(&speechv1.SynthesizeResponse{Event: &speechv1.SynthesizeResponse_Format{Format: &speechv1.SynthesisFormat{
		Encoding: speechv1.AudioEncoding_AUDIO_ENCODING_PCM_S16LE, SampleRateHz: 24000, Channels: 1, BitsPerSample: 16}}}); err != nil {
		return err
	}
	data := make([]byte, f.chunkBytes)
	start := time.Now()
	n := int(f.audio / f.chunkEvery)
	for i := range max(n, 1) {
		if !sleepCtx(ctx, time.Until(start.Add(time.Duration(i)*f.chunkEvery))) {
			return ctx.Err()
		}
		if err := stream.Send(&speechv1.SynthesizeResponse{Event: &speechv1.SynthesizeResponse_Audio{Audio: &speechv1.AudioChunk{
			Data: data, Sequence: uint32(i)}}}); err != nil {
			return err
		}
	}
	return stream.Send(&speechv1.SynthesizeResponse{Event: &speechv1.SynthesizeResponse_Totals{Totals: &speechv1.SynthesisTotals{}}})
}

// serveFloor is the floor mode: it serves on a loopback port, prints the
// address on stdout, and serves until ctx ends.
func serveFloor(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("speechbench floor", flag.ContinueOnError)
	fs.SetOutput(stderr)
	f := &floorServer{}
	fs.IntVar(&f.chunkBytes, "chunk-bytes", 960, "audio bytes per message")
	fs.DurationVar(&f.audio, "audio", 300*time.Millisecond, "audio per call, sent in real time")
	if err := fs.Parse(args); err != nil {
		return err
	}
	f.chunkEvery = time.Duration(f.chunkBytes) * time.Second / 48000 // 24 kHz PCM16
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	gs := grpc.NewServer()
	speechv1.RegisterSynthesisServiceServer(gs, f)
	go func() {
		<-ctx.Done()
		gs.Stop()
	}()
	fmt.Fprintln(stdout, lis.Addr())
	if err := gs.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return err
	}
	return nil
}

// floorProcess is the floor running for one measurement.
type floorProcess struct {
	addr string
	*child
}

func startFloor(chunkBytes int, audio time.Duration) (*floorProcess, error) {
	c, addr, err := startMode("floor", "--chunk-bytes="+strconv.Itoa(chunkBytes), "--audio="+audio.String())
	if err != nil {
		return nil, err
	}
	return &floorProcess{addr: addr, child: c}, nil
}

// startMode runs this program in another mode (the emulator, the floor),
// which prints its address on its first line, and returns it with that
// address.
func startMode(mode string, args ...string) (*child, string, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, "", err
	}
	cmd := exec.Command(self, append([]string{mode}, args...)...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, "", err
	}
	c, err := start(cmd)
	if err != nil {
		return nil, "", err
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		c.stop(0)
		return nil, "", fmt.Errorf("the %s did not start: %w", mode, err)
	}
	return c, strings.TrimSpace(line), nil
}

// pidCPU is the CPU time process pid has used, in seconds.
func pidCPU(pid int) float64 {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 > len(s) {
		return 0
	}
	fields := strings.Fields(s[i+2:])
	if len(fields) < 13 {
		return 0
	}
	utime, _ := strconv.ParseFloat(fields[11], 64)
	stime, _ := strconv.ParseFloat(fields[12], 64)
	return (utime + stime) / 100 // clock ticks; USER_HZ is 100 on Linux
}

// machineCPU is the CPU time the whole machine has spent busy in
// processes, in seconds (/proc/stat: user, nice, system), plus the time a
// hypervisor gave to other guests (steal). Interrupt time is left out: the
// rig's own loopback traffic is handled there, charged to no process.
func machineCPU() float64 { return statSeconds(1, 2, 3, 8) }

// statSeconds sums the machine-wide CPU times (/proc/stat's first line) of
// the fields at the given indexes (1 user, 2 nice, 3 system, 4 idle, 5
// iowait, 6 irq, 7 softirq, 8 steal), in seconds.
func statSeconds(idx ...int) float64 {
	b, _ := os.ReadFile("/proc/stat")
	line, _, _ := strings.Cut(string(b), "\n")
	fields := strings.Fields(line)
	var sum float64
	for _, i := range idx {
		if i < len(fields) {
			v, _ := strconv.ParseFloat(fields[i], 64)
			sum += v
		}
	}
	return sum / 100
}

// neighbours measures, around a round of the bench, how much CPU the
// machine spent outside the rig's own processes (pids, and the bench
// itself), in cores: a round whose neighbours took a noticeable share of a
// core is not comparable with the others.
type neighbours struct {
	pids    []int
	start   time.Time
	machine float64
	irq     float64 // interrupt time, where loopback traffic is handled
	idle    float64
	rigs    []float64 // CPU seconds of each of pids at the start
}

func watchNeighbours(pids ...int) *neighbours {
	n := &neighbours{pids: append(pids, os.Getpid()), start: time.Now(), machine: machineCPU(), irq: statSeconds(6, 7), idle: statSeconds(4, 5)}
	for _, p := range n.pids {
		n.rigs = append(n.rigs, pidCPU(p))
	}
	return n
}

// cpuShares is where the machine's CPU went during a round, in cores:
// to each of the rig's processes (in watchNeighbours' order, the bench
// last) and to everything outside them.
type cpuShares struct {
	rig       []float64
	outside   float64
	irq, idle float64 // the machine's interrupt and idle time
}

// shares returns the load since watchNeighbours.
func (n *neighbours) shares() cpuShares {
	elapsed := max(time.Since(n.start).Seconds(), 1e-9)
	sh := cpuShares{rig: make([]float64, len(n.pids))}
	var rigs float64
	for i, p := range n.pids {
		used := pidCPU(p) - n.rigs[i]
		rigs += used
		sh.rig[i] = used / elapsed
	}
	sh.outside = max(0, (machineCPU()-n.machine)-rigs) / elapsed
	sh.irq, sh.idle = (statSeconds(6, 7)-n.irq)/elapsed, (statSeconds(4, 5)-n.idle)/elapsed
	return sh
}

// cores returns the outside load since watchNeighbours, in cores.
func (n *neighbours) cores() float64 { return n.shares().outside }
