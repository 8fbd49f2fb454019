package gatewaytest

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	speechv1 "github.com/speechgate/speechgate/gen/speech/v1"
)

// Synthesis is everything a Synthesize stream delivered.
type Synthesis struct {
	Format *speechv1.SynthesisFormat
	Audio  []*speechv1.AudioChunk
	Totals *speechv1.SynthesisTotals
	Order  []string // the kinds of message, in order, a run of audio counted once
	Err    error    // the status the stream ended with; nil for OK
}

// Bytes is the audio the stream delivered.
func (s *Synthesis) Bytes() []byte { return joined(s.Audio) }

func joined(chunks []*speechv1.AudioChunk) []byte {
	var b []byte
	for _, c := range chunks {
		b = append(b, c.GetData()...)
	}
	return b
}

// Synthesize runs one Synthesize call to its end.
func Synthesize(ctx context.Context, c speechv1.SynthesisServiceClient, req *speechv1.SynthesizeRequest) *Synthesis {
	out := &Synthesis{}
	stream, err := c.Synthesize(ctx, req)
	if err != nil {
		out.Err = err
		return out
	}
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			out.Err = err
			return out
		}
		switch ev := msg.GetEvent().(type) {
		case *speechv1.SynthesizeResponse_Format:
			out.Format = ev.Format
			out.Order = append(out.Order, "format")
		case *speechv1.SynthesizeResponse_Audio:
			out.Audio = append(out.Audio, ev.Audio)
			if len(out.Order) == 0 || out.Order[len(out.Order)-1] != "audio" {
				out.Order = append(out.Order, "audio")
			}
		case *speechv1.SynthesizeResponse_Totals:
			out.Totals = ev.Totals
			out.Order = append(out.Order, "totals")
		}
	}
}

// TextStream is a SynthesizeStream call, from the client's side.
type TextStream = grpc.BidiStreamingClient[speechv1.SynthesizeStreamRequest, speechv1.SynthesizeStreamResponse]

// TextConfig is SynthesizeStream's first message.
func TextConfig(c *speechv1.SynthesisConfig) *speechv1.SynthesizeStreamRequest {
	return &speechv1.SynthesizeStreamRequest{Part: &speechv1.SynthesizeStreamRequest_Config{Config: c}}
}

// TextPiece is a SynthesizeStream message of text.
func TextPiece(text string, flush bool) *speechv1.SynthesizeStreamRequest {
	return &speechv1.SynthesizeStreamRequest{Part: &speechv1.SynthesizeStreamRequest_Text{Text: &speechv1.TextPiece{Text: text, Flush: flush}}}
}

// Streamed is everything a SynthesizeStream delivered.
type Streamed struct {
	Format     *speechv1.SynthesisFormat
	Audio      []*speechv1.AudioChunk
	Words      []*speechv1.WordTiming
	Segments   []*speechv1.SegmentDone
	Cleared    []*speechv1.AudioCleared
	Heartbeats []*speechv1.Heartbeat
	Totals     *speechv1.SynthesisTotals
	// Events are every message, in order.
	Events []*speechv1.SynthesizeStreamResponse
	Err    error
}

// Bytes is the audio the stream delivered.
func (s *Streamed) Bytes() []byte { return joined(s.Audio) }

// Receive reads a SynthesizeStream to its end; arrived, if set, is closed
// at the first audio.
func Receive(stream TextStream, arrived chan<- struct{}) *Streamed {
	out := &Streamed{}
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			out.Err = err
			return out
		}
		out.Events = append(out.Events, msg)
		switch ev := msg.GetEvent().(type) {
		case *speechv1.SynthesizeStreamResponse_Format:
			out.Format = ev.Format
		case *speechv1.SynthesizeStreamResponse_Audio:
			if len(out.Audio) == 0 && arrived != nil {
				close(arrived)
			}
			out.Audio = append(out.Audio, ev.Audio)
		case *speechv1.SynthesizeStreamResponse_Word:
			out.Words = append(out.Words, ev.Word)
		case *speechv1.SynthesizeStreamResponse_SegmentDone:
			out.Segments = append(out.Segments, ev.SegmentDone)
		case *speechv1.SynthesizeStreamResponse_Cleared:
			out.Cleared = append(out.Cleared, ev.Cleared)
		case *speechv1.SynthesizeStreamResponse_Heartbeat:
			out.Heartbeats = append(out.Heartbeats, ev.Heartbeat)
		case *speechv1.SynthesizeStreamResponse_Totals:
			out.Totals = ev.Totals
		}
	}
}

// Detail returns the first detail of type T in a status error.
func Detail[T proto.Message](err error) T {
	var zero T
	for _, d := range status.Convert(err).Details() {
		if m, ok := d.(T); ok {
			return m
		}
	}
	return zero
}

// ErrorInfo returns a status error's ErrorInfo.
func ErrorInfo(err error) *errdetails.ErrorInfo { return Detail[*errdetails.ErrorInfo](err) }

// Diff compares protos and plain values alike.
func Diff(want, got any) string { return cmp.Diff(want, got, protocmp.Transform()) }

// WaitFor waits up to 5 s for cond, failing the test if it never holds.
func WaitFor(t testing.TB, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
