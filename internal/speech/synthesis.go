package speech

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	speechv1 "github.com/speechgate/speechgate/gen/speech/v1"
	"github.com/speechgate/speechgate/internal/audio"
	"github.com/speechgate/speechgate/internal/contract"
	"github.com/speechgate/speechgate/internal/correlation"
	"github.com/speechgate/speechgate/internal/quota"
	"github.com/speechgate/speechgate/internal/rpcerror"
	"github.com/speechgate/speechgate/internal/sentence"
	"github.com/speechgate/speechgate/internal/smallest"
	"github.com/speechgate/speechgate/internal/synthcache"
)

// Synthesize streams the audio of one text: long texts are split into
// pieces synthesized ahead of playback, within the lookahead bound, each
// served from the synthesis cache when it holds it.
func (s *Synthesis) Synthesize(req *speechv1.SynthesizeRequest, stream grpc.ServerStreamingServer[speechv1.SynthesizeResponse]) error {
	start := time.Now()
	if err := offered(s.caps.Synthesis, s.caps.SynthesisMissing); err != nil {
		return err
	}
	plan, err := contract.PlanSynthesis(req)
	if err != nil {
		return err
	}
	if f := s.caps.SynthesisFormats; f != nil && !slices.Contains(f, plan.Upstream.OutputFormat) {
		var v rpcerror.Violations
		v.Add("encoding", rpcerror.RuleNotAllowed, "%s is not supported by %s, which this gateway uses: it synthesizes %s",
			req.GetEncoding(), s.caps.Backend, strings.Join(f, ", "))
		return v.Err()
	}
	if err := quota.Charge(stream.Context(), quota.Characters, float64(plan.Characters)); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(stream.Context())
	if plan.Upstream.RequestID == "" {
		plan.Upstream.RequestID = correlation.ID(ctx) // so that Smallest's logs can be matched to the gateway's
	}
	pieces := sentence.Split(req.GetText(), s.opts.PieceChars)
	lookup, err := s.cacheLookup(ctx, req, plan.Upstream, pieces)
	if err != nil {
		cancel()
		return err
	}
	pl := newPipeline(ctx, s.up, s.opts.Cache, lookup, plan.Upstream, pieces, s.opts.Lookahead)
	defer pl.wait()
	defer cancel() // before wait: it ends the pieces still running

	emit := func(c *speechv1.AudioChunk) error {
		m := &struct { // the message and its oneof wrapper in one allocation
			resp speechv1.SynthesizeResponse
			wrap speechv1.SynthesizeResponse_Audio
		}{}
		m.wrap.Audio, m.resp.Event = c, &m.wrap
		return stream.Send(&m.resp)
	}
	var out *relay
	var first, last *fetch
	var attempts int
	var waited, firstAudio time.Duration
	served := &cacheServed{}
	defer served.note(ctx)
	for i := range pl.pieces {
		f, err := pl.piece(i)
		if err != nil {
			return pl.locate(f, err)
		}
		pl.ahead(i)
		attempts, waited = attempts+f.stream.Attempts, waited+f.stream.Waited
		served.add(f.stream.Outcome)
		noteUpstreamID(ctx, f.stream.RequestID)
		if err := adoptRate(plan, f.stream.SampleRate, i == 0); err != nil {
			return pl.locate(f, err)
		}
		if i == 0 {
			first = f
			out = newRelay(emit, s.metrics.Stream("Synthesize"), plan.BytesPerSample, plan.Rate)
			if err := stream.Send(&speechv1.SynthesizeResponse{Event: &speechv1.SynthesizeResponse_Format{Format: plan.Format(req.GetVoiceId(),
				req.GetRequestId(), req.GetSessionId(), f.stream.RequestID, f.stream.SessionID, f.stream.ContentExpiry)}}); err != nil {
				return err
			}
			if err := out.header(plan.Container, plan.Rate); err != nil {
				return err
			}
		}
		for {
			chunk, err := pl.next(f)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return pl.locate(f, err)
			}
			if err := out.send(chunk, true); err != nil {
				return err
			}
			if firstAudio == 0 {
				firstAudio = max(time.Since(start), time.Nanosecond)
				s.opts.Cache.ObserveFirstAudio(first.stream.Outcome, firstAudio)
			}
		}
		last = f
	}
	totals := out.totals()
	totals.Characters = plan.Characters
	totals.UpstreamFirstByteMs = uint32(first.stream.FirstByte() / time.Millisecond)
	totals.UpstreamRequestId = last.stream.RequestID
	totals.TextPieces = uint32(len(pl.pieces))
	totals.UpstreamAttempts, totals.AdmissionWaitMs = uint32(attempts), uint32(waited/time.Millisecond)
	totals.CacheResult, totals.CachedPieces, totals.JoinedPieces = served.result(), served.hits, served.joined
	totals.FirstAudioMs = uint32(firstAudio / time.Millisecond)
	return stream.Send(&speechv1.SynthesizeResponse{Event: &speechv1.SynthesizeResponse_Totals{Totals: totals}})
}

