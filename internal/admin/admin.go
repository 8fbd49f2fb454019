// Package admin serves the HTTP endpoints that operators and probes use
// beside the gRPC port: Prometheus metrics, liveness and readiness for
// probes that cannot speak gRPC, and, only when asked for, pprof.
package admin

import (
	"io"
	"net/http"
	"net/http/pprof"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Config configures the handler.
type Config struct {
	// Gatherer is the registry /metrics serves.
	Gatherer prometheus.Gatherer
	// Ready reports whether the gateway takes new calls; /readyz answers
	// 503 when it does not (while draining, or while a self-hosted upstream
	// is unhealthy).
	Ready func() bool
	// Pprof serves /debug/pprof/. Off by default: profiles expose internals.
	Pprof bool
}

// Handler returns the admin endpoints.
func Handler(cfg Config) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(cfg.Gatherer, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, "ok\n") // the process is alive, draining or not
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !cfg.Ready() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ready\n")
	})
	if cfg.Pprof {
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	return mux
}
