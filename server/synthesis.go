package server

import (
	"context"
	"errors"
	"io"
	"slices"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	speechv1 "github.com/speechgate/speechgate/gen/speech/v1"
	"github.com/speechgate/speechgate/internal/audio"
	"github.com/speechgate/speechgate/internal/correlation"
	"github.com/speechgate/speechgate/internal/metrics"
	"github.com/speechgate/speechgate/internal/rpcerror"
	"github.com/speechgate/speechgate/internal/sentence"
	"github.com/speechgate/speechgate/internal/smallest"
)

// SpeechUpstream is what the synthesis service needs from Smallest.
type SpeechUpstream interface {
	StreamSpeech(ctx context.Context, r *smallest.SpeechRequest) (*smallest.SpeechStream, error)
	StreamSpeechText(ctx context.Context, opts *smallest.StreamOptions) (*smallest.SpeechSession, error)
	ListVoices(ctx context.Context) ([]smallest.Voice, error)
	ListPronunciationDictionaries(ctx context.Context) ([]smallest.PronunciationDictionary, error)
	CreatePronunciationDictionary(ctx context.Context, items []smallest.PronunciationItem) (*smallest.PronunciationDictionary, error)
	UpdatePronunciationDictionary(ctx context.Context, id string, items []smallest.PronunciationItem) (*smallest.PronunciationDictionary, error)
	DeletePronunciationDictionary(ctx context.Context, id string) error
	CreateVoiceClone(ctx context.Context, r *smallest.CloneRequest) (*smallest.VoiceClone, error)
	ListVoiceClones(ctx context.Context) ([]smallest.VoiceClone, error)
}

type synthesisService struct {
	speechv1.UnimplementedSynthesisServiceServer
	upstream SpeechUpstream
	// unavailable, when set, is why this backend cannot synthesize.
	unavailable string
	// pieceChars is the size long text is split to; lookahead how many
	// pieces are requested ahead of the one streaming.
	pieceChars, lookahead int
	metrics               *metrics.Metrics
}

func (s *synthesisService) check() error {
	if s.unavailable != "" {
		return rpcerror.Unimplemented(s.unavailable)
	}
	return nil
}

