package smallest_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/speechgate/speechgate/internal/smallest"
)

// quietPeer accepts a WebSocket and then says nothing. A deaf one also
// stops reading after the first message, so that it answers no ping, as a
// peer that vanished without a close would not; otherwise it reads on
// (coder/websocket answers pings as it reads) and, after speakAfter, sends a
// complete.
type quietPeer struct {
	deaf       bool
	speakAfter time.Duration
	gone       chan struct{} // closed when the test ends: a hijacked handler's context outlives its client
}

func (p quietPeer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	defer c.CloseNow()
	ctx := r.Context()
	if p.deaf {
		c.Read(ctx)
		<-p.gone
		return
	}
	go func() {
		time.Sleep(p.speakAfter)
		c.Write(ctx, websocket.MessageText, []byte(`{"status":"complete"}`))
	}()
	for {
		if _, _, err := c.Read(ctx); err != nil {
			return
		}
	}
}

func TestKeepalive(t *testing.T) {
	t.Parallel()
	keepalive := smallest.Keepalive{Interval: 40 * time.Millisecond, Timeout: 80 * time.Millisecond}
	tests := []struct {
		name     string
		peer     quietPeer
		live     bool
		wantKind smallest.Kind // 0: the session ends normally
	}{
		{name: "synthesis: a peer that answers pings outlasts many of them", peer: quietPeer{speakAfter: 400 * time.Millisecond}},
		{name: "synthesis: a peer that answers no ping is dead", peer: quietPeer{deaf: true}, wantKind: smallest.KindUnresponsive},
		{name: "recognition: a peer that answers no ping is dead", peer: quietPeer{deaf: true}, live: true, wantKind: smallest.KindUnresponsive},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.peer.gone = make(chan struct{})
			srv := httptest.NewServer(tt.peer)
			t.Cleanup(srv.Close)
			t.Cleanup(func() { close(tt.peer.gone) })
			c, err := smallest.New(smallest.Config{BaseURL: srv.URL, HTTPClient: srv.Client(), Keepalive: keepalive,
				Credential: func(context.Context) string { return testKey }})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(c.Close)
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer cancel()
			start := time.Now()
			if tt.live {
				s, err := c.Listen(ctx, &smallest.LiveRequest{Model: "pulse", Language: "en", Encoding: "linear16", SampleRate: 16000})
				if err != nil {
					t.Fatal(err)
				}
				defer s.Close()
				// The deaf peer reads (and so answers pings) until its first message.
				if err := s.SendAudio(make([]byte, 640)); err != nil {
					t.Fatal(err)
				}
				_, err = s.Next()
				checkKind(t, err, tt.wantKind, time.Since(start))
				return
			}
			s, err := c.StreamSpeechText(ctx, &smallest.StreamOptions{VoiceOptions: smallest.VoiceOptions{VoiceID: "magnus"}})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if _, err := s.End(); err != nil {
				t.Fatal(err)
			}
			for err == nil {
				_, err = s.Next()
			}
			checkKind(t, err, tt.wantKind, time.Since(start))
		})
	}
}

func checkKind(t *testing.T, err error, want smallest.Kind, took time.Duration) {
	t.Helper()
	if want == 0 {
		if err != nil && err.Error() != "EOF" {
			t.Fatalf("the session failed after %v: %v", took, err)
		}
		return
	}
	if !smallest.IsKind(err, want) {
		t.Fatalf("after %v: %v, want kind %v", took, err, want)
	}
}
