package smallest

import (
	"context"
	"encoding/hex"
	"errors"
	"math/rand/v2"
	"net/http"
	"sync"
	"time"
)

// The uses of Smallest's account that a Gate budgets.
const (
	UseSynthesis     = "synthesis"     // a synthesis over HTTP (SSE)
	UseWebSocket     = "websocket"     // a Lightning WebSocket, serving a session or idle in the pool
	UseLive          = "live"          // a realtime recognition session
	UseTranscription = "transcription" // a recording being transcribed
)

// Gate admits the client's uses of Smallest's account before they start
// (package admission implements it). Accounts are digests of keys.
type Gate interface {
	// Acquire waits for a slot of use on account and returns the function
	// that gives it back.
	Acquire(ctx context.Context, account, use string) (release func(), err error)
	// Refused says Smallest refused a use for its concurrency (HTTP 429,
	// WebSocket close 1008) while its slot is still held.
	Refused(account, use string)
	// Waiting reports whether calls wait for a slot of use on account.
	Waiting(account, use string) bool
}

// Account names the Smallest account a call of ctx uses: a digest of its
// key, never the key (see accountOf).
func (c *Client) Account(ctx context.Context) string { return accountOf(c.credential(ctx)) }

// accountOf names the account a key belongs to, without revealing the key:
// the first 8 bytes of its SHA-256 in hex.
func accountOf(secret string) string { return accountOfKey(keyOf(secret)) }

// accountOfKey is accountOf for a key already digested by keyOf.
func accountOfKey(key string) string { return hex.EncodeToString([]byte(key)[:8]) }

// DefaultMaxAttempts is how many requests one call makes at most, retries
// included, unless Config.MaxAttempts says otherwise.
const DefaultMaxAttempts = 3

// RetryBudget stops retries when many requests fail, so that retries
// cannot multiply the load on an upstream that is down: gRPC's retry
// throttling. It holds 10 tokens; each failure that could be retried takes
// one, each success gives a tenth back, and retries are made only while
// more than half remain. One budget is shared by the process. It is safe
// for concurrent use.
type RetryBudget struct {
	mu     sync.Mutex
	tokens float64
}

const (
	retryTokens     = 10
	retryTokenRatio = 0.1
)

// NewRetryBudget returns a full budget.
func NewRetryBudget() *RetryBudget { return &RetryBudget{tokens: retryTokens} }

func (b *RetryBudget) succeeded() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.tokens = min(retryTokens, b.tokens+retryTokenRatio)
}

// failed takes a token and reports whether a retry may be made.
func (b *RetryBudget) failed() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.tokens = max(0, b.tokens-1)
	return b.tokens > retryTokens/2
}

// use is what attempt needs to know about one kind of request.
type use struct {
	endpoint string
	// gated is the Gate's use to hold a slot of while the request is made
	// ("": none).
	gated string
	// retries says whether the request may be made again: it creates
	// nothing, and its body can be sent again.
	retries bool
}

// granted is what attempt gives the request that succeeded.
type granted struct {
	// release gives back the Gate's slot the request holds.
	release func()
	// attempts is how many requests were made, retries included.
	attempts int
	// waited is the time spent waiting for the Gate.
	waited time.Duration
}

// attempt makes a request with open until it succeeds, or fails in a way
// that another attempt cannot help or is not allowed to: only refusals
// (429, 503) and connections that could not be made are retried, at most
// MaxAttempts requests in all, while the retry budget allows, and only if
// the wait fits in the call's deadline. Nothing of an answer has reached
// anyone when open fails, so a retry repeats nothing.
//
// With a Gate, each attempt first waits for a slot of u.gated, which the
// request that succeeds keeps until release. The error of the last attempt
// carries how many were made.
func (c *Client) attempt(ctx context.Context, u use, open func() error) (granted, error) {
	var account string
	if c.gate != nil && u.gated != "" {
		account = accountOf(c.credential(ctx))
	}
	g := granted{release: func() {}}
	for g.attempts = 1; ; g.attempts++ {
		if account != "" {
			start := time.Now()
			release, err := c.gate.Acquire(ctx, account, u.gated)
			g.waited += time.Since(start)
			if err != nil {
				return g, err
			}
			g.release = release
		}
		err := open()
		if err == nil {
			c.retryBudget.succeeded()
			return g, nil
		}
		if u.gated != "" && refusal(err) {
			c.refused(c.credential(ctx), u.gated)
		}
		g.release()
		reason, wait, ok := c.retryable(ctx, u, err, g.attempts)
		if !ok {
			var e *Error
			if errors.As(err, &e) {
				e.Attempts = g.attempts
			}
			return g, err
		}
		if c.onRetry != nil {
			c.onRetry(u.endpoint, reason)
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return g, context.Cause(ctx)
		}
	}
}

// refused tells the Gate, if any, that Smallest refused a use of secret's
// account for its concurrency, outside attempt: a session closed with 1008.
func (c *Client) refused(secret, gated string) {
	if c.gate != nil {
		c.gate.Refused(accountOf(secret), gated)
	}
}

// refusal reports whether Smallest refused a request for its concurrency.
func refusal(err error) bool {
	var e *Error
	return errors.As(err, &e) && (e.HTTPStatus == http.StatusTooManyRequests || e.CloseCode == ClosePolicyViolation)
}

// retryable says whether the request that failed with err, attempt n, may
// be made again, why, and after how long.
func (c *Client) retryable(ctx context.Context, u use, err error, n int) (reason string, wait time.Duration, ok bool) {
	var e *Error
	if !u.retries || n >= c.maxAttempts || !errors.As(err, &e) {
		return "", 0, false
	}
	switch {
	case e.Kind == KindUnreachable:
		reason = "unreachable" // the request was never sent
	case e.Kind == KindHTTP && e.HTTPStatus == http.StatusTooManyRequests:
		reason = "rate_limited"
	case e.Kind == KindHTTP && e.HTTPStatus == http.StatusServiceUnavailable:
		reason = "unavailable"
	default:
		return "", 0, false
	}
	if !c.retryBudget.failed() {
		return "", 0, false
	}
	wait = backoff(n)
	if e.RetryAfter > 0 {
		wait = e.RetryAfter
	}
	if wait > maxRetryWait {
		return "", 0, false // the caller is better told, with the delay
	}
	if dl, has := ctx.Deadline(); has && time.Until(dl)-wait < max(time.Until(dl)/5, 250*time.Millisecond) {
		return "", 0, false // the wait would leave the retry no time to succeed
	}
	return reason, wait, true
}

// maxRetryWait is the longest Retry-After a retry waits out: a longer one
// goes back to the caller, whose RetryInfo says it.
const maxRetryWait = 5 * time.Second

// backoff is the wait before retry n (1, 2, ...) when Smallest named none,
// and before reopening a socket: 100 ms doubling, with jitter, so that
// calls refused together do not return together.
func backoff(n int) time.Duration {
	d := 100 * time.Millisecond << (n - 1)
	return d/2 + time.Duration(rand.Int64N(int64(d)))
}