func (s *synthesisService) Synthesize(req *speechv1.SynthesizeRequest, stream grpc.ServerStreamingServer[speechv1.SynthesizeResponse]) error {
	if err := s.check(); err != nil {
		return err
	}
	plan, err := planSynthesis(req)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(stream.Context())
	if plan.upstream.RequestID == "" {
		plan.upstream.RequestID = correlation.ID(ctx) // so that Smallest's logs can be matched to the gateway's
	}
	pl := newPipeline(ctx, s.upstream, plan.upstream, sentence.Split(req.GetText(), s.pieceChars), s.lookahead)
	defer pl.wait()
	defer cancel() // before wait: it ends the pieces still running

	out := newRelay(func(c *speechv1.AudioChunk) error {
		m := &struct { // the message and its oneof wrapper in one allocation
			resp speechv1.SynthesizeResponse
			wrap speechv1.SynthesizeResponse_Audio
		}{}
		m.wrap.Audio, m.resp.Event = c, &m.wrap
		return stream.Send(&m.resp)
	}, s.metrics.Stream("Synthesize"), plan.bytesPerSample, plan.rate)
	var first, last *fetch
	for i := range pl.pieces {
		f, err := pl.piece(i)
		if err != nil {
			return pl.locate(f, err)
		}
		pl.ahead(i)
		noteUpstreamID(ctx, f.stream.RequestID)
		if i == 0 {
			first = f
			if err := stream.Send(&speechv1.SynthesizeResponse{Event: &speechv1.SynthesizeResponse_Format{Format: plan.format(req.GetVoiceId(),
				req.GetRequestId(), req.GetSessionId(), f.stream.RequestID, f.stream.SessionID, f.stream.ContentExpiry)}}); err != nil {
				return err
			}
			if err := out.header(plan.container, plan.rate); err != nil {
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
		}
		last = f
	}
	totals := out.totals()
	totals.Characters = plan.characters
	totals.UpstreamFirstByteMs = uint32(first.stream.FirstByte() / time.Millisecond)
	totals.UpstreamRequestId = last.stream.RequestID
	totals.TextPieces = uint32(len(pl.pieces))
	return stream.Send(&speechv1.SynthesizeResponse{Event: &speechv1.SynthesizeResponse_Totals{Totals: totals}})
}

// format is the first message of a stream.
func (p *synthesisPlan) format(voice, requestID, sessionID, upRequestID, upSessionID, expiry string) *speechv1.SynthesisFormat {
	return &speechv1.SynthesisFormat{
		Encoding:          p.encoding,
		SampleRateHz:      p.rate,
		Channels:          1,
		BitsPerSample:     uint32(p.bytesPerSample * 8),
		Container:         p.container,
		VoiceId:           voice,
		Model:             p.upstream.Model,
		RequestId:         requestID,
		SessionId:         sessionID,
		UpstreamRequestId: upRequestID,
		UpstreamSessionId: upSessionID,
		ContentExpiry:     expiry,
	}
}

// noteUpstreamID adds Smallest's request id to the call's log line and, if
// the response headers have not gone yet, to the response metadata.
func noteUpstreamID(ctx context.Context, id string) {
	if id != "" {
		logging.AddFields(ctx, logging.Fields{"upstream_request_id", id})
		grpc.SetHeader(ctx, metadata.Pairs(correlation.UpstreamHeader, id))
	}
}

type textStream = grpc.BidiStreamingServer[speechv1.SynthesizeStreamRequest, speechv1.SynthesizeStreamResponse]

// maxPieceChars bounds one TextPiece, as documented in the .proto.
const maxPieceChars = 2000

func (s *synthesisService) SynthesizeStream(stream textStream) error {
	if err := s.check(); err != nil {
		return err
	}
	ctx := stream.Context()
	config, err := firstConfig(stream.Recv, (*speechv1.SynthesizeStreamRequest).GetConfig)
	if err != nil {
		return err
	}
	plan, opts, err := planStream(config)
	if err != nil {
		return err
	}
	if opts.RequestID == "" {
		opts.RequestID = correlation.ID(ctx)
	}
	session, err := s.upstream.StreamSpeechText(ctx, opts)
	if err != nil {
		return err
	}
	defer session.Close()

	format := plan.format(config.GetVoiceId(), config.GetRequestId(), config.GetSessionId(), "", "", "")
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
	}, s.metrics.Stream("SynthesizeStream"), plan.bytesPerSample, plan.rate)
	if err := out.header(plan.container, plan.rate); err != nil {
		return err
	}

	// The caller's text goes upstream on its own goroutine while this one
	// relays audio; when this handler returns, gRPC ends the call, which
	// ends that goroutine's Recv.
	up := &textUplink{stream: stream, session: session, done: make(chan error, 1)}
	go up.run()

	encode := g711(plan.encoding)
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
			if data := encode(ev.Audio); len(data) > 0 {
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
	totals := out.totals()
	totals.Characters = uint32(up.characters.Load())
	totals.UpstreamFirstByteMs = uint32(firstByte / time.Millisecond)
	totals.UpstreamRequestId = requestID
	totals.TextPieces = max(pieces, uint32(up.flushes.Load()))
	totals.Words = wordCount
	return stream.Send(&speechv1.SynthesizeStreamResponse{Event: &speechv1.SynthesizeStreamResponse_Totals{Totals: totals}})
}

