package smallest_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/google/go-cmp/cmp"

	"github.com/speechgate/speechgate/internal/smallest"
)

// fakeTTSWS is an independent stand-in for Lightning's synthesis WebSocket.
// At each flush it answers with one chunk holding the buffered text's bytes
// (so tests can see exactly what was synthesized) and a word timing per
// word, then complete, as tts-ws.yaml documents for every flush; the
// message without continue is answered the same way.
type fakeTTSWS struct {
	closeAfterComplete bool // close the socket after complete
	dropSecond         bool // on a socket's second synthesis, close without answering
	idleAfter          time.Duration
	errorFrame         string        // sent instead of audio, if set
	completeAtEnd      bool          // complete only after the end of the input, as older pages describe
	silent             bool          // never answer
	stallMidway        bool          // send each synthesis' first chunk, then nothing
	idleAtOnce         bool          // close every socket for inactivity at its first message
	autoFlush          time.Duration // speak unflushed text by itself after this long (max_buffer_flush_ms)
	dropAfterChunk     bool          // drop the connection, without a close, after the first chunk

	mu       sync.Mutex
	conns    int
	messages [][]map[string]any // per connection
	timeouts []string           // ?timeout per connection
	closed   chan struct{}      // gets a value per closed socket
}

func (f *fakeTTSWS) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	defer func() { f.closed <- struct{}{} }()
	defer c.CloseNow()
	f.mu.Lock()
	n := f.conns
	f.conns++
	f.messages = append(f.messages, nil)
	f.timeouts = append(f.timeouts, r.URL.Query().Get("timeout"))
	f.mu.Unlock()
	ctx := r.Context()
	write := func(v any) { b, _ := json.Marshal(v); c.Write(ctx, websocket.MessageText, b) }
	resetIdle := func() {}
	var text strings.Builder
	syntheses, flushes := 0, 0
	// Idleness is timed apart from Read: a Read whose context expires closes
	// the socket before the inactivity message could be sent.
	if f.idleAfter > 0 {
		idle := time.AfterFunc(f.idleAfter, func() {
			write(map[string]string{"status": "error", "message": "Connection timed out after 1 seconds of inactivity"})
			c.Close(websocket.StatusNormalClosure, "")
		})
		defer idle.Stop()
		resetIdle = func() { idle.Reset(f.idleAfter) }
	}
	for {
		_, data, err := c.Read(ctx)
		if err != nil {
			return
		}
		resetIdle()
		var m map[string]any
		json.Unmarshal(data, &m)
		f.mu.Lock()
		f.messages[n] = append(f.messages[n], m)
		f.mu.Unlock()
		if f.dropSecond && syntheses == 1 {
			c.Close(websocket.StatusNormalClosure, "")
			return
		}
		if f.idleAtOnce {
			write(map[string]string{"status": "error", "message": "Connection timed out after 60 seconds of inactivity"})
			c.Close(websocket.StatusNormalClosure, "")
			return
		}
		if f.silent {
			continue
		}
		text.WriteString(m["text"].(string))
		if m["flush"] != true && m["continue"] == true {
			if f.autoFlush > 0 && text.Len() > 0 {
				time.Sleep(f.autoFlush)
				id := fmt.Sprintf("auto_%d_%d", n, syntheses)
				write(map[string]any{"session_id": "s", "request_id": id, "status": "chunk", "data": map[string]string{"audio": base64.StdEncoding.EncodeToString([]byte(text.String()))}})
				write(map[string]string{"session_id": "s", "request_id": id, "status": "complete"})
				text.Reset()
			}
			continue
		}
		if f.dropAfterChunk {
			write(map[string]any{"session_id": "s", "request_id": "drop", "status": "chunk", "data": map[string]string{"audio": "AAAA"}})
			c.CloseNow()
			return
		}
		if f.stallMidway {
			write(map[string]any{"session_id": "s", "request_id": "stall", "status": "chunk", "data": map[string]string{"audio": "AAAA"}})
			continue
		}
		if f.errorFrame != "" {
			c.Write(ctx, websocket.MessageText, []byte(f.errorFrame))
			continue
		}
		flushes++
		id := fmt.Sprintf("req_%d_%d", n, flushes)
		if t := text.String(); t != "" {
			write(map[string]any{"session_id": "s", "request_id": id, "status": "chunk", "data": map[string]string{"audio": base64.StdEncoding.EncodeToString([]byte(t))}})
			for i, word := range strings.Fields(t) {
				write(map[string]any{"session_id": "s", "request_id": id, "status": "word_timestamp", "data": map[string]any{"id": i, "word": word, "start": float64(i), "end": float64(i) + 0.5}})
			}
		}
		text.Reset()
		if !f.completeAtEnd || m["continue"] != true {
			write(map[string]string{"session_id": "s", "request_id": id, "status": "complete"})
		}
		if m["continue"] != true {
			syntheses++
			if f.closeAfterComplete {
				c.Close(websocket.StatusNormalClosure, "")
				return
			}
		}
	}
}

