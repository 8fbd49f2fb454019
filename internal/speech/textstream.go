package speech

import (
	"errors"
	"io"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"

	speechv1 "github.com/speechgate/speechgate/gen/speech/v1"
	"github.com/speechgate/speechgate/internal/audio"
	"github.com/speechgate/speechgate/internal/contract"
	"github.com/speechgate/speechgate/internal/correlation"
	"github.com/speechgate/speechgate/internal/quota"
	"github.com/speechgate/speechgate/internal/rpcerror"
	"github.com/speechgate/speechgate/internal/smallest"
)

type textStream = grpc.BidiStreamingServer[speechv1.SynthesizeStreamRequest, speechv1.SynthesizeStreamResponse]

// SynthesizeStream relays text pieces to one Lightning WebSocket session
// and its audio back, segment by segment, as each flush is spoken. A clear
// (barge-in) drops the audio of the text before it; see textUplink.
func (s *Synthesis) SynthesizeStream(stream textStream) error {
	if err := offered(s.caps.StreamingSynthesis, s.caps.StreamingMissing); err != nil {
		return err
	}
	ctx := stream.Context()
	config, err := firstConfig(stream.Recv, (*speechv1.SynthesizeStreamRequest).GetConfig, "text")
	if err != nil {
		return err
	}
	plan, opts, err := contract.PlanStream(config)
	if err != nil {
		return err
	}
	if opts.RequestID == "" {
		opts.RequestID = correlation.ID(ctx)
	}
	session, err := s.up.StreamSpeechText(ctx, opts)
	if err != nil {
		return err
	}
	defer session.Close()

	out := &textOut{
		outbox: newOutbox(stream.Send, plan.Heartbeat, func(h *speechv1.Heartbeat) *speechv1.SynthesizeStreamResponse {
			return &speechv1.SynthesizeStreamResponse{Event: &speechv1.SynthesizeStreamResponse_Heartbeat{Heartbeat: h}}
		}),
		segments:   map[int]*segmentState{},
		timestamps: config.GetWordTimestamps(),
	}
	defer out.Close() // before session.Close: nothing is sent once the handler returns
	format := plan.Format(config.GetVoiceId(), config.GetRequestId(), config.GetSessionId(), "", "", "")
	format.WordTimestamps = config.GetWordTimestamps()
	if err := out.Send(&speechv1.SynthesizeStreamResponse{Event: &speechv1.SynthesizeStreamResponse_Format{Format: format}}); err != nil {
		return err
	}
	// The relay's emit runs with the outbox held: it sends directly.
	// One message serves every audio message of the call (see relay.msg).
	audioMsg := &struct {
		resp speechv1.SynthesizeStreamResponse
		wrap speechv1.SynthesizeStreamResponse_Audio
	}{}
	audioMsg.resp.Event = &audioMsg.wrap
	out.relay = newRelay(func(c *speechv1.AudioChunk) error {
		audioMsg.wrap.Audio = c
		return out.sendLocked(&audioMsg.resp)
	}, s.metrics.Stream("SynthesizeStream"), plan.BytesPerSample, plan.Rate)
	if err := out.do(func(func(*speechv1.SynthesizeStreamResponse) error) error {
		return out.relay.header(plan.Container, plan.Rate)
	}); err != nil {
		return err
	}

	// The caller's text goes upstream on its own goroutine while this one
	// relays audio; when this handler returns, gRPC ends the call, which
	// ends that goroutine's Recv.
	up := &textUplink{stream: stream, session: session, out: out, done: make(chan error, 1)}
	go up.run()

	// Lightning's WebSocket produces PCM only: μ-law and A-law are the gateway's.
	var g711 *audio.G711
	switch plan.Encoding {
	case speechv1.AudioEncoding_AUDIO_ENCODING_MULAW:
		g711 = audio.NewG711(audio.MuLaw)
	case speechv1.AudioEncoding_AUDIO_ENCODING_ALAW:
		g711 = audio.NewG711(audio.ALaw)
	}
	var encoded []byte // the G.711 of each chunk, sent before the next is read
	start := time.Now()
	var firstByte time.Duration
	var ids upstreamIDs
	for {
		ev, err := session.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			select {
			case uerr := <-up.done: // a bad message from the caller explains the end better
				if uerr != nil {
					return uerr
				}
			default:
			}
			return err
		}
		if ev.Audio != nil && firstByte == 0 {
			firstByte = max(time.Since(start), time.Nanosecond)
		}
		if ev.Audio != nil && g711 != nil {
			encoded = g711.Encode(encoded[:0], ev.Audio)
			ev.Audio = encoded
		}
		if err := out.relayCurrent(ev, session.Epoch); err != nil {
			return err
		}
		ids.note(ctx, ev.RequestID)
	}
	select {
	case uerr := <-up.done:
		if uerr != nil {
			return uerr // a quota refusal: the audio of the text before it was delivered
		}
	default:
	}
	return out.do(func(send func(*speechv1.SynthesizeStreamResponse) error) error {
		totals := out.relay.totals()
		totals.Characters = uint32(up.characters.Load())
		totals.UpstreamFirstByteMs = uint32(firstByte / time.Millisecond)
		totals.UpstreamRequestId = out.requestID
		totals.TextPieces = max(out.pieces, uint32(up.flushes.Load()))
		totals.Words = out.words
		totals.Clears, totals.DiscardedAudioBytes = out.clears, out.discarded+uint64(session.Discarded())
		totals.UpstreamAttempts, totals.AdmissionWaitMs = uint32(session.Attempts), uint32(session.Waited/time.Millisecond)
		return send(&speechv1.SynthesizeStreamResponse{Event: &speechv1.SynthesizeStreamResponse_Totals{Totals: totals}})
	})
}

