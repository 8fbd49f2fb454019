package emulator_test

import (
	"context"
	"errors"
	"io"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/speechgate/speechgate/internal/emulator"
	"github.com/speechgate/speechgate/internal/smallest"
)

func wsClient(t *testing.T, opts emulator.Options, idle time.Duration) *smallest.Client {
	t.Helper()
	srv := httptest.NewServer(emulator.New(opts))
	c, err := smallest.New(smallest.Config{BaseURL: srv.URL, HTTPClient: srv.Client(), StreamIdleTimeout: idle, StreamPoolSize: 1,
		Credential: func(context.Context) string { return "k" }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); srv.Close() })
	return c
}

func TestSynthesisWebSocket(t *testing.T) {
	t.Parallel()
	for _, closeAfter := range []bool{false, true} {
		c := wsClient(t, emulator.Options{CloseAfterComplete: closeAfter}, 300*time.Second)
		for range 2 { // twice: the second session reuses the socket, or finds it closed
			s, err := c.StreamSpeechText(t.Context(), &smallest.StreamOptions{WordTimestamps: true, VoiceOptions: smallest.VoiceOptions{VoiceID: "meher", SampleRate: 8000}})
			if err != nil {
				t.Fatal(err)
			}
			s.Send("One two. ", true)
			s.Send("Three.", false)
			s.End()
			var audio, words int
			var starts []float64
			for {
				ev, err := s.Next()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					t.Fatalf("close after complete %v: %v", closeAfter, err)
				}
				audio += len(ev.Audio)
				if ev.Word != nil {
					words++
					starts = append(starts, ev.Word.Start)
				}
			}
			s.Close()
			// 9 + 6 characters at 60 ms, 8 kHz PCM16.
			if audio != 15*480*2 || words != 3 || starts[2] != 0 {
				t.Errorf("close after complete %v: %d bytes, %d words, starts %v; word times restart at each synthesis", closeAfter, audio, words, starts)
			}
		}
	}
}

func TestSynthesisWebSocketIdleClose(t *testing.T) {
	t.Parallel()
	// The gateway asks for a 1 s idle timeout; the pause outlasts it.
	c := wsClient(t, emulator.Options{}, time.Second)
	s, err := c.StreamSpeechText(t.Context(), &smallest.StreamOptions{VoiceOptions: smallest.VoiceOptions{VoiceID: "avery"}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.Send("Before the pause, ", false)
	time.Sleep(1500 * time.Millisecond)
	s.Send("after it.", true)
	s.End()
	var audio int
	for {
		ev, err := s.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		audio += len(ev.Audio)
	}
	if want := len([]rune("Before the pause, after it.")) * 60 * 48; audio != want {
		t.Fatalf("%d bytes of audio, want %d for the whole text across the idle close", audio, want)
	}
}