// adoptRate takes the sample rate an upstream chose (a self-hosted
// server's speech endpoint says its own), when the caller did not ask for
// one, before the first piece's format goes out; a rate that differs from
// the one asked for, or from the first piece's, is refused rather than
// passed on as something it is not.
func adoptRate(plan *contract.Synthesis, rate int, first bool) error {
	switch {
	case rate == 0 || uint32(rate) == plan.Rate:
		return nil
	case first && !plan.RateSet:
		plan.Rate = uint32(rate)
		return nil
	}
	return rpcerror.New(codes.FailedPrecondition,
		fmt.Sprintf("the server synthesized at %d Hz, not the %d Hz of this stream: ask for %d Hz, or leave sample_rate_hz unset", rate, plan.Rate, rate),
		rpcerror.ReasonInvalidRequest, map[string]string{"sampleRateHz": strconv.Itoa(rate)})
}

// cacheLookup is what the cache needs to know of a Synthesize call: its
// account, its mode, and the versions of its dictionaries. With
// CACHE_MODE_ONLY it checks that every piece can be served without a
// synthesis, so that a miss is refused before any audio.
func (s *Synthesis) cacheLookup(ctx context.Context, req *speechv1.SynthesizeRequest, base smallest.SpeechRequest, pieces []sentence.Piece) (synthcache.Request, error) {
	mode := map[speechv1.CacheMode]synthcache.Mode{
		speechv1.CacheMode_CACHE_MODE_BYPASS: synthcache.ModeBypass,
		speechv1.CacheMode_CACHE_MODE_ONLY:   synthcache.ModeOnly,
	}[req.GetCacheMode()]
	lookup := synthcache.Request{Account: s.up.Account(ctx), Mode: mode}
	if s.opts.Cache == nil || mode == synthcache.ModeBypass {
		return lookup, nil
	}
	versions, ok := s.dicts.of(ctx, lookup.Account, base.PronunciationDicts)
	if !ok {
		// The dictionaries' content cannot be known now: cached audio
		// made with an older one must not be served.
		lookup.Mode = synthcache.ModeBypass
	}
	lookup.Dictionaries = versions
	if mode != synthcache.ModeOnly {
		return lookup, nil
	}
	for i, p := range pieces {
		r := lookup
		speech := base
		speech.Text = p.Text
		r.Speech = &speech
		if !ok || !s.opts.Cache.Has(ctx, r) {
			return lookup, rpcerror.New(codes.NotFound, fmt.Sprintf("text piece %d of %d is not cached, and cache_mode CACHE_MODE_ONLY asked not to synthesize it", i+1, len(pieces)),
				rpcerror.ReasonCacheMiss, map[string]string{"textPiece": strconv.Itoa(i + 1), "textPieces": strconv.Itoa(len(pieces))})
		}
	}
	return lookup, nil
}

// cacheServed counts how a call's pieces were served, for its totals, its
// log line and its trace.
type cacheServed struct {
	hits, joined, misses, bypassed uint32
}

func (c *cacheServed) add(o synthcache.Outcome) {
	switch {
	case o.Hit():
		c.hits++
	case o == synthcache.Joined:
		c.joined++
	case o == synthcache.Miss:
		c.misses++
	case o == synthcache.Bypassed:
		c.bypassed++
	}
}

func (c *cacheServed) result() speechv1.CacheResult {
	switch {
	case c.misses > 0:
		return speechv1.CacheResult_CACHE_RESULT_MISS
	case c.bypassed > 0:
		return speechv1.CacheResult_CACHE_RESULT_BYPASSED
	case c.joined > 0:
		return speechv1.CacheResult_CACHE_RESULT_JOINED
	case c.hits > 0:
		return speechv1.CacheResult_CACHE_RESULT_HIT
	}
	return speechv1.CacheResult_CACHE_RESULT_UNSPECIFIED
}

// note puts the outcome in the call's log line and trace.
func (c *cacheServed) note(ctx context.Context) {
	r := c.result()
	if r == speechv1.CacheResult_CACHE_RESULT_UNSPECIFIED {
		return
	}
	name := strings.ToLower(strings.TrimPrefix(r.String(), "CACHE_RESULT_"))
	logging.AddFields(ctx, logging.Fields{"cache", name})
	trace.SpanFromContext(ctx).SetAttributes(attribute.String("speechgate.cache", name),
		attribute.Int("speechgate.cache.hits", int(c.hits)), attribute.Int("speechgate.cache.joined", int(c.joined)))
}

