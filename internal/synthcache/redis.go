package synthcache

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// shared is the Redis tier: each entry a small meta value and its chunks
// as separate values, so that no audio becomes one huge value and a hit
// streams chunk by chunk. The meta is written last: an entry without it
// is incomplete and never read. Entries expire with the cache's TTL (the
// chunks a minute later, so that a reader that found the meta finds them),
// and the tier keeps to its byte budget by deleting the oldest entries.
type shared struct {
	rdb    *redis.Client
	ttl    time.Duration
	budget int64
	log    *slog.Logger

	mu        sync.Mutex
	downUntil time.Time // after a failure the tier is skipped for a while
	down      bool
}

const (
	cachePrefix = "speechgate:cache:"
	indexKey    = cachePrefix + "index" // zset: key|chunks|bytes by time stored
	totalKey    = cachePrefix + "bytes" // bytes stored, by the index
	// skipFor is how long the tier is skipped after Redis failed.
	skipFor = 5 * time.Second
	// readAhead is how many chunks a hit asks for at once.
	readAhead = 8
)

func newShared(url string, ttl time.Duration, budget int64, log *slog.Logger) (*shared, error) {
	opts, err := redis.ParseURL(url)
	if err != nil {
		return nil, errors.New("synthcache: the Redis URL is not a valid redis:// URL")
	}
	opts.DialTimeout, opts.ReadTimeout, opts.WriteTimeout = time.Second, time.Second, time.Second
	opts.MaxRetries, opts.DialerRetries = 1, 1
	opts.ClientName, opts.DisableIdentity = "speechgate-cache", true
	return &shared{rdb: redis.NewClient(opts), ttl: ttl, budget: budget, log: log}, nil
}

func (s *shared) close() error { return s.rdb.Close() }

// usable reports whether the tier is worth asking now.
func (s *shared) usable() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return !time.Now().Before(s.downUntil)
}

// failed notes a Redis failure: the tier is skipped for a while, and the
// first failure of a run of them is logged.
func (s *shared) failed(err error) {
	if errors.Is(err, context.Canceled) {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.downUntil = time.Now().Add(skipFor)
	if !s.down {
		s.down = true
		s.log.Warn("the synthesis cache's Redis is unreachable: synthesizing instead of reading it, and not storing there, until it is back", "error", err.Error())
	}
}

// ok notes that Redis answered.
func (s *shared) ok() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.down {
		s.down = false
		s.log.Info("the synthesis cache's Redis is reachable again")
	}
}

func metaKey(k Key) string         { return cachePrefix + k.String() }
func chunkKey(k Key, i int) string { return cachePrefix + k.String() + ":" + strconv.Itoa(i) }

// lookup returns key's meta, or false on a miss or a failure.
func (s *shared) lookup(ctx context.Context, k Key) (meta, bool) {
	if !s.usable() {
		return meta{}, false
	}
	b, err := s.rdb.Get(ctx, metaKey(k)).Bytes()
	switch {
	case errors.Is(err, redis.Nil):
		s.ok()
		return meta{}, false
	case err != nil:
		s.failed(err)
		return meta{}, false
	}
	s.ok()
	var m meta
	if json.Unmarshal(b, &m) != nil || m.Chunks <= 0 {
		return meta{}, false
	}
	return m, true
}

// errTruncated is a hit whose chunks could not all be read.
var errTruncated = errors.New("a cached entry could not be read back whole")

// reader streams an entry's chunks, readAhead at a time.
type reader struct {
	s     *shared
	ctx   context.Context
	k     Key
	m     meta
	next  int
	ready [][]byte
}