func wsClient(t *testing.T, f *fakeTTSWS, pool int) *smallest.Client {
	t.Helper()
	return wsClientWith(t, f, func(cfg *smallest.Config) { cfg.StreamPoolSize = pool })
}

func wsClientWith(t *testing.T, f *fakeTTSWS, opts ...func(*smallest.Config)) *smallest.Client {
	t.Helper()
	f.closed = make(chan struct{}, 100)
	srv := httptest.NewServer(f)
	cfg := smallest.Config{BaseURL: srv.URL, HTTPClient: srv.Client(), Credential: func(context.Context) string { return testKey },
		StreamIdleTimeout: 300 * time.Second}
	for _, o := range opts {
		o(&cfg)
	}
	c, err := smallest.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); srv.Close() })
	return c
}

// speak runs one session: pieces sent (a trailing "|" marks a flush), then
// End; it returns the synthesized text and the words.
func speak(t *testing.T, c *smallest.Client, pieces ...string) (string, []string, error) {
	t.Helper()
	s, err := c.StreamSpeechText(t.Context(), &smallest.StreamOptions{WordTimestamps: true, VoiceOptions: smallest.VoiceOptions{VoiceID: "avery", SampleRate: 24000}})
	if err != nil {
		return "", nil, err
	}
	defer s.Close()
	for _, p := range pieces {
		if _, err := s.Send(strings.TrimSuffix(p, "|"), strings.HasSuffix(p, "|")); err != nil {
			return "", nil, err
		}
	}
	if _, err := s.End(); err != nil {
		return "", nil, err
	}
	var audio strings.Builder
	var words []string
	for {
		ev, err := s.Next()
		if errors.Is(err, io.EOF) {
			return audio.String(), words, nil
		}
		if err != nil {
			return audio.String(), words, err
		}
		audio.Write(ev.Audio)
		if ev.Word != nil {
			words = append(words, ev.Word.Word)
		}
	}
}

func TestStreamSpeechTextReusesSockets(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		fake      *fakeTTSWS
		wantConns int
	}{
		{name: "server keeps the socket open", fake: &fakeTTSWS{}, wantConns: 1},
		{name: "server closes after complete", fake: &fakeTTSWS{closeAfterComplete: true}, wantConns: 3},
		{name: "pooled socket dies before answering", fake: &fakeTTSWS{dropSecond: true}, wantConns: 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := wsClient(t, tt.fake, 2)
			for i := range 3 {
				text, words, err := speak(t, c, "Hello ", "there.|", fmt.Sprintf(" Take %d.", i))
				if err != nil {
					t.Fatalf("session %d: %v", i, err)
				}
				if want := fmt.Sprintf("Hello there. Take %d.", i); text != want {
					t.Fatalf("session %d synthesized %q, want %q", i, text, want)
				}
				if d := cmp.Diff([]string{"Hello", "there.", "Take", fmt.Sprint(i) + "."}, words); d != "" {
					t.Errorf("session %d words (-want +got):\n%s", i, d)
				}
				if tt.fake.closeAfterComplete {
					<-tt.fake.closed // let the pool see the close before the next session
				}
			}
			tt.fake.mu.Lock()
			defer tt.fake.mu.Unlock()
			if tt.fake.conns != tt.wantConns {
				t.Errorf("%d sockets opened for 3 sessions, want %d", tt.fake.conns, tt.wantConns)
			}
			first := tt.fake.messages[0][0]
			if first["voice_id"] != "avery" || first["continue"] != true || first["flush"] != false || first["word_timestamps"] != true || tt.fake.timeouts[0] != "300" {
				t.Errorf("first message %v (timeout %q)", first, tt.fake.timeouts[0])
			}
		})
	}
}

