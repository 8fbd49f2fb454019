package fleet

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/speechgate/speechgate/internal/metrics"
)

// RedisConfig configures a Redis store.
type RedisConfig struct {
	// URL is the server's redis:// or rediss:// URL.
	URL string
	// FleetSize is how many replicas share the limits: while Redis cannot
	// be reached, each one keeps to 1/FleetSize of every limit. Default 1.
	FleetSize int
	// Log gets a warning when Redis becomes unreachable and a note when it
	// is back, once each time. Required.
	Log *slog.Logger
	// Metrics, when set, follows Redis's state.
	Metrics *metrics.Fleet
	// LeaseTTL is how long leases and places in queues outlive a replica
	// that stops renewing them. Default LeaseTTL.
	LeaseTTL time.Duration
}

// Redis is a Store in Redis, shared by every replica that uses the same
// server, with a fallback to a local share of each limit while the server
// cannot be reached.
type Redis struct {
	rdb     *redis.Client
	local   *Local // the fallback, and the notifier of this replica's waiters
	size    int
	ttl     time.Duration // of leases and places in queues
	log     *slog.Logger
	metrics *metrics.Fleet

	down     atomic.Bool
	probing  chan struct{} // closed to stop the probe of a down server
	mu       sync.Mutex
	held     map[string]map[string]bool // key → ids of the leases this replica holds in Redis
	waiting  map[string]map[string]bool // key → this replica's tickets in Redis queues
	stop     context.CancelFunc
	finished sync.WaitGroup
}

// prefix starts every Redis key and the channel the gateway uses.
const prefix = "speechgate:"

// changedChannel carries the keys whose slots may have freed.
const changedChannel = prefix + "changed"

// keyTTL bounds how long Redis keeps a key nobody renews.
func (r *Redis) keyTTL() int64 { return 3 * r.ttl.Milliseconds() }

// NewRedis connects to the Redis at cfg.URL. A server that cannot be
// reached now is not an error: the store starts on its local share and
// switches to Redis when it answers.
func NewRedis(cfg RedisConfig) (*Redis, error) {
	opts, err := redis.ParseURL(cfg.URL)
	if err != nil {
		// The URL may hold a password: name only what is wrong with it.
		return nil, errors.New("fleet: --redis-url is not a valid redis:// URL")
	}
	// Fail fast, and fall back to the local share, rather than make calls
	// wait on a server that does not answer.
	opts.DialTimeout = time.Second
	opts.ReadTimeout = 500 * time.Millisecond
	opts.WriteTimeout = 500 * time.Millisecond
	opts.MaxRetries = 1
	opts.DialerRetries = 1
	opts.ClientName = "speechgate"
	opts.DisableIdentity = true
	r := &Redis{
		rdb:     redis.NewClient(opts),
		local:   NewLocal(),
		size:    max(cfg.FleetSize, 1),
		ttl:     cmp.Or(cfg.LeaseTTL, LeaseTTL),
		log:     cfg.Log,
		metrics: cfg.Metrics,
		held:    map[string]map[string]bool{},
		waiting: map[string]map[string]bool{},
	}
	ctx, stop := context.WithCancel(context.Background())
	r.stop = stop
	r.metrics.SetShared(true)
	if err := r.rdb.Ping(ctx).Err(); err != nil {
		r.fail(err)
	}
	// Subscribed before the store is used, so that no release is missed;
	// with Redis down, go-redis subscribes once it can.
	ps := r.rdb.Subscribe(ctx, changedChannel)
	if !r.down.Load() {
		sctx, cancel := context.WithTimeout(ctx, time.Second)
		if _, err := ps.Receive(sctx); err != nil {
			r.fail(err)
		}
		cancel()
	}
	r.finished.Add(2)
	go r.subscribe(ctx, ps)
	go r.renew(ctx)
	return r, nil
}

// SetLibraryLogger routes go-redis's own log lines (dial failures while
// Redis is down, which the store reports once by itself) into log, at
// debug level. go-redis has one logger for the whole process, so this is
// for a program's main to call, once.
func SetLibraryLogger(log *slog.Logger) { redis.SetLogger(libraryLogger{log}) }

type libraryLogger struct{ log *slog.Logger }

func (l libraryLogger) Printf(ctx context.Context, format string, v ...any) {
	l.log.DebugContext(ctx, fmt.Sprintf(format, v...))
}

// Close stops the store's goroutines and closes its connections. Leases
// still held expire in Redis within LeaseTTL.
func (r *Redis) Close() error {
	r.stop()
	r.mu.Lock()
	if r.probing != nil {
		close(r.probing)
		r.probing = nil
	}
	r.mu.Unlock()
	r.finished.Wait()
	return r.rdb.Close()
}

// Shared reports whether the store is using Redis now, rather than its
// local share.
func (r *Redis) Shared() bool { return !r.down.Load() }

