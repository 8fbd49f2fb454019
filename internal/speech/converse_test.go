package speech_test

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"math"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	speechv1 "github.com/speechgate/speechgate/gen/speech/v1"
	"github.com/speechgate/speechgate/internal/emulator"
	"github.com/speechgate/speechgate/internal/gatewaytest"
	"github.com/speechgate/speechgate/server"
)

type converseClient = interface {
	Send(*speechv1.ConverseRequest) error
	CloseSend() error
	Recv() (*speechv1.ConverseResponse, error)
}

func converseConfig(c *speechv1.ConversationConfig) *speechv1.ConverseRequest {
	return &speechv1.ConverseRequest{Part: &speechv1.ConverseRequest_Config{Config: c}}
}

func converseAudio(b []byte) *speechv1.ConverseRequest {
	return &speechv1.ConverseRequest{Part: &speechv1.ConverseRequest_Audio{Audio: b}}
}

// utterance is speech as the emulated Hydra hears it: a loud tone of
// speech, then quiet of silence, PCM16 at 16 kHz.
func utterance(speech, silence time.Duration) []byte {
	n := int(speech.Seconds() * 16000)
	b := make([]byte, 2*(n+int(silence.Seconds()*16000)))
	for i := range n {
		binary.LittleEndian.PutUint16(b[2*i:], uint16(int16(8000*math.Sin(2*math.Pi*300*float64(i)/16000))))
	}
	return b
}

// speak sends audio in pieces of size bytes, odd sizes included: the
// gateway re-frames them for Hydra.
func speak(t *testing.T, c converseClient, audio []byte, size int) {
	t.Helper()
	for len(audio) > 0 {
		n := min(size, len(audio))
		if err := c.Send(converseAudio(audio[:n])); err != nil {
			t.Fatal(err)
		}
		audio = audio[n:]
	}
}

// events reads until the call ends or until stop says so (after the event
// it is given), and returns what came and the call's end (nil while open).
func events(t *testing.T, c converseClient, stop func(*speechv1.ConverseResponse) bool) ([]*speechv1.ConverseResponse, error) {
	t.Helper()
	var out []*speechv1.ConverseResponse
	for {
		msg, err := c.Recv()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, msg)
		if stop != nil && stop(msg) {
			return out, nil
		}
	}
}

// kinds names each event by its oneof field, audio runs collapsed.
func kinds(evs []*speechv1.ConverseResponse) []string {
	var out []string
	for _, ev := range evs {
		k := string(ev.ProtoReflect().WhichOneof(ev.ProtoReflect().Descriptor().Oneofs().ByName("event")).Name())
		if k == "audio" && len(out) > 0 && out[len(out)-1] == "audio…" {
			continue
		}
		if k == "audio" {
			k = "audio…"
		}
		out = append(out, k)
	}
	return out
}

