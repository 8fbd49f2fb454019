package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	speechv1 "github.com/speechgate/speechgate/gen/speech/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func noEnv(string) string { return "" }

func TestRunHelp(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	if err := run(t.Context(), []string{"--help"}, noEnv, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "SPEECHGATE_GRPC_ADDR") {
		t.Fatalf("help = %q", out.String())
	}
}

func TestRunRefusesBadConfig(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{name: "bad flag", args: []string{"--upstream=nowhere"}, wantErr: "must be one of"},
		{name: "missing keys file", args: []string{"--auth=keys", "--keys-file=/does/not/exist", "--upstream=emulator"}, wantErr: "no such file"},
		{name: "unusable address", args: []string{"--upstream=emulator", "--grpc-addr=256.0.0.1:1"}, wantErr: "listen"},
		{name: "bad certificate", args: []string{"--tls-cert=/nope.pem", "--tls-key=/nope.key", "--upstream=emulator"}, wantErr: "loading --tls-cert"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := run(t.Context(), tt.args, noEnv, io.Discard, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
			}
		})
	}
}

// logWatcher collects JSON log lines and finds the address the server chose.
type logWatcher struct {
	mu    sync.Mutex
	lines []map[string]any
	addr  chan string
}

func newLogWatcher() *logWatcher { return &logWatcher{addr: make(chan string, 1)} }

func (w *logWatcher) consume(r io.Reader) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) != nil {
			continue
		}
		w.mu.Lock()
		w.lines = append(w.lines, m)
		w.mu.Unlock()
		if m["msg"] == "serving gRPC" {
			w.addr <- m["addr"].(string)
		}
	}
}

func (w *logWatcher) has(msg string) bool { return w.line(msg) != nil }

// line returns the first line whose message starts with msg, or nil.
func (w *logWatcher) line(msg string) map[string]any {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, l := range w.lines {
		if m, _ := l["msg"].(string); strings.HasPrefix(m, msg) {
			return l
		}
	}
	return nil
}

func (w *logWatcher) waitAddr(t *testing.T) string {
	t.Helper()
	select {
	case a := <-w.addr:
		return a
	case <-time.After(60 * time.Second):
		t.Fatal("the server did not log its address")
		return ""
	}
}

// finish reads a Synthesize stream to its end and returns its totals.
func finish(stream grpc.ServerStreamingClient[speechv1.SynthesizeResponse]) (*speechv1.SynthesisTotals, error) {
	var totals *speechv1.SynthesisTotals
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return totals, nil
		}
		if err != nil {
			return nil, err
		}
		if t := msg.GetTotals(); t != nil {
			totals = t
		}
	}
}

func dial(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// running is the gateway run in-process by startRun.
type running struct {
	addr   string
	logs   *logWatcher
	cancel context.CancelFunc
	done   chan error
}

// startRun runs the gateway in-process with args and waits until it serves.
func startRun(t *testing.T, args ...string) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	t.Cleanup(cancel)
	pr, pw := io.Pipe()
	r := &running{logs: newLogWatcher(), cancel: cancel, done: make(chan error, 1)}
	go r.logs.consume(pr)
	go func() {
		r.done <- run(ctx, args, noEnv, io.Discard, pw)
		pw.Close()
	}()
	r.addr = r.logs.waitAddr(t)
	return r
}

