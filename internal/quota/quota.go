// Package quota holds each client to its quotas, in keys mode: requests,
// synthesis characters and transcription audio seconds per minute, and
// streaming calls at once, as its line of the keys file sets them. A call
// over a quota is refused with RESOURCE_EXHAUSTED, a QuotaFailure naming the
// client (never its key) and a RetryInfo saying when the quota allows it.
// Every response carries the client's quota state in its headers:
//
//	x-speechgate-quota-limit-<quota>      the limit
//	x-speechgate-quota-remaining-<quota>  what is left now
//	x-speechgate-quota-reset-<quota>      seconds until all of it is back
//
// for each quota the client has: requests, characters, audio-seconds and
// streams (which has no reset). The state is a fleet.Store, so that
// replicas sharing a Redis share each client's quotas.
package quota

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/speechgate/speechgate/internal/auth"
	"github.com/speechgate/speechgate/internal/fleet"
	"github.com/speechgate/speechgate/internal/metrics"
	"github.com/speechgate/speechgate/internal/rpcerror"
)

// The quotas, by the name headers and metrics use.
const (
	Requests     = "requests"
	Characters   = "characters"
	AudioSeconds = "audio-seconds"
	Streams      = "streams"
)

// HeaderPrefix starts every quota header.
const HeaderPrefix = "x-speechgate-quota-"

// Config configures Quotas.
type Config struct {
	// Limits returns a client's quotas by name, as the keys file says now.
	Limits func(client string) auth.Limits
	// Store keeps the counts. Required.
	Store fleet.Store
	// Metrics, when set, counts refusals.
	Metrics *metrics.Quota
}

// Quotas holds clients to their quotas. It is safe for concurrent use.
type Quotas struct {
	limits  func(string) auth.Limits
	store   fleet.Store
	metrics *metrics.Quota
}

// New returns Quotas for cfg.
func New(cfg Config) *Quotas {
	return &Quotas{limits: cfg.Limits, store: cfg.Store, metrics: cfg.Metrics}
}

type meterKey struct{}

// meter is one call's access to its client's quotas.
type meter struct {
	q      *Quotas
	client string
	limits auth.Limits
}

// perMinute is the rate of a quota of n per minute.
func perMinute(n int) fleet.Rate { return fleet.Rate{Count: float64(n), Period: time.Minute} }

func (m *meter) key(quota string) string { return "quota:" + m.client + ":" + quota }

// Admit charges a call's start to its caller's quotas: a request, and a
// stream if it is one. It returns the context the call runs in, which
// carries what Charge needs, and the function to call when the call ends.
// A caller without quotas is admitted as it is.
func (q *Quotas) Admit(ctx context.Context, fullMethod string, streaming bool) (context.Context, func(), error) {
	client := auth.Caller(ctx)
	m := &meter{q: q, client: client, limits: q.limits(client)}
	if m.limits == (auth.Limits{}) {
		return ctx, func() {}, nil
	}
	ctx = context.WithValue(ctx, meterKey{}, m)
	md := metadata.MD{}
	if n := m.limits.RequestsPerMinute; n > 0 {
		st, err := q.store.Rate(ctx, m.key(Requests), perMinute(n), 1, false)
		if err != nil {
			return nil, nil, err
		}
		m.state(md, Requests, n, st)
		if !st.Allowed {
			grpc.SetHeader(ctx, md)
			return nil, nil, m.refuse(Requests, "requests_per_minute", n, 1, st)
		}
	}
	release := func() {}
	if n := m.limits.ConcurrentStreams; n > 0 && streaming {
		g, err := q.store.Acquire(ctx, m.key(Streams), n, fleet.Ticket{}, false)
		if err != nil {
			return nil, nil, err
		}
		used := g.InUse
		if !g.Granted() {
			used = n
		}
		md.Set(HeaderPrefix+"limit-"+Streams, strconv.Itoa(n))
		md.Set(HeaderPrefix+"remaining-"+Streams, strconv.Itoa(max(0, n-used)))
		if !g.Granted() {
			grpc.SetHeader(ctx, md)
			q.metrics.Refused(client, "concurrent_streams")
			return nil, nil, rpcerror.Exhausted(
				fmt.Sprintf("client %q already has its %d concurrent streams open; retry when one ends", client, n),
				rpcerror.ReasonQuotaExceeded, map[string]string{"quota": "concurrent_streams", "limit": strconv.Itoa(n), "client": client},
				"client:"+client, fmt.Sprintf("concurrent streams (%d at most)", n), time.Second)
		}
		release = func() { q.store.Release(g.Lease) }
	}
	if err := m.usage(ctx, md); err != nil {
		release()
		return nil, nil, err
	}
	grpc.SetHeader(ctx, md)
	// The trailers say what the call left of the quotas it spent as it went.
	return ctx, func() {
		release()
		end := metadata.MD{}
		if m.usage(context.WithoutCancel(ctx), end) == nil && end.Len() > 0 {
			grpc.SetTrailer(ctx, end)
		}
	}, nil
}