// textOut is what a SynthesizeStream sends and the state its messages
// carry: the relay's sequence and timeline, the segments in flight, word
// placement. All of it is used with the outbox held, by the goroutine
// relaying Smallest's events and by the one reading the caller's (a
// clear's answer), so that a clear falls between two messages.
type textOut struct {
	*outbox[*speechv1.SynthesizeStreamResponse]
	relay      *relay
	segments   map[int]*segmentState // by the session's number, until done or cleared
	timestamps bool                  // the stream asked for word timings
	clock      wordClock
	requestID  string // Smallest's id of the synthesis being relayed
	pieces     uint32 // completes relayed
	words      uint32
	clears     uint32
	discarded  uint64 // bytes of audio of cleared text
}

// segmentState is what a segment's SegmentDone reports, gathered as its
// audio and words go out.
type segmentState struct {
	id         string
	characters uint32
	end        bool // the text after the last flush, sent by the half-close
	started    bool
	startMS    uint32
	durationMS uint32
	words      uint32
	requestID  string
}

// segment returns the state of segment n (0: none).
func (o *textOut) segment(n int) *segmentState {
	if n == 0 {
		return nil
	}
	st := o.segments[n]
	if st == nil { // audio before the uplink registered it: it cannot be, but never lose a count
		st = &segmentState{id: contract.AssignedSegmentID(n)}
		o.segments[n] = st
	}
	return st
}

// relayCurrent relays ev with the outbox held, unless a clear dropped the
// text it is of (its epoch is not the session's). It holds the outbox
// itself rather than through do: this runs for every chunk, and do's
// closure would cost an allocation each time.
func (o *textOut) relayCurrent(ev *smallest.SpeechEvent, epoch func() uint64) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if ev.Epoch != epoch() {
		o.discarded += uint64(len(ev.Audio)) // of text a clear dropped
		return nil
	}
	return o.relayEvent(ev, o.sendLocked)
}