func TestConverseEcho(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		output     *speechv1.ConversationOutput
		wantFormat *speechv1.ConversationFormat
	}{
		{name: "Hydra's own 48 kHz", wantFormat: &speechv1.ConversationFormat{
			Encoding: speechv1.AudioEncoding_AUDIO_ENCODING_PCM_S16LE, SampleRateHz: 48000, Channels: 1, BitsPerSample: 16}},
		{name: "resampled to 16 kHz", output: &speechv1.ConversationOutput{SampleRateHz: 16000},
			wantFormat: &speechv1.ConversationFormat{Encoding: speechv1.AudioEncoding_AUDIO_ENCODING_PCM_S16LE, SampleRateHz: 16000, Channels: 1, BitsPerSample: 16}},
		{name: "μ-law for telephony", output: &speechv1.ConversationOutput{Encoding: speechv1.AudioEncoding_AUDIO_ENCODING_MULAW},
			wantFormat: &speechv1.ConversationFormat{Encoding: speechv1.AudioEncoding_AUDIO_ENCODING_MULAW, SampleRateHz: 8000, Channels: 1, BitsPerSample: 8}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			g := gatewaytest.Start(t, emulator.New(emulator.Options{}), gatewaytest.Options{})
			c, err := g.Conv.Converse(gatewaytest.WithKey(t.Context(), callerKey))
			if err != nil {
				t.Fatal(err)
			}
			if err := c.Send(converseConfig(&speechv1.ConversationConfig{Voice: "maya", Output: tt.output})); err != nil {
				t.Fatal(err)
			}
			turn := utterance(600*time.Millisecond, 500*time.Millisecond)
			speak(t, c, turn, 333)
			got, err := events(t, c, func(m *speechv1.ConverseResponse) bool { return m.GetResponseDone() != nil })
			if err != nil {
				t.Fatal(err)
			}
			want := []string{"started", "speech_started", "speech_stopped", "response_started", "format", "audio…", "audio_done", "response_done"}
			if diff := gatewaytest.Diff(want, kinds(got)); diff != "" {
				t.Fatalf("events (-want +got):\n%s", diff)
			}
			if s := got[0].GetStarted(); s.GetVoice() != "maya" || s.GetModel() != "hydra-v1.1" || s.GetSessionId() == "" {
				t.Errorf("started = %v, want voice maya, model hydra-v1.1 and a session id", s)
			}
			if diff := gatewaytest.Diff(tt.wantFormat, got[4].GetFormat()); diff != "" {
				t.Errorf("format (-want +got):\n%s", diff)
			}
			// The emulated Hydra echoes the turn it heard: from the start of
			// speech to 300 ms into the silence.
			var bytes int
			var next uint32
			for _, m := range got {
				if a := m.GetAudio(); a != nil {
					if a.GetSequence() != next || a.GetOffsetMs() != uint32(bytes*1000/int(tt.wantFormat.SampleRateHz*tt.wantFormat.BitsPerSample/8)) {
						t.Fatalf("audio %d at offset %d, want sequence %d at offset of %d bytes", a.GetSequence(), a.GetOffsetMs(), next, bytes)
					}
					next++
					bytes += len(a.GetData())
				}
			}
			ms := bytes * 1000 / int(tt.wantFormat.SampleRateHz*tt.wantFormat.BitsPerSample/8)
			if ms < 880 || ms > 940 {
				t.Errorf("%d ms of answer, want the 900 ms turn echoed", ms)
			}
			done := got[len(got)-1].GetResponseDone()
			if done.GetStatus() != speechv1.ResponseStatus_RESPONSE_STATUS_COMPLETED || done.GetUsage().GetTotalTokens() == 0 {
				t.Errorf("response_done = %v, want completed with usage", done)
			}
			if ad := got[len(got)-2].GetAudioDone(); ad.GetAudioDurationMs() != uint32(ms) {
				t.Errorf("audio_done says %d ms, the audio was %d ms", ad.GetAudioDurationMs(), ms)
			}
			// Half-closing ends the call OK once Hydra is quiet.
			c.CloseSend()
			if rest, err := events(t, c, nil); err != nil || len(rest) != 0 {
				t.Errorf("after the half-close: %v, %v; want the call to end OK", kinds(rest), err)
			}
			if strings.Contains(g.Logs.String(), callerKey) {
				t.Error("the caller's key, which goes in Hydra's URL, reached the logs")
			}
		})
	}
}

