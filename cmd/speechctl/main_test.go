package main

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/go-audio/wav"
	"go.uber.org/goleak"

	"github.com/speechgate/speechgate/internal/audio"
	"github.com/speechgate/speechgate/internal/emulator"
	"github.com/speechgate/speechgate/internal/gatewaytest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// gateway runs a speechgate in front of the emulator on loopback and
// returns its address.
func gateway(t *testing.T) string {
	t.Helper()
	return gatewaytest.Start(t, emulator.New(emulator.Options{}), gatewaytest.Options{Loopback: true}).Addr
}

// speechctl runs the command and returns its exit code, stdout and stderr.
func speechctl(t *testing.T, addr, stdin string, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	env := map[string]string{"SPEECHCTL_GRPC_ADDR": addr, "SPEECHCTL_TOKEN": "any-key"}
	err := run(context.Background(), args, func(k string) string { return env[k] }, strings.NewReader(stdin), &out, &errOut)
	return exitCode(err, &errOut), out.String(), errOut.String()
}

func TestSynthesizeWritesAWAVFile(t *testing.T) {
	t.Parallel()
	addr := gateway(t)
	path := filepath.Join(t.TempDir(), "hello.wav")
	code, _, stderr := speechctl(t, addr, "", "synthesize", "Hello from speechctl.", "--out", path, "--sample-rate-hz", "16000")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	d := wav.NewDecoder(f)
	if !d.IsValidFile() {
		t.Fatal("not a valid WAV file")
	}
	if err := d.FwdToPCM(); err != nil {
		t.Fatal(err)
	}
	// 21 characters at 60 ms: 1.26 s of 16 kHz PCM16. A header still saying
	// "unknown length" would claim 0xFFFFFFFF bytes.
	if d.SampleRate != 16000 || d.NumChans != 1 || d.BitDepth != 16 || d.PCMSize != 1260*32 {
		t.Errorf("WAV: %d Hz, %d channels, %d bits, %d bytes of PCM", d.SampleRate, d.NumChans, d.BitDepth, d.PCMSize)
	}
	if !strings.Contains(stderr, "1.26 s of 16000 Hz wav") {
		t.Errorf("summary = %q", stderr)
	}
}

func TestSynthesizeToStdoutAndFromStdin(t *testing.T) {
	t.Parallel()
	addr := gateway(t)
	code, stdout, stderr := speechctl(t, addr, "Ten chars.", "synthesize", "--file", "-", "--out", "-", "--encoding", "mulaw", "--sample-rate-hz", "8000")
	if code != 0 || len(stdout) != 10*480 {
		t.Fatalf("exit %d, %d bytes of μ-law (want %d): %s", code, len(stdout), 10*480, stderr)
	}
}

func TestTranscribeAndLive(t *testing.T) {
	t.Parallel()
	addr := gateway(t)
	const text = "Speechctl transcribes files. It also listens live."
	path := filepath.Join(t.TempDir(), "speech.wav")
	if code, _, stderr := speechctl(t, addr, "", "synthesize", text, "--out", path, "--sample-rate-hz", "16000"); code != 0 {
		t.Fatal(stderr)
	}
	code, stdout, stderr := speechctl(t, addr, "", "transcribe", path)
	if code != 0 || strings.TrimSpace(stdout) != text {
		t.Fatalf("transcribe: exit %d, %q, %s", code, stdout, stderr)
	}
	code, stdout, _ = speechctl(t, addr, "", "transcribe", "--output", "json", path)
	var tr struct {
		Text            string `json:"text"`
		AudioDurationMs int    `json:"audioDurationMs"`
	}
	if err := json.Unmarshal([]byte(stdout), &tr); code != 0 || err != nil || tr.Text != text || tr.AudioDurationMs != 3000 {
		t.Errorf("transcribe --output json: exit %d, %+v, %v", code, tr, err)
	}
	code, stdout, _ = speechctl(t, addr, "", "transcribe", "--output", "words", path)
	if lines := strings.Split(strings.TrimSpace(stdout), "\n"); code != 0 || len(lines) != 8 || !strings.Contains(lines[0], "START") {
		t.Errorf("transcribe --output words: exit %d, %q", code, stdout)
	}
	code, stdout, stderr = speechctl(t, addr, "", "live", "--realtime=false", path)
	if code != 0 || strings.Join(strings.Fields(stdout), " ") != text {
		t.Errorf("live: exit %d, %q, %s", code, stdout, stderr)
	}
}

