package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"google.golang.org/grpc"

	speechv1 "github.com/speechgate/speechgate/gen/speech/v1"
	"github.com/speechgate/speechgate/internal/metrics"
	"github.com/speechgate/speechgate/internal/rpcerror"
	"github.com/speechgate/speechgate/internal/smallest"
)

// LiveUpstream is what realtime recognition needs from Smallest.
type LiveUpstream interface {
	Listen(ctx context.Context, r *smallest.LiveRequest) (*smallest.LiveSession, error)
}

type liveStream = grpc.BidiStreamingServer[speechv1.TranscribeLiveRequest, speechv1.TranscribeLiveResponse]

func (s *transcriptionService) TranscribeLive(stream liveStream) error {
	if s.liveUnavailable != "" {
		return rpcerror.Unimplemented(s.liveUnavailable)
	}
	ctx := stream.Context()
	config, err := firstConfig(stream.Recv, (*speechv1.TranscribeLiveRequest).GetConfig)
	if err != nil {
		return err
	}
	var v rpcerror.Violations
	req := planLive(v.Under("config"), config)
	if err := v.Err(); err != nil {
		return err
	}
	session, err := s.live.Listen(ctx, req)
	if err != nil {
		return err
	}
	defer session.Close()

	// The caller's audio and commands go upstream on their own goroutine
	// while this one relays Smallest's answers. When this handler returns,
	// gRPC ends the call, which ends that goroutine's Recv.
	uplinkErr := make(chan error, 1)
	go uplink(stream, session, uplinkErr, s.metrics)

	interim := config.GetInterimResults()
	for {
		ev, err := session.Next()
		if errors.Is(err, io.EOF) {
			return nil // the last transcript has been relayed
		}
		if err != nil {
			// A bad message from the caller explains the session's end better.
			select {
			case uerr := <-uplinkErr:
				if uerr != nil {
					return uerr
				}
			default:
			}
			return err
		}
		if ev.SessionID != "" {
			noteUpstreamID(ctx, ev.SessionID)
		}
		msg := liveMessage(ev, interim)
		if msg == nil {
			continue
		}
		if err := stream.Send(msg); err != nil {
			return err
		}
	}
}

// uplink forwards the caller's messages to the session until the caller
// half-closes (then it asks Smallest to finish) or goes away, and then sends
// one value on done: nil, or the status of a message that broke the protocol,
// which it sends before ending the session so that the handler finds it.
func uplink(stream liveStream, session *smallest.LiveSession, done chan<- error, m *metrics.Metrics) {
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			session.CloseStream()
			done <- nil
			return
		}
		if err != nil {
			done <- nil // the caller went away; the call's context ends the session
			return
		}
		var werr error
		switch part := msg.GetPart().(type) {
		case *speechv1.TranscribeLiveRequest_Audio:
			m.AudioIn("TranscribeLive", len(part.Audio))
			werr = session.SendAudio(part.Audio)
		case *speechv1.TranscribeLiveRequest_Finalize:
			werr = session.Finalize()
		case *speechv1.TranscribeLiveRequest_Config:
			var v rpcerror.Violations
			v.Add("config", rpcerror.RuleConflict, "may only be sent once, in the first message")
			done <- v.Err()
			session.Close()
			return
		}
		if werr != nil {
			done <- nil // the session has ended; reading it says why
			return
		}
	}
}

var liveEncodings = map[speechv1.AudioEncoding]string{
	speechv1.AudioEncoding_AUDIO_ENCODING_UNSPECIFIED: "linear16",
	speechv1.AudioEncoding_AUDIO_ENCODING_PCM_S16LE:   "linear16",
	speechv1.AudioEncoding_AUDIO_ENCODING_PCM_S32LE:   "linear32",
	speechv1.AudioEncoding_AUDIO_ENCODING_MULAW:       "mulaw",
	speechv1.AudioEncoding_AUDIO_ENCODING_ALAW:        "alaw",
	speechv1.AudioEncoding_AUDIO_ENCODING_OPUS:        "opus",
	speechv1.AudioEncoding_AUDIO_ENCODING_OGG_OPUS:    "ogg_opus",
}

// Limits of a live session's config, documented in the .proto.
const (
	minEOUTimeoutMS = 100
	maxEOUTimeoutMS = 10000
	maxLiveMaxWords = 1000
	maxKeywords     = 10000
	maxKeywordLen   = 100
	maxIntensifier  = 5
	defaultLiveRate = 16000
)