func (r *reader) Next() ([]byte, error) {
	if len(r.ready) == 0 {
		if r.next >= r.m.Chunks {
			return nil, errEnd
		}
		n := min(readAhead, r.m.Chunks-r.next)
		cmds := make([]*redis.StringCmd, n)
		_, err := r.s.rdb.Pipelined(r.ctx, func(p redis.Pipeliner) error {
			for i := range n {
				cmds[i] = p.Get(r.ctx, chunkKey(r.k, r.next+i))
			}
			return nil
		})
		if err != nil {
			if r.ctx.Err() == nil {
				r.s.failed(err)
			}
			return nil, fmt.Errorf("%w: chunk %d of %d: %w", errTruncated, r.next+1, r.m.Chunks, err)
		}
		for _, c := range cmds {
			b, _ := c.Bytes()
			r.ready = append(r.ready, b)
		}
		r.next += n
	}
	b := r.ready[0]
	r.ready = r.ready[1:]
	return b, nil
}

// writer stores a synthesis in Redis as it arrives, in values of up to a
// block, so that nothing of it is held whole: the meta, written last, makes
// it readable. It gives up, leaving nothing readable, when the synthesis
// grows past max or Redis fails.
type writer struct {
	s      *shared
	ctx    context.Context
	k      Key
	max    int
	run    []byte
	values int
	size   int
	failed bool
}

// writer starts storing key, unless the tier is being skipped.
func (s *shared) writer(ctx context.Context, k Key, maxBytes int) *writer {
	if !s.usable() {
		return nil
	}
	return &writer{s: s, ctx: ctx, k: k, max: maxBytes, run: make([]byte, 0, blockSize)}
}

func (w *writer) add(b []byte) {
	if w.failed {
		return
	}
	if w.size+len(b) > w.max {
		w.failed = true
		return
	}
	if len(w.run)+len(b) > blockSize {
		w.flush()
	}
	w.run = append(w.run, b...)
	w.size += len(b)
}

// flush writes the run of chunks so far as one value.
func (w *writer) flush() {
	if w.failed || len(w.run) == 0 {
		return
	}
	if err := w.s.rdb.Set(w.ctx, chunkKey(w.k, w.values), w.run, w.s.ttl+time.Minute).Err(); err != nil {
		w.failed = true
		w.s.failed(err)
		return
	}
	w.values++
	w.run = w.run[:0]
}

// commit writes the last value and the meta, and keeps the tier within
// its budget. It runs after the synthesis's call has ended, whose context
// is then cancelled: these writes are the entry's, so they outlive it.
func (w *writer) commit(m meta) {
	w.ctx = context.WithoutCancel(w.ctx)
	w.flush()
	if w.failed || w.values == 0 {
		return
	}
	m.Chunks, m.Bytes = w.values, w.size
	mb, _ := json.Marshal(m)
	err := w.s.rdb.Set(w.ctx, metaKey(w.k), mb, w.s.ttl).Err()
	if err == nil {
		err = trimScript.Run(w.ctx, w.s.rdb, []string{indexKey, totalKey},
			fmt.Sprintf("%s|%d|%d", w.k, m.Chunks, m.Bytes), m.Bytes, w.s.budget, cachePrefix).Err()
	}
	if err != nil {
		w.s.failed(err)
		return
	}
	w.s.ok()
}

// trimScript records a stored entry and deletes the oldest entries while
// the tier holds more than its budget. Entries that expired on their own
// are found gone when their turn comes, and only leave the count.
// KEYS: index, total. ARGV: the entry as key|chunks|bytes, its bytes, the
// budget, the prefix.
var trimScript = redis.NewScript(`
local t = redis.call('TIME')
redis.call('ZADD', KEYS[1], tonumber(t[1]) * 1000000 + tonumber(t[2]), ARGV[1])
local total = redis.call('INCRBY', KEYS[2], ARGV[2])
local budget = tonumber(ARGV[3])
while total > budget do
  local oldest = redis.call('ZPOPMIN', KEYS[1])
  if #oldest == 0 then break end
  local key, chunks, bytes = string.match(oldest[1], '([^|]+)|(%d+)|(%d+)')
  redis.call('DEL', ARGV[4] .. key)
  for i = 0, tonumber(chunks) - 1 do redis.call('DEL', ARGV[4] .. key .. ':' .. i) end
  total = redis.call('DECRBY', KEYS[2], bytes)
end
return total
`)
