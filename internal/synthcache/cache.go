// Package synthcache keeps the audio of finished syntheses for reuse, and
// lets identical syntheses in flight share one upstream call.
//
// A synthesis is named by a digest of everything that shapes its audio
// (see keyOf), scoped to the upstream account unless the cache is shared.
// Its audio is found, in order: in the process (an LRU within a byte
// budget), in Redis when there is one (chunked, streamed back chunk by
// chunk), in a synthesis of the same in flight (a joiner gets at once what
// was already received, then follows live), or else from the upstream, as
// the leader of a new flight. Only a synthesis that ended OK is stored.
//
// A flight's upstream call outlives its leader's caller for as long as any
// joiner still reads it, and is cancelled when none does. A failure
// reaches every reader with the same error.
package synthcache

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/speechgate/speechgate/internal/metrics"
	"github.com/speechgate/speechgate/internal/rpcerror"
	"github.com/speechgate/speechgate/internal/smallest"
)

// Mode is what a caller lets the cache do.
type Mode int

// The modes.
const (
	// ModeDefault reads, joins and stores.
	ModeDefault Mode = iota
	// ModeBypass neither reads nor stores: a fresh synthesis.
	ModeBypass
	// ModeOnly reads or joins, and never synthesizes.
	ModeOnly
)

// Outcome says how a stream's audio was found.
type Outcome string

// The outcomes.
const (
	Off        Outcome = ""
	HitMemory  Outcome = "hit_memory"
	HitRedis   Outcome = "hit_redis"
	Miss       Outcome = "miss"
	Joined     Outcome = "joined"
	Bypassed   Outcome = "bypass"
	NotCached  Outcome = "not_found"
	defaultTTL         = time.Hour
)

// Hit reports whether the outcome is a hit, in either tier.
func (o Outcome) Hit() bool { return o == HitMemory || o == HitRedis }

// DefaultMaxEntryBytes is Config.MaxEntryBytes's default: a text piece's
// audio is well under it (250 characters at 44.1 kHz PCM is about 1.5 MB).
const DefaultMaxEntryBytes = 4 << 20

// Config configures a Cache.
type Config struct {
	// Bytes is the in-process tier's budget; 0 keeps nothing in the
	// process (flights are still shared).
	Bytes int
	// MaxEntryBytes is the largest audio stored. Default DefaultMaxEntryBytes.
	MaxEntryBytes int
	// TTL is how long an entry lives. Default an hour.
	TTL time.Duration
	// Shared shares entries across accounts, which lets one account learn
	// what another synthesized; off by default.
	Shared bool
	// RedisURL, when set, stores entries in that Redis too, within
	// RedisBytes.
	RedisURL   string
	RedisBytes int64
	// Log gets the Redis tier's failures, once per run of them. Required.
	Log *slog.Logger
	// Metrics, when set, records lookups and the tier's usage.
	Metrics *metrics.Cache
}

// Cache is the synthesis cache. It is safe for concurrent use.
type Cache struct {
	mem      *memory
	maxEntry int
	redis    *shared
	shared   bool
	metrics  *metrics.Cache
	log      *slog.Logger

	mu      sync.Mutex
	flights map[Key]*flight
	closed  bool
	work    sync.WaitGroup // flights, and Redis writes
}