// fail switches to the local share after err, unless err is the caller's
// own context ending. It reports whether it was the former.
func (r *Redis) fail(err error) bool {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) && !isTimeout(err) {
		return false
	}
	if r.down.CompareAndSwap(false, true) {
		r.log.Warn("Redis is unreachable: each replica keeps to its own share of every limit until it is back",
			"error", err.Error(), "fleet_size", r.size)
		r.metrics.SetShared(false)
		r.metrics.FellBack()
		r.mu.Lock()
		r.probing = make(chan struct{})
		stop := r.probing
		r.mu.Unlock()
		r.finished.Add(1)
		go r.probe(stop)
	}
	return true
}

// isTimeout reports whether err is a network timeout (Redis not
// answering) rather than a context's deadline.
func isTimeout(err error) bool {
	var ne interface{ Timeout() bool }
	return errors.As(err, &ne) && ne.Timeout()
}

// probe pings the server every second until it answers, then switches
// back to it.
func (r *Redis) probe(stop chan struct{}) {
	defer r.finished.Done()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := r.rdb.Ping(ctx).Err()
		cancel()
		if err == nil {
			r.mu.Lock()
			r.probing = nil
			r.mu.Unlock()
			r.down.Store(false)
			r.metrics.SetShared(true)
			r.log.Info("Redis is reachable again: limits are shared across replicas")
			return
		}
	}
}

// heldIn returns how many leases of key this replica holds in Redis.
func (r *Redis) heldIn(key string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.held[key])
}

// share is this replica's part of limit while Redis is unreachable.
func (r *Redis) share(limit int) int {
	if limit == 0 {
		return 0
	}
	return max(1, int(math.Ceil(float64(limit)/float64(r.size))))
}

// op bounds one Redis operation that outlives its caller's interest
// (releases, renewals).
const opTimeout = time.Second

func newID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func keys(key string) []string {
	k := prefix + key
	return []string{k + ":leases", k + ":queue", k + ":alive", k + ":seq", k + ":learned"}
}

// Acquire implements Store.
func (r *Redis) Acquire(ctx context.Context, key string, limit int, t Ticket, queue bool) (Grant, error) {
	if r.down.Load() {
		if t.shared {
			t = Ticket{} // its place was in Redis: it queues again here
		}
		// The leases this replica took in Redis before it went down are
		// still in use: they count against its share.
		return r.local.acquire(ctx, key, r.share(limit), r.heldIn(key), t, queue)
	}
	if t.id != "" && !t.shared {
		// It queued here while Redis was down: it queues again there.
		r.local.Leave(key, t)
		t = Ticket{}
	}
	id := newID()
	res, err := acquireScript.Run(ctx, r.rdb, keys(key), limit, t.id, boolArg(queue), id,
		r.ttl.Milliseconds(), r.ttl.Milliseconds(), RecoverEvery.Milliseconds(), r.keyTTL()).Slice()
	if err != nil {
		if !r.fail(err) {
			return Grant{}, err
		}
		return r.Acquire(ctx, key, limit, Ticket{}, queue)
	}
	if len(res) != 5 {
		return Grant{}, fmt.Errorf("fleet: unexpected answer from Redis: %v", res)
	}
	g := Grant{InUse: toInt(res[1]), Limit: toInt(res[2]), Ahead: toInt(res[3])}
	ticket, _ := res[4].(string)
	r.mu.Lock()
	defer r.mu.Unlock()
	if t.id != "" && (toInt(res[0]) == 1 || ticket != t.id) {
		delete(r.waiting[key], t.id)
	}
	switch {
	case toInt(res[0]) == 1:
		g.Lease = Lease{key: key, id: id, shared: true}
		add(r.held, key, id)
	case ticket != "":
		g.Ticket = Ticket{id: ticket, shared: true}
		add(r.waiting, key, ticket)
	}
	return g, nil
}

func add(m map[string]map[string]bool, key, id string) {
	if m[key] == nil {
		m[key] = map[string]bool{}
	}
	m[key][id] = true
}

func remove(m map[string]map[string]bool, key, id string) {
	delete(m[key], id)
	if len(m[key]) == 0 {
		delete(m, key)
	}
}