// relayEvent sends what one of Smallest's events carries.
func (o *textOut) relayEvent(ev *smallest.SpeechEvent, send func(*speechv1.SynthesizeStreamResponse) error) error {
	if ev.RequestID != "" && ev.RequestID != o.requestID {
		o.requestID = ev.RequestID
		o.clock.newSegment(o.relay.elapsed())
	}
	switch {
	case ev.Audio != nil:
		if len(ev.Audio) == 0 {
			return nil
		}
		st := o.segment(ev.Segment)
		before := o.relay.elapsed()
		o.relay.segmentID = ""
		if st != nil {
			o.relay.segmentID = st.id
			if !st.started {
				st.started, st.startMS = true, before
			}
			st.requestID = ev.RequestID
		}
		if err := o.relay.send(ev.Audio, true); err != nil {
			return err
		}
		if st != nil {
			st.durationMS += o.relay.elapsed() - before
		}
	case ev.Word != nil:
		startMS, endMS := o.clock.place(ev.Word.Start, ev.Word.End)
		o.words++
		word := &speechv1.WordTiming{Word: ev.Word.Word, StartMs: startMS, EndMs: endMS}
		if st := o.segment(ev.Segment); st != nil {
			st.words++
			word.SegmentId = st.id
		}
		return send(&speechv1.SynthesizeStreamResponse{Event: &speechv1.SynthesizeStreamResponse_Word{Word: word}})
	case ev.Complete:
		o.pieces++
		for _, n := range ev.Completed {
			st := o.segments[n]
			delete(o.segments, n)
			if st == nil || (st.end && st.characters == 0 && !st.started) {
				continue // the end of a stream whose text was all flushed before it
			}
			done := &speechv1.SegmentDone{SegmentId: st.id, StartMs: st.startMS, AudioDurationMs: st.durationMS,
				Characters: st.characters, UpstreamRequestId: st.requestID}
			if !st.started {
				done.StartMs = o.relay.elapsed()
			}
			if o.timestamps {
				done.Words = &st.words
			}
			if err := send(&speechv1.SynthesizeStreamResponse{Event: &speechv1.SynthesizeStreamResponse_SegmentDone{SegmentDone: done}}); err != nil {
				return err
			}
		}
	}
	return nil
}

// wordClock places Lightning's word timings on the stream's timeline, so
// that they never go backwards across the syntheses a stream is made of.
// Smallest says its times are "seconds from the start of the stream" without
// saying whether that restarts at each synthesis; the first word of each
// synthesis tells: a time before the synthesis's own start is relative to it.
type wordClock struct {
	segmentStart uint32 // ms of audio sent before the current synthesis
	offset       uint32 // added to its word times
	decided      bool   // whether offset has been chosen for this synthesis
	last         uint32 // the latest start placed, so none goes backwards
}

// slackMS absorbs rounding between Smallest's clock and the gateway's.
const slackMS = 50

func (w *wordClock) newSegment(audioMS uint32) {
	w.segmentStart, w.offset, w.decided = audioMS, 0, false
}

func (w *wordClock) place(start, end float64) (uint32, uint32) {
	s, e := contract.MS(start), contract.MS(end)
	if !w.decided {
		w.decided = true
		if s+slackMS < w.segmentStart {
			w.offset = w.segmentStart
		}
	}
	s, e = s+w.offset, e+w.offset
	s = max(s, w.last)
	e = max(e, s)
	w.last = s
	return s, e
}

// textUplink forwards the caller's text to the session, names the
// segments its flushes make, and carries out clears.
type textUplink struct {
	stream     textStream
	session    *smallest.SpeechSession
	out        *textOut
	done       chan error // one value: nil, or the status of a bad message
	characters atomic.Int64
	flushes    atomic.Int64
	pending    uint32 // characters since the last flush
}