// stop ends the gateway's context and checks that run returns nil.
func (r *running) stop(t *testing.T) {
	t.Helper()
	r.cancel()
	select {
	case err := <-r.done:
		if err != nil {
			t.Fatalf("run returned %v after its context ended; want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not return after its context ended")
	}
}

// TestRunServesTheEmulatorAndStops runs the gateway in-process as a new user
// would, calls it, and stops it by ending its context.
func TestRunServesTheEmulatorAndStops(t *testing.T) {
	t.Parallel()
	r := startRun(t, "--upstream=emulator", "--grpc-addr=127.0.0.1:0", "--admin-addr=", "--http-addr=")
	logs := r.logs
	conn := dial(t, r.addr)
	call := metadata.AppendToOutgoingContext(t.Context(), "authorization", "Bearer any-key")
	stream, err := speechv1.NewSynthesisServiceClient(conn).Synthesize(call, &speechv1.SynthesizeRequest{Text: "Hello.", VoiceId: "avery"})
	if err != nil {
		t.Fatal(err)
	}
	totals, err := finish(stream)
	if err != nil {
		t.Fatal(err)
	}
	if totals.GetAudioDurationMs() != 360 {
		t.Fatalf("totals = %v, want 360 ms of audio for 6 characters", totals)
	}
	conn.Close()
	r.stop(t)
	if !logs.has("upstream is the built-in EMULATOR, not Smallest AI: its audio is synthetic, and it transcribes only text it spoke itself") {
		t.Error("the log does not say that the upstream is an emulator")
	}
}

// TestRotatedClientKeysTakeEffect runs the gateway in keys mode and
// rewrites its keys file, as the kubelet does when a Secret changes: the new
// key is let in and the old one turned away, without a restart.
func TestRotatedClientKeysTakeEffect(t *testing.T) {
	t.Parallel()
	const oldKey, newKey = "k_old_0123456789abcdef", "k_new_0123456789abcdef"
	keysFile := filepath.Join(t.TempDir(), "keys")
	if err := os.WriteFile(keysFile, []byte("billing "+oldKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := startRun(t, "--upstream=emulator", "--grpc-addr=127.0.0.1:0", "--admin-addr=", "--http-addr=", "--auth=keys",
		"--keys-file="+keysFile, "--keys-file-check-interval=10ms")
	voices := speechv1.NewSynthesisServiceClient(dial(t, r.addr))
	code := func(key string) codes.Code {
		_, err := voices.ListVoices(metadata.AppendToOutgoingContext(t.Context(), "authorization", "Bearer "+key), &speechv1.ListVoicesRequest{})
		return status.Code(err)
	}
	if c := code(oldKey); c != codes.OK {
		t.Fatalf("the key in the file: %v", c)
	}
	tmp := keysFile + ".new"
	if err := os.WriteFile(tmp, []byte("billing "+newKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, keysFile); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); code(newKey) != codes.OK; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the new key was not let in within 10 s")
		}
	}
	if c := code(oldKey); c != codes.Unauthenticated {
		t.Errorf("the removed key: %v, want Unauthenticated", c)
	}
	if !r.logs.has("client keys reloaded") {
		t.Error("the reload was not logged")
	}
	r.stop(t)
}

// TestSIGTERMDrainsThenExitsZero builds the real binary and stops it with
// SIGTERM in the middle of a real-time stream.
func TestSIGTERMDrainsThenExitsZero(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := filepath.Join(t.TempDir(), "speechgate")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "--upstream=emulator", "--grpc-addr=127.0.0.1:0", "--admin-addr=", "--http-addr=", "--emulator-pace=1", "--shutdown-grace=20s")
	cmd.Env = append(os.Environ(), "SPEECHGATE_LOG_FORMAT=json")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill() })
	logs := newLogWatcher()
	consumed := make(chan struct{})
	go func() { logs.consume(stderr); close(consumed) }()
	addr := logs.waitAddr(t)

	conn := dial(t, addr)
	call := metadata.AppendToOutgoingContext(t.Context(), "authorization", "Bearer any-key")
	// 30 characters at real time: 1.8 s of audio.
	stream, err := speechv1.NewSynthesisServiceClient(conn).Synthesize(call, &speechv1.SynthesizeRequest{Text: strings.Repeat("x", 30), VoiceId: "avery"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}

	// A probe on a new connection sees NOT_SERVING while the stream drains.
	probe := healthpb.NewHealthClient(dial(t, addr))
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp, err := probe.Check(t.Context(), &healthpb.HealthCheckRequest{})
		if err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_NOT_SERVING {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("health did not turn NOT_SERVING during the drain (last: %v, %v)", resp.GetStatus(), err)
		}
		time.Sleep(20 * time.Millisecond)
	}

	totals, err := finish(stream)
	if err != nil {
		t.Fatalf("the stream in flight ended with %v (%v); the drain must let it finish", status.Code(err), err)
	}
	if totals.GetAudioDurationMs() != 1800 {
		t.Fatalf("totals = %v, want the whole 1800 ms", totals)
	}
	waitErr := make(chan error, 1)
	go func() { <-consumed; waitErr <- cmd.Wait() }()
	select {
	case err := <-waitErr:
		if err != nil {
			t.Fatalf("the process exited with %v; want 0", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the process did not exit after the drain")
	}
	stopped := logs.line("stopped")
	if stopped == nil {
		t.Fatal("no 'stopped' log line")
	}
	// Durations are logged in a unit people read, not in nanoseconds.
	if took, _ := stopped["took"].(string); !strings.HasSuffix(took, "s") {
		t.Errorf("took = %v, want a duration such as \"1.8s\"", stopped["took"])
	}
	if grace := logs.line("shutting down")["grace"]; grace != "20s" {
		t.Errorf("grace = %v, want \"20s\"", grace)
	}
}

// TestSecondSignalStopsAtOnce: a second Ctrl-C during a drain ends the
// process at once, as most servers do, rather than waiting out the grace.
func TestSecondSignalStopsAtOnce(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := filepath.Join(t.TempDir(), "speechgate")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "--upstream=emulator", "--grpc-addr=127.0.0.1:0", "--admin-addr=", "--http-addr=", "--emulator-pace=1", "--shutdown-grace=60s")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill() })
	logs := newLogWatcher()
	consumed := make(chan struct{})
	go func() { logs.consume(stderr); close(consumed) }()
	addr := logs.waitAddr(t)
	call := metadata.AppendToOutgoingContext(t.Context(), "authorization", "Bearer any-key")
	stream, err := speechv1.NewSynthesisServiceClient(dial(t, addr)).Synthesize(call, &speechv1.SynthesizeRequest{Text: strings.Repeat("x", 500), VoiceId: "avery"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	cmd.Process.Signal(os.Interrupt)
	for deadline := time.Now().Add(10 * time.Second); !logs.has("shutting down"); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the first signal did not start a drain")
		}
	}
	start := time.Now()
	cmd.Process.Signal(os.Interrupt)
	waitErr := make(chan error, 1)
	go func() { <-consumed; waitErr <- cmd.Wait() }()
	select {
	case err := <-waitErr:
		if err == nil {
			t.Error("the process exited 0 after a forced stop")
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("the second signal took %v to stop the process", d)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the second signal did not stop the process; it is still draining a 30 s stream")
	}
}

