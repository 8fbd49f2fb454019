package contract

import (
	speechv1 "github.com/speechgate/speechgate/gen/speech/v1"

	"maps"
	"math"
	"net/url"
	"slices"
	"strings"

	"github.com/speechgate/speechgate/internal/rpcerror"
	"github.com/speechgate/speechgate/internal/smallest"
)

var transcriptionModels = map[speechv1.TranscriptionModel]string{
	speechv1.TranscriptionModel_TRANSCRIPTION_MODEL_UNSPECIFIED: "pulse",
	speechv1.TranscriptionModel_TRANSCRIPTION_MODEL_PULSE:       "pulse",
	speechv1.TranscriptionModel_TRANSCRIPTION_MODEL_PULSE_PRO:   "pulse-pro",
}

// transcriptionEncodings maps the encodings Transcribe allows to Pulse's
// names; "" means Pulse detects the format from the container.
var transcriptionEncodings = map[speechv1.AudioEncoding]string{
	speechv1.AudioEncoding_AUDIO_ENCODING_UNSPECIFIED: "",
	speechv1.AudioEncoding_AUDIO_ENCODING_WAV:         "",
	speechv1.AudioEncoding_AUDIO_ENCODING_MP3:         "",
	speechv1.AudioEncoding_AUDIO_ENCODING_PCM_S16LE:   "linear16",
	speechv1.AudioEncoding_AUDIO_ENCODING_PCM_S32LE:   "linear32",
	speechv1.AudioEncoding_AUDIO_ENCODING_MULAW:       "mulaw",
	speechv1.AudioEncoding_AUDIO_ENCODING_ALAW:        "alaw",
	speechv1.AudioEncoding_AUDIO_ENCODING_OPUS:        "opus",
	speechv1.AudioEncoding_AUDIO_ENCODING_OGG_OPUS:    "ogg_opus",
}

// PlanTranscription validates a transcription's config, recording problems
// under field names prefixed with prefix, and returns the upstream request
// without its audio. hasURL says the audio comes by URL.
func PlanTranscription(v *rpcerror.Violations, prefix string, o *speechv1.TranscriptionConfig, hasURL bool) *smallest.TranscribeRequest {
	v = v.Under(prefix)
	model, ok := transcriptionModels[o.GetModel()]
	if !ok {
		v.Add("model", rpcerror.RuleNotAllowed, "must be a TranscriptionModel value, got %d", o.GetModel())
	}
	pro := model == "pulse-pro"
	switch lang := o.GetLanguage(); {
	case lang == "":
		v.Add("language", rpcerror.RuleRequired, "is required: one of %s", strings.Join(transcriptionLanguages, ", "))
	case pro && lang != "en":
		v.Add("language", rpcerror.RuleNotAllowed, "must be \"en\" with TRANSCRIPTION_MODEL_PULSE_PRO, got %s", rpcerror.Quote(lang))
	default:
		checkLanguage(v, "language", lang, transcriptionLanguages)
	}
	if pro && o.GetDiarize() {
		v.Add("diarize", rpcerror.RuleConflict, "is not supported by TRANSCRIPTION_MODEL_PULSE_PRO")
	}
	if pro && o.GetGenderDetection() {
		v.Add("gender_detection", rpcerror.RuleConflict, "is not supported by TRANSCRIPTION_MODEL_PULSE_PRO")
	}
	if pro && hasURL {
		v.Add("model", rpcerror.RuleConflict, "TRANSCRIPTION_MODEL_PULSE_PRO cannot fetch a url; send the audio instead")
	}
	enc, ok := transcriptionEncodings[o.GetEncoding()]
	switch {
	case !ok:
		v.Add("encoding", rpcerror.RuleNotAllowed, "%s cannot be transcribed", o.GetEncoding())
	case hasURL && o.GetEncoding() != speechv1.AudioEncoding_AUDIO_ENCODING_UNSPECIFIED:
		v.Add("encoding", rpcerror.RuleConflict, "must be unset with url: Smallest detects the format of fetched audio")
	}
	rate := o.GetSampleRateHz()
	headerless := enc == "linear16" || enc == "linear32" || enc == "mulaw" || enc == "alaw"
	switch {
	case rate == 0 && headerless:
		v.Add("sample_rate_hz", rpcerror.RuleRequired, "is required with encoding %s: headerless audio does not say its rate", o.GetEncoding())
	case rate != 0 && !slices.Contains(transcriptionRates, rate):
		v.Add("sample_rate_hz", rpcerror.RuleNotAllowed, "must be one of %s, got %d", list(transcriptionRates), rate)
	}
	checkWebhook(v, o, pro)
	if n := o.GetNumSpeakers(); n > maxSpeakers {
		v.Add("num_speakers", rpcerror.RuleOutOfRange, "must be from 1 to %d (0: the server decides), got %d", maxSpeakers, n)
	}
	var punctuate *bool
	if o != nil && o.Punctuate != nil {
		p := *o.Punctuate
		punctuate = &p
	}
	return &smallest.TranscribeRequest{
		NumSpeakers:      int(o.GetNumSpeakers()),
		Punctuate:        punctuate,
		Model:            model,
		Language:         o.GetLanguage(),
		WordTimestamps:   o.GetWordTimestamps(),
		Diarize:          o.GetDiarize(),
		RedactPII:        o.GetRedactPii(),
		RedactPCI:        o.GetRedactPci(),
		EmotionDetection: o.GetEmotionDetection(),
		GenderDetection:  o.GetGenderDetection(),
		Encoding:         enc,
		SampleRate:       int(rate),
		WebhookURL:       o.GetWebhookUrl(),
		WebhookMethod:    o.GetWebhookMethod(),
		WebhookExtra:     o.GetWebhookExtra(),
		ExpireContent:    o.GetExpireContent(),
	}
}

