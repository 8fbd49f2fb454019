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

// conversationTail is the silence sent after the file, so that Hydra hears
// its last turn end, as it would when a speaker stops talking.
const conversationTail = 1500 * time.Millisecond

func converseFlags(fs *flag.FlagSet) func(context.Context, *client, []string) error {
	out := fs.String("out", "answer.wav", "where to write the answers' audio, as WAV")
	model := fs.String("model", "v1.1", "the Hydra version: v1.1 or v1.0")
	voice := fs.String("voice", "", "the voice, from the version's roster (default: Hydra's)")
	instructions := fs.String("instructions", "", "the persona: how the assistant behaves")
	first := fs.Bool("respond-first", false, "the assistant greets first")
	rate := fs.Uint("sample-rate-hz", 24000, "the answers' sample rate: 48000, 24000, 16000 or 8000")
	tools := fs.String("tools", "", "comma-separated names of tools the model may call")
	result := fs.String("tool-result", `{"ok": true}`, "what every tool call is answered with")
	realtime := fs.Bool("realtime", true, "send the audio at the pace of speech; false sends it as fast as possible")
	return func(ctx context.Context, c *client, args []string) error {
		if len(args) != 1 {
			return usageError{errors.New("converse takes one FILE: 16 kHz mono 16-bit WAV, or raw PCM at that rate (- for stdin)")}
		}
		if filepath.Ext(*out) != ".wav" {
			return usageError{fmt.Errorf("--out=%q: converse writes WAV; name a .wav file", *out)}
		}
		models := map[string]speechv1.ConversationModel{"v1.1": speechv1.ConversationModel_CONVERSATION_MODEL_HYDRA_V1_1,
			"v1.0": speechv1.ConversationModel_CONVERSATION_MODEL_HYDRA_V1_0}
		m, ok := models[*model]
		if !ok {
			return usageError{fmt.Errorf("--model=%q: want v1.1 or v1.0", *model)}
		}
		br, wav, container, closeIn, err := openAudio(c, args[0])
		if err != nil {
			return err
		}
		defer closeIn()
		switch {
		case wav != nil && (!wav.MonoPCM16() || wav.SampleRate != 16000):
			return usageError{fmt.Errorf("%s is not 16 kHz mono 16-bit PCM WAV, which Hydra hears (convert it: sox %s -r 16000 -c 1 -b 16 in.wav)",
				args[0], args[0])}
		case container != "":
			return usageError{fmt.Errorf("%s is %s: converse takes 16 kHz mono 16-bit WAV or raw PCM", args[0], container)}
		}
		cfg := &speechv1.ConversationConfig{Model: m, Voice: *voice, Instructions: *instructions, RespondFirst: *first,
			Output: &speechv1.ConversationOutput{SampleRateHz: uint32(*rate)}}
		for name := range strings.SplitSeq(*tools, ",") {
			if name = strings.TrimSpace(name); name != "" {
				cfg.Tools = append(cfg.Tools, &speechv1.Tool{Name: name})
			}
		}
		return converse(ctx, c, io.MultiReader(br, io.LimitReader(zeros{}, int64(conversationTail.Seconds()*32000))), cfg, *out, *result, *realtime)
	}
}

