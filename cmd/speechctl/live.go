package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	speechv1 "github.com/speechgate/speechgate/gen/speech/v1"
	"github.com/speechgate/speechgate/internal/audio"
)

func liveFlags(fs *flag.FlagSet) func(context.Context, *client, []string) error {
	language := fs.String("language", "en", "the spoken language (en, hi, ja, ...)")
	rate := fs.Uint("sample-rate-hz", 16000, "the audio's sample rate, for raw input (a WAV file says its own)")
	encoding := fs.String("encoding", "pcm", "the raw input's encoding: pcm, mulaw or alaw (a WAV file is PCM)")
	realtime := fs.Bool("realtime", true, "send the audio at the pace of speech, as a microphone would; false sends it as fast as possible")
	interim := fs.Bool("interim", false, "print interim transcripts too (on a terminal they are always shown on the progress line)")
	words := fs.Bool("word-timestamps", false, "print the words of each final transcript with their times")
	return func(ctx context.Context, c *client, args []string) error {
		if len(args) != 1 {
			return usageError{errors.New("live takes one FILE (- for stdin)")}
		}
		br, wav, container, closeIn, err := openAudio(c, args[0])
		if err != nil {
			return err
		}
		defer closeIn()
		enc, ok := encodings[*encoding]
		if !ok || enc == speechv1.AudioEncoding_AUDIO_ENCODING_WAV || enc == speechv1.AudioEncoding_AUDIO_ENCODING_MP3 {
			return usageError{fmt.Errorf("--encoding=%q: want pcm, mulaw or alaw", *encoding)}
		}
		sampleRate, bytesPerSample := uint32(*rate), 2
		if enc != speechv1.AudioEncoding_AUDIO_ENCODING_PCM_S16LE {
			bytesPerSample = 1
		}
		switch {
		case wav != nil:
			if !wav.MonoPCM16() {
				return usageError{fmt.Errorf("%s is not mono 16-bit PCM WAV, which realtime recognition takes", args[0])}
			}
			sampleRate, enc, bytesPerSample = wav.SampleRate, speechv1.AudioEncoding_AUDIO_ENCODING_PCM_S16LE, 2
		case container != "":
			return usageError{fmt.Errorf("%s is %s: live takes a WAV file or raw audio (--encoding); "+
				"'speechctl transcribe' takes recordings in other formats", args[0], container)}
		}
		return live(ctx, c, br, &speechv1.LiveTranscriptionConfig{Language: *language, Encoding: enc, SampleRateHz: sampleRate,
			InterimResults: *interim || c.terminal, WordTimestamps: *words}, int(sampleRate)*bytesPerSample, *realtime, *interim)
	}
}

// openAudio opens name (- for stdin) and reads past a WAV header, if it
// has one: it returns the reader at the samples, the WAV's format (nil for
// other input), the container other input is in ("" for raw audio), and
// what closes the file.
func openAudio(c *client, name string) (*bufio.Reader, *audio.WAVFormat, string, func(), error) {
	in, closeIn := c.stdin, func() {}
	if name != "-" {
		f, err := os.Open(name)
		if err != nil {
			return nil, nil, "", nil, usageError{err}
		}
		in, closeIn = f, func() { f.Close() }
	}
	br := bufio.NewReaderSize(in, 64<<10)
	head, _ := br.Peek(12)
	container := containerOf(head)
	if container != "WAV" {
		return br, nil, container, closeIn, nil
	}
	f, err := audio.ReadWAVHeader(br)
	if err != nil {
		closeIn()
		return nil, nil, "", nil, usageError{fmt.Errorf("%s: %w", name, err)}
	}
	return br, &f, "", closeIn, nil
}

// containerOf names the container a file's first bytes show, or "" for
// none (raw audio, or text).
func containerOf(head []byte) string {
	switch {
	case len(head) >= 12 && string(head[0:4]) == "RIFF" && string(head[8:12]) == "WAVE":
		return "WAV"
	case len(head) >= 3 && string(head[0:3]) == "ID3", len(head) >= 2 && head[0] == 0xFF && head[1]&0xE0 == 0xE0:
		return "MP3"
	case len(head) >= 4 && string(head[0:4]) == "fLaC":
		return "FLAC"
	case len(head) >= 4 && string(head[0:4]) == "OggS":
		return "Ogg"
	case len(head) >= 8 && string(head[4:8]) == "ftyp":
		return "MP4/M4A"
	case len(head) >= 4 && head[0] == 0x1A && head[1] == 0x45 && head[2] == 0xDF && head[3] == 0xA3:
		return "WebM"
	}
	return ""
}

