package speech

import (
	"cmp"
	"errors"
	"io"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"

	speechv1 "github.com/speechgate/speechgate/gen/speech/v1"
	"github.com/speechgate/speechgate/internal/audio"
	"github.com/speechgate/speechgate/internal/contract"
	"github.com/speechgate/speechgate/internal/metrics"
	"github.com/speechgate/speechgate/internal/quota"
	"github.com/speechgate/speechgate/internal/rpcerror"
	"github.com/speechgate/speechgate/internal/smallest"
)

// Conversation is the speech.v1 ConversationService.
type Conversation struct {
	speechv1.UnimplementedConversationServiceServer
	up      Upstream
	caps    smallest.Capabilities
	metrics *metrics.Speech
	// settle is how long Hydra must be quiet, with no response in flight,
	// before a conversation whose caller half-closed ends.
	settle time.Duration
}

// ConversationSettle is how long a conversation whose caller half-closed
// waits for Hydra to be quiet before it ends (the .proto says "a second").
const ConversationSettle = time.Second

// NewConversation returns the conversation service, calling up.
func NewConversation(up Upstream, opts Options) *Conversation {
	opts = opts.withDefaults()
	return &Conversation{up: up, caps: up.Capabilities(), metrics: opts.Metrics, settle: ConversationSettle}
}

// Register registers the service on s.
func (s *Conversation) Register(gs *grpc.Server) { speechv1.RegisterConversationServiceServer(gs, s) }

type converseStream = grpc.BidiStreamingServer[speechv1.ConverseRequest, speechv1.ConverseResponse]

// converseInputRate is the bytes per second of the caller's audio: PCM16
// at Hydra's 16 kHz.
const converseInputRate = smallest.HydraInputRate * 2

// Converse relays a conversation with Hydra: the caller's audio and
// commands go up on their own goroutine (converseUplink) while this one
// turns Hydra's events into the contract's.
func (s *Conversation) Converse(stream converseStream) error {
	if err := offered(s.caps.Conversation, s.caps.ConversationMissing); err != nil {
		return err
	}
	ctx := stream.Context()
	config, err := firstConfig(stream.Recv, (*speechv1.ConverseRequest).GetConfig, "audio")
	if err != nil {
		return err
	}
	plan, err := contract.PlanConversation(config)
	if err != nil {
		return err
	}
	if err := quota.Check(ctx, quota.AudioSeconds); err != nil {
		return err
	}
	conv, err := s.up.Converse(ctx, plan.Request)
	if err != nil {
		return err
	}
	defer conv.Close()
	noteUpstreamID(ctx, conv.SessionID)
	span := trace.SpanFromContext(ctx)
	span.SetAttributes(attribute.String("speechgate.hydra.session_id", conv.SessionID),
		attribute.String("speechgate.hydra.model", plan.Request.Model), attribute.Int("speechgate.hydra.tools", conv.Tools))
	out := newOutbox(stream.Send, plan.Heartbeat, func(h *speechv1.Heartbeat) *speechv1.ConverseResponse {
		return &speechv1.ConverseResponse{Event: &speechv1.ConverseResponse_Heartbeat{Heartbeat: h}}
	})
	defer out.Close()
	if err := out.Send(&speechv1.ConverseResponse{Event: &speechv1.ConverseResponse_Started{Started: &speechv1.ConversationStarted{
		SessionId: conv.SessionID, Model: plan.Request.Model, Voice: conv.Voice, Tools: uint32(conv.Tools)}}}); err != nil {
		return err
	}
	t := newTurns(plan, s.metrics, span)
	for i := range conv.Warnings {
		if err := out.Send(t.relay(&conv.Warnings[i])); err != nil {
			return err
		}
	}

	uplinkErr := make(chan error, 1)
	go converseUplink(stream, conv, t, s.settle, uplinkErr, s.metrics)
	for {
		ev, err := conv.Next()
		if err != nil {
			// A bad message from the caller explains the session's end better.
			select {
			case uerr := <-uplinkErr:
				if uerr != nil {
					return uerr
				}
			default:
			}
			if errors.Is(err, io.EOF) {
				return nil // the caller half-closed and Hydra went quiet
			}
			return err
		}
		msg := t.relay(ev)
		if msg == nil {
			continue
		}
		if msg.GetAudio() != nil && !t.formatSent {
			// The format goes first, once, as on Synthesize.
			t.formatSent = true
			if err := out.Send(&speechv1.ConverseResponse{Event: &speechv1.ConverseResponse_Format{Format: t.format}}); err != nil {
				return err
			}
		}
		if err := out.Send(msg); err != nil {
			return err
		}
	}
}

