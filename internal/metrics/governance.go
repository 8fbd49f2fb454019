package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// waitBuckets suit queue waits, from none to the longest admission wait.
var waitBuckets = []float64{.0005, .001, .005, .01, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}

// Admission measures upstream admission: the queue, what it admits and
// refuses, and the budgets in force. Its methods are safe on a nil
// *Admission, which records nothing.
type Admission struct {
	depth    *prometheus.GaugeVec
	wait     *prometheus.HistogramVec
	outcomes *prometheus.CounterVec
	budget   *prometheus.GaugeVec
	refusals *prometheus.CounterVec
	retries  *prometheus.CounterVec
}

// NewAdmission returns the admission metrics, registered on reg.
func NewAdmission(reg prometheus.Registerer) *Admission {
	m := &Admission{
		depth: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "speechgate_admission_queue_depth",
			Help: "Calls of this replica waiting for an upstream slot, by use.",
		}, []string{"use"}),
		wait: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "speechgate_admission_wait_seconds",
			Help:    "Time calls waited for an upstream slot, by use; 0 for those admitted at once.",
			Buckets: waitBuckets,
		}, []string{"use"}),
		outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "speechgate_admission_total",
			Help: "Admission decisions, by use and outcome: admitted; rejected (the deadline left no time to wait); timed_out (no slot freed within the wait allowed); cancelled (the caller left while waiting).",
		}, []string{"use", "outcome"}),
		budget: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "speechgate_admission_budget",
			Help: "The concurrency budget in force at the last admission, by use: the configured one, or lower while one learned from upstream refusals applies (0: unlimited).",
		}, []string{"use"}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "speechgate_upstream_refusals_total",
			Help: "Upstream refusals for concurrency (HTTP 429, WebSocket close 1008), by use.",
		}, []string{"use"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "speechgate_upstream_retries_total",
			Help: "Upstream requests made again before any of their answer reached the caller, by endpoint and reason.",
		}, []string{"endpoint", "reason"}),
	}
	reg.MustRegister(m.depth, m.wait, m.outcomes, m.budget, m.refusals, m.retries)
	return m
}

// Queued counts a call starting (+1) or ending (-1) its wait.
func (m *Admission) Queued(use string, delta int) {
	if m != nil {
		m.depth.WithLabelValues(use).Add(float64(delta))
	}
}

// Decided records an admission decision and, when admitted, the wait.
func (m *Admission) Decided(use, outcome string, wait time.Duration, budget int) {
	if m == nil {
		return
	}
	m.outcomes.WithLabelValues(use, outcome).Inc()
	if outcome == "admitted" {
		m.wait.WithLabelValues(use).Observe(wait.Seconds())
	}
	m.budget.WithLabelValues(use).Set(float64(budget))
}

// Refused counts an upstream refusal for concurrency.
func (m *Admission) Refused(use string) {
	if m != nil {
		m.refusals.WithLabelValues(use).Inc()
	}
}

// Retried counts a retry of an upstream request.
func (m *Admission) Retried(endpoint, reason string) {
	if m != nil {
		m.retries.WithLabelValues(endpoint, reason).Inc()
	}
}

// Fleet follows the state the replicas share. Its methods are safe on a
// nil *Fleet.
type Fleet struct {
	shared    prometheus.Gauge
	fallbacks prometheus.Counter
}

// NewFleet returns the fleet metrics, registered on reg.
func NewFleet(reg prometheus.Registerer) *Fleet {
	m := &Fleet{
		shared: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "speechgate_fleet_redis_up",
			Help: "1 while budgets and quotas are shared through Redis; 0 while Redis is unreachable and this replica keeps to its local share.",
		}),
		fallbacks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "speechgate_fleet_redis_fallbacks_total",
			Help: "Times Redis became unreachable and this replica fell back to its local share.",
		}),
	}
	reg.MustRegister(m.shared, m.fallbacks)
	return m
}

// SetShared records whether Redis is in use.
func (m *Fleet) SetShared(up bool) {
	if m == nil {
		return
	}
	v := 0.0
	if up {
		v = 1
	}
	m.shared.Set(v)
}

// FellBack counts a fall back to the local share.
func (m *Fleet) FellBack() {
	if m != nil {
		m.fallbacks.Inc()
	}
}

// Quota measures per-client quotas. Its methods are safe on a nil *Quota.
type Quota struct {
	refused *prometheus.CounterVec
}

// NewQuota returns the quota metrics, registered on reg.
func NewQuota(reg prometheus.Registerer) *Quota {
	m := &Quota{refused: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "speechgate_quota_refused_total",
		Help: "Calls or parts of calls refused for a client's quota, by client name (from the keys file) and the quota.",
	}, []string{"client", "quota"})}
	reg.MustRegister(m.refused)
	return m
}

// Refused counts a refusal of client for quota.
func (m *Quota) Refused(client, quota string) {
	if m != nil {
		m.refused.WithLabelValues(client, quota).Inc()
	}
}

// Cache measures the synthesis cache. Its methods are safe on a nil *Cache.
type Cache struct {
	lookups   *prometheus.CounterVec
	stored    prometheus.Gauge
	reserved  prometheus.Gauge
	evictions prometheus.Counter
	ttfa      *prometheus.HistogramVec
}

// NewCache returns the cache metrics, registered on reg.
func NewCache(reg prometheus.Registerer) *Cache {
	m := &Cache{
		lookups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "speechgate_synthesis_cache_lookups_total",
			Help: "Text pieces looked up in the synthesis cache, by outcome: hit_memory, hit_redis, miss (synthesized, then stored), joined (shared a synthesis in flight), bypass (asked not to use the cache), not_found (cache-only and not cached).",
		}, []string{"outcome"}),
		stored: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "speechgate_synthesis_cache_bytes",
			Help: "Bytes of audio the in-process synthesis cache holds.",
		}),
		reserved: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "speechgate_synthesis_cache_reserved_bytes",
			Help: "Memory the in-process synthesis cache has taken for its blocks; never more than --synthesis-cache-bytes.",
		}),
		evictions: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "speechgate_synthesis_cache_evictions_total",
			Help: "Entries evicted from the in-process synthesis cache to make room.",
		}),
		ttfa: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "speechgate_synthesis_cache_time_to_first_audio_seconds",
			Help:    "Time from the start of a Synthesize call to its first audio message, by how its first text piece was served (hit, joined, miss, bypass).",
			Buckets: latencyBuckets,
		}, []string{"outcome"}),
	}
	reg.MustRegister(m.lookups, m.stored, m.reserved, m.evictions, m.ttfa)
	return m
}

// Looked counts a lookup by outcome.
func (m *Cache) Looked(outcome string) {
	if m != nil {
		m.lookups.WithLabelValues(outcome).Inc()
	}
}

// Usage records the in-process tier's bytes.
func (m *Cache) Usage(stored, reserved int) {
	if m != nil {
		m.stored.Set(float64(stored))
		m.reserved.Set(float64(reserved))
	}
}

// Evicted counts an eviction.
func (m *Cache) Evicted() {
	if m != nil {
		m.evictions.Inc()
	}
}

// FirstAudio records a call's time to first audio by the outcome of its
// first text piece.
func (m *Cache) FirstAudio(outcome string, d time.Duration) {
	if m != nil {
		m.ttfa.WithLabelValues(outcome).Observe(d.Seconds())
	}
}
