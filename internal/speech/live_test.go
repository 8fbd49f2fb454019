package speech_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/speechgate/speechgate/internal/gatewaytest"
	"github.com/speechgate/speechgate/internal/smallest"

	"github.com/coder/websocket"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	speechv1 "github.com/speechgate/speechgate/gen/speech/v1"
	"github.com/speechgate/speechgate/internal/emulator"
)

type liveClient = interface {
	Send(*speechv1.TranscribeLiveRequest) error
	CloseSend() error
	Recv() (*speechv1.TranscribeLiveResponse, error)
}

func liveConfig(c *speechv1.LiveTranscriptionConfig) *speechv1.TranscribeLiveRequest {
	return &speechv1.TranscribeLiveRequest{Part: &speechv1.TranscribeLiveRequest_Config{Config: c}}
}

func liveAudio(b []byte) *speechv1.TranscribeLiveRequest {
	return &speechv1.TranscribeLiveRequest{Part: &speechv1.TranscribeLiveRequest_Audio{Audio: b}}
}

var finalize = &speechv1.TranscribeLiveRequest{Part: &speechv1.TranscribeLiveRequest_Finalize{Finalize: &speechv1.FinalizeUtterance{}}}

// collect reads a live session to its end.
func collect(s liveClient) ([]*speechv1.TranscribeLiveResponse, error) {
	var out []*speechv1.TranscribeLiveResponse
	for {
		msg, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, msg)
	}
}

func TestTranscribeLiveSession(t *testing.T) {
	t.Parallel()
	g := gatewaytest.Start(t, emulator.New(emulator.Options{}), gatewaytest.Options{})
	ctx := gatewaytest.WithKey(t.Context(), callerKey)
	const text = "Realtime recognition through the gateway. It works in both halves."
	spoken := gatewaytest.Synthesize(ctx, g.Synth, &speechv1.SynthesizeRequest{Text: text, VoiceId: "avery", SampleRateHz: 16000})
	if spoken.Err != nil {
		t.Fatal(spoken.Err)
	}
	pcm := spoken.Bytes()

	for _, interim := range []bool{true, false} {
		stream, err := g.Trans.TranscribeLive(ctx)
		if err != nil {
			t.Fatal(err)
		}
		stream.Send(liveConfig(&speechv1.LiveTranscriptionConfig{Language: "en", InterimResults: interim, WordTimestamps: true, VadEvents: true}))
		go func() {
			for off := 0; off < len(pcm); off += 4096 {
				stream.Send(liveAudio(pcm[off:min(off+4096, len(pcm))]))
				if off == 64*1024 { // about 2 s in: end the first utterance by hand
					stream.Send(finalize)
				}
			}
			stream.CloseSend()
		}()
		msgs, err := collect(stream)
		if err != nil {
			t.Fatalf("interim=%v: the session ended with %v, want OK", interim, err)
		}
		var finals []string
		var interims, events int
		var fromFinalize bool
		for _, m := range msgs {
			tr := m.GetTranscript()
			switch {
			case tr == nil:
				events++
			case tr.GetIsFinal():
				finals = append(finals, tr.GetText())
				fromFinalize = fromFinalize || tr.GetFromFinalize()
				if tr.GetUpstreamSessionId() == "" || tr.GetLanguage() != "en" {
					t.Errorf("final transcript lacks its session id or language: %v", tr)
				}
			default:
				interims++
			}
		}
		last := msgs[len(msgs)-1].GetTranscript()
		if !last.GetIsLast() {
			t.Errorf("interim=%v: the last message is %v, want the is_last transcript", interim, msgs[len(msgs)-1])
		}
		if got := strings.Join(strings.Fields(strings.Join(finals, " ")), " "); got != text {
			t.Errorf("interim=%v: finals join to %q, want %q", interim, got, text)
		}
		if !fromFinalize || len(finals) < 2 || events < 2 {
			t.Errorf("interim=%v: %d finals (from finalize: %v), %d speech events", interim, len(finals), fromFinalize, events)
		}
		if (interims > 0) != interim {
			t.Errorf("interim_results=%v, but %d interim transcripts arrived", interim, interims)
		}
	}
}

// fakeLiveWS is an independent stand-in for Pulse's WebSocket that plays a
// fixed answer and reports when its socket closes.
type fakeLiveWS struct {
	hits   atomic.Int32
	answer []string // frames sent right after the upgrade; "close:1008" closes
	closed chan struct{}
}

func (f *fakeLiveWS) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.hits.Add(1)
	c, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	defer close(f.closed)
	defer c.CloseNow()
	for _, a := range f.answer {
		if a == "close:1008" {
			c.Close(websocket.StatusPolicyViolation, "too many sessions")
			return
		}
		c.Write(r.Context(), websocket.MessageText, []byte(a))
	}
	for { // then listen until the gateway goes away
		if _, _, err := c.Read(r.Context()); err != nil {
			return
		}
	}
}