func planLive(v *rpcerror.Violations, c *speechv1.LiveTranscriptionConfig) *smallest.LiveRequest {
	switch c.GetModel() {
	case speechv1.TranscriptionModel_TRANSCRIPTION_MODEL_UNSPECIFIED, speechv1.TranscriptionModel_TRANSCRIPTION_MODEL_PULSE:
	case speechv1.TranscriptionModel_TRANSCRIPTION_MODEL_PULSE_PRO:
		v.Add("model", rpcerror.RuleNotAllowed, "TRANSCRIPTION_MODEL_PULSE_PRO has no realtime transport; use TRANSCRIPTION_MODEL_PULSE or TranscribeUpload")
	default:
		v.Add("model", rpcerror.RuleNotAllowed, "must be a TranscriptionModel value, got %d", c.GetModel())
	}
	if c.GetLanguage() == "" {
		v.Add("language", rpcerror.RuleRequired, "is required: one of %s", strings.Join(liveLanguages, ", "))
	} else {
		checkLanguage(v, "language", c.GetLanguage(), liveLanguages)
	}
	enc, ok := liveEncodings[c.GetEncoding()]
	if !ok {
		v.Add("encoding", rpcerror.RuleNotAllowed, "%s cannot be recognized live; send PCM_S16LE, PCM_S32LE, MULAW, ALAW, OPUS or OGG_OPUS", c.GetEncoding())
	}
	rate := c.GetSampleRateHz()
	if rate == 0 {
		rate = defaultLiveRate
	} else if !slices.Contains(transcriptionRates, rate) {
		v.Add("sample_rate_hz", rpcerror.RuleNotAllowed, "must be one of %s, got %d", list(transcriptionRates), rate)
	}
	if t := c.GetEndOfUtteranceTimeoutMs(); t != 0 && (t < minEOUTimeoutMS || t > maxEOUTimeoutMS) {
		v.Add("end_of_utterance_timeout_ms", rpcerror.RuleOutOfRange, "must be from %d to %d, got %d", minEOUTimeoutMS, maxEOUTimeoutMS, t)
	}
	if n := c.GetMaxWords(); n > maxLiveMaxWords {
		v.Add("max_words", rpcerror.RuleOutOfRange, "must be at most %d, got %d", maxLiveMaxWords, n)
	}
	if n := len(c.GetKeywords()); n > maxKeywords {
		v.Add("keywords", rpcerror.RuleTooMany, "must hold at most %d keywords, got %d", maxKeywords, n)
	}
	keywords := make([]string, 0, len(c.GetKeywords()))
	for i, k := range c.GetKeywords() {
		field := fmt.Sprintf("keywords[%d]", i)
		switch text := k.GetText(); {
		case strings.TrimSpace(text) == "":
			v.Add(field+".text", rpcerror.RuleRequired, "is required")
		case len([]rune(text)) > maxKeywordLen:
			v.Add(field+".text", rpcerror.RuleTooLong, "must be at most %d characters", maxKeywordLen)
		case strings.ContainsAny(text, ",:"):
			v.Add(field+".text", rpcerror.RuleBadFormat, "must not contain ',' or ':', which Smallest uses as separators")
		}
		if k.GetIntensifier() > maxIntensifier {
			v.Add(field+".intensifier", rpcerror.RuleOutOfRange, "must be from 1 to %d (0 means 1), got %d", maxIntensifier, k.GetIntensifier())
		}
		keywords = append(keywords, fmt.Sprintf("%s:%d", k.GetText(), max(k.GetIntensifier(), 1)))
	}
	checkID(v, "session_id", c.GetSessionId(), false)
	return &smallest.LiveRequest{
		Model: "pulse", Language: c.GetLanguage(), Encoding: enc, SampleRate: int(rate),
		WordTimestamps: c.GetWordTimestamps(), SentenceTimestamps: c.GetSentenceTimestamps(), Diarize: c.GetDiarize(),
		VADEvents: c.GetVadEvents(), Endpointing: c.Endpointing, EOUTimeoutMS: int(c.GetEndOfUtteranceTimeoutMs()),
		Format: c.Format, Punctuate: c.Punctuate, Capitalize: c.Capitalize, ITNNormalize: c.GetItnNormalize(),
		FinalizeOnWords: c.FinalizeOnWords, MaxWords: int(c.GetMaxWords()), RedactPII: c.GetRedactPii(), RedactPCI: c.GetRedactPci(),
		Keywords: keywords, SessionID: c.GetSessionId(), ExpireContent: c.GetExpireContent(),
	}
}

// liveMessage converts an upstream event, or returns nil for an interim
// transcript the caller did not ask for.
func liveMessage(ev *smallest.LiveEvent, interim bool) *speechv1.TranscribeLiveResponse {
	switch ev.Type {
	case "speech_started":
		return &speechv1.TranscribeLiveResponse{Event: &speechv1.TranscribeLiveResponse_SpeechStarted{
			SpeechStarted: &speechv1.SpeechEvent{TimestampMs: ms(ev.Timestamp)}}}
	case "speech_ended":
		return &speechv1.TranscribeLiveResponse{Event: &speechv1.TranscribeLiveResponse_SpeechEnded{
			SpeechEnded: &speechv1.SpeechEvent{TimestampMs: ms(ev.Timestamp)}}}
	}
	t := ev.Transcript
	if !t.IsFinal && !interim {
		return nil
	}
	return &speechv1.TranscribeLiveResponse{Event: &speechv1.TranscribeLiveResponse_Transcript{Transcript: &speechv1.LiveTranscript{
		Text: t.Text, IsFinal: t.IsFinal, IsLast: t.IsLast, FromFinalize: t.FromFinalize,
		Words: wordMessages(t.Words), Utterances: utteranceMessages(t.Utterances),
		Language: t.Language, Languages: t.Languages, RedactedEntities: t.RedactedEntities, UpstreamSessionId: ev.SessionID,
	}}}
}