type textStream = grpc.BidiStreamingServer[speechv1.SynthesizeStreamRequest, speechv1.SynthesizeStreamResponse]

// SynthesizeStream relays text pieces to one Lightning WebSocket session
// and its audio back, segment by segment, as each flush is spoken.
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

	format := plan.Format(config.GetVoiceId(), config.GetRequestId(), config.GetSessionId(), "", "", "")
	format.WordTimestamps = config.GetWordTimestamps()
	if err := stream.Send(&speechv1.SynthesizeStreamResponse{Event: &speechv1.SynthesizeStreamResponse_Format{Format: format}}); err != nil {
		return err
	}
	out := newRelay(func(c *speechv1.AudioChunk) error {
		m := &struct { // the message and its oneof wrapper in one allocation
			resp speechv1.SynthesizeStreamResponse
			wrap speechv1.SynthesizeStreamResponse_Audio
		}{}
		m.wrap.Audio, m.resp.Event = c, &m.wrap
		return stream.Send(&m.resp)
	}, s.metrics.Stream("SynthesizeStream"), plan.BytesPerSample, plan.Rate)
	if err := out.header(plan.Container, plan.Rate); err != nil {
		return err
	}

	// The caller's text goes upstream on its own goroutine while this one
	// relays audio; when this handler returns, gRPC ends the call, which
	// ends that goroutine's Recv.
	up := &textUplink{stream: stream, session: session, done: make(chan error, 1)}
	go up.run()

	// Lightning's WebSocket produces PCM only: μ-law and A-law are the gateway's.
	var g711 *audio.G711
	switch plan.Encoding {
	case speechv1.AudioEncoding_AUDIO_ENCODING_MULAW:
		g711 = audio.NewG711(audio.MuLaw)
	case speechv1.AudioEncoding_AUDIO_ENCODING_ALAW:
		g711 = audio.NewG711(audio.ALaw)
	}
	words := &wordClock{}
	var requestID string
	var pieces, wordCount uint32
	start := time.Now()
	var firstByte time.Duration
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
		if ev.RequestID != "" && ev.RequestID != requestID {
			requestID = ev.RequestID
			words.newSegment(out.elapsed())
			noteUpstreamID(ctx, requestID)
		}
		switch {
		case ev.Audio != nil:
			if firstByte == 0 {
				firstByte = max(time.Since(start), time.Nanosecond)
			}
			data := ev.Audio
			if g711 != nil {
				data = g711.Encode(make([]byte, 0, len(data)/2+1), data)
			}
			if len(data) > 0 {
				if err := out.send(data, true); err != nil {
					return err
				}
			}
		case ev.Word != nil:
			startMS, endMS := words.place(ev.Word.Start, ev.Word.End)
			wordCount++
			if err := stream.Send(&speechv1.SynthesizeStreamResponse{Event: &speechv1.SynthesizeStreamResponse_Word{Word: &speechv1.WordTiming{
				Word: ev.Word.Word, StartMs: startMS, EndMs: endMS}}}); err != nil {
				return err
			}
		case ev.Complete:
			pieces++
		}
	}
	select {
	case uerr := <-up.done:
		if uerr != nil {
			return uerr // a quota refusal: the audio of the text before it was delivered
		}
	default:
	}
	totals := out.totals()
	totals.Characters = uint32(up.characters.Load())
	totals.UpstreamFirstByteMs = uint32(firstByte / time.Millisecond)
	totals.UpstreamRequestId = requestID
	totals.TextPieces = max(pieces, uint32(up.flushes.Load()))
	totals.Words = wordCount
	totals.UpstreamAttempts, totals.AdmissionWaitMs = uint32(session.Attempts), uint32(session.Waited/time.Millisecond)
	return stream.Send(&speechv1.SynthesizeStreamResponse{Event: &speechv1.SynthesizeStreamResponse_Totals{Totals: totals}})
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

// textUplink forwards the caller's text to the session.
type textUplink struct {
	stream     textStream
	session    *smallest.SpeechSession
	done       chan error // one value: nil, or the status of a bad message
	characters atomic.Int64
	flushes    atomic.Int64
}

func (u *textUplink) run() {
	for {
		msg, err := u.stream.Recv()
		if errors.Is(err, io.EOF) {
			u.flushes.Add(1)
			_ = u.session.End() // if it fails, the session has ended; reading it says why
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
		case *speechv1.SynthesizeStreamRequest_Text:
			text := part.Text.GetText()
			n := contract.CheckTextPiece(&v, text)
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
				u.flushes.Add(1)
				_ = u.session.End() // if it fails, the session has ended; reading it says why
				return
			}
			u.characters.Add(int64(n))
			if part.Text.GetFlush() {
				u.flushes.Add(1)
			}
			if u.session.Send(text, part.Text.GetFlush()) != nil {
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