func TestTranscribeLiveUpstreamRefusals(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		answer     []string
		wantCode   codes.Code
		wantReason string
	}{
		{name: "concurrency limit (close 1008)", answer: []string{"close:1008"}, wantCode: codes.ResourceExhausted, wantReason: "UPSTREAM_RATE_LIMITED"},
		{
			name: "language not in region",
			answer: []string{`{"type":"error","error_code":"LANGUAGE_NOT_ENABLED_IN_REGION",` +
				`"message":"Language 'multi-south-indic' has not been enabled in this region."}`},
			wantCode: codes.InvalidArgument, wantReason: "LANGUAGE_NOT_ENABLED_IN_REGION",
		},
		{name: "error message", answer: []string{`{"type":"error","status":"error","message":"internal failure"}`},
			wantCode: codes.Unavailable, wantReason: "UPSTREAM_STREAM_ERROR"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			g := gatewaytest.Start(t, &fakeLiveWS{answer: tt.answer, closed: make(chan struct{})}, gatewaytest.Options{})
			stream, err := g.Trans.TranscribeLive(gatewaytest.WithKey(t.Context(), callerKey))
			if err != nil {
				t.Fatal(err)
			}
			stream.Send(liveConfig(&speechv1.LiveTranscriptionConfig{Language: "en"}))
			_, err = collect(stream)
			if status.Code(err) != tt.wantCode || gatewaytest.ErrorInfo(err).GetReason() != tt.wantReason {
				t.Fatalf("session ended with %v (reason %q), want %v with reason %s", err, gatewaytest.ErrorInfo(err).GetReason(), tt.wantCode, tt.wantReason)
			}
		})
	}
}

