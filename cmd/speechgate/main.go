// Command speechgate serves Smallest AI's speech APIs over gRPC. See the
// README, or run `speechgate --help` for its settings.
package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	noopmetric "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/trace"

	speechv1 "github.com/speechgate/speechgate/gen/speech/v1"
	"github.com/speechgate/speechgate/internal/admin"
	"github.com/speechgate/speechgate/internal/admission"
	"github.com/speechgate/speechgate/internal/auth"
	"github.com/speechgate/speechgate/internal/buildinfo"
	"github.com/speechgate/speechgate/internal/config"
	"github.com/speechgate/speechgate/internal/contract"
	"github.com/speechgate/speechgate/internal/correlation"
	"github.com/speechgate/speechgate/internal/emulator"
	"github.com/speechgate/speechgate/internal/fleet"
	"github.com/speechgate/speechgate/internal/httpapi"
	"github.com/speechgate/speechgate/internal/metrics"
	"github.com/speechgate/speechgate/internal/probe"
	"github.com/speechgate/speechgate/internal/quota"
	"github.com/speechgate/speechgate/internal/smallest"
	"github.com/speechgate/speechgate/internal/speech"
	"github.com/speechgate/speechgate/internal/synthcache"
	"github.com/speechgate/speechgate/internal/tokens"
	"github.com/speechgate/speechgate/internal/tracing"
	"github.com/speechgate/speechgate/server"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	// The first signal starts the drain; the second, with the default
	// handling restored, ends the process at once.
	context.AfterFunc(ctx, stop)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	if err != nil {
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
	switch {
	case errors.Is(err, config.ErrHelp):
		return nil
	case errors.Is(err, config.ErrVersion):
		fmt.Fprintln(stdout, "speechgate", buildinfo.Read(version))
		return nil
	}
	if err != nil {
		return err
	}
	log := newLogger(cfg, stderr)

	// Telemetry: an explicit Prometheus registry, and tracing that exports
	// only when the OTEL_* variables ask for it.
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	tr, err := tracing.New(ctx, getenv, version)
	if err != nil {
		return fmt.Errorf("tracing: %w", err)
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := tr.Shutdown(sctx); err != nil { // flush the spans not yet exported
			log.Warn("flushing traces", "err", err)
		}
	}()

	// The upstream: Smallest's cloud, its self-hosted server, or the
	// built-in emulator on loopback.
	baseURL, usBaseURL := cfg.BaseURL(), cfg.SmallestUSBaseURL
	upstreamKey := cfg.SmallestAPIKey
	switch cfg.Upstream {
	case config.UpstreamEmulator:
		emu, err := startEmulator(cfg, log)
		if err != nil {
			return err
		}
		defer emu.Close()
		baseURL, usBaseURL = emu.URL, emu.URL+emulator.USPrefix
		upstreamKey = cmp.Or(upstreamKey, "emulator") // the emulator accepts any key
	case config.UpstreamSelfhost:
		upstreamKey = cmp.Or(cfg.SmallestLicenseKey, "unused") // with --selfhost-auth-scheme=none no key is sent
	}

	// Callers, and the key each call uses upstream.
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
	authn.EnableTokens(cfg.TokenSigningKeys)
	if cfg.Auth == auth.ModeKeys && cfg.KeysFileCheckInterval > 0 {
		// Keys are rotated by rewriting the file (a Kubernetes Secret's
		// mount is), without a restart.
		wctx, stopWatch := context.WithCancel(ctx)
		watched := make(chan struct{})
		go func() {
			defer close(watched)
			authn.WatchKeysFile(wctx, cfg.KeysFile, cfg.KeysFileCheckInterval, log)
		}()
		defer func() { stopWatch(); <-watched }()
	}

	// What the replicas share: budgets of the Smallest account and the
	// clients' quotas, in Redis when there is one, else in this process.
	var store fleet.Store = fleet.NewLocal()
	if cfg.RedisURL != "" {
		fleet.SetLibraryLogger(log.With("component", "redis"))
		shared, err := fleet.NewRedis(fleet.RedisConfig{URL: cfg.RedisURL, FleetSize: cfg.FleetSize,
			Log: log.With("component", "fleet"), Metrics: metrics.NewFleet(reg)})
		if err != nil {
			return err
		}
		defer shared.Close()
		store = shared
	}
	admissionMetrics := metrics.NewAdmission(reg)
	gate := admission.New(admission.Config{
		Budgets: map[string]int{
			smallest.UseSynthesis: cfg.BudgetSynthesis, smallest.UseWebSocket: cfg.BudgetWebSockets,
			smallest.UseLive: cfg.BudgetLiveSessions, smallest.UseTranscription: cfg.BudgetTranscriptions,
		},
		MaxWait: cfg.AdmissionMaxWait, Store: store, Metrics: admissionMetrics,
	})
	var quotas server.Quota
	if cfg.Auth == auth.ModeKeys {
		quotas = quota.New(quota.Config{Limits: authn.Limits, Store: store, Metrics: metrics.NewQuota(reg)})
	}

	// The client of the upstream. Its transport records upstream latency by
	// endpoint and carries the caller's trace context.
	httpClient := &http.Client{Transport: metrics.NewUpstream(reg).Transport(otelhttp.NewTransport(
		smallest.NewTransport(cfg.UpstreamTimeout, cfg.UpstreamIdleConnTimeout),
		otelhttp.WithTracerProvider(tr.Provider), otelhttp.WithPropagators(tr.Propagator),
		otelhttp.WithFilter(smallest.Traceable), // a span would record Hydra's URL, key and all
		otelhttp.WithMeterProvider(noopmetric.NewMeterProvider())))}
	up, err := newUpstream(cfg, httpClient, baseURL, usBaseURL, authn.UpstreamKey, gate, admissionMetrics.Retried)
	if err != nil {
		return err
	}
	defer up.close()

	// The synthesis cache, in the process and, with Redis, shared.
	cacheRedis := cfg.RedisURL
	if cfg.SynthesisCacheRedisBytes == 0 {
		cacheRedis = ""
	}
	cache, err := synthcache.New(synthcache.Config{Bytes: cfg.SynthesisCacheBytes, MaxEntryBytes: cfg.SynthesisCacheMaxEntryBytes,
		TTL: cfg.SynthesisCacheTTL, Shared: cfg.SynthesisCacheShared, RedisURL: cacheRedis, RedisBytes: int64(cfg.SynthesisCacheRedisBytes),
		Log: log.With("component", "synthesis-cache"), Metrics: metrics.NewCache(reg)})
	if err != nil {
		return err
	}
	defer cache.Close() // after the drain: no call reads it any more

	// The speech services, and the gRPC server they register on.
	speechOpts := speech.Options{PieceChars: cfg.SynthesisPieceChars, Lookahead: cfg.SynthesisLookahead, Metrics: metrics.NewSpeech(reg),
		Cache: cache}
	tlsConfig, err := loadTLS(cfg.TLSCert, cfg.TLSKey)
	if err != nil {
		return err
	}
	docs, err := contract.Descriptors()
	if err != nil {
		return fmt.Errorf("the contract's descriptors: %w", err)
	}
	var traced trace.TracerProvider // nil: calls are not traced; their trace context still reaches Smallest
	if tr.Exporting {
		traced = tr.Provider
	}
	srv, err := server.New(server.Config{
		Logger:                log,
		Authenticate:          authn.Authenticate,
		Registerer:            reg,
		TracerProvider:        traced,
		Propagator:            tr.Propagator,
		MaxRecvMsgBytes:       cfg.MaxRecvMsgBytes,
		MaxSendMsgBytes:       cfg.MaxSendMsgBytes,
		KeepaliveMinTime:      cfg.KeepaliveMinTime,
		MaxConnectionAge:      cfg.MaxConnectionAge,
		MaxConnectionAgeGrace: cfg.MaxConnectionAgeGrace,
		TLS:                   tlsConfig,
		CallerStallTimeout:    cfg.CallerStallTimeout,
		Descriptors:           docs,
		Quota:                 quotas,
	}, speech.NewSynthesis(up, speechOpts), speech.NewTranscription(up, speechOpts), speech.NewConversation(up, speechOpts),
		tokens.New(authn.Tokens())) // last: a token may name the methods registered before it
	if err != nil {
		return err
	}
	if !up.Capabilities().Synthesis {
		srv.SetServing(speechv1.SynthesisService_ServiceDesc.ServiceName, false)
	}
	lis, err := net.Listen("tcp", cfg.GRPCAddr)
	if err != nil {
		return err
	}
	log.Info("serving gRPC", "addr", lis.Addr().String(), "tls", tlsConfig != nil, "upstream", cfg.Upstream,
		"smallest_base_url", baseURL, "auth", cfg.Auth, "tracing", tr.Exporting, "version", buildinfo.Read(version).String(),
		"budgets", fmt.Sprintf("synthesis=%d websockets=%d live=%d transcriptions=%d (0: unlimited)",
			cfg.BudgetSynthesis, cfg.BudgetWebSockets, cfg.BudgetLiveSessions, cfg.BudgetTranscriptions),
		"shared_state", sharedState(cfg.RedisURL))

	// The admin server: metrics, probes, and pprof when asked for.
	if cfg.AdminAddr != "" {
		adminLis, err := net.Listen("tcp", cfg.AdminAddr)
		if err != nil {
			lis.Close()
			return err
		}
		adminSrv := &http.Server{Handler: admin.Handler(admin.Config{Gatherer: reg, Ready: srv.Ready, Pprof: cfg.Pprof}),
			ReadHeaderTimeout: 10 * time.Second}
		go func() {
			if err := adminSrv.Serve(adminLis); !errors.Is(err, http.ErrServerClosed) {
				log.Error("admin HTTP stopped", "err", err)
			}
		}()
		defer adminSrv.Close() // after the drain, so that /metrics and /readyz answer through it
		log.Info("serving admin HTTP", "addr", adminLis.Addr().String(), "pprof", cfg.Pprof)
	}

	// HTTP access: Connect, gRPC-Web and REST transcoded onto the gRPC
	// server, and audio over plain HTTP through an in-process client.
	var httpSrv *http.Server
	if cfg.HTTPAddr != "" {
		httpLis, err := net.Listen("tcp", cfg.HTTPAddr)
		if err != nil {
			lis.Close()
			return err
		}
		self, err := srv.InProcess(tlsConfig)
		if err != nil {
			httpLis.Close()
			lis.Close()
			return err
		}
		defer self.Close()
		h, err := httpapi.New(httpapi.Config{Server: srv.GRPCServer(), Conn: self, CORSOrigins: cfg.CORSOrigins,
			Logger: log})
		if err != nil {
			httpLis.Close()
			lis.Close()
			return err
		}
		httpSrv = &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, TLSConfig: tlsConfig, Protocols: new(http.Protocols)}
		httpSrv.Protocols.SetHTTP1(true)
		httpSrv.Protocols.SetHTTP2(true)
		httpSrv.Protocols.SetUnencryptedHTTP2(true) // h2c, for Connect and gRPC-Web streams without TLS
		go func() {
			var err error
			if tlsConfig != nil {
				err = httpSrv.ServeTLS(httpLis, "", "")
			} else {
				err = httpSrv.Serve(httpLis)
			}
			if !errors.Is(err, http.ErrServerClosed) {
				log.Error("HTTP access stopped", "err", err)
			}
		}()
		log.Info("serving HTTP", "addr", httpLis.Addr().String(), "tls", tlsConfig != nil, "cors_origins", strings.Join(cfg.CORSOrigins, ","))
	}

	// Health follows a self-hosted server's own.
	probing := make(chan struct{})
	if up.healthy == nil {
		close(probing)
	} else {
		go func() {
			defer close(probing)
			followHealth(ctx, cfg, srv, up.Capabilities().Synthesis, up.healthy, log)
		}()
	}

	// Serve until the context ends, then drain.
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	select {
	case err := <-served:
		return fmt.Errorf("serving gRPC: %w", err)
	case <-ctx.Done():
	}
	log.Info("shutting down: draining calls in flight (a second signal stops at once)", "grace", cfg.ShutdownGrace)
	start := time.Now()
	var httpDrained sync.WaitGroup
	if httpSrv != nil {
		// HTTP calls in flight are gRPC calls in process: the gRPC drain
		// finishes or cuts them; this stops new HTTP requests meanwhile.
		httpDrained.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownGrace+5*time.Second)
			defer cancel()
			if err := httpSrv.Shutdown(ctx); err != nil {
				httpSrv.Close()
			}
		})
	}
	drained := srv.Shutdown(cfg.ShutdownGrace)
	httpDrained.Wait()
	if err := <-served; err != nil {
		return fmt.Errorf("serving gRPC: %w", err)
	}
	<-probing
	log.Info("stopped", "drained", drained, "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// sharedState names where budgets and quotas are kept, for the log: the
// Redis server's address, never its URL, which may hold a password.
func sharedState(redisURL string) string {
	if redisURL == "" {
		return "this process"
	}
	if u, err := url.Parse(redisURL); err == nil {
		return "redis at " + u.Host
	}
	return "redis"
}

// upstream is the configured Smallest's client.
type upstream struct {
	speech.Upstream
	// close releases the client's pooled connections.
	close func()
	// healthy checks the upstream's health endpoint; nil: nothing to follow.
	healthy func(context.Context) error
}

// newUpstream returns the client of the configured Smallest: its cloud (or
// the emulator, which speaks the cloud's API), or its self-hosted server.
func newUpstream(cfg *config.Config, hc *http.Client, baseURL, usBaseURL string, credential func(context.Context) string,
	gate smallest.Gate, onRetry func(endpoint, reason string)) (*upstream, error) {
	if cfg.Upstream != config.UpstreamSelfhost {
		client, err := smallest.New(smallest.Config{
			BaseURL:           baseURL,
			USBaseURL:         usBaseURL,
			HTTPClient:        hc,
			Credential:        credential,
			IdleTimeout:       cfg.UpstreamIdleTimeout,
			ResponseTimeout:   cfg.UpstreamTimeout,
			StreamIdleTimeout: cfg.StreamIdleTimeout,
			StreamPoolSize:    cfg.StreamPoolSize,
			Keepalive:         smallest.Keepalive{Interval: cfg.UpstreamPingInterval, Timeout: cfg.UpstreamPongTimeout},
			VoicesTTL:         cfg.VoicesCacheTTL,
			UserAgent:         "speechgate/" + version,
			Gate:              gate,
			MaxAttempts:       cfg.UpstreamMaxAttempts,
			OnRetry:           onRetry,
		})
		if err != nil {
			return nil, err
		}
		return &upstream{Upstream: client, close: client.Close}, nil
	}
	scheme := cfg.SelfhostAuthScheme
	if scheme == "none" {
		scheme, credential = "", func(context.Context) string { return "" }
	}
	sh, err := smallest.NewSelfHost(smallest.SelfHostConfig{
		BaseURL:         baseURL,
		HTTPClient:      hc,
		Credential:      credential,
		AuthScheme:      scheme,
		TranscribePath:  cfg.SelfhostTranscribePath,
		Format:          smallest.UploadFormat(cfg.SelfhostUploadFormat),
		UserAgent:       "speechgate/" + version,
		MaxUploadBytes:  int64(cfg.SelfhostMaxUploadBytes),
		Gate:            gate,
		SpeakPath:       cfg.SelfhostSpeakPath,
		SpeakSampleRate: cfg.SelfhostSpeakSampleRate,
	})
	if err != nil {
		return nil, err
	}
	return &upstream{Upstream: sh, close: func() {},
		healthy: func(ctx context.Context) error { return sh.Healthy(ctx, cfg.SelfhostHealthPath) }}, nil
}

// followHealth makes the gateway's health, and that of each service the
// self-hosted server backs, follow the server's own, until ctx ends.
func followHealth(ctx context.Context, cfg *config.Config, srv *server.Server, synthesis bool, healthy func(context.Context) error, log *slog.Logger) {
	probe.Run(ctx, probe.Config{
		Check:    healthy,
		Interval: cfg.SelfhostHealthInterval,
		OnChange: func(ok bool, err error) {
			srv.SetServing("", ok)
			srv.SetServing(speechv1.TranscriptionService_ServiceDesc.ServiceName, ok)
			if synthesis {
				srv.SetServing(speechv1.SynthesisService_ServiceDesc.ServiceName, ok)
			}
			if ok {
				log.Info("the self-hosted server is healthy: serving")
			} else {
				log.Warn("the self-hosted server is unhealthy: reporting NOT_SERVING", "error", err)
			}
		},
	})
}

// newLogger returns the gateway's logger; every line written in a call's
// context carries the call's request_id.
func newLogger(cfg *config.Config, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: cfg.LogLevel, ReplaceAttr: humanDurations}
	var h slog.Handler = slog.NewJSONHandler(w, opts)
	if cfg.LogFormat == "text" {
		h = slog.NewTextHandler(w, opts)
	}
	return slog.New(correlation.Handler{Handler: h})
}

