package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	speechv1 "github.com/speechgate/speechgate/gen/speech/v1"
	"github.com/speechgate/speechgate/internal/audio"
)

var encodings = map[string]speechv1.AudioEncoding{
	"wav":   speechv1.AudioEncoding_AUDIO_ENCODING_WAV,
	"pcm":   speechv1.AudioEncoding_AUDIO_ENCODING_PCM_S16LE,
	"raw":   speechv1.AudioEncoding_AUDIO_ENCODING_PCM_S16LE,
	"mp3":   speechv1.AudioEncoding_AUDIO_ENCODING_MP3,
	"mulaw": speechv1.AudioEncoding_AUDIO_ENCODING_MULAW,
	"ulaw":  speechv1.AudioEncoding_AUDIO_ENCODING_MULAW,
	"alaw":  speechv1.AudioEncoding_AUDIO_ENCODING_ALAW,
}

var models = map[string]speechv1.SynthesisModel{
	"lightning_v3.1":     speechv1.SynthesisModel_SYNTHESIS_MODEL_LIGHTNING_V3_1,
	"lightning_v3.1_pro": speechv1.SynthesisModel_SYNTHESIS_MODEL_LIGHTNING_V3_1_PRO,
}

func synthesizeFlags(fs *flag.FlagSet) func(context.Context, *client, []string) error {
	file := fs.String("file", "", "read the text from this file (- for stdin) instead of the arguments")
	out := fs.String("out", "", "where to write the audio: a file, or - for stdout (default speech.<encoding>)")
	encoding := fs.String("encoding", "", "wav, mp3, pcm, mulaw or alaw (default: from --out's extension, else wav)")
	voice := fs.String("voice-id", "avery", "the voice (see 'speechctl voices')")
	model := fs.String("model", "lightning_v3.1", "lightning_v3.1 or lightning_v3.1_pro")
	language := fs.String("language", "", "the text's language, an ISO 639-1 code (default: Smallest's)")
	speed := fs.Float64("speed", 0, "speaking rate, 0.5 to 2.0 (default 1.0)")
	rate := fs.Uint("sample-rate-hz", 24000, "8000, 16000, 24000 or 44100")
	return func(ctx context.Context, c *client, args []string) error {
		text, err := readText(c.stdin, *file, args)
		if err != nil {
			return err
		}
		enc, err := pickEncoding(*encoding, *out)
		if err != nil {
			return err
		}
		m, ok := models[*model]
		if !ok {
			return usageError{fmt.Errorf("--model=%q: want lightning_v3.1 or lightning_v3.1_pro", *model)}
		}
		if *out == "" {
			*out = "speech." + extension(enc)
		}
		return synthesize(ctx, c, &speechv1.SynthesizeRequest{Text: text, VoiceId: *voice, Model: m, Language: *language,
			Speed: float32(*speed), SampleRateHz: uint32(*rate), Encoding: enc}, *out)
	}
}

func readText(stdin io.Reader, file string, args []string) (string, error) {
	switch {
	case file != "" && len(args) > 0:
		return "", usageError{errors.New("give the text as arguments or --file, not both")}
	case file == "-":
		b, err := io.ReadAll(stdin)
		return withoutFinalNewline(b), err
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return "", usageError{err}
		}
		return withoutFinalNewline(b), nil
	case len(args) == 0:
		return "", usageError{errors.New("no text: give it as arguments, or --file")}
	}
	return strings.Join(args, " "), nil
}

// withoutFinalNewline drops the line end a text file ends with, which is
// not part of the text to speak (a 10,000-character file is not 10,001).
func withoutFinalNewline(b []byte) string {
	s := strings.TrimSuffix(string(b), "\n")
	return strings.TrimSuffix(s, "\r")
}

// pickEncoding returns the encoding --encoding names, else the one --out's
// extension names, else WAV; an extension that names none is refused
// rather than written as WAV under a misleading name.
func pickEncoding(name, out string) (speechv1.AudioEncoding, error) {
	if name == "" {
		ext := strings.TrimPrefix(strings.ToLower(filepath.Ext(out)), ".")
		switch _, known := encodings[ext]; {
		case known:
			name = ext
		case ext == "" || out == "-":
			name = "wav"
		default:
			return 0, usageError{fmt.Errorf("cannot write %s: speechctl writes .wav, .mp3, .pcm (or .raw), .ulaw (or .mulaw) and .alaw; "+
				"name the file so, or give --encoding", filepath.Base(out))}
		}
	}
	enc, ok := encodings[name]
	if !ok {
		return 0, usageError{fmt.Errorf("--encoding=%q: want wav, mp3, pcm, mulaw or alaw", name)}
	}
	return enc, nil
}

