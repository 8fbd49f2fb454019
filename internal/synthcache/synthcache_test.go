package synthcache_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/speechgate/speechgate/internal/fleet"
	"github.com/speechgate/speechgate/internal/redistest"
	"github.com/speechgate/speechgate/internal/rpcerror"
	"github.com/speechgate/speechgate/internal/smallest"
	"github.com/speechgate/speechgate/internal/synthcache"
)

func TestMain(m *testing.M) {
	// Redis killed on purpose makes go-redis log its dial failures.
	fleet.SetLibraryLogger(slog.New(slog.DiscardHandler))
	goleak.VerifyTestMain(m)
}

// standIn is an independent stand-in for Lightning's SSE synthesis that
// counts its calls. Each frame's audio is derived from the text and the
// frame's number, so that different texts sound different.
type standIn struct {
	frames    int
	gap       time.Duration // between frames
	failAfter int           // an error frame after this many frames (0: never)
	hold      chan struct{} // when set, the first frame waits for it to close

	calls     atomic.Int32
	cancelled atomic.Int32 // calls whose caller left before the end
}

func (s *standIn) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.calls.Add(1)
	var req struct {
		Text string `json:"text"`
	}
	json.NewDecoder(r.Body).Decode(&req)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("X-Request-Id", fmt.Sprintf("req-%d", s.calls.Load()))
	w.(http.Flusher).Flush()
	if s.hold != nil {
		select {
		case <-s.hold:
		case <-r.Context().Done():
			s.cancelled.Add(1)
			return
		}
	}
	for i := range s.frames {
		if s.failAfter > 0 && i == s.failAfter {
			io.WriteString(w, "data: {\"status\":\"error\",\"message\":\"synthesis failed midway\"}\n\n")
			return
		}
		select {
		case <-r.Context().Done():
			s.cancelled.Add(1)
			return
		case <-time.After(s.gap):
		}
		fmt.Fprintf(w, "event: audio\ndata: {\"audio\": %q, \"done\": false, \"status\": \"206\"}\n\n", base64.StdEncoding.EncodeToString(frame(req.Text, i)))
		w.(http.Flusher).Flush()
	}
	io.WriteString(w, "data: {\"status\": \"200\", \"done\": true}\n\n")
}

func frame(text string, i int) []byte {
	return bytes.Repeat([]byte(fmt.Sprintf("%s/%d;", text, i)), 60)
}

// expected is the audio the stand-in sends for text.
func (s *standIn) expected(text string) []byte {
	var b []byte
	for i := range s.frames {
		b = append(b, frame(text, i)...)
	}
	return b
}

type rig struct {
	up     *standIn
	client *smallest.Client
	cache  *synthcache.Cache
}

func newRig(t *testing.T, up *standIn, cfg synthcache.Config) *rig {
	t.Helper()
	srv := httptest.NewServer(up)
	t.Cleanup(srv.Close)
	client, err := smallest.New(smallest.Config{BaseURL: srv.URL, HTTPClient: srv.Client(),
		Credential: func(context.Context) string { return "sk_test_key" }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(client.Close)
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	cache, err := synthcache.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cache.Close() })
	return &rig{up: up, client: client, cache: cache}
}

func request(text string) synthcache.Request {
	return synthcache.Request{Account: "acct-1", Speech: &smallest.SpeechRequest{Text: text,
		VoiceOptions: smallest.VoiceOptions{VoiceID: "avery", SampleRate: 24000}, OutputFormat: "pcm"}}
}

// read opens r and reads it to its end.
func (g *rig) read(ctx context.Context, r synthcache.Request) ([]byte, synthcache.Outcome, error) {
	s, err := g.cache.Open(ctx, r, func(ctx context.Context) (*smallest.SpeechStream, error) { return g.client.StreamSpeech(ctx, r.Speech) })
	if err != nil {
		return nil, synthcache.Off, err
	}
	defer s.Close()
	var out []byte
	for {
		b, err := s.Next()
		if errors.Is(err, io.EOF) {
			return out, s.Outcome, nil
		}
		if err != nil {
			return out, s.Outcome, err
		}
		out = append(out, b...)
	}
}