// New returns a Cache for cfg.
func New(cfg Config) (*Cache, error) {
	if cfg.TTL <= 0 {
		cfg.TTL = defaultTTL
	}
	if cfg.MaxEntryBytes <= 0 {
		cfg.MaxEntryBytes = DefaultMaxEntryBytes
	}
	c := &Cache{shared: cfg.Shared, maxEntry: cfg.MaxEntryBytes, metrics: cfg.Metrics, log: cfg.Log, flights: map[Key]*flight{}}
	c.mem = newMemory(cfg.Bytes, cfg.MaxEntryBytes, cfg.TTL, cfg.Metrics.Evicted)
	if cfg.RedisURL != "" {
		var err error
		if c.redis, err = newShared(cfg.RedisURL, cfg.TTL, cfg.RedisBytes, cfg.Log); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// Close cancels the flights in progress, waits for them and for the
// writes to Redis, and closes the Redis client.
func (c *Cache) Close() error {
	c.mu.Lock()
	c.closed = true
	flights := slices.Collect(maps.Values(c.flights))
	c.mu.Unlock()
	for _, f := range flights {
		f.halt()
	}
	c.work.Wait()
	if c.redis != nil {
		return c.redis.close()
	}
	return nil
}

// Request is one synthesis, as the cache sees it.
type Request struct {
	// Account scopes the entry, unless the cache is shared.
	Account string
	// Speech is the upstream request.
	Speech *smallest.SpeechRequest
	// Dictionaries names the versions of the pronunciation dictionaries
	// it uses, so that a change to one is a new entry.
	Dictionaries string
	Mode         Mode
}

func (c *Cache) key(r Request) Key {
	scope := r.Account
	if c.shared {
		scope = ""
	}
	return keyOf(scope, r.Speech, r.Dictionaries)
}

// Open returns the audio of r's synthesis: found in the cache, joined to a
// synthesis in flight, or synthesized with open. It fails with a NOT_FOUND
// status when the mode is ModeOnly and the audio is neither cached nor in
// flight, and with open's error when the upstream refuses the synthesis.
func (c *Cache) Open(ctx context.Context, r Request, open func(context.Context) (*smallest.SpeechStream, error)) (*Stream, error) {
	if c == nil || r.Mode == ModeBypass || r.Speech.ExpireContent {
		// Content Smallest was asked to expire is not kept here either.
		st, err := open(ctx)
		if err != nil {
			return nil, err
		}
		outcome := Bypassed
		if c == nil {
			outcome = Off
		}
		c.looked(outcome)
		return direct(st, outcome), nil
	}
	k := c.key(r)
	if e, ok := c.mem.get(k); ok {
		c.looked(HitMemory)
		return c.memoryHit(e), nil
	}
	if s, ok := c.redisHit(ctx, k); ok {
		c.looked(HitRedis)
		return s, nil
	}
	c.mu.Lock()
	f, ok := c.flights[k]
	var cursor *int
	if ok {
		// A flight that already dropped audio cannot give a joiner all of
		// it: this request leads a new one.
		cursor, ok = f.join()
	}
	switch {
	case ok:
	case c.closed: // shutting down: no new flight
		c.mu.Unlock()
		return c.Open(ctx, Request{Speech: r.Speech, Mode: ModeBypass}, open)
	case r.Mode == ModeOnly:
		c.mu.Unlock()
		c.looked(NotCached)
		return nil, rpcerror.New(codes.NotFound, "this synthesis is not cached, and cache_mode CACHE_MODE_ONLY asked not to synthesize it",
			rpcerror.ReasonCacheMiss, nil)
	default:
		f = c.newFlight(ctx, k)
		cursor, _ = f.join()
		c.flights[k] = f
		c.work.Add(1)
		go c.start(f, open)
	}
	c.mu.Unlock()
	outcome := Joined
	if !ok {
		outcome = Miss
	}
	c.looked(outcome)
	return f.reader(ctx, cursor, outcome)
}

// Has reports whether r's audio could be served without synthesizing it:
// it is cached, or in flight.
func (c *Cache) Has(ctx context.Context, r Request) bool {
	if c == nil {
		return false
	}
	k := c.key(r)
	c.mu.Lock()
	_, flying := c.flights[k]
	c.mu.Unlock()
	if flying || c.mem.has(k) {
		return true
	}
	if c.redis != nil {
		_, ok := c.redis.lookup(ctx, k)
		return ok
	}
	return false
}

func (c *Cache) looked(o Outcome) {
	if o != Off {
		c.metrics.Looked(string(o))
	}
}

// Stream is a synthesis's audio, as the cache serves it.
type Stream struct {
	// RequestID and SessionID are Smallest's ids of the synthesis (for a
	// hit, of the one that was stored); ContentExpiry its answer to
	// x-expire-content.
	RequestID, SessionID, ContentExpiry string
	// Attempts is how many requests this stream's synthesis took, and
	// Waited its wait for the account's budget: zero unless it led.
	Attempts int
	Waited   time.Duration
	// Outcome says how the audio was found.
	Outcome Outcome
	// SampleRate is the audio's rate when the server chose it (see
	// smallest.SpeechStream.SampleRate); 0: the rate asked for.
	SampleRate int

	next      func() ([]byte, error)
	close     func()
	firstByte func() time.Duration
	closed    sync.Once
}

// Next returns the next audio, and io.EOF after the last. Audio is shared
// with other readers: it must not be modified. It is valid until the next
// call to Next or Close: an uncached stream decodes each piece into the
// storage of the one before (see smallest.SpeechStream.NextInto).
func (s *Stream) Next() ([]byte, error) { return s.next() }

// Close ends the stream. It is safe to call more than once.
func (s *Stream) Close() error {
	s.closed.Do(s.close)
	return nil
}

// FirstByte is Smallest's time to first audio byte for the synthesis this
// stream reads; zero for a hit, or until the first audio.
func (s *Stream) FirstByte() time.Duration { return s.firstByte() }

// direct reads an upstream stream, the cache aside, into one buffer.
func direct(st *smallest.SpeechStream, o Outcome) *Stream {
	var buf []byte
	next := func() ([]byte, error) {
		b, err := st.NextInto(buf)
		if b != nil {
			buf = b
		}
		return b, err
	}
	return &Stream{RequestID: st.RequestID, SessionID: st.SessionID, ContentExpiry: st.ContentExpiry,
		Attempts: st.Attempts, Waited: st.Waited, Outcome: o, SampleRate: st.SampleRate,
		next: next, close: func() { st.Close() }, firstByte: st.FirstByte}
}

var zero = func() time.Duration { return 0 }

// errEnd marks the end of a tier's entry.
var errEnd = io.EOF

func (c *Cache) memoryHit(e *entry) *Stream {
	i := 0
	return &Stream{RequestID: e.meta.RequestID, SessionID: e.meta.SessionID, SampleRate: e.meta.SampleRate, Outcome: HitMemory, firstByte: zero,
		next: func() ([]byte, error) {
			if i == len(e.chunks) {
				return nil, io.EOF
			}
			i++
			return e.chunks[i-1], nil
		},
		close: func() { c.mem.release(e) }}
}

// redisHit opens key's entry in Redis and reads its first chunks, so that
// a failure to read it becomes a miss rather than a failed call. What it
// reads is also kept in the process, once the whole entry has been read.
func (c *Cache) redisHit(ctx context.Context, k Key) (*Stream, bool) {
	if c.redis == nil {
		return nil, false
	}
	m, ok := c.redis.lookup(ctx, k)
	if !ok {
		return nil, false
	}
	rd := &reader{s: c.redis, ctx: ctx, k: k, m: m}
	first, err := rd.Next()
	if err != nil {
		return nil, false
	}
	pending, kept, stored := first, [][]byte{first}, false
	return &Stream{RequestID: m.RequestID, SessionID: m.SessionID, SampleRate: m.SampleRate, Outcome: HitRedis, firstByte: zero,
		next: func() ([]byte, error) {
			if pending != nil {
				b := pending
				pending = nil
				return b, nil
			}
			b, err := rd.Next()
			switch {
			case errors.Is(err, io.EOF):
				if !stored {
					stored = true
					c.mem.put(k, m, kept)
					c.usage()
				}
				return nil, io.EOF
			case err != nil:
				// Audio has been sent: another synthesis would not continue
				// it seamlessly, so the call fails rather than end short.
				return nil, rpcerror.New(codes.Unavailable,
					"the cached audio could not be read back whole; retry, or set cache_mode CACHE_MODE_BYPASS to synthesize afresh",
					rpcerror.ReasonCacheUnavailable, nil)
			}
			kept = append(kept, b)
			return b, nil
		},
		close: func() {}}, true
}

// usage records the in-process tier's bytes.
func (c *Cache) usage() {
	c.metrics.Usage(c.mem.usage())
}

// ObserveFirstAudio records a call's time to first audio by how its first
// text piece was served, so that hits and misses can be compared. It is
// safe on a nil *Cache.
func (c *Cache) ObserveFirstAudio(o Outcome, d time.Duration) {
	if c != nil && o != Off {
		c.metrics.FirstAudio(string(o), d)
	}
}