func extension(enc speechv1.AudioEncoding) string {
	switch enc {
	case speechv1.AudioEncoding_AUDIO_ENCODING_WAV:
		return "wav"
	case speechv1.AudioEncoding_AUDIO_ENCODING_MP3:
		return "mp3"
	case speechv1.AudioEncoding_AUDIO_ENCODING_MULAW:
		return "ulaw"
	case speechv1.AudioEncoding_AUDIO_ENCODING_ALAW:
		return "alaw"
	}
	return "pcm"
}

// synthesize streams the audio into out as it arrives; a WAV file gets its
// header's sizes patched at the end, so that every tool reads its length.
// A file's audio goes to a temporary file beside it, renamed over it only
// once the stream completed: a failed or interrupted run leaves out as it
// was, and creates nothing.
func synthesize(ctx context.Context, c *client, req *speechv1.SynthesizeRequest, out string) error {
	var w = c.stdout
	var f *os.File
	if out != "-" {
		var err error
		if f, err = os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".*.partial"); err != nil {
			return usageError{err}
		}
		defer func() {
			f.Close()           // a no-op once committed
			os.Remove(f.Name()) // likewise: it has been renamed
		}()
		w = f
	}
	start := time.Now()
	stream, err := speechv1.NewSynthesisServiceClient(c.conn).Synthesize(ctx, req)
	if err != nil {
		return err
	}
	p := &progressLine{w: c.stderr, on: c.terminal}
	var format *speechv1.SynthesisFormat
	var totals *speechv1.SynthesisTotals
	var header []byte
	var written int64
	var audioMS uint32
	var firstAudio time.Duration
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			p.done()
			return err
		}
		switch ev := msg.GetEvent().(type) {
		case *speechv1.SynthesizeResponse_Format:
			format = ev.Format
		case *speechv1.SynthesizeResponse_Audio:
			isHeader := written == 0 && format.GetContainer() == speechv1.AudioContainer_AUDIO_CONTAINER_WAV
			switch {
			case isHeader:
				header = append(header, ev.Audio.GetData()...) // kept to patch its sizes at the end
			case firstAudio == 0:
				firstAudio = time.Since(start)
			}
			n, err := w.Write(ev.Audio.GetData())
			written += int64(n)
			if err != nil {
				return err
			}
			audioMS = ev.Audio.GetOffsetMs() + ev.Audio.GetDurationMs()
			p.update(false, "%s: %.1f s of audio, %d KB, first audio after %d ms", out, float64(audioMS)/1000, written/1024, firstAudio.Milliseconds())
		case *speechv1.SynthesizeResponse_Totals:
			totals = ev.Totals
		}
	}
	p.done()
	if totals == nil {
		return errors.New("the stream ended without its totals: the audio may be incomplete")
	}
	if f != nil && len(header) == audio.WAVHeaderSize {
		audio.PatchWAVSizes(header, uint64(written))
		if _, err := f.WriteAt(header, 0); err != nil {
			return err
		}
	}
	if f != nil {
		if err := f.Chmod(0o644); err != nil { // CreateTemp's 0600 suits a file being made, not one made
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
		if err := os.Rename(f.Name(), out); err != nil {
			return err
		}
	}
	length := "length not computable for MP3"
	if totals.AudioDurationMs != nil {
		length = fmt.Sprintf("%.2f s", float64(totals.GetAudioDurationMs())/1000)
	}
	// The wait for the account's budget and the gateway's retries are said
	// only when there were any: they explain a slow first audio.
	var waited string
	if ms := totals.GetAdmissionWaitMs(); ms > 0 {
		waited += fmt.Sprintf(", %d ms of it queued for the account's budget", ms)
	}
	if n := totals.GetUpstreamAttempts(); n > max(1, totals.GetTextPieces()) {
		waited += fmt.Sprintf(", %d requests to Smallest (retries included)", n)
	}
	fmt.Fprintf(c.stderr, "%s: %s of %d Hz %s, %d bytes; first audio after %d ms (Smallest's first byte: %d ms%s); Smallest request %s\n",
		out, length, format.GetSampleRateHz(), extension(format.GetEncoding()), totals.GetAudioBytes(),
		firstAudio.Milliseconds(), totals.GetUpstreamFirstByteMs(), waited, totals.GetUpstreamRequestId())
	return nil
}