func TestHitReplaysTheAudio(t *testing.T) {
	t.Parallel()
	g := newRig(t, &standIn{frames: 20}, synthcache.Config{Bytes: 8 << 20})
	want := g.up.expected("Welcome to the bank.")
	for i, outcome := range []synthcache.Outcome{synthcache.Miss, synthcache.HitMemory, synthcache.HitMemory} {
		got, o, err := g.read(t.Context(), request("Welcome to the bank."))
		if err != nil || o != outcome || !bytes.Equal(got, want) {
			t.Fatalf("read %d: %v, outcome %q, %d bytes equal %v; want %q and the synthesized audio", i, err, o, len(got), bytes.Equal(got, want), outcome)
		}
	}
	if n := g.up.calls.Load(); n != 1 {
		t.Errorf("%d upstream calls for three identical syntheses; want 1", n)
	}
}

// TestKeyIsEverythingThatShapesTheAudio: any change to what shapes the
// audio is another entry; the request's ids are not; accounts do not see
// each other's entries unless the cache is shared.
func TestKeyIsEverythingThatShapesTheAudio(t *testing.T) {
	t.Parallel()
	change := map[string]func(r *synthcache.Request){
		"text":          func(r *synthcache.Request) { r.Speech.Text = "Hello?" },
		"voice":         func(r *synthcache.Request) { r.Speech.VoiceID = "meher" },
		"model":         func(r *synthcache.Request) { r.Speech.Model = "lightning_v3.1_pro" },
		"sample rate":   func(r *synthcache.Request) { r.Speech.SampleRate = 8000 },
		"speed":         func(r *synthcache.Request) { r.Speech.Speed = 1.5 },
		"language":      func(r *synthcache.Request) { r.Speech.Language = "hi" },
		"numbers":       func(r *synthcache.Request) { r.Speech.NumberPronunciationLanguage = "en" },
		"math":          func(r *synthcache.Request) { r.Speech.MathNotation = true },
		"encoding":      func(r *synthcache.Request) { r.Speech.OutputFormat = "ulaw" },
		"dictionaries":  func(r *synthcache.Request) { r.Speech.PronunciationDicts = []string{"d1"} },
		"their version": func(r *synthcache.Request) { r.Dictionaries = "d1=2" },
		"account":       func(r *synthcache.Request) { r.Account = "acct-2" },
	}
	same := map[string]func(r *synthcache.Request){
		"request id": func(r *synthcache.Request) { r.Speech.RequestID = "mine" },
		"session id": func(r *synthcache.Request) { r.Speech.SessionID = "s-1" },
	}
	for _, set := range []struct {
		changes map[string]func(*synthcache.Request)
		want    synthcache.Outcome
	}{{change, synthcache.Miss}, {same, synthcache.HitMemory}} {
		for name, f := range set.changes {
			t.Run(fmt.Sprintf("a new %s is a %s", name, set.want), func(t *testing.T) {
				t.Parallel()
				g := newRig(t, &standIn{frames: 2}, synthcache.Config{Bytes: 1 << 20})
				g.read(t.Context(), request("Hello."))
				r := request("Hello.")
				f(&r)
				if _, o, err := g.read(t.Context(), r); err != nil || o != set.want {
					t.Errorf("outcome %q, %v; want %q", o, err, set.want)
				}
			})
		}
	}
	t.Run("a shared cache serves every account", func(t *testing.T) {
		t.Parallel()
		g := newRig(t, &standIn{frames: 2}, synthcache.Config{Bytes: 1 << 20, Shared: true})
		g.read(t.Context(), request("Hello."))
		r := request("Hello.")
		r.Account = "acct-2"
		if _, o, err := g.read(t.Context(), r); err != nil || o != synthcache.HitMemory {
			t.Errorf("outcome %q, %v; want a hit", o, err)
		}
	})
}