func TestTranscribeLiveEndsTheUpstreamSession(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		deadline time.Duration
		want     codes.Code
	}{
		{name: "cancel", want: codes.Canceled},
		{name: "deadline", deadline: 200 * time.Millisecond, want: codes.DeadlineExceeded},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			fake := &fakeLiveWS{closed: make(chan struct{})}
			g := gatewaytest.Start(t, fake, gatewaytest.Options{})
			ctx, cancel := context.WithCancel(gatewaytest.WithKey(t.Context(), callerKey))
			defer cancel()
			if tt.deadline > 0 {
				ctx, cancel = context.WithTimeout(ctx, tt.deadline)
				defer cancel()
			}
			stream, err := g.Trans.TranscribeLive(ctx)
			if err != nil {
				t.Fatal(err)
			}
			stream.Send(liveConfig(&speechv1.LiveTranscriptionConfig{Language: "en"}))
			stream.Send(liveAudio(make([]byte, 320)))
			gatewaytest.WaitFor(t, func() bool { return fake.hits.Load() == 1 })
			if tt.deadline == 0 {
				cancel()
			}
			select {
			case <-fake.closed:
			case <-time.After(5 * time.Second):
				t.Fatal("the upstream WebSocket stayed open after the caller gave up")
			}
			if _, err := collect(stream); status.Code(err) != tt.want {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestTranscribeLiveValidates(t *testing.T) {
	t.Parallel()
	fake := &fakeLiveWS{closed: make(chan struct{})}
	g := gatewaytest.Start(t, fake, gatewaytest.Options{})
	pro := speechv1.TranscriptionModel_TRANSCRIPTION_MODEL_PULSE_PRO
	tests := []struct {
		name string
		msgs []*speechv1.TranscribeLiveRequest
		want []*errdetails.BadRequest_FieldViolation
	}{
		{name: "no messages", want: []*errdetails.BadRequest_FieldViolation{{Field: "config", Reason: "REQUIRED",
			Description: "the stream ended before its first message, which must hold the config"}}},
		{name: "audio first", msgs: []*speechv1.TranscribeLiveRequest{liveAudio([]byte{1})},
			want: []*errdetails.BadRequest_FieldViolation{{Field: "config", Reason: "REQUIRED", Description: "the first message must hold the config; audio follows it"}}},
		{
			name: "every field wrong",
			msgs: []*speechv1.TranscribeLiveRequest{liveConfig(&speechv1.LiveTranscriptionConfig{
				Model: pro, Language: "xx", Encoding: speechv1.AudioEncoding_AUDIO_ENCODING_MP3, SampleRateHz: 11025,
				EndOfUtteranceTimeoutMs: 50, MaxWords: 1001, SessionId: "a b",
				Keywords: []*speechv1.Keyword{{Text: "ok", Intensifier: 2}, {Text: "a:b"}, {Text: " ", Intensifier: 9},
					{Text: "both", Intensifier: 2, Weight: proto.Float64(1.5)}, {Text: "minus", Weight: proto.Float64(-0.5)}},
			})},
			want: []*errdetails.BadRequest_FieldViolation{
				{Field: "config.model", Reason: "NOT_ALLOWED", Description: "TRANSCRIPTION_MODEL_PULSE_PRO has no realtime transport; use TRANSCRIPTION_MODEL_PULSE or TranscribeUpload"},
				{Field: "config.language", Reason: "NOT_ALLOWED", Description: `must be one of en, hi, de, es, ru, it, fr, nl, pt, zh, yue, ja, ko, gu, mr, or, bn, ta, te, kn, ml, north_indic, multi-asian, multi-south-indic, got "xx"`},
				{Field: "config.encoding", Reason: "NOT_ALLOWED", Description: "AUDIO_ENCODING_MP3 cannot be recognized live; send PCM_S16LE, PCM_S32LE, MULAW, ALAW, OPUS or OGG_OPUS"},
				{Field: "config.sample_rate_hz", Reason: "NOT_ALLOWED", Description: "must be one of 8000, 16000, 22050, 24000, 44100, 48000, got 11025"},
				{Field: "config.end_of_utterance_timeout_ms", Reason: "OUT_OF_RANGE", Description: "must be from 100 to 10000, got 50"},
				{Field: "config.max_words", Reason: "OUT_OF_RANGE", Description: "must be at most 1000, got 1001"},
				{Field: "config.keywords[1].text", Reason: "BAD_FORMAT", Description: "must not contain ',' or ':', which Smallest uses as separators"},
				{Field: "config.keywords[2].text", Reason: "REQUIRED", Description: "is required"},
				{Field: "config.keywords[2].intensifier", Reason: "OUT_OF_RANGE", Description: "must be from 1 to 5 (0 means 1), got 9"},
				{Field: "config.keywords[3].weight", Reason: "CONFLICT", Description: "and intensifier cannot both be set: weight supersedes intensifier"},
				{Field: "config.keywords[4].weight", Reason: "OUT_OF_RANGE", Description: "must be a number from 0 to 5, got -0.5"},
				{Field: "config.session_id", Reason: "BAD_FORMAT", Description: "must use only the characters [A-Za-z0-9_.-]"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			stream, err := g.Trans.TranscribeLive(gatewaytest.WithKey(t.Context(), callerKey))
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range tt.msgs {
				stream.Send(m)
			}
			stream.CloseSend()
			_, err = collect(stream)
			if status.Code(err) != codes.InvalidArgument {
				t.Fatalf("err = %v, want InvalidArgument", err)
			}
			if d := gatewaytest.Diff(tt.want, gatewaytest.Detail[*errdetails.BadRequest](err).GetFieldViolations()); d != "" {
				t.Errorf("violations (-want +got):\n%s", d)
			}
		})
	}
	t.Cleanup(func() {
		if n := fake.hits.Load(); n != 0 {
			t.Errorf("%d sessions were opened upstream for invalid configs", n)
		}
	})
}

func TestTranscribeLiveSecondConfigEndsTheSession(t *testing.T) {
	t.Parallel()
	fake := &fakeLiveWS{closed: make(chan struct{})}
	g := gatewaytest.Start(t, fake, gatewaytest.Options{})
	stream, err := g.Trans.TranscribeLive(gatewaytest.WithKey(t.Context(), callerKey))
	if err != nil {
		t.Fatal(err)
	}
	stream.Send(liveConfig(&speechv1.LiveTranscriptionConfig{Language: "en"}))
	stream.Send(liveConfig(&speechv1.LiveTranscriptionConfig{Language: "de"}))
	_, err = collect(stream)
	if v := gatewaytest.Detail[*errdetails.BadRequest](err).GetFieldViolations(); status.Code(err) != codes.InvalidArgument || len(v) != 1 || v[0].GetReason() != "CONFLICT" {
		t.Fatalf("err = %v, want InvalidArgument with a CONFLICT on config", err)
	}
	<-fake.closed
}

func TestTranscribeLiveUnavailableOnBackend(t *testing.T) {
	t.Parallel()
	const why = "the self-hosted server's streaming protocol is not documented"
	g := gatewaytest.Start(t, emulator.New(emulator.Options{}), gatewaytest.Options{Upstream: gatewaytest.Capabilities(func(c *smallest.Capabilities) { c.Live, c.LiveMissing = false, why })})
	stream, err := g.Trans.TranscribeLive(gatewaytest.WithKey(t.Context(), callerKey))
	if err != nil {
		t.Fatal(err)
	}
	stream.Send(liveConfig(&speechv1.LiveTranscriptionConfig{Language: "en"}))
	if _, err := collect(stream); status.Code(err) != codes.Unimplemented || !strings.Contains(status.Convert(err).Message(), why) {
		t.Fatalf("err = %v, want Unimplemented saying why", err)
	}
}
