package smallest_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/google/go-cmp/cmp"

	"github.com/speechgate/speechgate/internal/smallest"
)

// fakeLive is an independent stand-in for Pulse's realtime WebSocket. It
// records what the client sent and plays a script of answers: after the
// client's n-th message (counting from 1), it sends the given frames; a frame
// of the form "close:<code>" closes the socket with that code.
type fakeLive struct {
	script map[int][]string
	reject int // answer the upgrade with this HTTP status

	mu       sync.Mutex
	query    url.Values
	auth     string
	path     string
	received []string // "bin:<n>" for audio, the text for JSON
	closed   chan struct{}
}

func (f *fakeLive) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.query, f.auth, f.path = r.URL.Query(), r.Header.Get("Authorization"), r.URL.Path
	f.mu.Unlock()
	if f.reject != 0 {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(f.reject)
		io.WriteString(w, `{"error":"unauthorized","message":"Invalid API key"}`)
		return
	}
	c, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	defer close(f.closed)
	defer c.CloseNow()
	ctx := r.Context()
	play := func(frames []string) bool {
		for _, fr := range frames {
			var code int
			if _, err := fmt.Sscanf(fr, "close:%d", &code); err == nil {
				c.Close(websocket.StatusCode(code), "bye")
				return false
			}
			if c.Write(ctx, websocket.MessageText, []byte(fr)) != nil {
				return false
			}
		}
		return true
	}
	if !play(f.script[0]) {
		return
	}
	for n := 1; ; n++ {
		typ, data, err := c.Read(ctx)
		if err != nil {
			return
		}
		f.mu.Lock()
		if typ == websocket.MessageBinary {
			f.received = append(f.received, "bin:"+strconv.Itoa(len(data)))
		} else {
			f.received = append(f.received, string(data))
		}
		f.mu.Unlock()
		if !play(f.script[n]) {
			return
		}
	}
}