// TestREADMEListsEverySetting keeps the README's configuration table in step
// with the settings --help prints.
func TestREADMEListsEverySetting(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	var help bytes.Buffer
	if err := run(t.Context(), []string{"--help"}, noEnv, &help, io.Discard); err != nil {
		t.Fatal(err)
	}
	rows := 0
	for _, line := range strings.Split(help.String(), "\n") {
		fields := strings.Fields(line)
		if len(fields) < 2 || (!strings.HasPrefix(fields[0], "--") && fields[0] != "(environment") {
			continue
		}
		rows++
		flag, env := fields[0], fields[1]
		if env == "-" {
			continue // --version: no setting, and no variable behind it
		}
		if fields[0] == "(environment" {
			flag, env = "(environment only)", fields[2]
		} else {
			flag = "`" + flag + "`"
		}
		if !bytes.Contains(readme, []byte("| "+flag+" | `"+env+"` |")) {
			t.Errorf("README's configuration table has no row for %s / %s", flag, env)
		}
	}
	if rows < 15 {
		t.Fatalf("found only %d settings in --help; the parsing above is out of date", rows)
	}
}

func TestVersion(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	if err := run(t.Context(), []string{"--version"}, noEnv, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out.String(), "speechgate ") || !strings.Contains(out.String(), "go1.") {
		t.Errorf("--version printed %q", out.String())
	}
}

// TestHTTPAccess runs the gateway with its HTTP access, as the README's
// curl examples use it, and stops it.
func TestHTTPAccess(t *testing.T) {
	t.Parallel()
	r := startRun(t, "--upstream=emulator", "--grpc-addr=127.0.0.1:0", "--admin-addr=", "--http-addr=127.0.0.1:0")
	var line map[string]any
	for deadline := time.Now().Add(30 * time.Second); line == nil; time.Sleep(10 * time.Millisecond) {
		if line = r.logs.line("serving HTTP"); line == nil && time.Now().After(deadline) {
			t.Fatal("the HTTP access did not start")
		}
	}
	req, _ := http.NewRequestWithContext(t.Context(), "POST", "http://"+line["addr"].(string)+"/v1/speech:synthesize",
		strings.NewReader(`{"text": "Hello.", "voice_id": "avery"}`))
	req.Header.Set("Authorization", "Bearer any-key")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	// 6 characters at 60 ms of 24 kHz PCM16, and the WAV header.
	if err != nil || resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "audio/wav" || len(b) != 44+360*48 {
		t.Fatalf("%s %s, %d bytes, %v", resp.Status, resp.Header.Get("Content-Type"), len(b), err)
	}
	http.DefaultClient.CloseIdleConnections()
	r.stop(t)
}