func TestVoices(t *testing.T) {
	t.Parallel()
	addr := gateway(t)
	code, stdout, _ := speechctl(t, addr, "", "voices", "--language", "hi")
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	if code != 0 || len(lines) != 5 || !strings.HasPrefix(lines[0], "VOICE") || !strings.HasPrefix(lines[1], "meher") {
		t.Errorf("voices: exit %d, %q", code, stdout)
	}
}

func TestErrorsAndExitCodes(t *testing.T) {
	t.Parallel()
	addr := gateway(t)
	dead, _ := net.Listen("tcp", "127.0.0.1:0")
	deadAddr := dead.Addr().String()
	dead.Close()
	tests := []struct {
		name       string
		args       []string
		wantCode   int
		wantStderr []string
	}{
		{name: "bad request", args: []string{"synthesize", "--voice-id", "nobody", "--out", "-", "hi"}, wantCode: 2,
			wantStderr: []string{"InvalidArgument", "field voice_id: Invalid Voice ID", "reason UPSTREAM_INVALID_ARGUMENT; Smallest request id "}},
		{name: "validation", args: []string{"synthesize", "--speed", "9", "--out", "-", "hi"}, wantCode: 2,
			wantStderr: []string{"field speed: must be from 0.5 to 2.0"}},
		{name: "usage", args: []string{"synthesize"}, wantCode: 2, wantStderr: []string{"no text"}},
		{name: "unknown command", args: []string{"dance"}, wantCode: 2, wantStderr: []string{`unknown command "dance"`}},
		{name: "no credentials", args: []string{"--token", "", "voices"}, wantCode: 3, wantStderr: []string{"Unauthenticated"}},
		{name: "gateway down", args: []string{"--grpc-addr", deadAddr, "voices"}, wantCode: 4, wantStderr: []string{"Unavailable"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			env := map[string]string{"SPEECHCTL_GRPC_ADDR": addr}
			if tt.name != "no credentials" {
				env["SPEECHCTL_TOKEN"] = "any-key"
			}
			var out, errOut bytes.Buffer
			err := run(context.Background(), tt.args, func(k string) string { return env[k] }, strings.NewReader(""), &out, &errOut)
			if code := exitCode(err, &errOut); code != tt.wantCode {
				t.Errorf("exit %d, want %d; stderr %q", code, tt.wantCode, errOut.String())
			}
			for _, want := range tt.wantStderr {
				if !strings.Contains(errOut.String(), want) {
					t.Errorf("stderr %q lacks %q", errOut.String(), want)
				}
			}
		})
	}
}

func TestProgressLine(t *testing.T) {
	t.Parallel()
	addr := gateway(t)
	_, _, stderr := speechctl(t, addr, "", "--progress", "always", "synthesize", "--out", "-", strings.Repeat("word ", 20))
	if !strings.Contains(stderr, "\r\033[K-: ") || !strings.Contains(stderr, "first audio after") {
		t.Errorf("no progress line on stderr: %q", stderr)
	}
}

// TestFailedSynthesisKeepsTheOldFile: a run that fails leaves an existing
// file as it was, creates no new one, and leaves no temporary file behind.
func TestFailedSynthesisKeepsTheOldFile(t *testing.T) {
	t.Parallel()
	addr := gateway(t)
	dir := t.TempDir()
	old := filepath.Join(dir, "old.wav")
	if err := os.WriteFile(old, []byte("precious"), 0o644); err != nil {
		t.Fatal(err)
	}
	fresh := filepath.Join(dir, "new.wav")
	for _, path := range []string{old, fresh} {
		if code, _, _ := speechctl(t, addr, "", "synthesize", "Hello.", "--voice-id", "nobody", "--out", path); code == 0 {
			t.Fatalf("%s: a synthesis with an unknown voice succeeded", path)
		}
	}
	if b, err := os.ReadFile(old); err != nil || string(b) != "precious" {
		t.Errorf("the existing file now holds %q (%v)", b, err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("the directory holds %v; want only old.wav", names)
	}
	// A run that succeeds replaces the file whole.
	if code, _, stderr := speechctl(t, addr, "", "synthesize", "Hello.", "--out", old); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if info, err := os.Stat(old); err != nil || info.Size() < 1000 || info.Mode().Perm() != 0o644 {
		t.Errorf("after a good run: %v, %v", info, err)
	}
}

func TestHelpAndVersion(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--version"}, "speechctl "},
		{[]string{"synthesize", "-h"}, "Usage: speechctl [global flags] synthesize [flags] [TEXT]"},
		{[]string{"transcribe", "-h"}, "Usage: speechctl [global flags] transcribe [flags] FILE"},
	} {
		code, stdout, stderr := speechctl(t, "localhost:1", "", tt.args...)
		if code != 0 || !strings.HasPrefix(stdout, tt.want) {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want %q first", tt.args, code, stdout, stderr, tt.want)
		}
	}
}