// TestIdenticalRequestsShareOneSynthesis: 100 identical requests at once
// make one upstream call, and each gets every byte of it.
func TestIdenticalRequestsShareOneSynthesis(t *testing.T) {
	t.Parallel()
	up := &standIn{frames: 30, gap: 2 * time.Millisecond, hold: make(chan struct{})}
	g := newRig(t, up, synthcache.Config{Bytes: 8 << 20})
	want := up.expected("Your call is important to us.")
	var wg sync.WaitGroup
	outcomes := make([]synthcache.Outcome, 100)
	errs := make([]error, 100)
	var started sync.WaitGroup
	for i := range 100 {
		wg.Add(1)
		started.Add(1)
		go func() {
			defer wg.Done()
			started.Done()
			var got []byte
			got, outcomes[i], errs[i] = g.read(t.Context(), request("Your call is important to us."))
			if errs[i] == nil && !bytes.Equal(got, want) {
				errs[i] = fmt.Errorf("%d bytes differ from the synthesis", len(got))
			}
		}()
	}
	started.Wait()
	time.Sleep(50 * time.Millisecond) // let every request find the flight
	close(up.hold)
	wg.Wait()
	counts := map[synthcache.Outcome]int{}
	for i := range 100 {
		if errs[i] != nil {
			t.Fatalf("request %d: %v", i, errs[i])
		}
		counts[outcomes[i]]++
	}
	if n := up.calls.Load(); n != 1 {
		t.Errorf("100 identical requests made %d upstream calls; want 1", n)
	}
	if counts[synthcache.Miss] != 1 || counts[synthcache.Joined] != 99 {
		t.Errorf("outcomes %v; want one miss and 99 joined", counts)
	}
}