// maxSpeakers bounds num_speakers: more speakers than any call has.
const maxSpeakers = 32

func checkWebhook(v *rpcerror.Violations, o *speechv1.TranscriptionConfig, pro bool) {
	hook := o.GetWebhookUrl()
	if hook == "" {
		if o.GetWebhookMethod() != "" {
			v.Add("webhook_method", rpcerror.RuleConflict, "is only used with webhook_url")
		}
		if len(o.GetWebhookExtra()) > 0 {
			v.Add("webhook_extra", rpcerror.RuleConflict, "is only used with webhook_url")
		}
		return
	}
	if !pro {
		v.Add("webhook_url", rpcerror.RuleConflict, "is only supported by TRANSCRIPTION_MODEL_PULSE_PRO")
	}
	checkURL(v, "webhook_url", hook)
	if m := o.GetWebhookMethod(); m != "" && m != "POST" && m != "GET" {
		v.Add("webhook_method", rpcerror.RuleNotAllowed, "must be \"POST\" or \"GET\", got %s", rpcerror.Quote(m))
	}
	extra := o.GetWebhookExtra()
	if len(extra) > maxWebhookExtras {
		v.Add("webhook_extra", rpcerror.RuleTooMany, "must hold at most %d pairs, got %d", maxWebhookExtras, len(extra))
	}
	for _, k := range slices.Sorted(maps.Keys(extra)) {
		field := "webhook_extra[" + rpcerror.Quote(k) + "]"
		switch val := extra[k]; {
		case len(k) > maxExtraKeyLen || !idPattern.MatchString(k):
			v.Add(field, rpcerror.RuleBadFormat, "keys must be 1 to %d characters from [A-Za-z0-9_.-]", maxExtraKeyLen)
		case len(val) > maxExtraValueLen:
			v.Add(field, rpcerror.RuleTooLong, "values must be at most %d characters, got %d", maxExtraValueLen, len(val))
		case strings.ContainsAny(val, ",:"):
			v.Add(field, rpcerror.RuleBadFormat, "values must not contain ',' or ':', which Smallest uses as separators")
		}
	}
}