func TestConverseToolCall(t *testing.T) {
	t.Parallel()
	spans := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(spans))
	t.Cleanup(func() { tp.Shutdown(context.Background()) })
	g := gatewaytest.Start(t, emulator.New(emulator.Options{}), gatewaytest.Options{Server: func(c *server.Config) { c.TracerProvider = tp }})
	c, err := g.Conv.Converse(gatewaytest.WithKey(t.Context(), callerKey))
	if err != nil {
		t.Fatal(err)
	}
	params, _ := structpb.NewStruct(map[string]any{"type": "object", "properties": map[string]any{"heard_ms": map[string]any{"type": "integer"}}})
	if err := c.Send(converseConfig(&speechv1.ConversationConfig{Tools: []*speechv1.Tool{
		{Name: "get_weather", Description: "Looks up the weather.", Parameters: params}}})); err != nil {
		t.Fatal(err)
	}
	speak(t, c, utterance(400*time.Millisecond, 400*time.Millisecond), 640)
	got, err := events(t, c, func(m *speechv1.ConverseResponse) bool { return m.GetToolCall() != nil })
	if err != nil {
		t.Fatal(err)
	}
	if n := got[0].GetStarted().GetTools(); n != 1 {
		t.Errorf("started says %d tools, want 1", n)
	}
	call := got[len(got)-1].GetToolCall()
	var args struct {
		HeardMS *int `json:"heard_ms"`
	}
	if call.GetName() != "get_weather" || call.GetCallId() == "" || json.Unmarshal([]byte(call.GetArguments()), &args) != nil || args.HeardMS == nil {
		t.Fatalf("tool_call = %v, want get_weather with its arguments joined from their deltas", call)
	}
	for _, m := range []*speechv1.ConverseRequest{
		{Part: &speechv1.ConverseRequest_ToolResult{ToolResult: &speechv1.ToolResult{CallId: call.GetCallId(), Output: `{"sky":"clear"}`}}},
		{Part: &speechv1.ConverseRequest_Respond{Respond: &speechv1.RespondNow{}}},
	} {
		if err := c.Send(m); err != nil {
			t.Fatal(err)
		}
	}
	narrated := false
	got, err = events(t, c, func(m *speechv1.ConverseResponse) bool {
		narrated = narrated || m.GetAudioDone() != nil
		return narrated && m.GetResponseDone() != nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// The tool's own response ends, then the narration of its result.
	want := []string{"response_done", "response_started", "format", "audio…", "audio_done", "response_done"}
	if diff := gatewaytest.Diff(want, kinds(got)); diff != "" {
		t.Errorf("after the tool result (-want +got):\n%s", diff)
	}
	c.CloseSend()
	if _, err := events(t, c, nil); err != nil {
		t.Errorf("the call ended with %v, want OK", err)
	}
	// The call's span tells the conversation's story to whoever is on call.
	gatewaytest.WaitFor(t, func() bool { return len(spans.GetSpans()) > 0 })
	var story []string
	for _, sp := range spans.GetSpans() {
		if sp.Name != "speech.v1.ConversationService/Converse" {
			continue
		}
		for _, a := range sp.Attributes {
			if a.Key == "speechgate.hydra.session_id" && a.Value.AsString() != "" {
				story = append(story, "session")
			}
		}
		for _, ev := range sp.Events {
			story = append(story, ev.Name)
		}
	}
	want = []string{"session", "tool call", "response done", "response done"}
	if diff := gatewaytest.Diff(want, slices.DeleteFunc(story, func(s string) bool { return s == "message" })); diff != "" {
		t.Errorf("span (-want +got):\n%s", diff)
	}
}

// TestConverseBargeIn speaks over the answer: the answer is cut, the next
// response names it as interrupted, and no audio of it arrives after that.
func TestConverseBargeIn(t *testing.T) {
	t.Parallel()
	g := gatewaytest.Start(t, emulator.New(emulator.Options{Pace: 1}), gatewaytest.Options{})
	c, err := g.Conv.Converse(gatewaytest.WithKey(t.Context(), callerKey))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Send(converseConfig(&speechv1.ConversationConfig{})); err != nil {
		t.Fatal(err)
	}
	// A 2 s turn makes a 2.3 s answer, spoken in real time.
	speak(t, c, utterance(2*time.Second, 400*time.Millisecond), 1280)
	first, err := events(t, c, func(m *speechv1.ConverseResponse) bool { return m.GetAudio() != nil })
	if err != nil {
		t.Fatal(err)
	}
	var firstID string
	for _, m := range first {
		if r := m.GetResponseStarted(); r != nil {
			firstID = r.GetResponseId()
		}
	}
	speak(t, c, utterance(300*time.Millisecond, 400*time.Millisecond), 1280)
	rest, err := events(t, c, func(m *speechv1.ConverseResponse) bool { return m.GetAudioDone() != nil })
	if err != nil {
		t.Fatal(err)
	}
	var secondID string
	var cancelled bool
	for _, m := range rest {
		switch {
		case m.GetResponseDone().GetResponseId() == firstID:
			cancelled = m.GetResponseDone().GetStatus() == speechv1.ResponseStatus_RESPONSE_STATUS_CANCELLED &&
				m.GetResponseDone().GetReason() == "interrupted"
		case m.GetResponseStarted() != nil:
			secondID = m.GetResponseStarted().GetResponseId()
			if got := m.GetResponseStarted().GetInterruptedResponseId(); got != firstID {
				t.Errorf("response_started names %q as interrupted, want %q", got, firstID)
			}
		case m.GetAudio() != nil && secondID != "" && m.GetAudio().GetResponseId() != secondID:
			t.Fatalf("audio of %s arrived after %s started", m.GetAudio().GetResponseId(), secondID)
		case m.GetAudioDone() != nil && m.GetAudioDone().GetResponseId() != secondID:
			t.Errorf("audio_done of %s, want only the second response's", m.GetAudioDone().GetResponseId())
		}
	}
	if !cancelled || secondID == "" {
		t.Errorf("events %v: want the first response cancelled as interrupted, then a second", kinds(rest))
	}
	// The cancel a caller sends stops the answer too.
	speak(t, c, utterance(2*time.Second, 400*time.Millisecond), 1280)
	if _, err := events(t, c, func(m *speechv1.ConverseResponse) bool {
		return m.GetAudio() != nil && m.GetAudio().GetResponseId() != secondID
	}); err != nil {
		t.Fatal(err)
	}
	if err := c.Send(&speechv1.ConverseRequest{Part: &speechv1.ConverseRequest_Cancel{Cancel: &speechv1.CancelResponse{}}}); err != nil {
		t.Fatal(err)
	}
	got, err := events(t, c, func(m *speechv1.ConverseResponse) bool { return m.GetResponseDone() != nil })
	if err != nil {
		t.Fatal(err)
	}
	if done := got[len(got)-1].GetResponseDone(); done.GetReason() != "client_cancelled" {
		t.Errorf("response_done after a cancel = %v, want reason client_cancelled", done)
	}
}

func TestConverseErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		key        string
		audio      bool // the error comes once audio is sent
		wantCode   codes.Code
		wantReason string
		check      func(t *testing.T, err error)
	}{
		{name: "a refused key at the handshake", key: "fault-http-401", wantCode: codes.Unauthenticated, wantReason: "UPSTREAM_UNAUTHENTICATED"},
		{name: "a full Hydra (server_full, close 1013)", key: "fault-hydra-server-full", wantCode: codes.ResourceExhausted, wantReason: "UPSTREAM_RATE_LIMITED",
			check: func(t *testing.T, err error) {
				if q := gatewaytest.Detail[*errdetails.QuotaFailure](err); q == nil {
					t.Error("no QuotaFailure")
				}
			}},
		{name: "audio Hydra cannot read", key: "fault-hydra-invalid-audio", audio: true, wantCode: codes.InvalidArgument, wantReason: "UPSTREAM_STREAM_ERROR",
			check: func(t *testing.T, err error) {
				br := gatewaytest.Detail[*errdetails.BadRequest](err)
				if len(br.GetFieldViolations()) == 0 || br.GetFieldViolations()[0].GetField() != "audio" {
					t.Errorf("BadRequest = %v, want one on audio", br)
				}
			}},
		{name: "the idle timeout", key: "fault-hydra-idle", wantCode: codes.Aborted, wantReason: "UPSTREAM_SESSION_IDLE"},
		{name: "an internal error, then a close", key: "fault-hydra-internal-error", wantCode: codes.Unavailable, wantReason: "UPSTREAM_STREAM_ERROR"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			g := gatewaytest.Start(t, emulator.New(emulator.Options{}), gatewaytest.Options{})
			c, err := g.Conv.Converse(gatewaytest.WithKey(t.Context(), tt.key))
			if err != nil {
				t.Fatal(err)
			}
			if err := c.Send(converseConfig(&speechv1.ConversationConfig{})); err != nil {
				t.Fatal(err)
			}
			if tt.audio {
				speak(t, c, utterance(100*time.Millisecond, 0), 1280)
			}
			_, err = events(t, c, nil)
			if status.Code(err) != tt.wantCode || gatewaytest.ErrorInfo(err).GetReason() != tt.wantReason {
				t.Fatalf("the call ended with %v (reason %q), want %v with reason %s", err, gatewaytest.ErrorInfo(err).GetReason(), tt.wantCode, tt.wantReason)
			}
			if tt.check != nil {
				tt.check(t, err)
			}
			if strings.Contains(g.Logs.String(), tt.key) || strings.Contains(err.Error(), tt.key) {
				t.Error("the key, which goes in Hydra's URL, reached a log or the status")
			}
		})
	}
}

