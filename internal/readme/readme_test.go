package readme_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// block is a fenced block of the README, with the name a comment gave it.
type block struct {
	kind, name string // kind is "example" or "output"
	exit       int
	body       string
	line       int
}

var marker = regexp.MustCompile(`^<!-- (example|output): ([a-z0-9-]+)(?: exit=(\d+))? -->$`)

func readBlocks(t *testing.T, path string) []block {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []block
	var pending *block
	var inFence bool
	var body strings.Builder
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		switch {
		case !inFence && marker.MatchString(line):
			m := marker.FindStringSubmatch(line)
			exit, _ := strconv.Atoi(m[3])
			pending = &block{kind: m[1], name: m[2], exit: exit}
		case !inFence && strings.HasPrefix(line, "```"):
			inFence = true
			body.Reset()
			if pending != nil {
				pending.line = n
			}
		case inFence && strings.HasPrefix(line, "```"):
			inFence = false
			if pending != nil {
				pending.body = body.String()
				out = append(out, *pending)
				pending = nil
			}
		case inFence:
			body.WriteString(line + "\n")
		}
	}
	return out
}

// TestREADMEExamples runs every marked example in order, in one directory
// (later ones use the files earlier ones made), and compares outputs.
func TestREADMEExamples(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binaries and runs the README's examples")
	}
	for _, tool := range []string{"grpcurl", "jq", "base64", "split"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed (go install github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.9.4; apt-get install jq): .ci/run installs what it needs", tool)
		}
	}
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	blocks := readBlocks(t, filepath.Join(root, "README.md"))
	if len(blocks) < 10 {
		t.Fatalf("found %d marked blocks in the README; the markers or the parsing are off", len(blocks))
	}
	bin := t.TempDir()
	for _, cmd := range []string{"speechgate", "speechctl"} {
		build := exec.Command("go", "build", "-o", filepath.Join(bin, cmd), "./cmd/"+cmd)
		build.Dir = root
		if out, err := build.CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", cmd, err, out)
		}
	}
	addr, httpAddr := startGateway(t, filepath.Join(bin, "speechgate"), root)
	work := t.TempDir()
	outputs := map[string]string{}
	for _, b := range blocks {
		if b.kind == "output" {
			got, ok := outputs[b.name]
			if !ok {
				t.Errorf("README line %d: output %q has no example of that name before it", b.line, b.name)
				continue
			}
			if err := matchOutput(b.body, got); err != nil {
				t.Errorf("README line %d: the output of %q differs from the README's: %v\nit printed:\n%s", b.line, b.name, err, shorten(got))
			}
			continue
		}
		script := strings.NewReplacer(
			"go run ./cmd/speechctl", filepath.Join(bin, "speechctl"),
			"localhost:50051", addr,
			"localhost:8080", httpAddr,
		).Replace(b.body)
		cmd := exec.Command("bash", "-o", "pipefail", "-c", script)
		cmd.Dir = work
		cmd.Env = append(os.Environ(), "SPEECHCTL_GRPC_ADDR="+addr, "SPEECHCTL_TOKEN=", "SMALLEST_API_KEY=", "PATH="+os.Getenv("PATH"))
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		code := 0
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			code = exit.ExitCode()
		} else if err != nil {
			t.Fatalf("README line %d (%s): %v", b.line, b.name, err)
		}
		if code != b.exit {
			t.Errorf("README line %d: example %q exited %d, want %d\nstdout:\n%s\nstderr:\n%s", b.line, b.name, code, b.exit, shorten(stdout.String()), shorten(stderr.String()))
		}
		// grpcurl prints an error (-format-error) to stderr, as a failing
		// command should: the sample shows what the user sees.
		outputs[b.name] = stdout.String()
		if b.exit != 0 && stdout.Len() == 0 {
			outputs[b.name] = stderr.String()
		}
	}
}

// startGateway runs the gateway binary on the emulator, on free ports:
// gRPC's and the HTTP access's.
func startGateway(t *testing.T, bin, dir string) (addr, httpAddr string) {
	t.Helper()
	addr, httpAddr = freePort(t), freePort(t)
	cmd := exec.Command(bin, "--upstream=emulator", "--grpc-addr="+addr, "--http-addr="+httpAddr, "--admin-addr=", "--log-level=warn")
	cmd.Dir = dir
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
		}
	})
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return addr, httpAddr
		}
		if time.Now().After(deadline) {
			t.Fatal("the gateway did not start")
		}
	}
}

