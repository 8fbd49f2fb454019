// Command speechctl is the command-line client of speechgate: synthesize text
// to audio, transcribe a recording, recognize a file in real time, hold a
// spoken conversation, and list voices. Run `speechctl help` for its commands and flags.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/speechgate/speechgate/internal/buildinfo"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(exitCode(err, os.Stderr))
}

// client is what every command gets: the connection, the streams it reads
// and writes, and whether stderr is a terminal for progress lines.
type client struct {
	conn           *grpc.ClientConn
	stdin          io.Reader
	stdout, stderr io.Writer
	terminal       bool
}

var commands = []struct {
	name, usage, summary string
	flags                func(fs *flag.FlagSet) func(ctx context.Context, c *client, args []string) error
}{
	{"synthesize", "[flags] [TEXT]", "speak TEXT (or --file, or stdin) to a WAV, MP3 or raw audio file", synthesizeFlags},
	{"transcribe", "[flags] FILE", "transcribe a recording (- for stdin), streamed to the gateway in pieces", transcribeFlags},
	{"live", "[flags] FILE", "feed a WAV or raw PCM file to realtime recognition, at the pace of speech", liveFlags},
	{"converse", "[flags] FILE", "hold a spoken conversation with Hydra: play a 16 kHz WAV in, write the answers to a WAV", converseFlags},
	{"voices", "[flags]", "list the voices and what each can do", voicesFlags},
}

// run is the whole program. Its error decides the exit code (see exitCode).
// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func run(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) error {
	global := flag.NewFlagSet("speechctl", flag.ContinueOnError)
	global.SetOutput(io.Discard)
	addr := global.String("grpc-addr", envOr(getenv, "SPEECHCTL_GRPC_ADDR", "localhost:50051"), "the gateway's address (env SPEECHCTL_GRPC_ADDR)")
	// The token's default is not shown in --help: it may be a secret.
	token := global.String("token", "", "bearer token: your Smallest key with --auth=passthrough, or a client key (env SPEECHCTL_TOKEN, else SMALLEST_API_KEY)")
	useTLS := global.Bool("tls", false, "connect with TLS instead of plaintext h2c")
	caFile := global.String("tls-ca", "", "PEM file of the CA that signed the gateway's certificate (default: the system's)")
	timeout := global.Duration("timeout", 0, "deadline for the call (0: none)")
	requestID := global.String("request-id", "", "x-request-id for the call, to find it in the gateway's logs (default: one is made)")
	progress := global.String("progress", "auto", "progress lines on stderr: auto (when it is a terminal), always, never")
	showVersion := global.Bool("version", false, "print the version and exit")
	if err := global.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			usage(stdout, global)
			return nil
		}
		return usageError{err}
	}
	if *showVersion {
		fmt.Fprintln(stdout, "speechctl", buildinfo.Read(version))
		return nil
	}
	rest := global.Args()
	if len(rest) == 0 || rest[0] == "help" {
		usage(stdout, global)
		if len(rest) == 0 {
			return usageError{errors.New("no command given")}
		}
		return nil
	}
	var cmd func(ctx context.Context, c *client, args []string) error
	fs := flag.NewFlagSet("speechctl "+rest[0], flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var usageLine, summary string
	for _, c := range commands {
		if c.name == rest[0] {
			cmd, usageLine, summary = c.flags(fs), c.usage, c.summary
		}
	}
	if cmd == nil {
		return usageError{fmt.Errorf("unknown command %q: want synthesize, transcribe, live or voices", rest[0])}
	}
	positional, err := parseInterleaved(fs, rest[1:])
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(stdout, "Usage: speechctl [global flags] %s %s\n\n%s.\n\nFlags:\n", rest[0], usageLine, summary)
			fs.SetOutput(stdout)
			fs.PrintDefaults()
			return nil
		}
		return usageError{err}
	}

	creds := insecure.NewCredentials()
	if *useTLS {
		cfg := &tls.Config{MinVersion: tls.VersionTLS12}
		if *caFile != "" {
			pem, err := os.ReadFile(*caFile)
			if err != nil {
				return usageError{err}
			}
			cfg.RootCAs = x509.NewCertPool()
			if !cfg.RootCAs.AppendCertsFromPEM(pem) {
				return usageError{fmt.Errorf("--tls-ca %s holds no PEM certificate", *caFile)}
			}
		}
		creds = credentials.NewTLS(cfg)
	}
	conn, err := grpc.NewClient(*addr, grpc.WithTransportCredentials(creds),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20), grpc.MaxCallSendMsgSize(64<<20)),
		// Fixed windows turn off gRPC's bandwidth estimation, which would
		// otherwise ping the gateway at nearly every frame of real-time
		// audio (BENCHMARKS.md); 1 MiB a stream is ample for audio.
		grpc.WithInitialWindowSize(1<<20), grpc.WithInitialConnWindowSize(16<<20))
	if err != nil {
		return usageError{err}
	}
	defer conn.Close()

	if *token == "" {
		*token = envOr(getenv, "SPEECHCTL_TOKEN", getenv("SMALLEST_API_KEY"))
	}
	if *token != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+*token)
	}
	if *requestID != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "x-request-id", *requestID)
	}
	if *timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *timeout)
		defer cancel()
	}
	c := &client{conn: conn, stdin: stdin, stdout: stdout, stderr: stderr}
	switch *progress {
	case "always":
		c.terminal = true
	case "never":
	case "auto":
		c.terminal = isTerminal(stderr)
	default:
		return usageError{fmt.Errorf("--progress=%q: want auto, always or never", *progress)}
	}
	return cmd(ctx, c, positional)
}

// parseInterleaved parses flags wherever they stand among the arguments, so
// that `synthesize "Hello" --out hi.wav` works; "--" ends the flags.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return positional, nil
		}
		if args[0] == "--" {
			return append(positional, args[1:]...), nil
		}
		positional = append(positional, args[0])
		args = args[1:]
	}
}

func envOr(getenv func(string) string, key, def string) string {
	if v := getenv(key); v != "" {
		return v
	}
	return def
}

// isTerminal reports whether w is a terminal, where a progress line that
// rewrites itself is welcome.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

func usage(w io.Writer, global *flag.FlagSet) {
	fmt.Fprint(w, "speechctl is the command-line client of speechgate.\n\nUsage: speechctl [global flags] COMMAND [flags] [args]\n\nCommands:\n")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-11s %-16s %s\n", c.name, c.usage, c.summary)
	}
	fmt.Fprint(w, "\nGlobal flags:\n")
	global.SetOutput(w)
	global.PrintDefaults()
	fmt.Fprint(w, "\nRun 'speechctl COMMAND -h' for a command's flags. Exit codes: 0 success, 1 other failure, "+
		"2 a bad request or usage, 3 credentials refused, 4 worth retrying (unavailable, rate limited, timed out), 130 interrupted.\n")
}

// progressLine rewrites one status line on a terminal.
type progressLine struct {
	w    io.Writer
	on   bool
	last time.Time
}

func (p *progressLine) update(force bool, format string, args ...any) {
	if !p.on || (!force && time.Since(p.last) < 100*time.Millisecond) {
		return
	}
	p.last = time.Now()
	fmt.Fprintf(p.w, "\r\033[K"+format, args...)
}

func (p *progressLine) done() {
	if p.on {
		fmt.Fprintln(p.w)
	}
}
