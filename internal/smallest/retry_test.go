package smallest_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/speechgate/speechgate/internal/smallest"
)

// scripted answers each request with the next status of a script (200s as
// documented for the endpoint), and counts the requests.
type scripted struct {
	statuses   []int
	retryAfter string
	requests   atomic.Int32
}

func (s *scripted) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	io.Copy(io.Discard, r.Body)
	n := int(s.requests.Add(1)) - 1
	status := http.StatusOK
	if n < len(s.statuses) {
		status = s.statuses[n]
	}
	w.Header().Set("X-Request-Id", "req-1")
	switch {
	case status == http.StatusTooManyRequests:
		if s.retryAfter != "" {
			w.Header().Set("Retry-After", s.retryAfter)
		}
		w.WriteHeader(status)
		io.WriteString(w, `{"error":"TooManyRequests","message":"Too many concurrent requests"}`)
	case status != http.StatusOK:
		w.WriteHeader(status)
		io.WriteString(w, `{"error":"ServiceUnavailable","message":"Worker temporarily unavailable"}`)
	case r.URL.Path == "/waves/v1/tts/live":
		io.WriteString(w, audioFrame([]byte{1, 2})+doneFrame)
	case r.URL.Path == "/waves/v1/stt/":
		io.WriteString(w, `{"status":"success","transcription":"hello","metadata":{"duration":1.5}}`)
	case r.URL.Path == "/waves/v1/voice-cloning":
		io.WriteString(w, `{"message":"Voice clone created successfully","data":{"voiceId":"voice_1","displayName":"Me","status":"pending"}}`)
	case r.URL.Path == "/waves/v1/pronunciation-dicts":
		io.WriteString(w, `{"id":"d1","items":[{"word":"a","pronunciation":"ay"}],"createdAt":"2026-01-01T00:00:00Z"}`)
	default:
		io.WriteString(w, `{"voices":[{"voiceId":"avery","displayName":"Avery"}]}`)
	}
}

// retries records OnRetry's calls.
type retries struct {
	mu      sync.Mutex
	reasons []string
}

func (r *retries) note(_, reason string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reasons = append(r.reasons, reason)
}

func (r *retries) got() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.reasons)
}

