package main

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	speechv1 "github.com/speechgate/speechgate/gen/speech/v1"
)

// otlpReceiver is a stand-in OTLP/HTTP collector: it keeps the spans posted to it.
type otlpReceiver struct {
	mu    sync.Mutex
	spans map[string][]string // span names by hex trace id
}

func (o *otlpReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	var req collectortrace.ExportTraceServiceRequest
	if err := proto.Unmarshal(body, &req); err != nil {
		http.Error(w, err.Error(), 400)
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, rs := range req.GetResourceSpans() {
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				id := fmt.Sprintf("%x", s.GetTraceId())
				o.spans[id] = append(o.spans[id], s.GetName())
			}
		}
	}
	w.Header().Set("Content-Type", "application/x-protobuf")
	w.Write(nil)
}

func (o *otlpReceiver) names(traceID string) []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]string(nil), o.spans[traceID]...)
}

// scrape returns the admin server's metrics.
func scrape(t *testing.T, admin string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return families
}

// sample returns the value of a counter, or a histogram's count, for the
// series with all the given labels.
func sample(families map[string]*dto.MetricFamily, name string, labels map[string]string) float64 {
	var total float64
	for _, m := range families[name].GetMetric() {
		match := 0
		for _, l := range m.GetLabel() {
			if v, ok := labels[l.GetName()]; ok && v == l.GetValue() {
				match++
			}
		}
		if match != len(labels) {
			continue
		}
		switch {
		case m.GetCounter() != nil:
			total += m.GetCounter().GetValue()
		case m.GetHistogram() != nil:
			total += float64(m.GetHistogram().GetSampleCount())
		case m.GetGauge() != nil:
			total += m.GetGauge().GetValue()
		}
	}
	return total
}

// TestTelemetry runs the gateway in front of an independent upstream with an
// OTLP receiver, and checks metrics, traces and the probe endpoints. It sets
// process environment for the OpenTelemetry SDK, so it is not parallel.
func TestTelemetry(t *testing.T) {
	receiver := &otlpReceiver{spans: map[string][]string{}}
	collector := httptest.NewServer(receiver)
	t.Cleanup(collector.Close)
	var traceparents sync.Map
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		traceparents.Store(r.Header.Get("traceparent"), true)
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("X-Request-Id", "up-1")
		fmt.Fprintf(w, "event: audio\ndata: {\"audio\": %q, \"done\": false, \"status\": \"206\"}\n\n", base64.StdEncoding.EncodeToString(make([]byte, 4800)))
		io.WriteString(w, "data: {\"status\": \"200\", \"done\": true}\n\n")
	}))
	t.Cleanup(upstream.Close)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.URL)
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "50")

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	pr, pw := io.Pipe()
	logs := newLogWatcher()
	adminAddr := make(chan string, 1)
	go func() {
		logs.consume(io.TeeReader(pr, adminLine(adminAddr)))
	}()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"--grpc-addr=127.0.0.1:0", "--admin-addr=127.0.0.1:0", "--http-addr=", "--pprof", "--smallest-base-url=" + upstream.URL},
			os.Getenv, io.Discard, pw)
		pw.Close()
	}()
	conn := dial(t, logs.waitAddr(t))
	admin := <-adminAddr
	synth := speechv1.NewSynthesisServiceClient(conn)

	before := scrape(t, admin)
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	call := metadata.AppendToOutgoingContext(t.Context(), "authorization", "Bearer sk_caller_key_0001",
		"traceparent", "00-"+traceID+"-00f067aa0ba902b7-01")
	for range 3 {
		stream, err := synth.Synthesize(call, &speechv1.SynthesizeRequest{Text: "Hello.", VoiceId: "avery"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := finish(stream); err != nil {
			t.Fatal(err)
		}
	}
	bad, _ := synth.Synthesize(call, &speechv1.SynthesizeRequest{Text: "", VoiceId: "avery"})
	finish(bad)
	after := scrape(t, admin)

	method := map[string]string{"grpc_method": "Synthesize"}
	tests := []struct {
		name   string
		labels map[string]string
		delta  float64
	}{
		{"grpc_server_handled_total", map[string]string{"grpc_method": "Synthesize", "grpc_code": "OK"}, 3},
		{"grpc_server_handling_seconds", method, 4},
		{"speechgate_time_to_first_audio_seconds", map[string]string{"method": "Synthesize"}, 3},
		{"speechgate_audio_bytes_total", map[string]string{"method": "Synthesize", "direction": "out"}, 3 * 4800},
		{"speechgate_audio_seconds_total", map[string]string{"method": "Synthesize"}, 3 * 0.1},
		// The same text three times: synthesized once, then served from the cache.
		{"speechgate_upstream_request_duration_seconds", map[string]string{"endpoint": "POST /waves/v1/tts/live", "status": "200"}, 1},
		{"speechgate_synthesis_cache_lookups_total", map[string]string{"outcome": "miss"}, 1},
		{"speechgate_synthesis_cache_lookups_total", map[string]string{"outcome": "hit_memory"}, 2},
		{"speechgate_synthesis_cache_time_to_first_audio_seconds", map[string]string{"outcome": "hit_memory"}, 2},
		{"speechgate_synthesis_cache_time_to_first_audio_seconds", map[string]string{"outcome": "miss"}, 1},
		{"speechgate_errors_total", map[string]string{"method": "Synthesize", "code": "InvalidArgument", "reason": "INVALID_REQUEST"}, 1},
	}
	for _, tt := range tests {
		if got := sample(after, tt.name, tt.labels) - sample(before, tt.name, tt.labels); got < tt.delta-1e-9 || got > tt.delta+1e-9 {
			t.Errorf("%s%v moved by %g, want %g", tt.name, tt.labels, got, tt.delta)
		}
	}
	if _, ok := after["speechgate_active_streams"]; !ok {
		t.Error("speechgate_active_streams is not exported")
	}

	// The caller's trace reached the upstream, and the spans were exported.
	if _, ok := traceparents.Load(""); ok {
		t.Error("a request reached the upstream without a traceparent")
	}
	found := false
	traceparents.Range(func(k, _ any) bool {
		found = found || strings.Contains(k.(string), traceID)
		return true
	})
	if !found {
		t.Error("the caller's trace id did not reach the upstream")
	}
	waitUntil(t, func() bool {
		names := strings.Join(receiver.names(traceID), ",")
		return strings.Contains(names, "speech.v1.SynthesisService/Synthesize") && strings.Contains(names, "HTTP POST")
	})

	for path, want := range map[string]int{"/healthz": 200, "/readyz": 200, "/debug/pprof/": 200, "/nope": 404} {
		resp, err := http.Get("http://" + admin + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET %s = %d, want %d", path, resp.StatusCode, want)
		}
	}
	conn.Close()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not return")
	}
}