// checkURL records a violation unless raw is an absolute http or https URL.
func checkURL(v *rpcerror.Violations, field, raw string) {
	if len(raw) > maxURLLen {
		v.Add(field, rpcerror.RuleTooLong, "must be at most %d characters, got %d", maxURLLen, len(raw))
		return
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		v.Add(field, rpcerror.RuleBadFormat, "must be an absolute http or https URL")
	}
}

// Backend is what the configured upstream cannot carry: Unsupported names,
// in the upstream client's terms, the options of a request it cannot, and
// Name says which upstream it is, for the caller.
type Backend struct {
	Name        string
	Unsupported func(*smallest.TranscribeRequest) []string
}

// PlanTranscribe validates a unary transcription, refusing the options the
// backend cannot carry (b may be nil).
func PlanTranscribe(r *speechv1.TranscribeRequest, b *Backend) (*smallest.TranscribeRequest, error) {
	var v rpcerror.Violations
	switch src := r.GetSource().(type) {
	case nil:
		v.Add("source", rpcerror.RuleRequired, "set audio (the recording's bytes) or url")
	case *speechv1.TranscribeRequest_Audio:
		if len(src.Audio) == 0 {
			v.Add("audio", rpcerror.RuleRequired, "must not be empty")
		}
	case *speechv1.TranscribeRequest_Url:
		checkURL(&v, "url", src.Url)
	}
	up := PlanTranscription(&v, "config", r.GetConfig(), r.GetUrl() != "")
	up.URL = r.GetUrl()
	refuseUnsupported(&v, "config", up, b)
	if err := v.Err(); err != nil {
		return nil, err
	}
	return up, nil
}

// PlanUpload validates a streamed upload's config, refusing the options the
// backend cannot carry (b may be nil).
func PlanUpload(c *speechv1.TranscriptionConfig, b *Backend) (*smallest.TranscribeRequest, error) {
	var v rpcerror.Violations
	up := PlanTranscription(&v, "config", c, false)
	refuseUnsupported(&v, "config", up, b)
	if err := v.Err(); err != nil {
		return nil, err
	}
	return up, nil
}

// Transcript converts Pulse's transcript, in seconds, to the
// gateway's, in milliseconds.
func Transcript(t *smallest.Transcript) *speechv1.Transcript {
	out := &speechv1.Transcript{
		Status:            speechv1.TranscriptionStatus_TRANSCRIPTION_STATUS_COMPLETED,
		Text:              t.Text,
		Language:          t.Language,
		AudioDurationMs:   MS(t.Duration),
		UpstreamRequestId: t.RequestID,
		Gender:            t.Gender,
		Emotions:          t.Emotions,
		Words:             wordMessages(t.Words),
		Utterances:        utteranceMessages(t.Utterances),
	}
	if t.Status == "processing" {
		out.Status = speechv1.TranscriptionStatus_TRANSCRIPTION_STATUS_PROCESSING
	}
	return out
}

func wordMessages(words []smallest.Word) []*speechv1.Word {
	out := make([]*speechv1.Word, 0, len(words))
	for _, w := range words {
		out = append(out, &speechv1.Word{
			Word:              w.Word,
			StartMs:           MS(w.Start),
			EndMs:             MS(w.End),
			Confidence:        float32(w.Confidence),
			Speaker:           speaker(w.Speaker),
			SpeakerConfidence: float32(w.SpeakerConfidence),
		})
	}
	return out
}

func utteranceMessages(utterances []smallest.Utterance) []*speechv1.Utterance {
	out := make([]*speechv1.Utterance, 0, len(utterances))
	for _, u := range utterances {
		out = append(out, &speechv1.Utterance{Text: u.Text, StartMs: MS(u.Start), EndMs: MS(u.End), Speaker: speaker(u.Speaker)})
	}
	return out
}

// MS converts seconds to whole milliseconds, rounding to the nearest.
func MS(seconds float64) uint32 {
	if seconds <= 0 || math.IsNaN(seconds) {
		return 0
	}
	return uint32(math.Min(math.Round(seconds*1000), math.MaxUint32))
}

func speaker(s *smallest.Speaker) *int32 {
	if s == nil {
		return nil
	}
	v := int32(*s)
	return &v
}
