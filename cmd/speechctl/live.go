package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	speechv1 "github.com/speechgate/speechgate/gen/speech/v1"
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
		var in io.Reader = c.stdin
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
		if r, bits, ok, err := readWAVHeader(br); err != nil {
			return usageError{err}
		} else if ok {
			if bits != 16 {
				return usageError{fmt.Errorf("%s is %d-bit WAV; realtime recognition takes 16-bit PCM", args[0], bits)}
			}
			sampleRate, enc, bytesPerSample = r, speechv1.AudioEncoding_AUDIO_ENCODING_PCM_S16LE, 2
		}
		return live(ctx, c, br, &speechv1.LiveTranscriptionConfig{Language: *language, Encoding: enc, SampleRateHz: sampleRate,
			InterimResults: *interim || c.terminal, WordTimestamps: *words}, int(sampleRate)*bytesPerSample, *realtime, *interim)
	}
}

// readWAVHeader reads a RIFF/WAVE header up to the start of its data, if the
// input has one, and returns the sample rate and sample size.
func readWAVHeader(r *bufio.Reader) (rate uint32, bits uint16, ok bool, err error) {
	head, err := r.Peek(12)
	if err != nil || string(head[0:4]) != "RIFF" || string(head[8:12]) != "WAVE" {
		return 0, 0, false, nil // headerless
	}
	r.Discard(12)
	for {
		var chunk [8]byte
		if _, err := io.ReadFull(r, chunk[:]); err != nil {
			return 0, 0, false, errors.New("the WAV file ends before its data")
		}
		size := binary.LittleEndian.Uint32(chunk[4:])
		switch string(chunk[:4]) {
		case "fmt ":
			f := make([]byte, size)
			if _, err := io.ReadFull(r, f); err != nil || size < 16 {
				return 0, 0, false, errors.New("the WAV file's format chunk is short")
			}
			if binary.LittleEndian.Uint16(f[0:]) != 1 || binary.LittleEndian.Uint16(f[2:]) != 1 {
				return 0, 0, false, errors.New("realtime recognition takes mono PCM WAV")
			}
			rate, bits = binary.LittleEndian.Uint32(f[4:]), binary.LittleEndian.Uint16(f[14:])
		case "data":
			if rate == 0 {
				return 0, 0, false, errors.New("the WAV file has no format chunk before its data")
			}
			return rate, bits, true, nil // what follows is the audio, whatever size the header claims
		default:
			if _, err := r.Discard(int(size + size%2)); err != nil {
				return 0, 0, false, errors.New("the WAV file ends before its data")
			}
		}
	}
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
			<-fed
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
				return nil // the call ended; Recv has its status
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