func boolArg(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

func toInt(v any) int {
	switch n := v.(type) {
	case int64:
		return int(n)
	case string:
		i, _ := strconv.Atoi(n)
		return i
	}
	return 0
}

// Leave implements Store.
func (r *Redis) Leave(key string, t Ticket) {
	if !t.shared {
		r.local.Leave(key, t)
		return
	}
	r.mu.Lock()
	remove(r.waiting, key, t.id)
	r.mu.Unlock()
	r.release(key, "", t.id)
}

// Release implements Store.
func (r *Redis) Release(l Lease) {
	if !l.shared {
		r.local.Release(l)
		return
	}
	r.mu.Lock()
	remove(r.held, l.key, l.id)
	r.mu.Unlock()
	r.release(l.key, l.id, "")
}

// release removes a lease or a ticket from key in Redis, waking the
// fleet's waiters if there are any. With Redis down it expires there, and
// this replica's waiters, whose share it counted against, are woken.
func (r *Redis) release(key, lease, ticket string) {
	if r.down.Load() {
		r.local.notify(key)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	k := keys(key)
	if err := releaseScript.Run(ctx, r.rdb, k[:3], lease, ticket, changedChannel, key).Err(); err != nil {
		r.fail(err)
	}
}

// Waiting implements Store. Places of waiters that left without a word
// count until they expire.
func (r *Redis) Waiting(ctx context.Context, key string) (int, error) {
	if r.down.Load() {
		return r.local.Waiting(ctx, key)
	}
	n, err := r.rdb.ZCard(ctx, keys(key)[1]).Result()
	if err != nil {
		if !r.fail(err) {
			return 0, err
		}
		return r.local.Waiting(ctx, key)
	}
	return int(n), nil
}

// Changed implements Store. Releases anywhere in the fleet reach it through
// Redis's pub/sub.
func (r *Redis) Changed(key string) <-chan struct{} { return r.local.Changed(key) }

// Refused implements Store.
func (r *Redis) Refused(ctx context.Context, key string) (int, error) {
	if r.down.Load() {
		return r.local.refused(ctx, key, r.heldIn(key))
	}
	k := keys(key)
	n, err := refusedScript.Run(ctx, r.rdb, []string{k[0], k[4]}, RecoverEvery.Milliseconds(), LearnFor.Milliseconds()).Int()
	if err != nil {
		if !r.fail(err) {
			return 0, err
		}
		return r.local.refused(ctx, key, r.heldIn(key))
	}
	return n, nil
}

// Rate implements Store.
func (r *Redis) Rate(ctx context.Context, key string, rate Rate, cost float64, force bool) (RateState, error) {
	if r.down.Load() {
		return r.local.Rate(ctx, key, Rate{Count: rate.Count / float64(r.size), Period: rate.Period}, cost, force)
	}
	interval := float64(rate.Period.Milliseconds()) / rate.Count
	res, err := rateScript.Run(ctx, r.rdb, []string{prefix + key + ":tat"}, strconv.FormatFloat(interval, 'f', -1, 64),
		rate.Period.Milliseconds(), strconv.FormatFloat(cost, 'f', -1, 64), boolArg(force)).Slice()
	if err != nil {
		if !r.fail(err) {
			return RateState{}, err
		}
		return r.Rate(ctx, key, rate, cost, force)
	}
	if len(res) != 3 {
		return RateState{}, fmt.Errorf("fleet: unexpected answer from Redis: %v", res)
	}
	ms := func(v any) time.Duration {
		s, _ := v.(string)
		f, _ := strconv.ParseFloat(s, 64)
		return time.Duration(f * float64(time.Millisecond))
	}
	st := RateState{Allowed: toInt(res[0]) == 1, Reset: ms(res[1])}
	st.Remaining = max(0, float64(rate.Period-st.Reset)/float64(rate.Period)*rate.Count)
	if !st.Allowed {
		st.RetryAfter = ms(res[2]) - rate.Period
	}
	return st, nil
}

// subscribe wakes this replica's waiters when a slot frees anywhere in
// the fleet. go-redis resubscribes by itself after a reconnect.
func (r *Redis) subscribe(ctx context.Context, ps *redis.PubSub) {
	defer r.finished.Done()
	defer ps.Close()
	ch := ps.Channel(redis.WithChannelHealthCheckInterval(5 * time.Second))
	for {
		select {
		case <-ctx.Done():
			return
		case m, ok := <-ch:
			if !ok {
				return
			}
			r.local.notify(m.Payload)
		}
	}
}

// renew extends this replica's leases and places in queues every third of
// their lifetime, so that they outlive it by at most that lifetime.
func (r *Redis) renew(ctx context.Context) {
	defer r.finished.Done()
	t := time.NewTicker(r.ttl / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if r.down.Load() {
			continue
		}
		r.renewOnce(ctx)
	}
}

func (r *Redis) renewOnce(ctx context.Context) {
	type batch struct {
		key             string
		leases, tickets []string
	}
	r.mu.Lock()
	var all []batch
	for key := range r.held {
		all = append(all, batch{key: key})
	}
	for key := range r.waiting {
		if _, ok := r.held[key]; !ok {
			all = append(all, batch{key: key})
		}
	}
	for i := range all {
		for id := range r.held[all[i].key] {
			all[i].leases = append(all[i].leases, id)
		}
		for id := range r.waiting[all[i].key] {
			all[i].tickets = append(all[i].tickets, id)
		}
	}
	r.mu.Unlock()
	if len(all) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	_, err := r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, b := range all {
			k := keys(b.key)
			args := []any{r.ttl.Milliseconds(), r.ttl.Milliseconds(), r.keyTTL(), len(b.leases)}
			for _, id := range b.leases {
				args = append(args, id)
			}
			for _, id := range b.tickets {
				args = append(args, id)
			}
			// Eval, not EvalSha: a pipeline cannot load a script Redis lost in a restart.
			renewScript.Eval(ctx, p, []string{k[0], k[2], k[1], k[3]}, args...)
		}
		return nil
	})
	if err != nil && ctx.Err() == nil {
		r.fail(err)
	}
}