// TestRetriesOnlyWhatIsSafe: a request is made again only when Smallest
// refused it (429, 503) or it was never sent, only if it creates nothing
// and its body can be sent again, and only within the limits.
func TestRetriesOnlyWhatIsSafe(t *testing.T) {
	t.Parallel()
	speak := func(ctx context.Context, c *smallest.Client) error {
		s, err := c.StreamSpeech(ctx, &smallest.SpeechRequest{Text: "x", VoiceOptions: smallest.VoiceOptions{VoiceID: "v"}})
		if err == nil {
			defer s.Close()
			if s.Attempts < 1 {
				return errors.New("a stream reported no attempts")
			}
			_, err = readAll(s)
			if errors.Is(err, io.EOF) {
				err = nil
			}
		}
		return err
	}
	tests := []struct {
		name       string
		statuses   []int
		retryAfter string
		deadline   time.Duration
		call       func(context.Context, *smallest.Client) error
		// want
		requests int
		reasons  []string
		ok       bool
	}{
		{name: "429 then audio", statuses: []int{429}, retryAfter: "0", call: speak, requests: 2, reasons: []string{"rate_limited"}, ok: true},
		{name: "503 twice then audio", statuses: []int{503, 503}, call: speak, requests: 3, reasons: []string{"unavailable", "unavailable"}, ok: true},
		{name: "at most 3 attempts", statuses: []int{503, 503, 503, 503}, call: speak, requests: 3, reasons: []string{"unavailable", "unavailable"}},
		{name: "500 is not retried: it may have been acted on", statuses: []int{500}, call: speak, requests: 1},
		{name: "a Retry-After longer than 5s goes to the caller", statuses: []int{429}, retryAfter: "30", call: speak, requests: 1},
		{name: "a Retry-After the deadline cannot cover goes to the caller", statuses: []int{429}, retryAfter: "2",
			deadline: 1500 * time.Millisecond, call: speak, requests: 1},
		// Then the browsing catalog, for descriptions: a third request.
		{name: "reading the voices is retried", statuses: []int{503}, requests: 3, reasons: []string{"unavailable"}, ok: true,
			call: func(ctx context.Context, c *smallest.Client) error { _, err := c.ListVoices(ctx); return err }},
		{name: "creating a dictionary is not", statuses: []int{503}, requests: 1,
			call: func(ctx context.Context, c *smallest.Client) error {
				_, err := c.CreatePronunciationDictionary(ctx, []smallest.PronunciationItem{{Word: "a", Pronunciation: "ay"}})
				return err
			}},
		{name: "creating a clone is not", statuses: []int{503}, requests: 1,
			call: func(ctx context.Context, c *smallest.Client) error {
				_, err := c.CreateVoiceClone(ctx, &smallest.CloneRequest{DisplayName: "Me", Audio: []byte("RIFF"), ContentType: "audio/wav"})
				return err
			}},
		{name: "a URL transcription is", statuses: []int{429}, retryAfter: "0", requests: 2, reasons: []string{"rate_limited"}, ok: true,
			call: func(ctx context.Context, c *smallest.Client) error {
				_, err := c.Transcribe(ctx, &smallest.TranscribeRequest{URL: "https://example.com/a.wav", Model: "pulse", Language: "en"})
				return err
			}},
		{name: "an upload is not: its audio was read", statuses: []int{503}, requests: 1,
			call: func(ctx context.Context, c *smallest.Client) error {
				_, err := c.Transcribe(ctx, &smallest.TranscribeRequest{Audio: bytes.NewReader([]byte("RIFF")), AudioSize: 4, Model: "pulse", Language: "en"})
				return err
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			up := &scripted{statuses: tt.statuses, retryAfter: tt.retryAfter}
			srv := newServer(t, up.ServeHTTP)
			var rec retries
			c := newClient(t, srv, func(cfg *smallest.Config) { cfg.OnRetry = rec.note })
			ctx := t.Context()
			if tt.deadline > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tt.deadline)
				defer cancel()
			}
			err := tt.call(ctx, c)
			if (err == nil) != tt.ok {
				t.Fatalf("err = %v; want success %v", err, tt.ok)
			}
			if got := int(up.requests.Load()); got != tt.requests {
				t.Errorf("%d requests; want %d", got, tt.requests)
			}
			if diff := cmp.Diff(tt.reasons, rec.got()); diff != "" {
				t.Errorf("retries (-want +got):\n%s", diff)
			}
			var e *smallest.Error
			if errors.As(err, &e) && e.Attempts != tt.requests {
				t.Errorf("the error says %d attempts; %d were made", e.Attempts, tt.requests)
			}
		})
	}
}

// TestRetryNeverSent: a connection that cannot be made was never sent, so
// it is retried, to the limit.
func TestRetryNeverSent(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now
	var rec retries
	c, err := smallest.New(smallest.Config{BaseURL: "http://" + addr, HTTPClient: &http.Client{},
		Credential: func(context.Context) string { return testKey }, OnRetry: rec.note})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.StreamSpeech(t.Context(), &smallest.SpeechRequest{Text: "x", VoiceOptions: smallest.VoiceOptions{VoiceID: "v"}})
	var e *smallest.Error
	if !errors.As(err, &e) || e.Kind != smallest.KindUnreachable || e.Attempts != 3 {
		t.Fatalf("err = %#v; want KindUnreachable after 3 attempts", err)
	}
	if diff := cmp.Diff([]string{"unreachable", "unreachable"}, rec.got()); diff != "" {
		t.Errorf("retries (-want +got):\n%s", diff)
	}
}

// TestRetryBudgetStopsAmplification: once half the budget's tokens are
// spent on failures, calls fail without retrying, until successes earn
// tokens back.
func TestRetryBudgetStopsAmplification(t *testing.T) {
	t.Parallel()
	up := &scripted{statuses: slices.Repeat([]int{503}, 100)}
	srv := newServer(t, up.ServeHTTP)
	budget := smallest.NewRetryBudget()
	c := newClient(t, srv, func(cfg *smallest.Config) { cfg.RetryBudget = budget })
	for range 10 {
		c.StreamSpeech(t.Context(), &smallest.SpeechRequest{Text: "x", VoiceOptions: smallest.VoiceOptions{VoiceID: "v"}})
	}
	// 10 tokens, one per failure, retries while more than 5 remain: the
	// first call retries twice, the second once, then none.
	if got := up.requests.Load(); got != 10+4 {
		t.Errorf("10 calls to a failing upstream made %d requests; want 14", got)
	}
}

