package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"text/tabwriter"

	"google.golang.org/protobuf/encoding/protojson"

	speechv1 "github.com/speechgate/speechgate/gen/speech/v1"
)

// uploadPiece is the size of each audio message of an upload.
const uploadPiece = 256 << 10

func transcribeFlags(fs *flag.FlagSet) func(context.Context, *client, []string) error {
	language := fs.String("language", "en", "the spoken language (en, hi, de, ..., multi-eu)")
	model := fs.String("model", "pulse", "pulse or pulse-pro")
	words := fs.Bool("word-timestamps", false, "ask for word timings (implied by --output=words)")
	diarize := fs.Bool("diarize", false, "label speakers")
	output := fs.String("output", "text", "text (the transcript), words (a table of timed words), or json (everything)")
	encoding := fs.String("encoding", "", "for headerless audio: pcm, mulaw or alaw (default: detected from the file)")
	rate := fs.Uint("sample-rate-hz", 0, "for headerless audio: its sample rate")
	return func(ctx context.Context, c *client, args []string) error {
		if len(args) != 1 {
			return usageError{errors.New("transcribe takes one FILE (- for stdin)")}
		}
		cfg := &speechv1.TranscriptionConfig{Language: *language, WordTimestamps: *words || *output == "words", Diarize: *diarize,
			SampleRateHz: uint32(*rate)}
		switch *model {
		case "pulse":
			cfg.Model = speechv1.TranscriptionModel_TRANSCRIPTION_MODEL_PULSE
		case "pulse-pro":
			cfg.Model = speechv1.TranscriptionModel_TRANSCRIPTION_MODEL_PULSE_PRO
		default:
			return usageError{fmt.Errorf("--model=%q: want pulse or pulse-pro", *model)}
		}
		if *encoding != "" {
			enc, ok := encodings[*encoding]
			if !ok {
				return usageError{fmt.Errorf("--encoding=%q: want pcm, mulaw or alaw", *encoding)}
			}
			cfg.Encoding = enc
		}
		if *output != "text" && *output != "words" && *output != "json" {
			return usageError{fmt.Errorf("--output=%q: want text, words or json", *output)}
		}
		in := c.stdin
		if args[0] != "-" {
			f, err := os.Open(args[0])
			if err != nil {
				return usageError{err}
			}
			defer f.Close()
			in = f
		}
		t, err := upload(ctx, c, cfg, in)
		if err != nil {
			return err
		}
		return printTranscript(c.stdout, t, *output)
	}
}

// upload streams the recording to TranscribeUpload in pieces, so that a
// file of any size passes with flat memory on both sides.
func upload(ctx context.Context, c *client, cfg *speechv1.TranscriptionConfig, in io.Reader) (*speechv1.Transcript, error) {
	stream, err := speechv1.NewTranscriptionServiceClient(c.conn).TranscribeUpload(ctx)
	if err != nil {
		return nil, err
	}
	if err := stream.Send(&speechv1.TranscribeUploadRequest{Part: &speechv1.TranscribeUploadRequest_Config{Config: cfg}}); err != nil {
		_, err = stream.CloseAndRecv()
		return nil, err
	}
	p := &progressLine{w: c.stderr, on: c.terminal}
	buf := make([]byte, uploadPiece)
	var sent int64
	for {
		n, rerr := io.ReadFull(in, buf)
		if n > 0 {
			if err := stream.Send(&speechv1.TranscribeUploadRequest{Part: &speechv1.TranscribeUploadRequest_Audio{Audio: buf[:n]}}); err != nil {
				break // the gateway ended the call; CloseAndRecv has its status
			}
			sent += int64(n)
			p.update(false, "uploaded %d KB", sent/1024)
		}
		if errors.Is(rerr, io.EOF) || errors.Is(rerr, io.ErrUnexpectedEOF) {
			break
		}
		if rerr != nil {
			p.done()
			return nil, rerr
		}
	}
	p.update(true, "uploaded %d KB; transcribing", sent/1024)
	resp, err := stream.CloseAndRecv()
	p.done()
	return resp.GetTranscript(), err
}

func printTranscript(w io.Writer, t *speechv1.Transcript, output string) error {
	switch output {
	case "json":
		b, err := protojson.MarshalOptions{Multiline: true, Indent: "  "}.Marshal(t)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(w, string(b))
		return err
	case "words":
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "START\tEND\tCONFIDENCE\tSPEAKER\tWORD\t")
		for _, wd := range t.GetWords() {
			speaker := "-"
			if wd.Speaker != nil {
				speaker = fmt.Sprint(wd.GetSpeaker())
			}
			fmt.Fprintf(tw, "%.2f\t%.2f\t%.2f\t%s\t%s\t\n", float64(wd.GetStartMs())/1000, float64(wd.GetEndMs())/1000, wd.GetConfidence(), speaker, wd.GetWord())
		}
		return tw.Flush()
	}
	_, err := fmt.Fprintln(w, t.GetText())
	return err
}