// g711 returns the transcoding from Lightning's PCM16 to the caller's
// encoding: μ-law and A-law are done by the gateway, since the WebSocket
// produces only PCM. A sample split across chunks is carried to the next.
func g711(enc speechv1.AudioEncoding) func([]byte) []byte {
	var compand func(int16) byte
	switch enc {
	case speechv1.AudioEncoding_AUDIO_ENCODING_MULAW:
		compand = audio.MulawEncode
	case speechv1.AudioEncoding_AUDIO_ENCODING_ALAW:
		compand = audio.AlawEncode
	default:
		return func(pcm []byte) []byte { return pcm }
	}
	var carry []byte
	return func(pcm []byte) []byte {
		if len(carry) > 0 {
			pcm = append(carry, pcm...)
			carry = nil
		}
		if len(pcm)%2 == 1 {
			carry = []byte{pcm[len(pcm)-1]}
			pcm = pcm[:len(pcm)-1]
		}
		out := make([]byte, len(pcm)/2)
		for i := range out {
			out[i] = compand(int16(uint16(pcm[2*i]) | uint16(pcm[2*i+1])<<8))
		}
		return out
	}
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
	s, e := ms(start), ms(end)
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
			u.session.End()
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
			n := utf8.RuneCountInString(text)
			if n > maxPieceChars {
				v.Add("text.text", rpcerror.RuleTooLong, "a piece must be at most %d characters, got %d", maxPieceChars, n)
				break
			}
			if text == "" && !part.Text.GetFlush() {
				continue // nothing to say
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

// wordTimestampVoices are the "base-queue" voices for which Lightning sends
// word timings (contract §1.5); for other voices it silently sends none, so
// the gateway says so up front instead.
var wordTimestampVoices = []string{"avery", "devansh", "kartik", "liam", "maithili", "meher"}

// planStream validates a SynthesizeStream's config.
func planStream(c *speechv1.SynthesisConfig) (*synthesisPlan, *smallest.StreamOptions, error) {
	var v rpcerror.Violations
	cv := v.Under("config")
	// The checks shared with Synthesize, on a request without text.
	plan := checkVoiceOptions(cv, c.GetVoiceId(), c.GetModel(), c.GetLanguage(), c.GetNumberPronunciationLanguage(), c.GetSpeed(),
		c.GetSampleRateHz(), c.GetPronunciationDictIds(), c.GetRequestId(), c.GetSessionId())
	enc := c.GetEncoding()
	switch enc {
	case speechv1.AudioEncoding_AUDIO_ENCODING_UNSPECIFIED:
		enc = speechv1.AudioEncoding_AUDIO_ENCODING_PCM_S16LE
	case speechv1.AudioEncoding_AUDIO_ENCODING_PCM_S16LE, speechv1.AudioEncoding_AUDIO_ENCODING_WAV,
		speechv1.AudioEncoding_AUDIO_ENCODING_MULAW, speechv1.AudioEncoding_AUDIO_ENCODING_ALAW:
	default:
		cv.Add("encoding", rpcerror.RuleNotAllowed, "must be PCM_S16LE, WAV, MULAW or ALAW for streamed text (Lightning's WebSocket produces PCM), got %s", enc)
	}
	if c.GetWordTimestamps() && c.GetVoiceId() != "" && !slices.Contains(wordTimestampVoices, c.GetVoiceId()) {
		cv.Add("word_timestamps", rpcerror.RuleNotAllowed, "voice %s does not provide word timings; voices that do: %s",
			rpcerror.Quote(c.GetVoiceId()), strings.Join(wordTimestampVoices, ", "))
	}
	if ms := c.GetMaxBufferFlushMs(); ms > 1000 {
		cv.Add("max_buffer_flush_ms", rpcerror.RuleOutOfRange, "must be from 0 to 1000, got %d", ms)
	}
	if err := v.Err(); err != nil {
		return nil, nil, err
	}
	plan.setEncoding(enc)
	opts := &smallest.StreamOptions{
		VoiceOptions:     plan.upstream.VoiceOptions,
		WordTimestamps:   c.GetWordTimestamps(),
		MaxBufferFlushMS: int(c.GetMaxBufferFlushMs()),
	}
	return plan, opts, nil
}