// usage writes the state of the characters and audio-seconds quotas, which
// calls spend as they go, into md.
func (m *meter) usage(ctx context.Context, md metadata.MD) error {
	for _, quota := range []string{Characters, AudioSeconds} {
		if n := m.limit(quota); n > 0 {
			st, err := m.q.store.Rate(ctx, m.key(quota), perMinute(n), 0, false) // a look, not a charge
			if err != nil {
				return err
			}
			m.state(md, quota, n, st)
		}
	}
	return nil
}

// state writes a quota's state into headers.
func (m *meter) state(md metadata.MD, quota string, limit int, st fleet.RateState) {
	md.Set(HeaderPrefix+"limit-"+quota, strconv.Itoa(limit))
	md.Set(HeaderPrefix+"remaining-"+quota, strconv.Itoa(int(math.Floor(st.Remaining))))
	md.Set(HeaderPrefix+"reset-"+quota, strconv.FormatFloat(math.Ceil(st.Reset.Seconds()*10)/10, 'f', -1, 64))
}

// refuse is the status of a charge of cost over a quota of limit per minute.
func (m *meter) refuse(quota, option string, limit int, cost float64, st fleet.RateState) error {
	m.q.metrics.Refused(m.client, option)
	unit := strings.ReplaceAll(quota, "-", " ")
	meta := map[string]string{"quota": option, "limit": strconv.Itoa(limit), "client": m.client,
		"cost": strconv.FormatFloat(cost, 'f', -1, 64), "remaining": strconv.Itoa(int(st.Remaining))}
	desc := fmt.Sprintf("%s per minute (%d at most)", unit, limit)
	if cost > float64(limit) {
		// No wait makes it fit: say so, and give no RetryInfo.
		return rpcerror.Exhausted(fmt.Sprintf("this needs %s %s, more than client %q's quota of %d per minute allows at once; split it",
			strconv.FormatFloat(math.Ceil(cost), 'f', -1, 64), unit, m.client, limit),
			rpcerror.ReasonQuotaExceeded, meta, "client:"+m.client, desc, 0)
	}
	retry := st.RetryAfter.Round(time.Millisecond)
	return rpcerror.Exhausted(fmt.Sprintf("client %q has used its quota of %d %s per minute; retry in %s",
		m.client, limit, unit, retry), rpcerror.ReasonQuotaExceeded, meta, "client:"+m.client, desc, retry)
}

func from(ctx context.Context) *meter {
	m, _ := ctx.Value(meterKey{}).(*meter)
	return m
}

// Charge takes n characters (quota Characters) or seconds of audio (quota
// AudioSeconds) from the caller's quota, or refuses them whole with a
// RESOURCE_EXHAUSTED status if they do not fit. A caller without that
// quota is not charged.
func Charge(ctx context.Context, quota string, n float64) error {
	return charge(ctx, quota, n, false)
}

// Debit takes n from the caller's quota however much is left, into debt:
// for usage known only once it has happened (the length of a recording
// transcribed), which the caller's next calls then wait to pay off.
func Debit(ctx context.Context, quota string, n float64) error {
	return charge(ctx, quota, n, true)
}

// Check refuses when the caller's quota is spent (in debt, or nothing
// left), before work whose cost will be known only afterwards.
func Check(ctx context.Context, quota string) error {
	m := from(ctx)
	limit := m.limit(quota)
	if limit == 0 {
		return nil
	}
	st, err := m.q.store.Rate(ctx, m.key(quota), perMinute(limit), 0, false)
	if err != nil {
		return err
	}
	if st.Remaining < 1 {
		st.RetryAfter = st.Reset - time.Minute + time.Minute/time.Duration(limit)
		return m.refuse(quota, option(quota), limit, 1, st)
	}
	return nil
}

func charge(ctx context.Context, quota string, n float64, force bool) error {
	m := from(ctx)
	limit := m.limit(quota)
	if limit == 0 || n <= 0 {
		return nil
	}
	st, err := m.q.store.Rate(ctx, m.key(quota), perMinute(limit), n, force)
	if err != nil {
		return err
	}
	if !st.Allowed && !force {
		return m.refuse(quota, option(quota), limit, n, st)
	}
	return nil
}

// limit is the caller's limit per minute of quota; 0 without one (or
// without a meter).
func (m *meter) limit(quota string) int {
	if m == nil {
		return 0
	}
	switch quota {
	case Characters:
		return m.limits.CharactersPerMinute
	case AudioSeconds:
		return m.limits.AudioSecondsPerMinute
	}
	return 0
}

// option is the keys file's name of a quota.
func option(quota string) string {
	switch quota {
	case Characters:
		return "characters_per_minute"
	case AudioSeconds:
		return "audio_seconds_per_minute"
	}
	return quota
}