// gate is a Gate that admits everything and records what it is asked.
type gate struct {
	mu       sync.Mutex
	held     map[string]int // by use
	refused  []string
	waiting  bool
	acquired int
}

func (g *gate) Acquire(_ context.Context, account, use string) (func(), error) {
	if len(account) != 16 {
		return nil, errors.New("the account is not a digest")
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.held == nil {
		g.held = map[string]int{}
	}
	g.held[use]++
	g.acquired++
	var once sync.Once
	return func() {
		once.Do(func() {
			g.mu.Lock()
			defer g.mu.Unlock()
			g.held[use]--
		})
	}, nil
}

func (g *gate) Refused(_, use string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.refused = append(g.refused, use+" while "+string(rune('0'+g.held[use]))+" held")
}

func (g *gate) Waiting(string, string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.waiting
}

func (g *gate) holding(use string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.held[use]
}

// TestGateHoldsASlotPerUse: each use holds its slot for as long as it
// lasts, and a refusal is reported while the slot is still held.
func TestGateHoldsASlotPerUse(t *testing.T) {
	t.Parallel()
	t.Run("synthesis stream", func(t *testing.T) {
		t.Parallel()
		up := &scripted{statuses: []int{429}, retryAfter: "0"}
		g := &gate{}
		c := newClient(t, newServer(t, up.ServeHTTP), func(cfg *smallest.Config) { cfg.Gate = g })
		s, err := c.StreamSpeech(t.Context(), &smallest.SpeechRequest{Text: "x", VoiceOptions: smallest.VoiceOptions{VoiceID: "v"}})
		if err != nil {
			t.Fatal(err)
		}
		if g.holding(smallest.UseSynthesis) != 1 || s.Attempts != 2 {
			t.Fatalf("an open stream holds %d slots after %d attempts; want 1 after 2", g.holding(smallest.UseSynthesis), s.Attempts)
		}
		s.Close()
		s.Close()
		if n := g.holding(smallest.UseSynthesis); n != 0 {
			t.Errorf("a closed stream still holds %d slots", n)
		}
		if diff := cmp.Diff([]string{"synthesis while 1 held"}, g.refused); diff != "" {
			t.Errorf("refusals (-want +got):\n%s", diff)
		}
	})
	t.Run("WebSocket, pooled or not", func(t *testing.T) {
		t.Parallel()
		g := &gate{}
		c := wsClientWith(t, &fakeTTSWS{}, func(cfg *smallest.Config) { cfg.Gate = g; cfg.StreamPoolSize = 2 })
		// Text after the flush shows Smallest completes per flush, so that
		// the socket is known to be reusable.
		if _, _, err := speak(t, c, "Hello.|", " Again."); err != nil {
			t.Fatal(err)
		}
		if n := g.holding(smallest.UseWebSocket); n != 1 {
			t.Fatalf("a pooled socket holds %d slots; want 1: Smallest counts it", n)
		}
		if _, _, err := speak(t, c, "Hello.|", " Again."); err != nil {
			t.Fatal(err)
		}
		if g.acquired != 1 {
			t.Errorf("reusing the pooled socket acquired again: %d acquisitions", g.acquired)
		}
		// While calls wait for a slot, a socket gives its slot up rather
		// than idle in the pool.
		g.mu.Lock()
		g.waiting = true
		g.mu.Unlock()
		if _, _, err := speak(t, c, "Hello.|", " Again."); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(5 * time.Second)
		for g.holding(smallest.UseWebSocket) != 0 {
			if time.Now().After(deadline) {
				t.Fatal("with calls waiting, the pool kept its socket and its slot")
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
	t.Run("realtime session", func(t *testing.T) {
		t.Parallel()
		g := &gate{}
		c := liveClient(t, &fakeLive{}, func(cfg *smallest.Config) { cfg.Gate = g })
		s, err := c.Listen(t.Context(), &smallest.LiveRequest{Model: "pulse", Language: "en"})
		if err != nil {
			t.Fatal(err)
		}
		if n := g.holding(smallest.UseLive); n != 1 {
			t.Fatalf("an open session holds %d slots; want 1", n)
		}
		s.Close()
		deadline := time.Now().Add(5 * time.Second)
		for g.holding(smallest.UseLive) != 0 {
			if time.Now().After(deadline) {
				t.Fatal("a closed session kept its slot")
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}