// TestConverseValidation refuses bad input by field and rule, before any
// session is opened.
func TestConverseValidation(t *testing.T) {
	t.Parallel()
	var dials atomic.Int32
	emu := emulator.New(emulator.Options{})
	g := gatewaytest.Start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/waves/v1/s2s" {
			dials.Add(1)
		}
		emu.ServeHTTP(w, r)
	}), gatewaytest.Options{})
	tests := []struct {
		name      string
		msgs      []*speechv1.ConverseRequest
		wantField string
		wantRule  string
		opened    bool // the error comes after the session opened
	}{
		{name: "audio first", msgs: []*speechv1.ConverseRequest{converseAudio(make([]byte, 640))}, wantField: "config", wantRule: "REQUIRED"},
		{name: "a voice of another version", msgs: []*speechv1.ConverseRequest{converseConfig(&speechv1.ConversationConfig{
			Model: speechv1.ConversationModel_CONVERSATION_MODEL_HYDRA_V1_0, Voice: "maya"})}, wantField: "config.voice", wantRule: "NOT_ALLOWED"},
		{name: "a rate Hydra's audio is not resampled to", msgs: []*speechv1.ConverseRequest{converseConfig(&speechv1.ConversationConfig{
			Output: &speechv1.ConversationOutput{SampleRateHz: 22050}})}, wantField: "config.output.sample_rate_hz", wantRule: "NOT_ALLOWED"},
		{name: "μ-law at 16 kHz", msgs: []*speechv1.ConverseRequest{converseConfig(&speechv1.ConversationConfig{
			Output: &speechv1.ConversationOutput{Encoding: speechv1.AudioEncoding_AUDIO_ENCODING_MULAW, SampleRateHz: 16000}})},
			wantField: "config.output.sample_rate_hz", wantRule: "NOT_ALLOWED"},
		{name: "MP3 out", msgs: []*speechv1.ConverseRequest{converseConfig(&speechv1.ConversationConfig{
			Output: &speechv1.ConversationOutput{Encoding: speechv1.AudioEncoding_AUDIO_ENCODING_MP3}})},
			wantField: "config.output.encoding", wantRule: "NOT_ALLOWED"},
		{name: "a tool name with a space", msgs: []*speechv1.ConverseRequest{converseConfig(&speechv1.ConversationConfig{
			Tools: []*speechv1.Tool{{Name: "get weather"}}})}, wantField: "config.tools[0].name", wantRule: "BAD_FORMAT"},
		{name: "two tools of one name", msgs: []*speechv1.ConverseRequest{converseConfig(&speechv1.ConversationConfig{
			Tools: []*speechv1.Tool{{Name: "a"}, {Name: "a"}}})}, wantField: "config.tools[1].name", wantRule: "CONFLICT"},
		{name: "heartbeats too often", msgs: []*speechv1.ConverseRequest{converseConfig(&speechv1.ConversationConfig{HeartbeatIntervalMs: 10})},
			wantField: "config.heartbeat_interval_ms", wantRule: "OUT_OF_RANGE"},
		{name: "a second config", opened: true, msgs: []*speechv1.ConverseRequest{converseConfig(&speechv1.ConversationConfig{}),
			converseConfig(&speechv1.ConversationConfig{})}, wantField: "config", wantRule: "CONFLICT"},
		{name: "a tool result without its call", opened: true, msgs: []*speechv1.ConverseRequest{converseConfig(&speechv1.ConversationConfig{}),
			{Part: &speechv1.ConverseRequest_ToolResult{ToolResult: &speechv1.ToolResult{Output: "42"}}}}, wantField: "tool_result.call_id", wantRule: "REQUIRED"},
		{name: "audio over 1 MiB in one message", opened: true, msgs: []*speechv1.ConverseRequest{converseConfig(&speechv1.ConversationConfig{}),
			converseAudio(make([]byte, 1<<20+2))}, wantField: "audio", wantRule: "TOO_LONG"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := dials.Load()
			c, err := g.Conv.Converse(gatewaytest.WithKey(t.Context(), callerKey))
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range tt.msgs {
				if err := c.Send(m); err != nil {
					break // the gateway already refused; Recv says why
				}
			}
			_, err = events(t, c, nil)
			br := gatewaytest.Detail[*errdetails.BadRequest](err)
			if status.Code(err) != codes.InvalidArgument || len(br.GetFieldViolations()) != 1 ||
				br.GetFieldViolations()[0].GetField() != tt.wantField || br.GetFieldViolations()[0].GetReason() != tt.wantRule {
				t.Fatalf("got %v, %v; want INVALID_ARGUMENT on %s (%s)", err, br, tt.wantField, tt.wantRule)
			}
			if opened := dials.Load() != before; opened != tt.opened {
				t.Errorf("a Hydra session was opened: %v, want %v", opened, tt.opened)
			}
		})
	}
}