// turns follows a conversation's responses as its events are relayed: which
// response is speaking (so that a new one names the one it interrupts, and
// audio of an interrupted one is dropped), and whether any is in flight (so
// that a half-closed conversation can end when quiet).
type turns struct {
	metrics    *metrics.Speech
	span       trace.Span // the call's: a conversation's turns are events on it
	format     *speechv1.ConversationFormat
	decimator  *audio.Decimator
	decimation int
	g711       *audio.G711
	formatSent bool
	sequence   uint32
	// resampled and encoded hold a delta's audio in the caller's format
	// until it is sent, which is before the next delta is read.
	resampled, encoded []byte

	current  string // the latest response; its audio is relayed
	speaking string // the response whose audio started and is not done, if any
	timeline audio.Timeline
	stopped  time.Time // when the user's speech last stopped; zero once answered

	mu        sync.Mutex // guards the fields the uplink reads
	inFlight  map[string]bool
	lastEvent time.Time
}

func newTurns(plan *contract.Conversation, m *metrics.Speech, span trace.Span) *turns {
	t := &turns{metrics: m, span: span, format: plan.Format, decimator: audio.NewDecimator(plan.Decimation), decimation: plan.Decimation,
		inFlight: map[string]bool{}, lastEvent: time.Now()}
	switch plan.Format.Encoding {
	case speechv1.AudioEncoding_AUDIO_ENCODING_MULAW:
		t.g711 = audio.NewG711(audio.MuLaw)
	case speechv1.AudioEncoding_AUDIO_ENCODING_ALAW:
		t.g711 = audio.NewG711(audio.ALaw)
	}
	return t
}

// quiet reports whether no response is in flight and nothing has come
// from Hydra for d.
func (t *turns) quiet(d time.Duration) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.inFlight) == 0 && time.Since(t.lastEvent) >= d
}

func (t *turns) track(f func()) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.lastEvent = time.Now()
	if f != nil {
		f()
	}
}

// relay returns the message for a Hydra event, or nil for none.
func (t *turns) relay(ev *smallest.ConversationEvent) *speechv1.ConverseResponse {
	t.track(nil)
	switch ev.Type {
	case "input_audio_buffer.speech_started":
		return &speechv1.ConverseResponse{Event: &speechv1.ConverseResponse_SpeechStarted{SpeechStarted: &speechv1.SpeechStarted{
			AudioStartMs: uint32(max(ev.AudioMS, 0)), ItemId: ev.ItemID}}}
	case "input_audio_buffer.speech_stopped":
		t.stopped = time.Now()
		return &speechv1.ConverseResponse{Event: &speechv1.ConverseResponse_SpeechStopped{SpeechStopped: &speechv1.SpeechStopped{
			AudioEndMs: uint32(max(ev.AudioMS, 0)), ItemId: ev.ItemID}}}
	case "response.created":
		interrupted := t.speaking
		if interrupted != "" {
			t.metrics.ConversationEvent("barge_in")
			t.span.AddEvent("barge-in", trace.WithAttributes(attribute.String("interrupted_response_id", interrupted)))
		}
		t.metrics.ConversationEvent("response")
		t.current = ev.ResponseID
		t.timeline = audio.NewTimeline(int(t.format.BitsPerSample/8), int(t.format.SampleRateHz))
		t.track(func() { t.inFlight[ev.ResponseID] = true })
		return &speechv1.ConverseResponse{Event: &speechv1.ConverseResponse_ResponseStarted{ResponseStarted: &speechv1.ResponseStarted{
			ResponseId: ev.ResponseID, InterruptedResponseId: interrupted}}}
	case "response.output_audio.delta":
		return t.audio(ev)
	case "response.output_audio.done":
		if ev.ResponseID != "" && ev.ResponseID != t.current {
			return nil // of a response already interrupted
		}
		t.speaking = ""
		return &speechv1.ConverseResponse{Event: &speechv1.ConverseResponse_AudioDone{AudioDone: &speechv1.ResponseAudioDone{
			ResponseId: cmp.Or(ev.ResponseID, t.current), AudioDurationMs: t.timeline.Elapsed()}}}
	case "response.function_call_arguments.done":
		t.metrics.ConversationEvent("tool_call")
		t.span.AddEvent("tool call", trace.WithAttributes(attribute.String("name", ev.Name), attribute.String("call_id", ev.CallID)))
		return &speechv1.ConverseResponse{Event: &speechv1.ConverseResponse_ToolCall{ToolCall: &speechv1.ToolCall{
			CallId: ev.CallID, Name: ev.Name, Arguments: ev.Arguments, ResponseId: ev.ResponseID}}}
	case "response.done":
		// A response cancelled while it spoke stays "speaking": its audio
		// never got done, and the next response names it as interrupted.
		t.track(func() { delete(t.inFlight, ev.ResponseID) })
		done := &speechv1.ResponseDone{ResponseId: ev.ResponseID, Status: contract.ResponseStatus(ev.Status), Reason: ev.Reason}
		t.span.AddEvent("response done", trace.WithAttributes(attribute.String("response_id", ev.ResponseID),
			attribute.String("status", ev.Status), attribute.String("reason", ev.Reason)))
		if u := ev.Usage; u != nil {
			done.Usage = &speechv1.ConversationUsage{InputTokens: uint32(max(u.InputTokens, 0)),
				OutputTokens: uint32(max(u.OutputTokens, 0)), TotalTokens: uint32(max(u.TotalTokens, 0))}
		}
		return &speechv1.ConverseResponse{Event: &speechv1.ConverseResponse_ResponseDone{ResponseDone: done}}
	case "warning":
		return &speechv1.ConverseResponse{Event: &speechv1.ConverseResponse_Warning{Warning: notice(ev)}}
	case "error":
		t.metrics.ConversationEvent("error")
		t.span.AddEvent("hydra error", trace.WithAttributes(attribute.String("code", ev.Code)))
		return &speechv1.ConverseResponse{Event: &speechv1.ConverseResponse_Error{Error: notice(ev)}}
	}
	return nil
}