// TestTheUpstreamCallOutlivesItsLeader: when the caller that started a
// synthesis leaves, a joiner still gets all of it; when every reader has
// left, the upstream call is cancelled.
func TestTheUpstreamCallOutlivesItsLeader(t *testing.T) {
	t.Parallel()
	up := &standIn{frames: 20, gap: 10 * time.Millisecond}
	g := newRig(t, up, synthcache.Config{Bytes: 8 << 20})
	leaderCtx, leave := context.WithCancel(t.Context())
	leader, err := g.cache.Open(leaderCtx, request("Please hold."), func(ctx context.Context) (*smallest.SpeechStream, error) {
		return g.client.StreamSpeech(ctx, request("Please hold.").Speech)
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := leader.Next(); err != nil {
		t.Fatal(err)
	}
	joined := make(chan []byte, 1)
	go func() {
		got, o, err := g.read(t.Context(), request("Please hold."))
		if err != nil || o != synthcache.Joined {
			t.Errorf("the joiner: %q, %v", o, err)
		}
		joined <- got
	}()
	time.Sleep(30 * time.Millisecond)
	leave()
	leader.Close()
	if got := <-joined; !bytes.Equal(got, up.expected("Please hold.")) {
		t.Errorf("after the leader left, the joiner got %d bytes, not the whole synthesis", len(got))
	}
	if up.cancelled.Load() != 0 {
		t.Error("the upstream call was cancelled while a joiner read it")
	}

	// Nobody left reading: the call is cancelled.
	ctx, cancel := context.WithCancel(t.Context())
	s, err := g.cache.Open(ctx, request("Goodbye."), func(ctx context.Context) (*smallest.SpeechStream, error) {
		return g.client.StreamSpeech(ctx, request("Goodbye.").Speech)
	})
	if err != nil {
		t.Fatal(err)
	}
	s.Next()
	cancel()
	s.Close()
	deadline := time.Now().Add(5 * time.Second)
	for up.cancelled.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the upstream call went on with nobody reading it")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if _, o, _ := g.read(t.Context(), request("Goodbye.")); o != synthcache.Miss {
		t.Errorf("a cancelled synthesis was stored: the next read is %q", o)
	}
}

// TestACallerWaitingForSmallestIsNotHeld: a flight's readers read the
// upstream themselves, each in its caller's goroutine. A reader waiting
// there for a frame is released at once when its caller goes, and the
// upstream call is cancelled, when no other caller reads it; when one
// does, that one still gets all of the audio.
func TestACallerWaitingForSmallestIsNotHeld(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name   string
		joiner bool
	}{{"alone", false}, {"with a joiner", true}} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			up := &standIn{frames: 3, gap: 400 * time.Millisecond}
			g := newRig(t, up, synthcache.Config{Bytes: 8 << 20})
			open := func(ctx context.Context) (*smallest.SpeechStream, error) {
				return g.client.StreamSpeech(ctx, request("Slow.").Speech)
			}
			ctx, cancel := context.WithCancel(t.Context())
			s, err := g.cache.Open(ctx, request("Slow."), open)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			joined := make(chan error, 1)
			if tt.joiner {
				go func() {
					got, o, err := g.read(t.Context(), request("Slow."))
					if err == nil && (o != synthcache.Joined || !bytes.Equal(got, up.expected("Slow."))) {
						err = fmt.Errorf("%q, %d bytes: not the whole synthesis", o, len(got))
					}
					joined <- err
				}()
			}
			time.AfterFunc(100*time.Millisecond, cancel) // while Next waits for the first frame
			start := time.Now()
			if _, err := s.Next(); err == nil && !tt.joiner {
				t.Fatal("Next returned audio after its caller left")
			}
			if !tt.joiner {
				if waited := time.Since(start); waited > 300*time.Millisecond {
					t.Errorf("Next returned %v after its caller left; the frame was due at 400ms", waited-100*time.Millisecond)
				}
				deadline := time.Now().Add(5 * time.Second)
				for up.cancelled.Load() == 0 {
					if time.Now().After(deadline) {
						t.Fatal("the upstream call went on with nobody reading it")
					}
					time.Sleep(5 * time.Millisecond)
				}
				return
			}
			s.Close()
			if err := <-joined; err != nil {
				t.Errorf("the joiner: %v", err)
			}
			if up.cancelled.Load() != 0 || up.calls.Load() != 1 {
				t.Errorf("%d calls, %d cancelled; want one call, read to its end", up.calls.Load(), up.cancelled.Load())
			}
		})
	}
}

// panickyBody is a response body whose first read says so (reading),
// waits for release, then panics, as a bug in reading the stream would.
type panickyBody struct {
	io.ReadCloser
	reading, release chan struct{}
}

func (b panickyBody) Read([]byte) (int, error) {
	close(b.reading)
	<-b.release
	panic("a bug in reading the stream")
}

type panickyTransport struct {
	base             http.RoundTripper
	reading, release chan struct{}
}

func (t panickyTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(r)
	if err == nil {
		resp.Body = panickyBody{ReadCloser: resp.Body, reading: t.reading, release: t.release}
	}
	return resp, err
}