// TestRefusesWhatItCannotDo: live refuses formats it cannot stream, and
// synthesize an output it cannot write, rather than doing something else
// without a word; a text file's final newline is not part of its text.
func TestRefusesWhatItCannotDo(t *testing.T) {
	t.Parallel()
	addr := gateway(t)
	dir := t.TempDir()
	mp3 := filepath.Join(dir, "call.mp3")
	os.WriteFile(mp3, append([]byte("ID3\x04\x00\x00\x00\x00\x00\x00"), make([]byte, 1000)...), 0o644)
	if code, _, stderr := speechctl(t, addr, "", "live", mp3); code != 2 || !strings.Contains(stderr, "is MP3") {
		t.Errorf("live on an MP3: exit %d, %q", code, stderr)
	}
	if code, _, stderr := speechctl(t, addr, "", "synthesize", "Hello.", "--out", filepath.Join(dir, "x.ogg")); code != 2 || !strings.Contains(stderr, "cannot write x.ogg") {
		t.Errorf("synthesize to .ogg: exit %d, %q", code, stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, "x.ogg")); err == nil {
		t.Error("an .ogg file was written")
	}
	text := filepath.Join(dir, "text.txt")
	os.WriteFile(text, []byte(strings.Repeat("a", 10000)+"\n"), 0o644)
	if code, _, stderr := speechctl(t, addr, "", "synthesize", "--file", text, "--out", filepath.Join(dir, "long.pcm")); code != 0 {
		t.Errorf("a 10,000-character file with its final newline: exit %d, %q", code, stderr)
	}
}

func TestConverse(t *testing.T) {
	t.Parallel()
	addr := gateway(t)
	dir := t.TempDir()
	// A turn of "speech" the emulated Hydra hears and echoes: 800 ms of a
	// loud tone at 16 kHz, in a WAV file.
	in := filepath.Join(dir, "question.wav")
	pcm := make([]byte, 2*12800)
	for i := range 12800 {
		s := int16(8000 * math.Sin(2*math.Pi*300*float64(i)/16000))
		pcm[2*i], pcm[2*i+1] = byte(s), byte(uint16(s)>>8)
	}
	if err := os.WriteFile(in, append(audio.AppendWAVHeader(nil, 16000, 1, 16, uint32(len(pcm))), pcm...), 0o600); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "answer.wav")
	code, _, stderr := speechctl(t, addr, "", "converse", "--realtime=false", "--tools", "lookup", "--sample-rate-hz", "16000", "--out", out, in)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	for _, want := range []string{"conversation sess_", "you speak", "you stop", "tool call lookup(", "answer resp_", "completed", "first audio"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("the output lacks %q:\n%s", want, stderr)
		}
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	d := wav.NewDecoder(f)
	if err := d.FwdToPCM(); err != nil {
		t.Fatal(err)
	}
	// The echo of the 800 ms turn and 300 ms of the silence after it.
	if ms := d.PCMSize / 32; d.SampleRate != 16000 || ms < 1080 || ms > 1120 {
		t.Errorf("answer: %d Hz, %d ms; want 16000 Hz, about 1100 ms", d.SampleRate, ms)
	}

	if code, _, stderr := speechctl(t, addr, "", "converse", "--out", filepath.Join(dir, "a.mp3"), in); code != 2 || !strings.Contains(stderr, "writes WAV") {
		t.Errorf("--out a.mp3: exit %d, %s; want a usage error", code, stderr)
	}
}