// volatile are fields whose values differ from run to run.
var volatile = map[string]bool{"upstreamRequestId": true, "upstreamSessionId": true, "upstreamFirstByteMs": true, "firstAudioMs": true,
	"requestId": true, "sessionId": true, "createTime": true, "id": true}

// matchOutput compares what an example printed with the README's sample:
// both are sequences of JSON values; see the package comment for the rules.
func matchOutput(want, got string) error {
	wantVals, err := jsonValues(want)
	if err != nil {
		return fmt.Errorf("the README's sample: %w", err)
	}
	gotVals, err := jsonValues(got)
	if err != nil {
		return fmt.Errorf("the output: %w", err)
	}
	return matchSeq(wantVals, gotVals)
}

// ellipsis stands for any number of values in a sample.
type ellipsis struct{}

func jsonValues(s string) ([]any, error) {
	var out []any
	var chunk strings.Builder
	flush := func() error {
		dec := json.NewDecoder(strings.NewReader(chunk.String()))
		dec.UseNumber()
		for {
			var v any
			if err := dec.Decode(&v); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				return err
			}
			out = append(out, v)
		}
		chunk.Reset()
		return nil
	}
	for _, line := range strings.Split(s, "\n") {
		if strings.TrimSpace(line) == "…" {
			if err := flush(); err != nil {
				return nil, err
			}
			out = append(out, ellipsis{})
			continue
		}
		chunk.WriteString(line + "\n")
	}
	return out, flush()
}

func matchSeq(want, got []any) error {
	if len(want) == 0 {
		if len(got) != 0 {
			return fmt.Errorf("%d more values than the sample shows, from %v", len(got), got[0])
		}
		return nil
	}
	if _, ok := want[0].(ellipsis); ok {
		for i := 0; i <= len(got); i++ {
			if matchSeq(want[1:], got[i:]) == nil {
				return nil
			}
		}
		return fmt.Errorf("nothing after … matches %v", want[1:])
	}
	if len(got) == 0 {
		return fmt.Errorf("the output ends where the sample shows %v", want[0])
	}
	if err := matchValue("", want[0], got[0]); err != nil {
		return err
	}
	return matchSeq(want[1:], got[1:])
}

func matchValue(key string, want, got any) error {
	if volatile[key] {
		return nil
	}
	switch w := want.(type) {
	case string:
		if prefix, ok := strings.CutSuffix(w, "…"); ok {
			if s, isString := got.(string); isString && strings.HasPrefix(s, prefix) {
				return nil
			}
			if prefix == "" {
				return nil // "…": any value
			}
		}
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok {
			return fmt.Errorf("%s: got %v, want an object", key, got)
		}
		for k, wv := range w {
			gv, present := g[k]
			if !present && !volatile[k] {
				return fmt.Errorf("%s.%s is missing", key, k)
			}
			if err := matchValue(k, wv, gv); err != nil {
				return err
			}
		}
		for k := range g {
			if _, shown := w[k]; !shown && !volatile[k] {
				return fmt.Errorf("%s.%s (%v) is not in the sample", key, k, g[k])
			}
		}
		return nil
	case []any:
		g, ok := got.([]any)
		if !ok {
			return fmt.Errorf("%s: got %v, want a list", key, got)
		}
		return matchSeq(replaceEllipses(w), g)
	}
	if fmt.Sprint(want) != fmt.Sprint(got) {
		return fmt.Errorf("%s: got %v, want %v", key, got, want)
	}
	return nil
}

// replaceEllipses turns "…" elements of a sample list into ellipses.
func replaceEllipses(list []any) []any {
	out := make([]any, len(list))
	for i, v := range list {
		if v == "…" {
			out[i] = ellipsis{}
		} else {
			out[i] = v
		}
	}
	return out
}

// shorten cuts long output for a failure message: audio in base64 is long.
func shorten(s string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		if len(l) > 160 {
			lines[i] = l[:160] + "…"
		}
	}
	if len(lines) > 60 {
		lines = append(lines[:60], fmt.Sprintf("… (%d more lines)", len(lines)-60))
	}
	return strings.Join(lines, "\n")
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