func TestStreamSpeechTextSurvivesAnIdleClose(t *testing.T) {
	t.Parallel()
	f := &fakeTTSWS{idleAfter: 300 * time.Millisecond}
	c := wsClient(t, f, 0)
	s, err := c.StreamSpeechText(t.Context(), &smallest.StreamOptions{VoiceOptions: smallest.VoiceOptions{VoiceID: "avery"}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.Send("Thinking ", false)
	received := make(chan string, 1)
	go func() {
		var audio strings.Builder
		for {
			ev, err := s.Next()
			if err != nil {
				received <- audio.String() + " / " + err.Error()
				return
			}
			audio.Write(ev.Audio)
		}
	}()
	time.Sleep(450 * time.Millisecond) // the agent thinks longer than the 300 ms idle timeout
	s.Send("done.", true)
	s.End()
	got := <-received
	if got != "Thinking done. / EOF" {
		t.Fatalf("session ended with %q; the text buffered before the idle close must be resent", got)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.conns != 2 {
		t.Errorf("%d sockets, want a second after the idle close", f.conns)
	}
}

func TestStreamSpeechTextIdleCloseRacingTheEnd(t *testing.T) {
	t.Parallel()
	f := &fakeTTSWS{idleAfter: 200 * time.Millisecond}
	c := wsClient(t, f, 0)
	s, err := c.StreamSpeechText(t.Context(), &smallest.StreamOptions{VoiceOptions: smallest.VoiceOptions{VoiceID: "avery"}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.Send("Late ", false)
	s.Send("words.", false)
	// Wait until Smallest has given up on the socket, then end: the end
	// goes to a closed socket and must be resent with the text.
	<-f.closed
	s.End()
	var audio strings.Builder
	for {
		ev, err := s.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		audio.Write(ev.Audio)
	}
	if audio.String() != "Late words." {
		t.Fatalf("synthesized %q, want %q", audio.String(), "Late words.")
	}
}

func TestStreamSpeechTextFailures(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		frame string
		want  smallest.Error
	}{
		{name: "message error", frame: `{"status":"error","message":"Invalid Voice ID"}`,
			want: smallest.Error{Kind: smallest.KindStreamError, Message: "Invalid Voice ID"}},
		{name: "nested error", frame: `{"status":"error","error":{"message":"over the limit","code":"RATE_LIMIT_EXCEEDED"}}`,
			want: smallest.Error{Kind: smallest.KindStreamError, Code: "RATE_LIMIT_EXCEEDED", Message: "over the limit"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, _, err := speak(t, wsClient(t, &fakeTTSWS{errorFrame: tt.frame}, 1), "hi.|")
			var got *smallest.Error
			if !errors.As(err, &got) {
				t.Fatalf("err = %v", err)
			}
			want := tt.want
			want.Endpoint = "WS /waves/v1/tts/live"
			if d := cmp.Diff(&want, got, cmp.AllowUnexported(smallest.Error{}), cmpIgnoreCause); d != "" {
				t.Errorf("error (-want +got):\n%s", d)
			}
		})
	}
	t.Run("cancel closes the socket", func(t *testing.T) {
		t.Parallel()
		f := &fakeTTSWS{}
		c := wsClient(t, f, 1)
		ctx, cancel := context.WithCancel(t.Context())
		s, err := c.StreamSpeechText(ctx, &smallest.StreamOptions{VoiceOptions: smallest.VoiceOptions{VoiceID: "avery"}})
		if err != nil {
			t.Fatal(err)
		}
		s.Send("hello", false)
		cancel()
		if _, err := s.Next(); !errors.Is(err, context.Canceled) {
			t.Fatalf("Next after cancel = %v", err)
		}
		s.Close()
		select {
		case <-f.closed:
		case <-time.After(5 * time.Second):
			t.Fatal("the socket stayed open after the cancel")
		}
	})
}

// TestCompleteBackoffIsSent: the option goes on every message, and is left
// out when unset, so that Smallest's default applies.
func TestCompleteBackoffIsSent(t *testing.T) {
	t.Parallel()
	for _, backoff := range []*int{nil, new(int), func() *int { n := 250; return &n }()} {
		f := &fakeTTSWS{}
		c := wsClient(t, f, 0)
		s, err := c.StreamSpeechText(t.Context(), &smallest.StreamOptions{VoiceOptions: smallest.VoiceOptions{VoiceID: "avery"}, CompleteBackoffMS: backoff})
		if err != nil {
			t.Fatal(err)
		}
		s.Send("Hi.", true)
		s.End()
		for {
			if _, err := s.Next(); err != nil {
				break
			}
		}
		s.Close()
		f.mu.Lock()
		for _, m := range f.messages[0] {
			got, ok := m["complete_backoff_ms"]
			switch {
			case backoff == nil && ok:
				t.Errorf("unset, but sent as %v", got)
			case backoff != nil && got != float64(*backoff):
				t.Errorf("complete_backoff_ms %v; want %d", got, *backoff)
			}
		}
		f.mu.Unlock()
	}
}