func liveClient(t *testing.T, f *fakeLive, opts ...func(*smallest.Config)) *smallest.Client {
	t.Helper()
	f.closed = make(chan struct{})
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	cfg := smallest.Config{BaseURL: srv.URL, USBaseURL: srv.URL + "/us", HTTPClient: srv.Client(),
		Credential: func(context.Context) string { return testKey }, IdleTimeout: 200 * time.Millisecond}
	for _, o := range opts {
		o(&cfg)
	}
	c, err := smallest.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func events(s *smallest.LiveSession) ([]smallest.LiveEvent, error) {
	var out []smallest.LiveEvent
	for {
		ev, err := s.Next()
		if err != nil {
			return out, err
		}
		out = append(out, *ev)
	}
}

func TestLiveSession(t *testing.T) {
	t.Parallel()
	f := &fakeLive{script: map[int][]string{
		1: {`{"type":"speech_started","session_id":"s1","timestamp":0.5}`},
		2: {`{"type":"transcription","status":"success","session_id":"s1","transcript":"Hi, how","transcription":"Hi, how","is_final":false,"is_last":false}`},
		3: {`{"type":"transcription","status":"success","session_id":"s1","transcript":"Hi, how are you?","is_final":true,"is_last":false,` +
			`"from_finalize":true,"language":"en","languages":["en"],"words":[{"word":"Hi,","start":0.0,"end":0.2,"confidence":0.98,"speaker":"0","speaker_confidence":0.95}],` +
			`"utterances":[{"text":"Hi, how are you?","start":0.0,"end":2.2,"speaker":0}],"redacted_entities":["[FIRSTNAME_1]"]}`},
		4: {`{"type":"speech_ended","session_id":"s1","timestamp":2.25}`, `{"type":"new_kind_of_message"}`,
			`{"type":"transcription","transcription":"Bye.","is_final":true,"is_last":true}`, "close:1000"},
	}}
	c := liveClient(t, f)
	on := true
	s, err := c.Listen(t.Context(), &smallest.LiveRequest{Model: "pulse", Language: "en", Encoding: "linear16", SampleRate: 16000,
		WordTimestamps: true, Endpointing: &on, Keywords: []string{"Blackwell:2", "Jensen Huang:1"}, SessionID: "mine"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, step := range []func() error{
		func() error { return s.SendAudio(make([]byte, 4096)) },
		func() error { return s.SendAudio(make([]byte, 100)) },
		s.Finalize,
		s.CloseStream,
	} {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
	got, err := events(s)
	if !errors.Is(err, io.EOF) {
		t.Fatalf("session ended with %v, want io.EOF after is_last", err)
	}
	zero := smallest.Speaker(0)
	want := []smallest.LiveEvent{
		{Type: "speech_started", SessionID: "s1", Timestamp: 0.5},
		{Type: "transcription", SessionID: "s1", Transcript: &smallest.LiveTranscript{Text: "Hi, how"}},
		{Type: "transcription", SessionID: "s1", Transcript: &smallest.LiveTranscript{Text: "Hi, how are you?", IsFinal: true, FromFinalize: true,
			Language: "en", Languages: []string{"en"}, RedactedEntities: []string{"[FIRSTNAME_1]"},
			Words:      []smallest.Word{{Word: "Hi,", End: 0.2, Confidence: 0.98, Speaker: &zero, SpeakerConfidence: 0.95}},
			Utterances: []smallest.Utterance{{Text: "Hi, how are you?", End: 2.2, Speaker: &zero}}}},
		{Type: "speech_ended", SessionID: "s1", Timestamp: 2.25},
		{Type: "transcription", Transcript: &smallest.LiveTranscript{Text: "Bye.", IsFinal: true, IsLast: true}},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("events (-want +got):\n%s", d)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if d := cmp.Diff([]string{"bin:4096", "bin:100", `{"type":"finalize"}`, `{"type":"close_stream"}`}, f.received); d != "" {
		t.Errorf("client sent (-want +got):\n%s", d)
	}
	wantQuery := url.Values{"model": {"pulse"}, "language": {"en"}, "encoding": {"linear16"}, "sample_rate": {"16000"},
		"word_timestamps": {"true"}, "endpointing": {"true"}, "keywords": {"Blackwell:2,Jensen Huang:1"}, "external_session_id": {"mine"}}
	if d := cmp.Diff(wantQuery, f.query); d != "" {
		t.Errorf("query (-want +got):\n%s", d)
	}
	if f.auth != "Bearer "+testKey || f.path != "/waves/v1/stt/live" {
		t.Errorf("Authorization %q, path %q", f.auth, f.path)
	}
}

func TestLiveSessionFailures(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		f    *fakeLive
		want smallest.Error
	}{
		{
			name: "handshake refused",
			f:    &fakeLive{reject: 401},
			want: smallest.Error{Kind: smallest.KindHTTP, HTTPStatus: 401, Message: "Invalid API key; unauthorized", Attempts: 1},
		},
		{
			name: "coded error message",
			f: &fakeLive{script: map[int][]string{0: {`{"type":"error","error_code":"LANGUAGE_NOT_ENABLED_IN_REGION",` +
				`"message":"Language 'multi-south-indic' has not been enabled in this region."}`, "close:1000"}}},
			want: smallest.Error{Kind: smallest.KindStreamError, Code: "LANGUAGE_NOT_ENABLED_IN_REGION",
				Message: "Language 'multi-south-indic' has not been enabled in this region."},
		},
		{
			name: "plain error message",
			f:    &fakeLive{script: map[int][]string{1: {`{"type":"error","status":"error","message":"decoder failed"}`}}},
			want: smallest.Error{Kind: smallest.KindStreamError, Message: "decoder failed"},
		},
		{
			name: "concurrency limit",
			f:    &fakeLive{script: map[int][]string{0: {"close:1008"}}},
			want: smallest.Error{Kind: smallest.KindStreamError, CloseCode: 1008, Message: "Smallest closed the session: bye (too many concurrent sessions)"},
		},
		{
			name: "closed before the last transcript",
			f:    &fakeLive{script: map[int][]string{1: {`{"type":"transcription","transcript":"a","is_final":true}`, "close:1011"}}},
			want: smallest.Error{Kind: smallest.KindStreamBroken, CloseCode: 1011, Message: "Smallest closed the session: bye before its last transcript"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := liveClient(t, tt.f)
			s, err := c.Listen(t.Context(), &smallest.LiveRequest{Model: "pulse", Language: "en"})
			if err == nil {
				defer s.Close()
				s.SendAudio([]byte{1, 2})
				_, err = events(s)
			}
			var got *smallest.Error
			if !errors.As(err, &got) {
				t.Fatalf("err = %v, want *smallest.Error", err)
			}
			want := tt.want
			want.Endpoint = "WS /waves/v1/stt/live"
			if d := cmp.Diff(&want, got, cmp.AllowUnexported(smallest.Error{}), cmpIgnoreCause); d != "" {
				t.Errorf("error (-want +got):\n%s", d)
			}
		})
	}
}

func TestLiveRoutesEastAsianLanguagesToTheUSHost(t *testing.T) {
	t.Parallel()
	for lang, wantPath := range map[string]string{"ja": "/us/waves/v1/stt/live", "multi-asian": "/us/waves/v1/stt/live", "ta": "/waves/v1/stt/live", "en": "/waves/v1/stt/live"} {
		f := &fakeLive{script: map[int][]string{0: {`{"type":"transcription","transcript":"","is_final":true,"is_last":true}`}}}
		s, err := liveClient(t, f).Listen(t.Context(), &smallest.LiveRequest{Model: "pulse", Language: lang})
		if err != nil {
			t.Fatal(err)
		}
		events(s)
		s.Close()
		<-f.closed
		if f.path != wantPath {
			t.Errorf("%s went to %s, want %s", lang, f.path, wantPath)
		}
	}
}

func TestLiveCancelAndIdle(t *testing.T) {
	t.Parallel()
	t.Run("cancel closes the socket", func(t *testing.T) {
		t.Parallel()
		f := &fakeLive{}
		ctx, cancel := context.WithCancel(t.Context())
		s, err := liveClient(t, f).Listen(ctx, &smallest.LiveRequest{Model: "pulse", Language: "en"})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		errc := make(chan error, 1)
		go func() { _, err := s.Next(); errc <- err }()
		cancel()
		if err := <-errc; !errors.Is(err, context.Canceled) {
			t.Fatalf("Next = %v, want context.Canceled", err)
		}
		select {
		case <-f.closed:
		case <-time.After(5 * time.Second):
			t.Fatal("the upstream socket stayed open after the cancel")
		}
	})
	t.Run("no last transcript after close_stream", func(t *testing.T) {
		t.Parallel()
		f := &fakeLive{} // never answers
		s, err := liveClient(t, f).Listen(t.Context(), &smallest.LiveRequest{Model: "pulse", Language: "en"})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		s.CloseStream()
		if _, err := events(s); !smallest.IsKind(err, smallest.KindTimeout) {
			t.Fatalf("err = %v, want KindTimeout once the idle timeout passed", err)
		}
	})
}
