package metrics_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/speechgate/speechgate/internal/metrics"
)

func TestCalls(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	m := metrics.NewCalls(reg)
	m.Failed("/speech.v1.SynthesisService/Synthesize", codes.ResourceExhausted, "UPSTREAM_RATE_LIMITED")
	m.Failed("/speech.v1.SynthesisService/Synthesize", codes.ResourceExhausted, "UPSTREAM_RATE_LIMITED")
	want := `
# HELP speechgate_errors_total Failed calls, by gRPC code and the reason in their google.rpc.ErrorInfo.
# TYPE speechgate_errors_total counter
speechgate_errors_total{code="ResourceExhausted",method="Synthesize",reason="UPSTREAM_RATE_LIMITED"} 2
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "speechgate_errors_total"); err != nil {
		t.Error(err)
	}

	// Active streams rise while a stream runs and fall when it ends.
	var during float64
	handler := func(any, grpc.ServerStream) error {
		during = gauge(t, reg, "speechgate_active_streams")
		return nil
	}
	m.StreamServerInterceptor()(nil, nil, &grpc.StreamServerInfo{FullMethod: "/speech.v1.TranscriptionService/TranscribeLive"}, handler)
	if during != 1 {
		t.Errorf("active streams during the call: %v, want 1", during)
	}
	if after := gauge(t, reg, "speechgate_active_streams"); after != 0 {
		t.Errorf("active streams after the call: %v, want 0", after)
	}
}

// gauge reads the one series of a gauge family from reg.
func gauge(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == name && len(f.GetMetric()) == 1 {
			return f.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no single %s series", name)
	return 0
}

func TestSpeech(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	m := metrics.NewSpeech(reg)
	s := m.Stream("Synthesize")
	s.Audio(960)
	s.Audio(960)
	s.Done(1500)
	m.AudioIn("TranscribeUpload", 4096)
	for _, tt := range []struct {
		family string
		want   string
	}{
		{"speechgate_audio_bytes_total", `
# HELP speechgate_audio_bytes_total Bytes of audio relayed: direction "out" is synthesized audio sent to callers, "in" is audio callers sent to be transcribed.
# TYPE speechgate_audio_bytes_total counter
speechgate_audio_bytes_total{direction="in",method="TranscribeUpload"} 4096
speechgate_audio_bytes_total{direction="out",method="Synthesize"} 1920
`},
		{"speechgate_audio_seconds_total", `
# HELP speechgate_audio_seconds_total Seconds of synthesized audio sent to callers (MP3 is not counted: its length is not known without decoding).
# TYPE speechgate_audio_seconds_total counter
speechgate_audio_seconds_total{method="Synthesize"} 1.5
`},
	} {
		if err := testutil.GatherAndCompare(reg, strings.NewReader(tt.want), tt.family); err != nil {
			t.Error(err)
		}
	}
	// One first audio and one gap were observed.
	families, _ := reg.Gather()
	counts := map[string]uint64{}
	for _, f := range families {
		for _, mm := range f.GetMetric() {
			if h := mm.GetHistogram(); h != nil {
				counts[f.GetName()] = h.GetSampleCount()
			}
		}
	}
	if counts["speechgate_time_to_first_audio_seconds"] != 1 || counts["speechgate_audio_chunk_gap_seconds"] != 1 {
		t.Errorf("histogram samples: %v", counts)
	}
}

type roundTrip func(*http.Request) (*http.Response, error)

func (f roundTrip) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestUpstreamTransport(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	tr := metrics.NewUpstream(reg).Transport(roundTrip(func(r *http.Request) (*http.Response, error) {
		if r.URL.Path == "/fail" {
			return nil, errors.New("refused")
		}
		return &http.Response{StatusCode: 429, Body: http.NoBody}, nil
	}))
	for _, path := range []string{"/waves/v1/tts/live", "/fail"} {
		req, _ := http.NewRequestWithContext(context.Background(), http.MethodPost, "http://upstream"+path, nil)
		if resp, err := tr.RoundTrip(req); err == nil {
			resp.Body.Close()
		}
	}
	families, _ := reg.Gather()
	got := map[string]bool{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			labels := ""
			for _, l := range m.GetLabel() {
				labels += l.GetName() + "=" + l.GetValue() + " "
			}
			got[strings.TrimSpace(labels)] = m.GetHistogram().GetSampleCount() == 1
		}
	}
	for _, want := range []string{"endpoint=POST /waves/v1/tts/live status=429", "endpoint=POST /fail status=error"} {
		if !got[want] {
			t.Errorf("no single sample for %q in %v", want, got)
		}
	}
}
