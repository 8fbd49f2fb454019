package server

import (
	"fmt"
	"maps"
	"math"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"unicode/utf8"

	speechv1 "github.com/speechgate/speechgate/gen/speech/v1"
	"github.com/speechgate/speechgate/internal/rpcerror"
	"github.com/speechgate/speechgate/internal/smallest"
)

// Limits documented in the .proto; the validation below enforces them.
const (
	maxTextChars     = 10000
	maxIDLen         = 128
	maxDictIDs       = 16
	maxURLLen        = 2048
	maxWebhookExtras = 16
	maxExtraKeyLen   = 64
	maxExtraValueLen = 256
	minSpeed         = 0.5
	maxSpeed         = 2.0
	defaultRate      = 24000
)

// idPattern is the form Smallest requires of request and session ids.
var idPattern = regexp.MustCompile(`^[A-Za-z0-9_.\-]+$`)

var (
	synthesisRates     = []uint32{8000, 16000, 24000, 44100}
	transcriptionRates = []uint32{8000, 16000, 22050, 24000, 44100, 48000}
)

// checkID records a violation unless id is empty or a valid identifier.
func checkID(v *rpcerror.Violations, field, id string, required bool) {
	switch {
	case id == "":
		if required {
			v.Add(field, rpcerror.RuleRequired, "is required")
		}
	case len(id) > maxIDLen:
		v.Add(field, rpcerror.RuleTooLong, "must be at most %d characters, got %d", maxIDLen, len(id))
	case !idPattern.MatchString(id):
		v.Add(field, rpcerror.RuleBadFormat, "must use only the characters [A-Za-z0-9_.-]")
	}
}

// synthesisPlan is a validated SynthesizeRequest: what to ask Smallest for and
// what the caller will receive.
type synthesisPlan struct {
	upstream       smallest.SpeechRequest
	encoding       speechv1.AudioEncoding
	container      speechv1.AudioContainer
	rate           uint32
	bytesPerSample int // 0 for MP3, which has no fixed sample size
	characters     uint32
}

// upstreamFormats maps the encodings Synthesize allows to Lightning's
// output_format. WAV is synthesized as PCM and wrapped by the gateway, so
// that the stream has exactly one header however Smallest chunks it.
var upstreamFormats = map[speechv1.AudioEncoding]string{
	speechv1.AudioEncoding_AUDIO_ENCODING_PCM_S16LE: "pcm",
	speechv1.AudioEncoding_AUDIO_ENCODING_WAV:       "pcm",
	speechv1.AudioEncoding_AUDIO_ENCODING_MP3:       "mp3",
	speechv1.AudioEncoding_AUDIO_ENCODING_MULAW:     "ulaw",
	speechv1.AudioEncoding_AUDIO_ENCODING_ALAW:      "alaw",
}

var synthesisModels = map[speechv1.SynthesisModel]string{
	speechv1.SynthesisModel_SYNTHESIS_MODEL_UNSPECIFIED:        "lightning_v3.1",
	speechv1.SynthesisModel_SYNTHESIS_MODEL_LIGHTNING_V3_1:     "lightning_v3.1",
	speechv1.SynthesisModel_SYNTHESIS_MODEL_LIGHTNING_V3_1_PRO: "lightning_v3.1_pro",
}

func planSynthesis(r *speechv1.SynthesizeRequest) (*synthesisPlan, error) {
	var v rpcerror.Violations
	chars := utf8.RuneCountInString(r.GetText())
	switch {
	case strings.TrimSpace(r.GetText()) == "":
		v.Add("text", rpcerror.RuleRequired, "is required and must not be only white space")
	case chars > maxTextChars:
		v.Add("text", rpcerror.RuleTooLong, "must be at most %d characters, got %d", maxTextChars, chars)
	}
	p := checkVoiceOptions(&v, r.GetVoiceId(), r.GetModel(), r.GetLanguage(), r.GetNumberPronunciationLanguage(), r.GetSpeed(),
		r.GetSampleRateHz(), r.GetPronunciationDictIds(), r.GetRequestId(), r.GetSessionId())
	enc := r.GetEncoding()
	if enc == speechv1.AudioEncoding_AUDIO_ENCODING_UNSPECIFIED {
		enc = speechv1.AudioEncoding_AUDIO_ENCODING_PCM_S16LE
	}
	format, ok := upstreamFormats[enc]
	if !ok {
		v.Add("encoding", rpcerror.RuleNotAllowed, "must be PCM_S16LE, WAV, MP3, MULAW or ALAW for synthesis, got %s", enc)
	}
	if err := v.Err(); err != nil {
		return nil, err
	}
	p.setEncoding(enc)
	p.characters = uint32(chars)
	p.upstream.Text = r.GetText()
	p.upstream.OutputFormat = format
	p.upstream.MathNotation = r.GetMathNotation()
	p.upstream.ExpireContent = r.GetExpireContent()
	return p, nil
}

