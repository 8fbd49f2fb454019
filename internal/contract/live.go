package contract

import (
	"strconv"

	speechv1 "github.com/speechgate/speechgate/gen/speech/v1"

	"fmt"
	"slices"
	"strings"

	"github.com/speechgate/speechgate/internal/rpcerror"
	"github.com/speechgate/speechgate/internal/smallest"
)

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

// PlanLive validates a TranscribeLive config, adding what is wrong to v, and
// returns the session to open in Smallest's form.
func PlanLive(v *rpcerror.Violations, c *speechv1.LiveTranscriptionConfig) *smallest.LiveRequest {
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
		weight := strconv.Itoa(int(max(k.GetIntensifier(), 1)))
		switch {
		case k.Weight != nil && k.GetIntensifier() != 0:
			v.Add(field+".weight", rpcerror.RuleConflict, "and intensifier cannot both be set: weight supersedes intensifier")
		case k.Weight != nil && !(k.GetWeight() >= 0 && k.GetWeight() <= maxIntensifier): // NaN fails too
			v.Add(field+".weight", rpcerror.RuleOutOfRange, "must be a number from 0 to %d, got %g", maxIntensifier, k.GetWeight())
		case k.Weight != nil:
			weight = strconv.FormatFloat(k.GetWeight(), 'f', -1, 64)
		case k.GetIntensifier() > maxIntensifier:
			v.Add(field+".intensifier", rpcerror.RuleOutOfRange, "must be from 1 to %d (0 means 1), got %d", maxIntensifier, k.GetIntensifier())
		}
		keywords = append(keywords, k.GetText()+":"+weight)
	}
	CheckID(v, "session_id", c.GetSessionId(), false)
	return &smallest.LiveRequest{
		Model: "pulse", Language: c.GetLanguage(), Encoding: enc, SampleRate: int(rate),
		WordTimestamps: c.GetWordTimestamps(), SentenceTimestamps: c.GetSentenceTimestamps(), Diarize: c.GetDiarize(),
		VADEvents: c.GetVadEvents(), Endpointing: c.Endpointing, EOUTimeoutMS: int(c.GetEndOfUtteranceTimeoutMs()),
		Format: c.Format, Punctuate: c.Punctuate, Capitalize: c.Capitalize, ITNNormalize: c.GetItnNormalize(),
		FinalizeOnWords: c.FinalizeOnWords, MaxWords: int(c.GetMaxWords()), RedactPII: c.GetRedactPii(), RedactPCI: c.GetRedactPci(),
		Keywords: keywords, SessionID: c.GetSessionId(), ExpireContent: c.GetExpireContent(),
	}
}

// LiveResponse converts an upstream event, or returns nil for an interim
// transcript the caller did not ask for.
func LiveResponse(ev *smallest.LiveEvent, interim bool) *speechv1.TranscribeLiveResponse {
	switch ev.Type {
	case "speech_started":
		return &speechv1.TranscribeLiveResponse{Event: &speechv1.TranscribeLiveResponse_SpeechStarted{
			SpeechStarted: &speechv1.SpeechEvent{TimestampMs: MS(ev.Timestamp)}}}
	case "speech_ended":
		return &speechv1.TranscribeLiveResponse{Event: &speechv1.TranscribeLiveResponse_SpeechEnded{
			SpeechEnded: &speechv1.SpeechEvent{TimestampMs: MS(ev.Timestamp)}}}
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
