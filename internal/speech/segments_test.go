package speech_test

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	speechv1 "github.com/speechgate/speechgate/gen/speech/v1"
	"github.com/speechgate/speechgate/internal/emulator"
	"github.com/speechgate/speechgate/internal/gatewaytest"
)

func flushNamed(text, id string) *speechv1.SynthesizeStreamRequest {
	return &speechv1.SynthesizeStreamRequest{Part: &speechv1.SynthesizeStreamRequest_Text{Text: &speechv1.TextPiece{Text: text, Flush: true, SegmentId: id}}}
}

func TestSynthesizeStreamSegments(t *testing.T) {
	t.Parallel()
	g := gatewaytest.Start(t, emulator.New(emulator.Options{}), gatewaytest.Options{})
	stream, err := g.Synth.SynthesizeStream(gatewaytest.WithKey(t.Context(), callerKey))
	if err != nil {
		t.Fatal(err)
	}
	stream.Send(gatewaytest.TextConfig(&speechv1.SynthesisConfig{VoiceId: "avery", SampleRateHz: 16000, WordTimestamps: true}))
	stream.Send(flushNamed("Hello there. ", "greeting"))
	stream.Send(gatewaytest.TextPiece("How are you ", false))
	stream.Send(gatewaytest.TextPiece("today? ", true)) // named by the gateway
	stream.Send(gatewaytest.TextPiece("Fine.", false))  // the end's segment, at the half-close
	stream.CloseSend()
	got := gatewaytest.Receive(stream, nil)
	if got.Err != nil {
		t.Fatal(got.Err)
	}

	zero := func(n uint32) *uint32 { return &n }
	want := []*speechv1.SegmentDone{
		{SegmentId: "greeting", Characters: 13, Words: zero(2)},
		{SegmentId: "seg-2", Characters: 19, Words: zero(4)},
		{SegmentId: "seg-3", Characters: 5, Words: zero(1)},
	}
	// Each segment_done follows its segment's last audio and words, and
	// reports where its audio lies on the stream's timeline.
	type span struct{ start, end uint32 }
	spans := map[string]*span{}
	done := map[string]bool{}
	for _, m := range got.Events {
		switch {
		case m.GetAudio() != nil:
			a := m.GetAudio()
			if done[a.GetSegmentId()] {
				t.Errorf("audio of segment %q after its segment_done", a.GetSegmentId())
			}
			sp := spans[a.GetSegmentId()]
			if sp == nil {
				sp = &span{start: a.GetOffsetMs()}
				spans[a.GetSegmentId()] = sp
			}
			sp.end = a.GetOffsetMs() + a.GetDurationMs()
		case m.GetWord() != nil:
			if done[m.GetWord().GetSegmentId()] || m.GetWord().GetSegmentId() == "" {
				t.Errorf("word %v: after its segment_done, or of no segment", m.GetWord())
			}
		case m.GetSegmentDone() != nil:
			done[m.GetSegmentDone().GetSegmentId()] = true
		}
	}
	for _, w := range want {
		sp := spans[w.GetSegmentId()]
		if sp == nil {
			t.Fatalf("no audio of segment %q", w.GetSegmentId())
		}
		w.StartMs, w.AudioDurationMs = sp.start, sp.end-sp.start
	}
	for _, s := range got.Segments {
		if !strings.HasPrefix(s.GetUpstreamRequestId(), "task_") {
			t.Errorf("segment %q: upstream request id %q, want the emulator's", s.GetSegmentId(), s.GetUpstreamRequestId())
		}
		s.UpstreamRequestId = ""
	}
	if d := gatewaytest.Diff(want, got.Segments); d != "" {
		t.Errorf("segment_done events (-want +got):\n%s", d)
	}
	if n := len(spans); n != 3 {
		t.Errorf("audio of %d segments, want 3 (and none without one)", n)
	}
}

