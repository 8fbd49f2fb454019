package speech

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	speechv1 "github.com/speechgate/speechgate/gen/speech/v1"
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

	// One message and its oneof wrapper serve every audio message of the
	// call: gRPC encodes it within Send (see relay.msg).
	audioMsg := &struct {
		resp speechv1.SynthesizeResponse
		wrap speechv1.SynthesizeResponse_Audio
	}{}
	audioMsg.resp.Event = &audioMsg.wrap
	emit := func(c *speechv1.AudioChunk) error {
		audioMsg.wrap.Audio = c
		return stream.Send(&audioMsg.resp)
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