// TestAPanicReadingTheStreamEndsTheFlight: a reader whose read of the
// stream panics (its handler recovers) leaves no reader waiting for a
// piece that will never come, and the cache still closes.
func TestAPanicReadingTheStreamEndsTheFlight(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(&standIn{frames: 3})
	t.Cleanup(srv.Close)
	reading, release := make(chan struct{}), make(chan struct{})
	client, err := smallest.New(smallest.Config{BaseURL: srv.URL,
		HTTPClient: &http.Client{Transport: panickyTransport{base: srv.Client().Transport, reading: reading, release: release}},
		Credential: func(context.Context) string { return "sk_test_key" }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(client.Close)
	cache, err := synthcache.New(synthcache.Config{Bytes: 8 << 20, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	open := func(ctx context.Context) (*smallest.SpeechStream, error) {
		return client.StreamSpeech(ctx, request("Oops.").Speech)
	}
	leader, err := cache.Open(t.Context(), request("Oops."), open)
	if err != nil {
		t.Fatal(err)
	}
	panicked := make(chan any, 1)
	go func() {
		defer func() { panicked <- recover() }()
		leader.Next() // reads the stream, and panics once released
	}()
	joiner, err := cache.Open(t.Context(), request("Oops."), open)
	if err != nil {
		t.Fatal(err)
	}
	if joiner.Outcome != synthcache.Joined {
		t.Fatalf("the second request: %q, want joined", joiner.Outcome)
	}
	<-reading // the leader is in the stream: the joiner waits for its piece
	got := make(chan error, 1)
	go func() {
		_, err := joiner.Next()
		got <- err
	}()
	time.Sleep(50 * time.Millisecond)
	close(release)
	if p := <-panicked; p == nil {
		t.Fatal("reading the stream did not panic")
	}
	select {
	case err := <-got:
		if status.Code(err) != codes.Internal {
			t.Errorf("the joiner got %v; want INTERNAL", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the joiner still waits for a piece after the read panicked")
	}
	leader.Close()
	joiner.Close()
	closed := make(chan error, 1)
	go func() { closed <- cache.Close() }()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("the cache did not close: the flight was never ended")
	}
}

// TestAFailureReachesEveryReader: every reader of a synthesis that fails
// gets the failure, and nothing is stored.
func TestAFailureReachesEveryReader(t *testing.T) {
	t.Parallel()
	up := &standIn{frames: 10, gap: 5 * time.Millisecond, failAfter: 5, hold: make(chan struct{})}
	g := newRig(t, up, synthcache.Config{Bytes: 8 << 20})
	errs := make(chan error, 2)
	for range 2 {
		go func() {
			_, _, err := g.read(t.Context(), request("Broken."))
			errs <- err
		}()
	}
	time.Sleep(50 * time.Millisecond)
	close(up.hold)
	for range 2 {
		err := <-errs
		var e *smallest.Error
		if !errors.As(err, &e) || e.Message != "synthesis failed midway" {
			t.Errorf("a reader got %v; want the upstream's failure", err)
		}
	}
	up.failAfter = 0
	if _, o, _ := g.read(t.Context(), request("Broken.")); o != synthcache.Miss || up.calls.Load() != 2 {
		t.Errorf("after a failure the next read was %q after %d calls; want a miss", o, up.calls.Load())
	}
}

func TestModes(t *testing.T) {
	t.Parallel()
	g := newRig(t, &standIn{frames: 3}, synthcache.Config{Bytes: 8 << 20})
	only := request("Only if cached.")
	only.Mode = synthcache.ModeOnly
	if _, _, err := g.read(t.Context(), only); status.Code(err) != codes.NotFound || rpcerror.ReasonOf(err) != rpcerror.ReasonCacheMiss {
		t.Fatalf("cache-only on a miss: %v; want NOT_FOUND, CACHE_MISS", err)
	}
	if g.cache.Has(t.Context(), only) {
		t.Error("Has reports an entry that is not there")
	}
	g.read(t.Context(), request("Only if cached."))
	if _, o, err := g.read(t.Context(), only); err != nil || o != synthcache.HitMemory || !g.cache.Has(t.Context(), only) {
		t.Errorf("cache-only once cached: %q, %v", o, err)
	}
	bypass := request("Only if cached.")
	bypass.Mode = synthcache.ModeBypass
	calls := g.up.calls.Load()
	if _, o, err := g.read(t.Context(), bypass); err != nil || o != synthcache.Bypassed || g.up.calls.Load() != calls+1 {
		t.Errorf("bypass: %q, %v; want a fresh synthesis", o, err)
	}
	expiring := request("Forget me.")
	expiring.Speech.ExpireContent = true
	g.read(t.Context(), expiring)
	if _, o, _ := g.read(t.Context(), request("Forget me.")); o != synthcache.Miss {
		t.Errorf("content asked to expire was stored: the next read is %q", o)
	}
}

// TestTheBudgetHolds: the in-process tier never takes more memory than its
// budget, evicts the least recently used, and never recycles the memory of
// an entry being read.
func TestTheBudgetHolds(t *testing.T) {
	t.Parallel()
	up := &standIn{frames: 100} // about 100 KB an entry
	g := newRig(t, up, synthcache.Config{Bytes: 512 << 10, MaxEntryBytes: 200 << 10})
	g.read(t.Context(), request("first"))
	reading, err := g.cache.Open(t.Context(), request("first"), nil)
	if err != nil || reading.Outcome != synthcache.HitMemory {
		t.Fatalf("%v, %q", err, reading.Outcome)
	}
	for i := range 10 {
		if _, _, err := g.read(t.Context(), request(fmt.Sprint("text ", i))); err != nil {
			t.Fatal(err)
		}
	}
	// "first" was evicted meanwhile, but its reader still gets it whole.
	var got []byte
	for {
		b, err := reading.Next()
		if err != nil {
			break
		}
		got = append(got, b...)
	}
	reading.Close()
	if !bytes.Equal(got, up.expected("first")) {
		t.Error("an entry evicted while it was read was overwritten")
	}
	if _, o, _ := g.read(t.Context(), request("text 9")); o != synthcache.HitMemory {
		t.Errorf("the most recent entry is a %q", o)
	}
	if _, o, _ := g.read(t.Context(), request("text 0")); o != synthcache.Miss {
		t.Errorf("the least recent entry survived ten newer ones in a budget for five: %q", o)
	}
	huge := &standIn{frames: 600} // about 320 KB
	h := newRig(t, huge, synthcache.Config{Bytes: 4 << 20, MaxEntryBytes: 200 << 10})
	h.read(t.Context(), request("long"))
	if _, o, _ := h.read(t.Context(), request("long")); o != synthcache.Miss {
		t.Errorf("an entry over the largest allowed was stored: %q", o)
	}
}

func TestEntriesExpire(t *testing.T) {
	t.Parallel()
	g := newRig(t, &standIn{frames: 2}, synthcache.Config{Bytes: 1 << 20, TTL: 100 * time.Millisecond})
	g.read(t.Context(), request("Soon gone."))
	time.Sleep(150 * time.Millisecond)
	if _, o, _ := g.read(t.Context(), request("Soon gone.")); o != synthcache.Miss {
		t.Errorf("an expired entry was a %q", o)
	}
}

// TestRedisTier: with Redis, another replica's cache serves what one
// stored; a Redis that dies before a hit starts means a synthesis, and one
// that dies during a hit fails the read rather than end it short.
func TestRedisTier(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	up := &standIn{frames: 700} // about 700 KB: more values than a hit reads at once
	one := newRig(t, up, synthcache.Config{Bytes: 4 << 20, MaxEntryBytes: 1 << 20, RedisURL: srv.URL, RedisBytes: 64 << 20})
	other := newRig(t, up, synthcache.Config{Bytes: 4 << 20, MaxEntryBytes: 1 << 20, RedisURL: srv.URL, RedisBytes: 64 << 20})
	if _, o, err := one.read(t.Context(), request("Shared prompt.")); err != nil || o != synthcache.Miss {
		t.Fatal(o, err)
	}
	one.cache.Close() // its write to Redis is done when Close returns
	got, o, err := other.read(t.Context(), request("Shared prompt."))
	if err != nil || o != synthcache.HitRedis || !bytes.Equal(got, up.expected("Shared prompt.")) {
		t.Fatalf("another replica: %q, %v, %d bytes; want a Redis hit of the same audio", o, err, len(got))
	}
	if _, o, _ := other.read(t.Context(), request("Shared prompt.")); o != synthcache.HitMemory {
		t.Errorf("a Redis hit was not kept in the process: %q", o)
	}

	// A third replica starts reading a long entry from Redis, and Redis dies.
	third := newRig(t, up, synthcache.Config{Bytes: 0, RedisURL: srv.URL, RedisBytes: 64 << 20})
	s, err := third.cache.Open(t.Context(), request("Shared prompt."), nil)
	if err != nil || s.Outcome != synthcache.HitRedis {
		t.Fatalf("%v, %q", err, s.Outcome)
	}
	s.Next()
	srv.Kill()
	for {
		_, err = s.Next()
		if err != nil {
			break
		}
	}
	s.Close()
	if errors.Is(err, io.EOF) || status.Code(err) != codes.Unavailable || rpcerror.ReasonOf(err) != rpcerror.ReasonCacheUnavailable {
		t.Errorf("a hit cut by Redis dying ended with %v; want UNAVAILABLE, CACHE_UNAVAILABLE, never the end", err)
	}
	// With Redis gone, a lookup is a miss, synthesized.
	if _, o, err := third.read(t.Context(), request("Shared prompt.")); err != nil || o != synthcache.Miss {
		t.Errorf("with Redis down: %q, %v; want a synthesis", o, err)
	}
}

// TestRedisKeepsToItsBudget: the oldest entries are deleted from Redis to
// keep the tier within its budget.
func TestRedisKeepsToItsBudget(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	up := &standIn{frames: 100} // 40 to 50 KB an entry
	writer := newRig(t, up, synthcache.Config{Bytes: 0, RedisURL: srv.URL, RedisBytes: 100 << 10})
	for _, text := range []string{"one", "two", "three"} {
		if _, _, err := writer.read(t.Context(), request(text)); err != nil {
			t.Fatal(err)
		}
	}
	writer.cache.Close()
	reader := newRig(t, up, synthcache.Config{Bytes: 0, RedisURL: srv.URL, RedisBytes: 100 << 10})
	for text, want := range map[string]synthcache.Outcome{"one": synthcache.Miss, "three": synthcache.HitRedis} {
		if _, o, err := reader.read(t.Context(), request(text)); err != nil || o != want {
			t.Errorf("%q: %q, %v; want %q", text, o, err, want)
		}
	}
}

// TestAFlightThatDropsAudioTakesNoJoiners: with no room to store it, a
// flight keeps only what its readers have not read, so a request arriving
// after audio was dropped cannot get it all: it makes its own synthesis.
// With room, it joins.
func TestAFlightThatDropsAudioTakesNoJoiners(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name  string
		bytes int
		calls int32
	}{{"no room: a new synthesis", 0, 2}, {"room: joined", 8 << 20, 1}} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			up := &standIn{frames: 50, gap: 5 * time.Millisecond}
			g := newRig(t, up, synthcache.Config{Bytes: tt.bytes})
			open := func(ctx context.Context) (*smallest.SpeechStream, error) {
				return g.client.StreamSpeech(ctx, request("Late.").Speech)
			}
			first, err := g.cache.Open(t.Context(), request("Late."), open)
			if err != nil {
				t.Fatal(err)
			}
			defer first.Close()
			for range 3 {
				if _, err := first.Next(); err != nil {
					t.Fatal(err)
				}
			}
			got, _, err := g.read(t.Context(), request("Late."))
			if err != nil || !bytes.Equal(got, up.expected("Late.")) {
				t.Fatalf("the late request: %v, %d bytes", err, len(got))
			}
			if n := up.calls.Load(); n != tt.calls {
				t.Errorf("%d upstream calls; want %d", n, tt.calls)
			}
		})
	}
}