func (u *textUplink) run() {
	for {
		msg, err := u.stream.Recv()
		if errors.Is(err, io.EOF) {
			u.end()
			u.done <- nil
			return
		}
		if err != nil {
			u.done <- nil // the caller went away; the call's context ends the session
			return
		}
		var v rpcerror.Violations
		switch part := msg.GetPart().(type) {
		case *speechv1.SynthesizeStreamRequest_Config:
			v.Add("config", rpcerror.RuleConflict, "may only be sent once, in the first message")
		case *speechv1.SynthesizeStreamRequest_Clear:
			if err := u.clear(); err != nil {
				u.done <- err
				u.session.Close()
				return
			}
			continue
		case *speechv1.SynthesizeStreamRequest_Text:
			text := part.Text.GetText()
			n := contract.CheckTextPiece(&v, text)
			contract.CheckSegmentID(&v, part.Text)
			if v.Err() != nil {
				break
			}
			if text == "" && !part.Text.GetFlush() {
				continue // nothing to say
			}
			if err := quota.Charge(u.stream.Context(), quota.Characters, float64(n)); err != nil {
				// What was accepted before is still spoken; the call then
				// ends with the refusal (the handler reads it at the end).
				u.done <- err
				u.end()
				return
			}
			u.characters.Add(int64(n))
			if !u.send(text, part.Text.GetFlush(), part.Text.GetSegmentId(), uint32(n)) {
				u.done <- nil // the session has ended; reading it says why
				return
			}
		}
		if err := v.Err(); err != nil {
			u.done <- err
			u.session.Close()
			return
		}
	}
}

// send sends a piece of text; a flush's segment is registered, with the
// outbox held, before its audio can be relayed. It reports whether the
// session took it.
func (u *textUplink) send(text string, flush bool, id string, chars uint32) bool {
	u.pending += chars
	if !flush {
		_, err := u.session.Send(text, false)
		return err == nil
	}
	u.flushes.Add(1)
	var err error
	_ = u.out.do(func(func(*speechv1.SynthesizeStreamResponse) error) error {
		var n int
		if n, err = u.session.Send(text, true); n > 0 {
			u.register(n, id, false)
		}
		return nil
	})
	return err == nil
}

// end sends the end of the text, the last segment.
func (u *textUplink) end() {
	u.flushes.Add(1)
	_ = u.out.do(func(func(*speechv1.SynthesizeStreamResponse) error) error {
		// If it fails, the session has ended; reading it says why.
		if n, err := u.session.End(); err == nil {
			u.register(n, "", true)
		}
		return nil
	})
}

// register names segment n and gives it the characters since the last flush.
func (u *textUplink) register(n int, id string, end bool) {
	if id == "" {
		id = contract.AssignedSegmentID(n)
	}
	u.out.segments[n] = &segmentState{id: id, characters: u.pending, end: end}
	u.pending = 0
}

// clear carries out a barge-in: with the outbox held, so that no message
// of the cleared text follows, it drops the session's synthesis and answers
// `cleared`; then, released, it gives the session a fresh socket.
func (u *textUplink) clear() error {
	var abandoned bool
	err := u.out.do(func(send func(*speechv1.SynthesizeStreamResponse) error) error {
		var dropped []int
		dropped, abandoned = u.session.Clear()
		cleared := &speechv1.AudioCleared{}
		if seq := u.out.relay.seq; seq > 0 {
			last := seq - 1
			cleared.LastAudioSequence = &last
		}
		for _, n := range dropped {
			if st := u.out.segments[n]; st != nil {
				cleared.SegmentIds = append(cleared.SegmentIds, st.id)
			}
			delete(u.out.segments, n)
		}
		if abandoned || u.pending > 0 {
			u.out.clears++
		}
		u.pending = 0
		return send(&speechv1.SynthesizeStreamResponse{Event: &speechv1.SynthesizeStreamResponse_Cleared{Cleared: cleared}})
	})
	if err != nil || !abandoned {
		return err
	}
	return u.session.Reopen()
}