// live feeds the audio to TranscribeLive in 100 ms pieces and prints the
// final transcripts as they come (and, on a terminal, interim ones on a
// progress line).
func live(ctx context.Context, c *client, in io.Reader, cfg *speechv1.LiveTranscriptionConfig, bytesPerSecond int, realtime, printInterim bool) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := speechv1.NewTranscriptionServiceClient(c.conn).TranscribeLive(ctx)
	if err != nil {
		return err
	}
	if err := stream.Send(&speechv1.TranscribeLiveRequest{Part: &speechv1.TranscribeLiveRequest_Config{Config: cfg}}); err != nil {
		return recvErr(stream.Recv)
	}
	fed := make(chan error, 1)
	go func() { fed <- feed(ctx, stream, in, bytesPerSecond, realtime) }()

	p := &progressLine{w: c.stderr, on: c.terminal}
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			p.done()
			return <-fed
		}
		if err != nil {
			p.done()
			cancel()
			<-fed //nolint:errcheck // the feeder's error, if any, follows from this one
			return err
		}
		t := msg.GetTranscript()
		switch {
		case t == nil: // a speech event
		case !t.GetIsFinal():
			p.update(true, "… %s", t.GetText())
			if printInterim && !c.terminal {
				fmt.Fprintf(c.stdout, "(interim) %s\n", t.GetText())
			}
		default:
			p.update(true, "")
			if c.terminal {
				fmt.Fprint(c.stderr, "\r\033[K")
			}
			if t.GetText() != "" {
				fmt.Fprintln(c.stdout, t.GetText())
			}
			for _, w := range t.GetWords() {
				fmt.Fprintf(c.stdout, "  %7.2f %7.2f  %s\n", float64(w.GetStartMs())/1000, float64(w.GetEndMs())/1000, w.GetWord())
			}
		}
	}
}

// feed sends the audio, paced at real time when asked, then half-closes.
func feed(ctx context.Context, stream speechv1.TranscriptionService_TranscribeLiveClient, in io.Reader, bytesPerSecond int, realtime bool) error {
	open, err := paced(ctx, in, max(bytesPerSecond/10, 2), bytesPerSecond, realtime, sleepUntil, func(b []byte) bool { // 100 ms pieces
		return stream.Send(&speechv1.TranscribeLiveRequest{Part: &speechv1.TranscribeLiveRequest_Audio{Audio: b}}) == nil
	})
	if !open || err != nil {
		return err // a call that ended has its status in Recv
	}
	return stream.CloseSend()
}

// paced reads in, in pieces of size bytes, and sends each when its time
// comes: at the pace of speech (bytesPerSecond) when realtime, else at
// once. wait waits for that time, and may do other work meanwhile. It
// returns at the end of the input, open false if send reported that the
// call has ended.
func paced(ctx context.Context, in io.Reader, size, bytesPerSecond int, realtime bool,
	wait func(context.Context, time.Time) error, send func([]byte) bool) (open bool, err error) {
	piece := make([]byte, size)
	start := time.Now()
	var sent int
	for {
		n, err := io.ReadFull(in, piece)
		if n > 0 {
			due := start
			if realtime {
				due = start.Add(time.Duration(float64(sent) / float64(bytesPerSecond) * float64(time.Second)))
			}
			if err := wait(ctx, due); err != nil {
				return true, err
			}
			if !send(piece[:n]) {
				return false, nil
			}
			sent += n
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return true, nil
		}
		if err != nil {
			return true, err
		}
	}
}

// sleepUntil waits until t, or until ctx ends.
func sleepUntil(ctx context.Context, t time.Time) error {
	select {
	case <-time.After(time.Until(t)):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// recvErr returns the status of a stream whose Send failed, read with recv.
func recvErr[M any](recv func() (M, error)) error {
	for {
		if _, err := recv(); err != nil {
			return err
		}
	}
}
