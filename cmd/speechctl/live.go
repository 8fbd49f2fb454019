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
		var in = c.stdin
		if args[0] != "-" {
			f, err := os.Open(args[0])
			if err != nil {
				return usageError{err}
			}
			defer f.Close()
			in = f
		}
		br := bufio.NewReaderSize(in, 64<<10)
		enc, ok := encodings[*encoding]
		if !ok || enc == speechv1.AudioEncoding_AUDIO_ENCODING_WAV || enc == speechv1.AudioEncoding_AUDIO_ENCODING_MP3 {
			return usageError{fmt.Errorf("--encoding=%q: want pcm, mulaw or alaw", *encoding)}
		}
		sampleRate, bytesPerSample := uint32(*rate), 2
		if enc != speechv1.AudioEncoding_AUDIO_ENCODING_PCM_S16LE {
			bytesPerSample = 1
		}
		head, _ := br.Peek(12)
		switch container := containerOf(head); container {
		case "WAV":
			f, err := audio.ReadWAVHeader(br)
			if err != nil {
				return usageError{fmt.Errorf("%s: %w", args[0], err)}
			}
			if f.Tag != 1 || f.Channels != 1 || f.BitsPerSample != 16 {
				return usageError{fmt.Errorf("%s is not mono 16-bit PCM WAV, which realtime recognition takes", args[0])}
			}
			sampleRate, enc, bytesPerSample = f.SampleRate, speechv1.AudioEncoding_AUDIO_ENCODING_PCM_S16LE, 2
		case "":
		default:
			return usageError{fmt.Errorf("%s is %s: live takes a WAV file or raw audio (--encoding); "+
				"'speechctl transcribe' takes recordings in other formats", args[0], container)}
		}
		return live(ctx, c, br, &speechv1.LiveTranscriptionConfig{Language: *language, Encoding: enc, SampleRateHz: sampleRate,
			InterimResults: *interim || c.terminal, WordTimestamps: *words}, int(sampleRate)*bytesPerSample, *realtime, *interim)
	}
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
		return recvErr(stream)
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
	piece := make([]byte, max(bytesPerSecond/10, 2)) // 100 ms
	start := time.Now()
	var sent int
	for {
		n, err := io.ReadFull(in, piece)
		if n > 0 {
			if realtime {
				due := start.Add(time.Duration(float64(sent) / float64(bytesPerSecond) * float64(time.Second)))
				select {
				case <-time.After(time.Until(due)):
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			if stream.Send(&speechv1.TranscribeLiveRequest{Part: &speechv1.TranscribeLiveRequest_Audio{Audio: piece[:n]}}) != nil {
				return nil //nolint:nilerr // the call ended; Recv has its status
			}
			sent += n
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return stream.CloseSend()
		}
		if err != nil {
			return err
		}
	}
}

// recvErr returns the status of a stream whose Send failed.
func recvErr(stream speechv1.TranscriptionService_TranscribeLiveClient) error {
	for {
		if _, err := stream.Recv(); err != nil {
			return err
		}
	}
}