// humanDurations writes durations as people read them ("1.5s"), not as
// slog's JSON does (nanoseconds).
func humanDurations(_ []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() == slog.KindDuration {
		a.Value = slog.StringValue(a.Value.Duration().String())
	}
	return a
}

// emulatorServer is the built-in emulator serving on loopback.
type emulatorServer struct {
	URL string
	srv *http.Server
}

func (e *emulatorServer) Close() { e.srv.Close() }

func startEmulator(cfg *config.Config, log *slog.Logger) (*emulatorServer, error) {
	faults, err := emulator.ParseFaults(cfg.EmulatorFaults)
	if err != nil {
		return nil, fmt.Errorf("--emulator-faults: %w", err)
	}
	handler := emulator.New(emulator.Options{Pace: cfg.EmulatorPace, FirstByteDelay: cfg.EmulatorFirstByteDelay, Faults: faults,
		Concurrency: cfg.EmulatorConcurrency, Logger: log})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(lis); !errors.Is(err, http.ErrServerClosed) {
			log.Error("emulator stopped", "err", err)
		}
	}()
	url := "http://" + lis.Addr().String()
	log.Warn("upstream is the built-in EMULATOR, not Smallest AI: its audio is synthetic, and it transcribes only text it spoke itself",
		"emulator_url", url, "pace", cfg.EmulatorPace, "faults", cfg.EmulatorFaults, "concurrency", cfg.EmulatorConcurrency)
	return &emulatorServer{URL: url, srv: srv}, nil
}
