package emulator_test

import (
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/speechgate/speechgate/internal/emulator"
	"github.com/speechgate/speechgate/internal/smallest"
)

func TestLiveRecognizesSynthesizedSpeech(t *testing.T) {
	t.Parallel()
	c := client(t, emulator.Options{})
	text := "One two three four five. Six seven eight nine ten."
	pcm, _, err := synthesize(t, c, &smallest.SpeechRequest{Text: text, VoiceOptions: smallest.VoiceOptions{VoiceID: "avery", SampleRate: 16000}, OutputFormat: "pcm"})
	if err != nil {
		t.Fatal(err)
	}
	s, err := c.Listen(t.Context(), &smallest.LiveRequest{Model: "pulse", Language: "en", SampleRate: 16000, WordTimestamps: true, VADEvents: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	go func() {
		for off := 0; off < len(pcm); off += 4096 {
			s.SendAudio(pcm[off:min(off+4096, len(pcm))])
			if off == 48*1024 { // mid-way, about 1.5 s in
				s.Finalize()
			}
		}
		s.CloseStream()
	}()
	var finals []string
	var interims, started, ended int
	var fromFinalize bool
	for {
		ev, err := s.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case ev.Type == "speech_started":
			started++
		case ev.Type == "speech_ended":
			ended++
		case ev.Transcript.IsFinal:
			finals = append(finals, ev.Transcript.Text)
			fromFinalize = fromFinalize || ev.Transcript.FromFinalize
		default:
			interims++
		}
	}
	if got := strings.Join(strings.Fields(strings.Join(finals, " ")), " "); got != text {
		t.Fatalf("final transcripts join to %q, want %q", got, text)
	}
	if len(finals) != 2 || !fromFinalize || interims == 0 || started != 1 || ended < 1 {
		t.Errorf("%d finals (from finalize: %v), %d interims, %d speech_started, %d speech_ended", len(finals), fromFinalize, interims, started, ended)
	}
}

func TestLiveRefusals(t *testing.T) {
	t.Parallel()
	t.Run("language of the other region", func(t *testing.T) {
		t.Parallel()
		// This client has no US host, so Japanese reaches the default (India) host.
		s, err := client(t, emulator.Options{}).Listen(t.Context(), &smallest.LiveRequest{Model: "pulse", Language: "ja"})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		var e *smallest.Error
		if _, err := s.Next(); !errors.As(err, &e) || e.Code != "LANGUAGE_NOT_ENABLED_IN_REGION" {
			t.Fatalf("ja on the India host: %v, want LANGUAGE_NOT_ENABLED_IN_REGION", err)
		}
	})
	t.Run("concurrency limit", func(t *testing.T) {
		t.Parallel()
		c := client(t, emulator.Options{MaxLiveSessions: 1})
		first, err := c.Listen(t.Context(), &smallest.LiveRequest{Model: "pulse", Language: "en"})
		if err != nil {
			t.Fatal(err)
		}
		defer first.Close()
		second, err := c.Listen(t.Context(), &smallest.LiveRequest{Model: "pulse", Language: "en"})
		if err != nil {
			t.Fatal(err)
		}
		defer second.Close()
		var e *smallest.Error
		if _, err := second.Next(); !errors.As(err, &e) || e.CloseCode != 1008 {
			t.Fatalf("second session: %v, want a close with 1008", err)
		}
	})
	t.Run("pulse pro", func(t *testing.T) {
		t.Parallel()
		_, err := client(t, emulator.Options{}).Listen(t.Context(), &smallest.LiveRequest{Model: "pulse-pro", Language: "en"})
		var e *smallest.Error
		if !errors.As(err, &e) || e.HTTPStatus != 400 || !strings.Contains(e.Message, "no streaming transport") {
			t.Fatalf("err = %v, want the documented 400", err)
		}
	})
}
