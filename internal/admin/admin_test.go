package admin_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/speechgate/speechgate/internal/admin"
)

func TestAdminEndpoints(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	counter := prometheus.NewCounter(prometheus.CounterOpts{Name: "speechgate_test_total", Help: "A test counter."})
	reg.MustRegister(counter)
	counter.Add(3)
	var ready atomic.Bool
	ready.Store(true)
	for _, pprof := range []bool{false, true} {
		srv := httptest.NewServer(admin.Handler(admin.Config{Gatherer: reg, Ready: ready.Load, Pprof: pprof}))
		t.Cleanup(srv.Close)
		get := func(path string) (int, string) {
			resp, err := srv.Client().Get(srv.URL + path)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			return resp.StatusCode, string(b)
		}
		if code, body := get("/metrics"); code != 200 || !strings.Contains(body, "speechgate_test_total 3") {
			t.Errorf("/metrics: %d %.200q", code, body)
		}
		if code, _ := get("/healthz"); code != 200 {
			t.Errorf("/healthz: %d", code)
		}
		ready.Store(true)
		if code, _ := get("/readyz"); code != 200 {
			t.Errorf("/readyz when ready: %d", code)
		}
		ready.Store(false)
		if code, _ := get("/readyz"); code != http.StatusServiceUnavailable {
			t.Errorf("/readyz when draining: %d, want 503", code)
		}
		if code, _ := get("/healthz"); code != 200 {
			t.Errorf("/healthz while draining: %d; liveness must not fail", code)
		}
		wantPprof := http.StatusNotFound
		if pprof {
			wantPprof = http.StatusOK
		}
		if code, _ := get("/debug/pprof/"); code != wantPprof {
			t.Errorf("pprof %v: /debug/pprof/ answered %d, want %d", pprof, code, wantPprof)
		}
	}
}
