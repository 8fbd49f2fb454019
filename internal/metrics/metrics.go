// Package metrics defines every Prometheus metric the gateway exports: the
// standard grpc_server_* families, and the speech measures on-call needs on
// top of them (time to first audio, gaps between chunks, upstream latency by
// endpoint, audio relayed, active streams, errors by reason). Everything is
// registered on a registry the caller passes in; nothing is global.
package metrics

import (
	"context"
	"net/http"
	"strconv"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
)

// Metrics holds the gateway's metrics.
type Metrics struct {
	// GRPC is the standard grpc_server_* families, with handling-time histograms.
	GRPC *grpcprom.ServerMetrics

	timeToFirstAudio *prometheus.HistogramVec
	chunkGap         *prometheus.HistogramVec
	upstreamDuration *prometheus.HistogramVec
	audioBytes       *prometheus.CounterVec
	audioSeconds     *prometheus.CounterVec
	activeStreams    *prometheus.GaugeVec
	errors           *prometheus.CounterVec
}

// latencyBuckets suit times from a millisecond (the gateway's own overhead)
// to tens of seconds (a slow upstream).
var latencyBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}

// New returns the metrics, registered on reg together with the Go runtime
// and process collectors.
func New(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		GRPC: grpcprom.NewServerMetrics(grpcprom.WithServerHandlingTimeHistogram(grpcprom.WithHistogramBuckets(latencyBuckets))),
		timeToFirstAudio: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "speechgate_time_to_first_audio_seconds",
			Help:    "Time from the start of a synthesis call to its first audio message.",
			Buckets: latencyBuckets,
		}, []string{"method"}),
		chunkGap: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "speechgate_audio_chunk_gap_seconds",
			Help:    "Time between consecutive audio messages of a synthesis stream.",
			Buckets: latencyBuckets,
		}, []string{"method"}),
		upstreamDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "speechgate_upstream_request_duration_seconds",
			Help:    "Time from sending a request to Smallest to its response headers, by endpoint and HTTP status (\"error\" when there was no response).",
			Buckets: latencyBuckets,
		}, []string{"endpoint", "status"}),
		audioBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "speechgate_audio_bytes_total",
			Help: "Bytes of audio relayed: direction \"out\" is synthesized audio sent to callers, \"in\" is audio callers sent to be transcribed.",
		}, []string{"method", "direction"}),
		audioSeconds: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "speechgate_audio_seconds_total",
			Help: "Seconds of synthesized audio sent to callers (MP3 is not counted: its length is not known without decoding).",
		}, []string{"method"}),
		activeStreams: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "speechgate_active_streams",
			Help: "Streaming calls in progress.",
		}, []string{"method"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "speechgate_errors_total",
			Help: "Failed calls, by gRPC code and the reason in their google.rpc.ErrorInfo.",
		}, []string{"method", "code", "reason"}),
	}
	reg.MustRegister(m.GRPC, m.timeToFirstAudio, m.chunkGap, m.upstreamDuration, m.audioBytes, m.audioSeconds, m.activeStreams, m.errors,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Discard returns metrics registered nowhere, for tests and tools.
func Discard() *Metrics { return New(prometheus.NewRegistry()) }

// method is the short method name used as a label: "Synthesize".
func method(fullMethod string) string {
	for i := len(fullMethod) - 1; i >= 0; i-- {
		if fullMethod[i] == '/' {
			return fullMethod[i+1:]
		}
	}
	return fullMethod
}

// UnaryServerInterceptor counts failures by reason. It goes outside error
// translation, so that it sees the final status.
func (m *Metrics) UnaryServerInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		resp, err := handler(ctx, req)
		m.countError(info.FullMethod, err)
		return resp, err
	}
}

// StreamServerInterceptor counts active streams and failures by reason.
func (m *Metrics) StreamServerInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		g := m.activeStreams.WithLabelValues(method(info.FullMethod))
		g.Inc()
		defer g.Dec()
		err := handler(srv, ss)
		m.countError(info.FullMethod, err)
		return err
	}
}

func (m *Metrics) countError(fullMethod string, err error) {
	if err == nil {
		return
	}
	st := status.Convert(err)
	reason := ""
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			reason = info.GetReason()
			break
		}
	}
	m.errors.WithLabelValues(method(fullMethod), st.Code().String(), reason).Inc()
}

// AudioIn counts audio a caller sent to be transcribed.
func (m *Metrics) AudioIn(method string, n int) {
	m.audioBytes.WithLabelValues(method, "in").Add(float64(n))
}

// Stream measures one synthesis stream as its audio goes out. Its series
// are looked up once, not for every chunk.
type Stream struct {
	start, last time.Time
	firstAudio  prometheus.Observer
	gap         prometheus.Observer
	bytes       prometheus.Counter
	seconds     prometheus.Counter
}

// Stream starts measuring a synthesis stream of method, begun now.
func (m *Metrics) Stream(method string) *Stream {
	return &Stream{start: time.Now(),
		firstAudio: m.timeToFirstAudio.WithLabelValues(method), gap: m.chunkGap.WithLabelValues(method),
		bytes: m.audioBytes.WithLabelValues(method, "out"), seconds: m.audioSeconds.WithLabelValues(method)}
}

// Audio records n bytes of audio sent.
func (s *Stream) Audio(n int) {
	now := time.Now()
	if s.last.IsZero() {
		s.firstAudio.Observe(now.Sub(s.start).Seconds())
	} else {
		s.gap.Observe(now.Sub(s.last).Seconds())
	}
	s.last = now
	s.bytes.Add(float64(n))
}

// Done records the length of the audio the stream carried.
func (s *Stream) Done(audioMS uint32) {
	s.seconds.Add(float64(audioMS) / 1000)
}

// Transport returns base wrapped to record each upstream request's latency
// to response headers and its status, by endpoint. Endpoints are the method
// and path, which the gateway takes from a fixed set, so labels stay few.
func (m *Metrics) Transport(base http.RoundTripper) http.RoundTripper {
	return roundTripper(func(r *http.Request) (*http.Response, error) {
		start := time.Now()
		resp, err := base.RoundTrip(r)
		code := "error"
		if err == nil {
			code = strconv.Itoa(resp.StatusCode)
		}
		m.upstreamDuration.WithLabelValues(r.Method+" "+r.URL.Path, code).Observe(time.Since(start).Seconds())
		return resp, err
	})
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