func notice(ev *smallest.ConversationEvent) *speechv1.ConversationNotice {
	return &speechv1.ConversationNotice{Code: ev.Code, Message: ev.Message, Param: ev.Param}
}

// audio converts a delta of Hydra's 48 kHz PCM to the caller's format.
// Audio of a response that a newer one interrupted is dropped: it would
// play over the answer to what the user just said.
func (t *turns) audio(ev *smallest.ConversationEvent) *speechv1.ConverseResponse {
	if ev.ResponseID != "" && ev.ResponseID != t.current {
		t.metrics.ConversationEvent("stale_audio_dropped")
		return nil
	}
	t.speaking = t.current
	var data []byte
	switch {
	case t.decimation == 1 && t.g711 == nil:
		data = ev.Audio // Hydra's own format: the decoded delta is the message's
	case t.g711 != nil:
		t.resampled = t.decimator.Process(t.resampled[:0], ev.Audio)
		t.encoded = t.g711.Encode(t.encoded[:0], t.resampled)
		data = t.encoded
	default:
		t.resampled = t.decimator.Process(t.resampled[:0], ev.Audio)
		data = t.resampled
	}
	if len(data) == 0 {
		return nil
	}
	if !t.stopped.IsZero() {
		t.metrics.AnswerLatency(time.Since(t.stopped))
		t.stopped = time.Time{}
	}
	t.metrics.AudioOut("Converse", len(data))
	offset, duration := t.timeline.Advance(len(data))
	msg := &speechv1.ConversationAudio{Data: data, Sequence: t.sequence, ResponseId: cmp.Or(ev.ResponseID, t.current),
		OffsetMs: offset, DurationMs: duration}
	t.sequence++
	return &speechv1.ConverseResponse{Event: &speechv1.ConverseResponse_Audio{Audio: msg}}
}

// converseUplink forwards the caller's messages to Hydra until the caller
// half-closes (then it sends the audio left, waits for the conversation
// to settle and finishes it) or goes away, and then sends one value on
// done: nil, or the status of a message that broke the protocol, sent
// before the session is closed so that the handler finds it.
func converseUplink(stream converseStream, conv *smallest.Conversation, t *turns, settle time.Duration, done chan<- error, m *metrics.Speech) {
	ctx := stream.Context()
	refuse := func(err error) {
		done <- err
		conv.Close()
	}
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			if err := conv.EndAudio(); err != nil {
				done <- nil // the session has ended; reading it says why
				return
			}
			tick := time.NewTicker(settle / 10)
			defer tick.Stop()
			for !t.quiet(settle) {
				select {
				case <-ctx.Done():
					done <- nil
					return
				case <-tick.C:
				}
			}
			done <- nil
			conv.Finish()
			return
		}
		if err != nil {
			done <- nil // the caller went away; the call's context ends the session
			return
		}
		var v rpcerror.Violations
		var werr error
		switch part := msg.GetPart().(type) {
		case *speechv1.ConverseRequest_Audio:
			if contract.CheckConverseAudio(&v, part.Audio); v.Err() != nil {
				refuse(v.Err())
				return
			}
			m.AudioIn("Converse", len(part.Audio))
			if err := quota.Charge(ctx, quota.AudioSeconds, float64(len(part.Audio))/converseInputRate); err != nil {
				refuse(err)
				return
			}
			werr = conv.SendAudio(part.Audio)
		case *speechv1.ConverseRequest_ToolResult:
			if contract.CheckToolResult(v.Under("tool_result"), part.ToolResult); v.Err() != nil {
				refuse(v.Err())
				return
			}
			werr = conv.SendToolResult(part.ToolResult.GetCallId(), part.ToolResult.GetOutput())
		case *speechv1.ConverseRequest_Respond:
			werr = conv.RequestResponse()
		case *speechv1.ConverseRequest_Cancel:
			werr = conv.CancelResponse()
		case *speechv1.ConverseRequest_UpdateTools:
			tools := contract.PlanTools(v.Under("update_tools"), "tools", part.UpdateTools.GetTools())
			if err := v.Err(); err != nil {
				refuse(err)
				return
			}
			werr = conv.UpdateTools(tools)
		case *speechv1.ConverseRequest_Config:
			v.Add("config", rpcerror.RuleConflict, "may only be sent once, in the first message")
			refuse(v.Err())
			return
		default:
			v.Add("part", rpcerror.RuleRequired, "a message must hold audio, tool_result, respond, cancel or update_tools")
			refuse(v.Err())
			return
		}
		if werr != nil {
			done <- nil // the session has ended; reading it says why
			return
		}
	}
}
