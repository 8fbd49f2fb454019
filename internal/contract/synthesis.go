package contract

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	speechv1 "github.com/speechgate/speechgate/gen/speech/v1"
	"github.com/speechgate/speechgate/internal/rpcerror"
	"github.com/speechgate/speechgate/internal/smallest"
)

var (
	synthesisRates     = []uint32{8000, 16000, 24000, 44100}
	transcriptionRates = []uint32{8000, 16000, 22050, 24000, 44100, 48000}
)

// Synthesis is a validated SynthesizeRequest: what to ask Smallest for and
// what the caller will receive.
type Synthesis struct {
	// Upstream is what to ask Lightning for.
	Upstream smallest.SpeechRequest
	// Encoding and Container are what the caller receives.
	Encoding  speechv1.AudioEncoding
	Container speechv1.AudioContainer
	// Rate is the sample rate in Hz; RateSet says the caller chose it.
	Rate    uint32
	RateSet bool
	// Heartbeat is how often a quiet SynthesizeStream sends a heartbeat; 0:
	// never.
	Heartbeat time.Duration
	// BytesPerSample is 0 for MP3, which has no fixed sample size.
	BytesPerSample int
	// Characters counts the text's Unicode code points.
	Characters uint32
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

// PlanSynthesis validates a Synthesize request and returns the plan for it:
// what to ask Smallest for and how to shape its audio for the caller.
func PlanSynthesis(r *speechv1.SynthesizeRequest) (*Synthesis, error) {
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
	p.RateSet = r.GetSampleRateHz() != 0
	p.Characters = uint32(chars)
	p.Upstream.Text = r.GetText()
	p.Upstream.OutputFormat = format
	p.Upstream.MathNotation = r.GetMathNotation()
	p.Upstream.ExpireContent = r.GetExpireContent()
	return p, nil
}

// checkVoiceOptions checks what every synthesis takes besides its text and
// returns the plan so far.
func checkVoiceOptions(v *rpcerror.Violations, voice string, model speechv1.SynthesisModel, lang, numberLang string, speed float32,
	rate uint32, dicts []string, requestID, sessionID string) *Synthesis {
	CheckID(v, "voice_id", voice, true)
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
		CheckID(v, fmt.Sprintf("pronunciation_dict_ids[%d]", i), id, true)
	}
	CheckID(v, "request_id", requestID, false)
	CheckID(v, "session_id", sessionID, false)
	return &Synthesis{
		Rate:     rate,
		Upstream: smallest.SpeechRequest{VoiceOptions: smallest.VoiceOptions{VoiceID: voice, Model: name, SampleRate: int(rate), Speed: speed, Language: lang, NumberPronunciationLanguage: numberLang, PronunciationDicts: dicts, SessionID: sessionID, RequestID: requestID}},
	}
}

// setEncoding sets what the caller receives for an encoding.
func (p *Synthesis) setEncoding(enc speechv1.AudioEncoding) {
	p.Encoding = enc
	switch enc {
	case speechv1.AudioEncoding_AUDIO_ENCODING_MP3:
		p.Container, p.BytesPerSample = speechv1.AudioContainer_AUDIO_CONTAINER_MP3, 0
	case speechv1.AudioEncoding_AUDIO_ENCODING_WAV:
		p.Container, p.BytesPerSample = speechv1.AudioContainer_AUDIO_CONTAINER_WAV, 2
	case speechv1.AudioEncoding_AUDIO_ENCODING_MULAW, speechv1.AudioEncoding_AUDIO_ENCODING_ALAW:
		p.Container, p.BytesPerSample = speechv1.AudioContainer_AUDIO_CONTAINER_NONE, 1
	default:
		p.Container, p.BytesPerSample = speechv1.AudioContainer_AUDIO_CONTAINER_NONE, 2
	}
}

// Format is the first message of a stream: how its audio is encoded, and
// the ids that correlate it.
func (p *Synthesis) Format(voice, requestID, sessionID, upRequestID, upSessionID, expiry string) *speechv1.SynthesisFormat {
	return &speechv1.SynthesisFormat{
		Encoding:          p.Encoding,
		SampleRateHz:      p.Rate,
		Channels:          1,
		BitsPerSample:     uint32(p.BytesPerSample * 8),
		Container:         p.Container,
		VoiceId:           voice,
		Model:             p.Upstream.Model,
		RequestId:         requestID,
		SessionId:         sessionID,
		UpstreamRequestId: upRequestID,
		UpstreamSessionId: upSessionID,
		ContentExpiry:     expiry,
	}
}

// maxPieceChars bounds one TextPiece, as documented in the .proto.
const maxPieceChars = 2000

// CheckTextPiece records a violation unless a SynthesizeStream text piece
// is within its limit, and returns its length in characters.
func CheckTextPiece(v *rpcerror.Violations, text string) int {
	n := utf8.RuneCountInString(text)
	if n > maxPieceChars {
		v.Add("text.text", rpcerror.RuleTooLong, "a piece must be at most %d characters, got %d", maxPieceChars, n)
	}
	return n
}

// wordTimestampVoices are the "base-queue" voices for which Lightning sends
// word timings (docs/upstream.md §1.5); for other voices it silently sends none, so
// the gateway says so up front instead.
var wordTimestampVoices = []string{"avery", "devansh", "kartik", "liam", "maithili", "meher"}

// PlanStream validates a SynthesizeStream's config.
func PlanStream(c *speechv1.SynthesisConfig) (*Synthesis, *smallest.StreamOptions, error) {
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
	heartbeat := CheckHeartbeat(cv, "heartbeat_interval_ms", c.GetHeartbeatIntervalMs())
	var backoff *int
	if c.CompleteBackoffMs != nil {
		if ms := c.GetCompleteBackoffMs(); ms > 10000 {
			cv.Add("complete_backoff_ms", rpcerror.RuleOutOfRange, "must be from 0 to 10000, got %d", ms)
		}
		ms := int(c.GetCompleteBackoffMs())
		backoff = &ms
	}
	if err := v.Err(); err != nil {
		return nil, nil, err
	}
	plan.setEncoding(enc)
	plan.Heartbeat = heartbeat
	opts := &smallest.StreamOptions{
		VoiceOptions:     plan.Upstream.VoiceOptions,
		WordTimestamps:   c.GetWordTimestamps(),
		MaxBufferFlushMS: int(c.GetMaxBufferFlushMs()), CompleteBackoffMS: backoff,
	}
	return plan, opts, nil
}
