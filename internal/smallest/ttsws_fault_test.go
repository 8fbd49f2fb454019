package smallest_test

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/speechgate/speechgate/internal/smallest"
)

// TestStreamSpeechTextCompletes checks that a session ends after all its
// audio whichever way Lightning sends complete: after every flush (the
// newest documentation) or only after the end of the input (older pages),
// with the text sent in a burst or as an agent writes it.
func TestStreamSpeechTextCompletes(t *testing.T) {
	t.Parallel()
	for _, atEnd := range []bool{false, true} {
		for _, pieces := range [][]string{
			{"One.|", " Two.|", " Three."},
			{"One.|", " Two.|"},
			{"Only one.|"},
			{"Unflushed at the end."},
			{"One.|", "|", " Two. ", "|"}, // flushes of nothing
		} {
			f := &fakeTTSWS{completeAtEnd: atEnd}
			c := wsClient(t, f, 1)
			text, _, err := speak(t, c, pieces...)
			want := strings.ReplaceAll(strings.Join(pieces, ""), "|", "")
			if err != nil || text != want {
				t.Errorf("completes at end %v, pieces %q: synthesized %q (%v), want %q", atEnd, pieces, text, err, want)
			}
		}
	}
}

func newSession(t *testing.T, c *smallest.Client) *smallest.SpeechSession {
	t.Helper()
	s, err := c.StreamSpeechText(t.Context(), &smallest.StreamOptions{VoiceOptions: smallest.VoiceOptions{VoiceID: "avery"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// drain reads a session to its end, returning its audio and final error.
func drain(s *smallest.SpeechSession) (string, error) {
	var audio strings.Builder
	for {
		ev, err := s.Next()
		if errors.Is(err, io.EOF) {
			return audio.String(), nil
		}
		if err != nil {
			return audio.String(), err
		}
		audio.Write(ev.Audio)
	}
}

// TestStreamSpeechTextUpstreamTimeouts: audio that is due must come within
// the upstream timeout (first message after a flush) and the idle timeout
// (between messages), while a caller that is only thinking is never timed.
func TestStreamSpeechTextUpstreamTimeouts(t *testing.T) {
	t.Parallel()
	timeouts := func(cfg *smallest.Config) {
		cfg.ResponseTimeout, cfg.IdleTimeout = 300*time.Millisecond, 200*time.Millisecond
	}
	t.Run("silent after a flush", func(t *testing.T) {
		t.Parallel()
		s := newSession(t, wsClientWith(t, &fakeTTSWS{silent: true}, timeouts))
		s.Send("Hello.", true)
		start := time.Now()
		_, err := drain(s)
		if !smallest.IsKind(err, smallest.KindTimeout) {
			t.Fatalf("err = %v, want KindTimeout", err)
		}
		if d := time.Since(start); d < 250*time.Millisecond || d > 3*time.Second {
			t.Errorf("timed out after %v, want about the 300 ms upstream timeout", d)
		}
	})
	t.Run("silent mid-synthesis", func(t *testing.T) {
		t.Parallel()
		s := newSession(t, wsClientWith(t, &fakeTTSWS{stallMidway: true}, timeouts))
		s.Send("Hello.", true)
		audio, err := drain(s)
		if !smallest.IsKind(err, smallest.KindTimeout) || audio == "" {
			t.Fatalf("audio %q, err = %v; want the first chunk, then KindTimeout", audio, err)
		}
	})
	t.Run("a caller thinking is not timed", func(t *testing.T) {
		t.Parallel()
		s := newSession(t, wsClientWith(t, &fakeTTSWS{}, timeouts))
		done := make(chan string, 1)
		go func() { audio, err := drain(s); done <- audio + " / " + errText(err) }()
		s.Send("Thinking ", false)
		time.Sleep(600 * time.Millisecond) // longer than both timeouts, with nothing due
		s.Send("done.", true)
		s.End()
		if got := <-done; got != "Thinking done. / EOF" {
			t.Fatalf("got %q", got)
		}
	})
}

func errText(err error) string {
	if err == nil {
		return "EOF"
	}
	return err.Error()
}

// TestStreamSpeechTextBoundsReopening: when every socket closes for
// inactivity at once, a session reopens a few times with backoff, then
// fails saying why, rather than opening hundreds of sockets.
func TestStreamSpeechTextBoundsReopening(t *testing.T) {
	t.Parallel()
	f := &fakeTTSWS{idleAtOnce: true}
	s := newSession(t, wsClient(t, f, 0))
	s.Send("Hello.", true)
	s.End()
	start := time.Now()
	_, err := drain(s)
	var e *smallest.Error
	if !errors.As(err, &e) || e.Kind != smallest.KindStreamBroken || !strings.Contains(e.Message, "inactivity") {
		t.Fatalf("err = %v, want KindStreamBroken saying Smallest kept closing for inactivity", err)
	}
	f.mu.Lock()
	conns := f.conns
	f.mu.Unlock()
	if conns > 4 {
		t.Errorf("%d sockets opened, want at most 4 (the first and 3 reopens)", conns)
	}
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Errorf("gave up after %v: the reopens were not spaced by a backoff", d)
	}
}

// TestStreamSpeechTextBackoffRespectsTheDeadline: a reopen is not tried when
// the call's deadline leaves no time for its backoff.
func TestStreamSpeechTextBackoffRespectsTheDeadline(t *testing.T) {
	t.Parallel()
	f := &fakeTTSWS{idleAtOnce: true}
	c := wsClient(t, f, 0)
	ctx, cancel := context.WithTimeout(t.Context(), 120*time.Millisecond)
	defer cancel()
	s, err := c.StreamSpeechText(ctx, &smallest.StreamOptions{VoiceOptions: smallest.VoiceOptions{VoiceID: "avery"}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.Send("Hello.", true)
	if _, err := drain(s); err == nil || ctx.Err() == nil && !smallest.IsKind(err, smallest.KindStreamBroken) {
		t.Fatalf("err = %v", err)
	}
}

// TestStreamSpeechTextReplaysOnlyUnspokenText: with max_buffer_flush_ms,
// Smallest speaks unflushed text by itself; after an idle close, that text
// must not be sent again (it would be spoken twice).
func TestStreamSpeechTextReplaysOnlyUnspokenText(t *testing.T) {
	t.Parallel()
	f := &fakeTTSWS{autoFlush: 50 * time.Millisecond, idleAfter: 300 * time.Millisecond}
	s := newSession(t, wsClient(t, f, 0))
	done := make(chan string, 1)
	go func() { audio, err := drain(s); done <- audio + " / " + errText(err) }()
	s.Send("Spoken by itself. ", false)
	<-f.closed // Smallest closed the idle socket
	s.Send("Then this.", true)
	s.End()
	if got := <-done; got != "Spoken by itself. Then this. / EOF" {
		t.Fatalf("got %q: text Smallest had spoken was replayed, or text was lost", got)
	}
}

// TestBrokenSocketIsNeverTheEnd: a socket dropped mid-synthesis must end the
// session with an error, never with io.EOF, however the error is wrapped.
func TestBrokenSocketIsNeverTheEnd(t *testing.T) {
	t.Parallel()
	err := &smallest.Error{Kind: smallest.KindStreamBroken}
	if errors.Is(error(err), io.EOF) {
		t.Fatal("an Error without a cause is io.EOF")
	}
	s := newSession(t, wsClient(t, &fakeTTSWS{dropAfterChunk: true}, 0))
	s.Send("Hello there.", true)
	s.End()
	if _, err := drain(s); err == nil || errors.Is(err, io.EOF) {
		t.Fatalf("err = %v: a dropped socket read as the end of the synthesis", err)
	}
}