// adminLine is a writer that finds the admin server's address in the log.
func adminLine(addr chan<- string) io.Writer {
	return writerFunc(func(p []byte) (int, error) {
		s := string(p)
		if i := strings.Index(s, `"msg":"serving admin HTTP","addr":"`); i >= 0 {
			rest := s[i+len(`"msg":"serving admin HTTP","addr":"`):]
			select {
			case addr <- rest[:strings.IndexByte(rest, '"')]:
			default:
			}
		}
		return len(p), nil
	})
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// TestTraceContextReachesSmallestUntraced: with no OTLP export configured,
// calls are not traced, but the caller's trace context still reaches
// Smallest, as the README says.
func TestTraceContextReachesSmallestUntraced(t *testing.T) {
	t.Parallel()
	var traceparents sync.Map
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		traceparents.Store(r.Header.Get("traceparent"), true)
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprintf(w, "event: audio\ndata: {\"audio\": %q, \"done\": false, \"status\": \"206\"}\n\n", base64.StdEncoding.EncodeToString(make([]byte, 4800)))
		io.WriteString(w, "data: {\"status\": \"200\", \"done\": true}\n\n")
	}))
	t.Cleanup(upstream.Close)
	r := startRun(t, "--grpc-addr=127.0.0.1:0", "--admin-addr=", "--http-addr=", "--smallest-base-url="+upstream.URL)
	conn := dial(t, r.addr)
	const traceID = "0af7651916cd43dd8448eb211c80319c"
	call := metadata.AppendToOutgoingContext(t.Context(), "authorization", "Bearer sk_caller_key_0001",
		"traceparent", "00-"+traceID+"-b7ad6b7169203331-01")
	stream, err := speechv1.NewSynthesisServiceClient(conn).Synthesize(call, &speechv1.SynthesizeRequest{Text: "Hello.", VoiceId: "avery"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := finish(stream); err != nil {
		t.Fatal(err)
	}
	conn.Close()
	r.stop(t)
	found := false
	traceparents.Range(func(k, _ any) bool {
		found = found || strings.HasPrefix(k.(string), "00-"+traceID+"-")
		return true
	})
	if !found {
		t.Error("the caller's trace id did not reach the upstream")
	}
}