func TestSynthesizeStreamSegmentValidation(t *testing.T) {
	t.Parallel()
	g := gatewaytest.Start(t, emulator.New(emulator.Options{}), gatewaytest.Options{})
	tests := []struct {
		name   string
		config *speechv1.SynthesisConfig
		piece  *speechv1.SynthesizeStreamRequest
		want   *errdetails.BadRequest_FieldViolation
	}{
		{name: "an id without a flush", piece: &speechv1.SynthesizeStreamRequest{Part: &speechv1.SynthesizeStreamRequest_Text{
			Text: &speechv1.TextPiece{Text: "Hi", SegmentId: "a"}}},
			want: &errdetails.BadRequest_FieldViolation{Field: "text.segment_id", Reason: "CONFLICT",
				Description: "may only be set with flush: it names the segment the flush ends"}},
		{name: "an id of the gateway's form", piece: flushNamed("Hi.", "seg-3"),
			want: &errdetails.BadRequest_FieldViolation{Field: "text.segment_id", Reason: "BAD_FORMAT",
				Description: "must not have the form seg-<number>, which is how the gateway names segments given no id"}},
		{name: "an id with a space", piece: flushNamed("Hi.", "a b"),
			want: &errdetails.BadRequest_FieldViolation{Field: "text.segment_id", Reason: "BAD_FORMAT",
				Description: "must use only the characters [A-Za-z0-9_.-]"}},
		{name: "heartbeats too often", config: &speechv1.SynthesisConfig{VoiceId: "magnus", HeartbeatIntervalMs: 500},
			want: &errdetails.BadRequest_FieldViolation{Field: "config.heartbeat_interval_ms", Reason: "OUT_OF_RANGE",
				Description: "must be 0 (no heartbeats) or from 1000 to 300000, got 500"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			stream, err := g.Synth.SynthesizeStream(gatewaytest.WithKey(t.Context(), callerKey))
			if err != nil {
				t.Fatal(err)
			}
			config := tt.config
			if config == nil {
				config = &speechv1.SynthesisConfig{VoiceId: "magnus"}
			}
			stream.Send(gatewaytest.TextConfig(config))
			if tt.piece != nil {
				stream.Send(tt.piece)
			}
			got := gatewaytest.Receive(stream, nil)
			if status.Code(got.Err) != codes.InvalidArgument {
				t.Fatalf("err = %v, want InvalidArgument", got.Err)
			}
			if d := gatewaytest.Diff([]*errdetails.BadRequest_FieldViolation{tt.want},
				gatewaytest.Detail[*errdetails.BadRequest](got.Err).GetFieldViolations()); d != "" {
				t.Errorf("violations (-want +got):\n%s", d)
			}
			if len(got.Audio) > 0 {
				t.Error("audio was sent for a refused piece")
			}
		})
	}
}

func TestStreamsHeartbeat(t *testing.T) {
	t.Parallel()
	g := gatewaytest.Start(t, emulator.New(emulator.Options{}), gatewaytest.Options{})
	ctx := gatewaytest.WithKey(t.Context(), callerKey)
	const quiet = 2500 * time.Millisecond // a caller thinking, with heartbeats every second

	t.Run("SynthesizeStream", func(t *testing.T) {
		t.Parallel()
		stream, err := g.Synth.SynthesizeStream(ctx)
		if err != nil {
			t.Fatal(err)
		}
		stream.Send(gatewaytest.TextConfig(&speechv1.SynthesisConfig{VoiceId: "magnus", HeartbeatIntervalMs: 1000}))
		time.Sleep(quiet)
		stream.Send(gatewaytest.TextPiece("Still here.", true))
		stream.CloseSend()
		got := gatewaytest.Receive(stream, nil)
		if got.Err != nil {
			t.Fatal(got.Err)
		}
		if n := len(got.Heartbeats); n < 2 || n > 3 {
			t.Fatalf("%d heartbeats in %v of quiet at one a second, want 2", n, quiet)
		}
		for i, h := range got.Heartbeats {
			if h.GetSequence() != uint32(i) || h.GetIdleMs() < 1000 || h.GetIdleMs() > 2000 {
				t.Errorf("heartbeat %d = %v; want sequence %d, idle about 1000 ms", i, h, i)
			}
		}
		if got.Events[0].GetFormat() == nil || got.Events[len(got.Events)-1].GetTotals() == nil || len(got.Audio) == 0 {
			t.Error("heartbeats must not displace the format first, the audio, or the totals last")
		}
	})
	t.Run("TranscribeLive", func(t *testing.T) {
		t.Parallel()
		stream, err := g.Trans.TranscribeLive(ctx)
		if err != nil {
			t.Fatal(err)
		}
		stream.Send(&speechv1.TranscribeLiveRequest{Part: &speechv1.TranscribeLiveRequest_Config{Config: &speechv1.LiveTranscriptionConfig{
			Language: "en", HeartbeatIntervalMs: 1000}}})
		var beats int
		deadline := time.After(quiet)
		msgs := make(chan *speechv1.TranscribeLiveResponse)
		go func() {
			defer close(msgs)
			for {
				m, err := stream.Recv()
				if err != nil {
					return
				}
				msgs <- m
			}
		}()
	loop:
		for {
			select {
			case m := <-msgs:
				if m.GetHeartbeat() != nil {
					beats++
				}
			case <-deadline:
				break loop
			}
		}
		stream.CloseSend()
		for range msgs { // the session's end
		}
		if beats < 2 || beats > 3 {
			t.Errorf("%d heartbeats in %v of silence at one a second, want 2", beats, quiet)
		}
	})
}
