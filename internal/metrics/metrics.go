// Package metrics defines every Prometheus metric the gateway exports, in
// groups, each registered on a registry the caller passes in (nothing is
// global): Calls, the standard grpc_server_* families with failures by
// reason and active streams, kept by the server's interceptor chain;
// Speech, the measures of the speech itself (time to first audio, gaps
// between chunks, audio relayed), kept by the speech services; Upstream,
// Smallest's latency by endpoint, kept by the upstream client's HTTP
// transport; and the governance of the account (governance.go): Admission
// (the queue, budgets in force, refusals, retries), Fleet (Redis's state)
// and Quota (clients' refusals).
package metrics

import (
	"net/http"
	"strconv"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
)

// latencyBuckets suit times from a millisecond (the gateway's own overhead)
// to tens of seconds (a slow upstream).
var latencyBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}

// Calls measures the gateway's gRPC calls.
type Calls struct {
	// GRPC is the standard grpc_server_* families, with handling-time histograms.
	GRPC *grpcprom.ServerMetrics

	activeStreams *prometheus.GaugeVec
	failures      *prometheus.CounterVec
}

// NewCalls returns the call metrics, registered on reg.
func NewCalls(reg prometheus.Registerer) *Calls {
	m := &Calls{
		GRPC: grpcprom.NewServerMetrics(grpcprom.WithServerHandlingTimeHistogram(grpcprom.WithHistogramBuckets(latencyBuckets))),
		activeStreams: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "speechgate_active_streams",
			Help: "Streaming calls in progress.",
		}, []string{"method"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "speechgate_errors_total",
			Help: "Failed calls, by gRPC code and the reason in their google.rpc.ErrorInfo.",
		}, []string{"method", "code", "reason"}),
	}
	reg.MustRegister(m.GRPC, m.activeStreams, m.failures)
	return m
}

// method is the short method name used as a label: "Synthesize".
func method(fullMethod string) string {
	for i := len(fullMethod) - 1; i >= 0; i-- {
		if fullMethod[i] == '/' {
			return fullMethod[i+1:]
		}
	}
	return fullMethod
}

// StreamServerInterceptor counts the streams in progress.
func (m *Calls) StreamServerInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		g := m.activeStreams.WithLabelValues(method(info.FullMethod))
		g.Inc()
		defer g.Dec()
		return handler(srv, ss)
	}
}

// Failed counts a failed call of fullMethod by its code and ErrorInfo reason.
func (m *Calls) Failed(fullMethod string, code codes.Code, reason string) {
	m.failures.WithLabelValues(method(fullMethod), code.String(), reason).Inc()
}

// Speech measures the speech the gateway relays.
type Speech struct {
	timeToFirstAudio *prometheus.HistogramVec
	chunkGap         *prometheus.HistogramVec
	audioBytes       *prometheus.CounterVec
	audioSeconds     *prometheus.CounterVec
	answerLatency    prometheus.Histogram
	conversation     *prometheus.CounterVec
}

// NewSpeech returns the speech metrics, registered on reg.
func NewSpeech(reg prometheus.Registerer) *Speech {
	m := &Speech{
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
		audioBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "speechgate_audio_bytes_total",
			Help: "Bytes of audio relayed: direction \"out\" is synthesized audio sent to callers, \"in\" is audio callers sent to be transcribed.",
		}, []string{"method", "direction"}),
		audioSeconds: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "speechgate_audio_seconds_total",
			Help: "Seconds of synthesized audio sent to callers (MP3 is not counted: its length is not known without decoding).",
		}, []string{"method"}),
		answerLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "speechgate_conversation_answer_latency_seconds",
			Help:    "Converse: time from the end of the user's speech (Hydra's speech_stopped) to the first audio of the answer sent to the caller.",
			Buckets: latencyBuckets,
		}),
		conversation: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "speechgate_conversation_events_total",
			Help: "Converse events: event is \"response\", \"barge_in\" (a response interrupted while speaking), \"tool_call\", \"error\" (non-fatal) or \"stale_audio_dropped\".",
		}, []string{"event"}),
	}
	reg.MustRegister(m.timeToFirstAudio, m.chunkGap, m.audioBytes, m.audioSeconds, m.answerLatency, m.conversation)
	return m
}

// AudioIn counts audio a caller sent to be transcribed.
func (m *Speech) AudioIn(method string, n int) {
	m.audioBytes.WithLabelValues(method, "in").Add(float64(n))
}

// AudioOut counts audio sent to a caller outside a synthesis stream.
func (m *Speech) AudioOut(method string, n int) {
	m.audioBytes.WithLabelValues(method, "out").Add(float64(n))
}

// AnswerLatency records the time from the end of a user's speech to the
// first audio of the answer.
func (m *Speech) AnswerLatency(d time.Duration) { m.answerLatency.Observe(d.Seconds()) }

// ConversationEvent counts an event of a conversation.
func (m *Speech) ConversationEvent(event string) { m.conversation.WithLabelValues(event).Inc() }

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
func (m *Speech) Stream(method string) *Stream {
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

// Upstream measures the requests to Smallest.
type Upstream struct {
	duration *prometheus.HistogramVec
}

// NewUpstream returns the upstream metrics, registered on reg.
func NewUpstream(reg prometheus.Registerer) *Upstream {
	m := &Upstream{duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "speechgate_upstream_request_duration_seconds",
		Help:    "Time from sending a request to Smallest to its response headers, by endpoint and HTTP status (\"error\" when there was no response).",
		Buckets: latencyBuckets,
	}, []string{"endpoint", "status"})}
	reg.MustRegister(m.duration)
	return m
}

// Transport returns base wrapped to record each upstream request's latency
// to response headers and its status, by endpoint. Endpoints are the method
// and path, which the gateway takes from a fixed set, so labels stay few.
func (m *Upstream) Transport(base http.RoundTripper) http.RoundTripper {
	return roundTripper(func(r *http.Request) (*http.Response, error) {
		start := time.Now()
		resp, err := base.RoundTrip(r)
		code := "error"
		if err == nil {
			code = strconv.Itoa(resp.StatusCode)
		}
		m.duration.WithLabelValues(r.Method+" "+r.URL.Path, code).Observe(time.Since(start).Seconds())
		return resp, err
	})
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
