package contract

import (
	"bytes"

	speechv1 "github.com/speechgate/speechgate/gen/speech/v1"

	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/speechgate/speechgate/internal/audio"
	"github.com/speechgate/speechgate/internal/rpcerror"
	"github.com/speechgate/speechgate/internal/smallest"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// maxFilterLen bounds a ListVoices filter: a language code or name, a gender.
const maxFilterLen = 64

// CheckVoiceFilters refuses ListVoices filters longer than any language or
// gender could be.
func CheckVoiceFilters(r *speechv1.ListVoicesRequest) error {
	var v rpcerror.Violations
	for _, f := range []struct{ field, value string }{{"language", r.GetLanguage()}, {"gender", r.GetGender()}} {
		if n := len(f.value); n > maxFilterLen {
			v.Add(f.field, rpcerror.RuleTooLong, "must be at most %d characters, got %d bytes", maxFilterLen, n)
		}
	}
	return v.Err()
}

// synthesisEncodings are what Synthesize can produce with any voice.
var synthesisEncodings = []speechv1.AudioEncoding{
	speechv1.AudioEncoding_AUDIO_ENCODING_PCM_S16LE, speechv1.AudioEncoding_AUDIO_ENCODING_WAV,
	speechv1.AudioEncoding_AUDIO_ENCODING_MP3, speechv1.AudioEncoding_AUDIO_ENCODING_MULAW,
	speechv1.AudioEncoding_AUDIO_ENCODING_ALAW,
}

// Voice is a catalog voice in the gateway's form.
func Voice(v smallest.Voice) *speechv1.Voice {
	out := &speechv1.Voice{
		VoiceId:     v.VoiceID,
		DisplayName: v.DisplayName,
		Languages:   v.Tags.Language,
		Accent:      v.Tags.Accent,
		Gender:      v.Tags.Gender,
		Age:         v.Tags.Age,
		UseCases:    v.Tags.UseCases,
		Emotions:    v.Tags.Emotions,
		IsClone:     strings.HasPrefix(v.VoiceID, "voice_"),
		Description: v.Description,
		PreviewUrl:  v.PreviewURL,
		Capabilities: &speechv1.VoiceCapabilities{
			SampleRatesHz:  synthesisRates,
			Encodings:      synthesisEncodings,
			WordTimestamps: slices.Contains(wordTimestampVoices, v.VoiceID),
			StreamingInput: true,
		},
	}
	for _, l := range v.Tags.Language {
		if code := languageCode(l); code != "" {
			out.LanguageCodes = append(out.LanguageCodes, code)
		}
	}
	return out
}

// Limits of dictionaries and clones, documented in the .proto.
const (
	maxDictEntries      = 1000
	maxDictWordLen      = 100
	maxPronunciationLen = 200
	maxCloneBytes       = 5 << 20
	maxCloneNameLen     = 500
	maxCloneDescription = 1000
	maxCloneAccentLen   = 100
	maxCloneTags        = 20
	maxCloneTagLen      = 50
)

// CheckEntries validates a dictionary's entries and returns them in Smallest's form.
func CheckEntries(v *rpcerror.Violations, entries []*speechv1.PronunciationEntry) []smallest.PronunciationItem {
	switch n := len(entries); {
	case n == 0:
		v.Add("entries", rpcerror.RuleRequired, "must hold at least one entry")
	case n > maxDictEntries:
		v.Add("entries", rpcerror.RuleTooMany, "must hold at most %d entries, got %d", maxDictEntries, n)
	}
	seen := map[string]int{}
	items := make([]smallest.PronunciationItem, 0, len(entries))
	for i, e := range entries {
		field := fmt.Sprintf("entries[%d]", i)
		checkText(v, field+".word", e.GetWord(), maxDictWordLen)
		checkText(v, field+".pronunciation", e.GetPronunciation(), maxPronunciationLen)
		if j, dup := seen[e.GetWord()]; dup && e.GetWord() != "" {
			v.Add(field+".word", rpcerror.RuleConflict, "%s is already in entries[%d]", rpcerror.Quote(e.GetWord()), j)
		}
		seen[e.GetWord()] = i
		items = append(items, smallest.PronunciationItem{Word: e.GetWord(), Pronunciation: e.GetPronunciation()})
	}
	return items
}

// checkText records a violation unless s is 1 to max characters, not all white space.
func checkText(v *rpcerror.Violations, field, s string, max int) {
	switch n := utf8.RuneCountInString(s); {
	case strings.TrimSpace(s) == "":
		v.Add(field, rpcerror.RuleRequired, "is required")
	case n > max:
		v.Add(field, rpcerror.RuleTooLong, "must be at most %d characters, got %d", max, n)
	}
}

// Dictionary is a pronunciation dictionary in the gateway's form.
func Dictionary(d *smallest.PronunciationDictionary) *speechv1.PronunciationDictionary {
	out := &speechv1.PronunciationDictionary{Id: d.ID, CreateTime: timestamp(d.CreatedAt)}
	for _, it := range d.Items {
		out.Entries = append(out.Entries, &speechv1.PronunciationEntry{Word: it.Word, Pronunciation: it.Pronunciation})
	}
	return out
}

func timestamp(t *time.Time) *timestamppb.Timestamp {
	if t == nil || t.IsZero() {
		return nil
	}
	return timestamppb.New(*t)
}

// cloneModels maps the synthesis models to the hyphenated names voice
// cloning takes (docs/upstream.md §1.6).
var cloneModels = map[speechv1.SynthesisModel]string{
	speechv1.SynthesisModel_SYNTHESIS_MODEL_UNSPECIFIED:        "lightning-v3.1",
	speechv1.SynthesisModel_SYNTHESIS_MODEL_LIGHTNING_V3_1:     "lightning-v3.1",
	speechv1.SynthesisModel_SYNTHESIS_MODEL_LIGHTNING_V3_1_PRO: "lightning-v3.1-pro",
}

// PlanClone validates a voice clone request and returns it in Smallest's
// form: the sample's type is read from its first bytes.
func PlanClone(req *speechv1.CreateVoiceCloneRequest) (*smallest.CloneRequest, error) {
	var v rpcerror.Violations
	checkText(&v, "display_name", req.GetDisplayName(), maxCloneNameLen)
	mime := ""
	switch n := len(req.GetAudio()); {
	case n == 0:
		v.Add("audio", rpcerror.RuleRequired, "is required: a 5 to 15 second sample of one voice")
	case n > maxCloneBytes:
		v.Add("audio", rpcerror.RuleTooLong, "must be at most 5 MB (%d bytes), got %d bytes", maxCloneBytes, n)
	default:
		if mime = sampleType(req.GetAudio()); mime == "" {
			v.Add("audio", rpcerror.RuleBadFormat, "must be WAV, MP3, WebM or MP4/M4A audio")
		}
		if secs, ok := wavSeconds(req.GetAudio()); ok && (secs < minCloneSeconds || secs > maxCloneSeconds) {
			v.Add("audio", rpcerror.RuleOutOfRange, "must be a %d to %d second sample of one voice, got %.1f s", minCloneSeconds, maxCloneSeconds, secs)
		}
	}
	model, ok := cloneModels[req.GetModel()]
	if !ok {
		v.Add("model", rpcerror.RuleNotAllowed, "must be SYNTHESIS_MODEL_LIGHTNING_V3_1 or SYNTHESIS_MODEL_LIGHTNING_V3_1_PRO, got %d", req.GetModel())
	}
	checkLanguage(&v, "language", req.GetLanguage(), synthesisLanguages)
	if n := utf8.RuneCountInString(req.GetDescription()); n > maxCloneDescription {
		v.Add("description", rpcerror.RuleTooLong, "must be at most %d characters, got %d", maxCloneDescription, n)
	}
	if n := utf8.RuneCountInString(req.GetAccent()); n > maxCloneAccentLen {
		v.Add("accent", rpcerror.RuleTooLong, "must be at most %d characters, got %d", maxCloneAccentLen, n)
	}
	if n := len(req.GetTags()); n > maxCloneTags {
		v.Add("tags", rpcerror.RuleTooMany, "must hold at most %d tags, got %d", maxCloneTags, n)
	}
	for i, tag := range req.GetTags() {
		field := fmt.Sprintf("tags[%d]", i)
		checkText(&v, field, tag, maxCloneTagLen)
		if strings.Contains(tag, ",") {
			v.Add(field, rpcerror.RuleBadFormat, "must not contain ',', which Smallest uses as the separator")
		}
	}
	if err := v.Err(); err != nil {
		return nil, err
	}
	return &smallest.CloneRequest{
		DisplayName: req.GetDisplayName(), Audio: req.GetAudio(), ContentType: mime, Model: model,
		Language: req.GetLanguage(), Description: req.GetDescription(), Accent: req.GetAccent(), Tags: req.GetTags(),
	}, nil
}

// A clone's sample lasts 5 to 15 seconds, as Smallest advises.
const minCloneSeconds, maxCloneSeconds = 5, 15

// wavSeconds returns how long a WAV sample's audio lasts; ok is false for
// other formats, whose length is not known without decoding.
func wavSeconds(b []byte) (float64, bool) {
	r := bytes.NewReader(b)
	f, err := audio.ReadWAVHeader(r)
	if err != nil || f.BytesPerSecond() == 0 {
		return 0, false
	}
	return float64(min(int64(f.DataSize), int64(r.Len()))) / float64(f.BytesPerSecond()), true
}

// cloneStatuses maps Smallest's clone statuses to the contract's.
var cloneStatuses = map[string]speechv1.VoiceCloneStatus{
	"pending":    speechv1.VoiceCloneStatus_VOICE_CLONE_STATUS_PENDING,
	"processing": speechv1.VoiceCloneStatus_VOICE_CLONE_STATUS_PROCESSING,
	"completed":  speechv1.VoiceCloneStatus_VOICE_CLONE_STATUS_COMPLETED,
	"failed":     speechv1.VoiceCloneStatus_VOICE_CLONE_STATUS_FAILED,
}

// Clone is a voice clone in the gateway's form; a status Smallest adds
// later reads as unspecified.
func Clone(c *smallest.VoiceClone) *speechv1.VoiceClone {
	return &speechv1.VoiceClone{
		VoiceId:     c.VoiceID,
		DisplayName: c.DisplayName,
		Status:      cloneStatuses[strings.ToLower(c.Status)],
		Language:    c.Language,
		Description: c.Description,
		Accent:      c.Accent,
		Tags:        c.Tags,
		Models:      c.ModelIDs,
		CloningType: c.CloningType,
		CreateTime:  timestamp(c.CreatedAt),
	}
}

// sampleType returns the MIME type of a voice sample from its first bytes,
// among the types voice cloning accepts, or "".
func sampleType(b []byte) string {
	switch t := http.DetectContentType(b); {
	case strings.HasPrefix(t, "audio/wave"), strings.HasPrefix(t, "audio/wav"):
		return "audio/wav"
	case t == "audio/mpeg":
		return "audio/mpeg"
	case t == "video/webm", t == "audio/webm":
		return "audio/webm"
	case t == "video/mp4", t == "audio/mp4":
		return "audio/mp4"
	}
	if len(b) >= 2 && b[0] == 0xFF && b[1]&0xE0 == 0xE0 { // an MP3 frame without an ID3 tag
		return "audio/mpeg"
	}
	return ""
}