// checkVoiceOptions checks what every synthesis takes besides its text and
// returns the plan so far.
func checkVoiceOptions(v *rpcerror.Violations, voice string, model speechv1.SynthesisModel, lang, numberLang string, speed float32,
	rate uint32, dicts []string, requestID, sessionID string) *synthesisPlan {
	checkID(v, "voice_id", voice, true)
	name, ok := synthesisModels[model]
	if !ok {
		v.Add("model", rpcerror.RuleNotAllowed, "must be a SynthesisModel value, got %d", model)
	}
	checkLanguage(v, "language", lang, synthesisLanguages)
	checkLanguage(v, "number_pronunciation_language", numberLang, synthesisLanguages)
	if speed != 0 && (math.IsNaN(float64(speed)) || speed < minSpeed || speed > maxSpeed) {
		v.Add("speed", rpcerror.RuleOutOfRange, "must be from %.1f to %.1f (or 0 for 1.0), got %g", minSpeed, maxSpeed, speed)
	}
	if rate == 0 {
		rate = defaultRate
	} else if !slices.Contains(synthesisRates, rate) {
		v.Add("sample_rate_hz", rpcerror.RuleNotAllowed, "must be one of %s, got %d", list(synthesisRates), rate)
	}
	if n := len(dicts); n > maxDictIDs {
		v.Add("pronunciation_dict_ids", rpcerror.RuleTooMany, "must hold at most %d ids, got %d", maxDictIDs, n)
	}
	for i, id := range dicts {
		checkID(v, fmt.Sprintf("pronunciation_dict_ids[%d]", i), id, true)
	}
	checkID(v, "request_id", requestID, false)
	checkID(v, "session_id", sessionID, false)
	return &synthesisPlan{
		rate:     rate,
		upstream: smallest.SpeechRequest{VoiceOptions: smallest.VoiceOptions{VoiceID: voice, Model: name, SampleRate: int(rate), Speed: speed, Language: lang, NumberPronunciationLanguage: numberLang, PronunciationDicts: dicts, SessionID: sessionID, RequestID: requestID}},
	}
}

// setEncoding sets what the caller receives for an encoding.
func (p *synthesisPlan) setEncoding(enc speechv1.AudioEncoding) {
	p.encoding = enc
	switch enc {
	case speechv1.AudioEncoding_AUDIO_ENCODING_MP3:
		p.container, p.bytesPerSample = speechv1.AudioContainer_AUDIO_CONTAINER_MP3, 0
	case speechv1.AudioEncoding_AUDIO_ENCODING_WAV:
		p.container, p.bytesPerSample = speechv1.AudioContainer_AUDIO_CONTAINER_WAV, 2
	case speechv1.AudioEncoding_AUDIO_ENCODING_MULAW, speechv1.AudioEncoding_AUDIO_ENCODING_ALAW:
		p.container, p.bytesPerSample = speechv1.AudioContainer_AUDIO_CONTAINER_NONE, 1
	default:
		p.container, p.bytesPerSample = speechv1.AudioContainer_AUDIO_CONTAINER_NONE, 2
	}
}

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

// planTranscription validates a transcription's config, recording problems
// under field names prefixed with prefix, and returns the upstream request
// without its audio. hasURL says the audio comes by URL.
func planTranscription(v *rpcerror.Violations, prefix string, o *speechv1.TranscriptionConfig, hasURL bool) *smallest.TranscribeRequest {
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
	return &smallest.TranscribeRequest{
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

// planTranscribe validates a unary transcription. check adds the backend's
// own refusals before the verdict.
func planTranscribe(r *speechv1.TranscribeRequest, check func(*rpcerror.Violations, *smallest.TranscribeRequest)) (*smallest.TranscribeRequest, error) {
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
	up := planTranscription(&v, "config", r.GetConfig(), r.GetUrl() != "")
	up.URL = r.GetUrl()
	check(&v, up)
	if err := v.Err(); err != nil {
		return nil, err
	}
	return up, nil
}

func list[T any](vals []T) string {
	parts := make([]string, len(vals))
	for i, x := range vals {
		parts[i] = fmt.Sprint(x)
	}
	return strings.Join(parts, ", ")
}