// zeros reads as silence.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// converse plays the audio in, prints the conversation's events, answers
// tool calls, and writes the answers' audio to out; like synthesize, it
// writes a temporary file renamed over out once the call ended OK.
func converse(ctx context.Context, c *client, in io.Reader, cfg *speechv1.ConversationConfig, out, toolResult string, realtime bool) error {
	f, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".*.partial")
	if err != nil {
		return usageError{err}
	}
	defer func() {
		f.Close()
		os.Remove(f.Name())
	}()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := speechv1.NewConversationServiceClient(c.conn).Converse(ctx)
	if err != nil {
		return err
	}
	if err := stream.Send(&speechv1.ConverseRequest{Part: &speechv1.ConverseRequest_Config{Config: cfg}}); err != nil {
		return recvErr(stream.Recv)
	}
	send := make(chan *speechv1.ConverseRequest, 4) // tool results, from the reader
	fed := make(chan error, 1)
	go func() { fed <- feedConversation(ctx, stream, in, send, realtime, len(cfg.GetTools()) > 0) }()

	start := time.Now()
	var format *speechv1.ConversationFormat
	var written int
	var stopped time.Time
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			cancel()
			<-fed //nolint:errcheck // the feeder's error, if any, follows from this one
			return err
		}
		at := time.Since(start).Seconds()
		switch ev := msg.GetEvent().(type) {
		case *speechv1.ConverseResponse_Started:
			fmt.Fprintf(c.stderr, "%6.2f s  conversation %s with %s (voice %q, %d tools)\n", at, ev.Started.GetSessionId(), ev.Started.GetModel(),
				ev.Started.GetVoice(), ev.Started.GetTools())
		case *speechv1.ConverseResponse_Format:
			format = ev.Format
			header := audio.AppendWAVHeader(nil, int(format.GetSampleRateHz()), 1, int(format.GetBitsPerSample()), audio.UnknownSize)
			if _, err := f.Write(header); err != nil {
				return err
			}
		case *speechv1.ConverseResponse_SpeechStarted:
			fmt.Fprintf(c.stderr, "%6.2f s  you speak (from %.2f s of your audio)\n", at, float64(ev.SpeechStarted.GetAudioStartMs())/1000)
		case *speechv1.ConverseResponse_SpeechStopped:
			stopped = time.Now()
			fmt.Fprintf(c.stderr, "%6.2f s  you stop (at %.2f s of your audio)\n", at, float64(ev.SpeechStopped.GetAudioEndMs())/1000)
		case *speechv1.ConverseResponse_ResponseStarted:
			note := ""
			if id := ev.ResponseStarted.GetInterruptedResponseId(); id != "" {
				note = ", interrupting " + id
			}
			fmt.Fprintf(c.stderr, "%6.2f s  answer %s starts%s\n", at, ev.ResponseStarted.GetResponseId(), note)
		case *speechv1.ConverseResponse_Audio:
			if !stopped.IsZero() {
				fmt.Fprintf(c.stderr, "%6.2f s  first audio, %d ms after you stopped\n", at, time.Since(stopped).Milliseconds())
				stopped = time.Time{}
			}
			n, err := f.Write(ev.Audio.GetData())
			written += n
			if err != nil {
				return err
			}
		case *speechv1.ConverseResponse_ToolCall:
			call := ev.ToolCall
			fmt.Fprintf(c.stderr, "%6.2f s  tool call %s(%s), answered %s\n", at, call.GetName(), call.GetArguments(), toolResult)
			for _, m := range []*speechv1.ConverseRequest{
				{Part: &speechv1.ConverseRequest_ToolResult{ToolResult: &speechv1.ToolResult{CallId: call.GetCallId(), Output: toolResult}}},
				{Part: &speechv1.ConverseRequest_Respond{Respond: &speechv1.RespondNow{}}},
			} {
				select {
				case send <- m:
				case <-ctx.Done():
					return ctx.Err()
				}
			}
		case *speechv1.ConverseResponse_ResponseDone:
			d := ev.ResponseDone
			fmt.Fprintf(c.stderr, "%6.2f s  answer %s %s %s (%d tokens)\n", at, d.GetResponseId(),
				strings.ToLower(strings.TrimPrefix(d.GetStatus().String(), "RESPONSE_STATUS_")), d.GetReason(), d.GetUsage().GetTotalTokens())
		case *speechv1.ConverseResponse_Warning:
			fmt.Fprintf(c.stderr, "%6.2f s  warning %s: %s\n", at, ev.Warning.GetCode(), ev.Warning.GetMessage())
		case *speechv1.ConverseResponse_Error:
			fmt.Fprintf(c.stderr, "%6.2f s  error %s: %s\n", at, ev.Error.GetCode(), ev.Error.GetMessage())
		}
	}
	if err := <-fed; err != nil {
		return err
	}
	if format == nil {
		return errors.New("the conversation ended without an answer: nothing was written")
	}
	header := audio.AppendWAVHeader(nil, int(format.GetSampleRateHz()), 1, int(format.GetBitsPerSample()), audio.UnknownSize)
	audio.PatchWAVSizes(header, uint64(written+len(header)))
	if _, err := f.WriteAt(header, 0); err != nil {
		return err
	}
	if err := f.Chmod(0o644); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(f.Name(), out); err != nil {
		return err
	}
	fmt.Fprintf(c.stderr, "%s: %.2f s of answers at %d Hz\n", out, float64(written)/float64(format.GetSampleRateHz()*format.GetBitsPerSample()/8),
		format.GetSampleRateHz())
	return nil
}

// feedConversation sends the audio in 40 ms pieces, paced at real time
// when asked, and the messages the reader queues (tool results), then
// half-closes.
func feedConversation(ctx context.Context, stream speechv1.ConversationService_ConverseClient, in io.Reader, queued <-chan *speechv1.ConverseRequest,
	realtime, tools bool) error {
	const bytesPerSecond = 32000
	// While a piece waits for its time, tool results go out.
	wait := func(ctx context.Context, due time.Time) error {
		for {
			select {
			case m := <-queued:
				if err := stream.Send(m); err != nil {
					return nil //nolint:nilerr // the call ended: the next Send says so, and Recv has its status
				}
			case <-time.After(time.Until(due)):
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
	open, err := paced(ctx, in, bytesPerSecond/25, bytesPerSecond, realtime, wait, func(b []byte) bool { // 40 ms pieces
		return stream.Send(&speechv1.ConverseRequest{Part: &speechv1.ConverseRequest_Audio{Audio: b}}) == nil
	})
	if !open || err != nil {
		return err
	}
	// A tool call may still come after the audio (sent faster than real
	// time, it is all in before Hydra answers): answer calls until none has
	// come for toolQuiet, then half-close.
	for tools {
		select {
		case m := <-queued:
			if stream.Send(m) != nil {
				return nil //nolint:nilerr // the call ended; Recv has its status
			}
		case <-time.After(toolQuiet):
			tools = false
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return stream.CloseSend()
}

// toolQuiet is how long converse waits for another tool call after its
// audio before it ends its side of the conversation.
const toolQuiet = 2 * time.Second