// scriptedHydra configures a session and then sends its script, as a
// Hydra that interleaves responses would: audio of an interrupted response
// may still arrive after the next one started.
type scriptedHydra struct{ script []string }

func (h scriptedHydra) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	defer c.CloseNow()
	ctx := r.Context()
	c.Write(ctx, websocket.MessageText, []byte(`{"type":"session.created","session_id":"sess_1"}`))
	if _, _, err := c.Read(ctx); err != nil { // session.configure
		return
	}
	c.Write(ctx, websocket.MessageText, []byte(`{"type":"session.configured","session":{"voice":"zoe","tools":[]}}`))
	for _, m := range h.script {
		c.Write(ctx, websocket.MessageText, []byte(m))
	}
	for {
		if _, _, err := c.Read(ctx); err != nil {
			return
		}
	}
}

func TestConverseDropsInterruptedAudio(t *testing.T) {
	t.Parallel()
	delta := func(id string) string {
		return `{"type":"response.output_audio.delta","response_id":"` + id + `","delta":"` + base64.StdEncoding.EncodeToString(make([]byte, 960)) + `"}`
	}
	g := gatewaytest.Start(t, scriptedHydra{script: []string{
		`{"type":"response.created","response":{"id":"r1"}}`, delta("r1"),
		`{"type":"input_audio_buffer.speech_started","audio_start_ms":900,"item_id":"i2"}`,
		`{"type":"response.created","response":{"id":"r2"}}`, delta("r1"), delta("r2"),
		`{"type":"response.done","response":{"id":"r1","status":"cancelled","status_details":{"reason":"interrupted"}}}`,
		delta("r1"), delta("r2"),
		`{"type":"response.output_audio.done","response_id":"r2"}`,
		`{"type":"response.done","response":{"id":"r2","status":"completed"}}`,
	}}, gatewaytest.Options{})
	c, err := g.Conv.Converse(gatewaytest.WithKey(t.Context(), callerKey))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Send(converseConfig(&speechv1.ConversationConfig{})); err != nil {
		t.Fatal(err)
	}
	got, err := events(t, c, func(m *speechv1.ConverseResponse) bool { return m.GetResponseDone().GetResponseId() == "r2" })
	if err != nil {
		t.Fatal(err)
	}
	var audio []string
	for _, m := range got {
		if a := m.GetAudio(); a != nil {
			audio = append(audio, a.GetResponseId())
		}
		if r := m.GetResponseStarted(); r.GetResponseId() == "r2" && r.GetInterruptedResponseId() != "r1" {
			t.Errorf("r2 started, interrupting %q; want r1", r.GetInterruptedResponseId())
		}
	}
	if diff := gatewaytest.Diff([]string{"r1", "r2", "r2"}, audio); diff != "" {
		t.Errorf("audio by response (-want +got): the interrupted response's late audio must be dropped\n%s", diff)
	}
}
