// Command speechgate serves Smallest AI's speech APIs over gRPC. See the
// README, or run `speechgate --help` for its settings.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/speechgate/speechgate/internal/auth"
	"github.com/speechgate/speechgate/internal/config"
	"github.com/speechgate/speechgate/internal/emulator"
	"github.com/speechgate/speechgate/internal/smallest"
	"github.com/speechgate/speechgate/server"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "speechgate:", err)
		os.Exit(1)
	}
}

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// run is the whole program: it serves until ctx ends (SIGTERM or SIGINT),
// then drains and returns nil.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg, err := config.Load(args, getenv, stdout)
	if errors.Is(err, config.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	log := newLogger(cfg, stderr)

	// The upstream: Smallest's cloud, or the built-in emulator on loopback.
	baseURL, upstreamKey := cfg.BaseURL(), cfg.SmallestAPIKey
	switch cfg.Upstream {
	case config.UpstreamEmulator:
		emu, err := startEmulator(cfg, log)
		if err != nil {
			return err
		}
		defer emu.Close()
		baseURL = emu.URL
		if upstreamKey == "" {
			upstreamKey = "emulator" // the emulator accepts any key
		}
	case config.UpstreamSelfhost:
		return errors.New("--upstream=selfhost is not available yet")
	}

	// Callers and the key each call uses upstream.
	var keys []auth.ClientKey
	if cfg.Auth == auth.ModeKeys {
		if keys, err = auth.ReadKeysFile(cfg.KeysFile); err != nil {
			return err
		}
	}
	authn, err := auth.New(cfg.Auth, upstreamKey, keys)
	if err != nil {
		return err
	}

	// The Smallest client.
	client, err := smallest.New(smallest.Config{
		BaseURL:     baseURL,
		HTTPClient:  &http.Client{Transport: smallest.NewTransport(cfg.UpstreamTimeout)},
		Credential:  authn.UpstreamKey,
		IdleTimeout: cfg.UpstreamIdleTimeout,
		UserAgent:   "speechgate/" + version,
	})
	if err != nil {
		return err
	}

	// The gRPC server.
	tlsConfig, err := loadTLS(cfg.TLSCert, cfg.TLSKey)
	if err != nil {
		return err
	}
	srv, err := server.New(server.Config{
		Logger:                log,
		Authenticate:          authn.Authenticate,
		Speech:                client,
		Transcription:         client,
		MaxRecvMsgBytes:       cfg.MaxRecvMsgBytes,
		MaxSendMsgBytes:       cfg.MaxSendMsgBytes,
		KeepaliveMinTime:      cfg.KeepaliveMinTime,
		MaxConnectionAge:      cfg.MaxConnectionAge,
		MaxConnectionAgeGrace: cfg.MaxConnectionAgeGrace,
		TLS:                   tlsConfig,
	})
	if err != nil {
		return err
	}
	lis, err := net.Listen("tcp", cfg.GRPCAddr)
	if err != nil {
		return err
	}
	log.Info("serving gRPC", "addr", lis.Addr().String(), "tls", tlsConfig != nil, "upstream", cfg.Upstream,
		"smallest_base_url", baseURL, "auth", cfg.Auth, "version", version)

	// Serve until the context ends, then drain.
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	select {
	case err := <-served:
		return fmt.Errorf("serving gRPC: %w", err)
	case <-ctx.Done():
	}
	log.Info("shutting down: draining calls in flight", "grace", cfg.ShutdownGrace)
	start := time.Now()
	drained := srv.Shutdown(cfg.ShutdownGrace)
	if err := <-served; err != nil {
		return fmt.Errorf("serving gRPC: %w", err)
	}
	log.Info("stopped", "drained", drained, "took", time.Since(start).Round(time.Millisecond))
	return nil
}

func newLogger(cfg *config.Config, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: cfg.LogLevel}
	if cfg.LogFormat == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

// emulatorServer is the built-in emulator serving on loopback.
type emulatorServer struct {
	URL string
	srv *http.Server
}

func (e *emulatorServer) Close() { e.srv.Close() }

func startEmulator(cfg *config.Config, log *slog.Logger) (*emulatorServer, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	handler := emulator.New(emulator.Options{Pace: cfg.EmulatorPace, FirstByteDelay: cfg.EmulatorFirstByteDelay, Logger: log})
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(lis)
	url := "http://" + lis.Addr().String()
	log.Warn("upstream is the built-in EMULATOR, not Smallest AI: its audio is synthetic, and it transcribes only text it spoke itself",
		"emulator_url", url, "pace", cfg.EmulatorPace)
	return &emulatorServer{URL: url, srv: srv}, nil
}
