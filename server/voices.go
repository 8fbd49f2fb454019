package server

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/types/known/timestamppb"

	speechv1 "github.com/speechgate/speechgate/gen/speech/v1"
	"github.com/speechgate/speechgate/internal/rpcerror"
	"github.com/speechgate/speechgate/internal/smallest"
)

func (s *synthesisService) ListVoices(ctx context.Context, req *speechv1.ListVoicesRequest) (*speechv1.ListVoicesResponse, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	var v rpcerror.Violations
	checkFilter(&v, "language", req.GetLanguage())
	checkFilter(&v, "gender", req.GetGender())
	if err := v.Err(); err != nil {
		return nil, err
	}
	voices, err := s.upstream.ListVoices(ctx)
	if err != nil {
		return nil, err
	}
	lang := strings.ToLower(req.GetLanguage())
	gender := strings.ToLower(req.GetGender())
	resp := &speechv1.ListVoicesResponse{}
	for _, v := range voices {
		out := voiceMessage(v)
		if lang != "" && !slices.Contains(out.LanguageCodes, lang) && !slices.ContainsFunc(out.Languages, func(l string) bool { return strings.EqualFold(l, lang) }) {
			continue
		}
		if gender != "" && !strings.EqualFold(out.Gender, gender) {
			continue
		}
		resp.Voices = append(resp.Voices, out)
	}
	return resp, nil
}

// maxFilterLen bounds a ListVoices filter: a language code or name, a gender.
const maxFilterLen = 64

func checkFilter(v *rpcerror.Violations, field, value string) {
	if n := len(value); n > maxFilterLen {
		v.Add(field, rpcerror.RuleTooLong, "must be at most %d characters, got %d bytes", maxFilterLen, n)
	}
}

// synthesisEncodings are what Synthesize can produce with any voice.
var synthesisEncodings = []speechv1.AudioEncoding{
	speechv1.AudioEncoding_AUDIO_ENCODING_PCM_S16LE, speechv1.AudioEncoding_AUDIO_ENCODING_WAV,
	speechv1.AudioEncoding_AUDIO_ENCODING_MP3, speechv1.AudioEncoding_AUDIO_ENCODING_MULAW,
	speechv1.AudioEncoding_AUDIO_ENCODING_ALAW,
}

func voiceMessage(v smallest.Voice) *speechv1.Voice {
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

func (s *synthesisService) ListPronunciationDictionaries(ctx context.Context, _ *speechv1.ListPronunciationDictionariesRequest) (*speechv1.ListPronunciationDictionariesResponse, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	dicts, err := s.upstream.ListPronunciationDictionaries(ctx)
	if err != nil {
		return nil, err
	}
	resp := &speechv1.ListPronunciationDictionariesResponse{}
	for i := range dicts {
		resp.Dictionaries = append(resp.Dictionaries, dictionaryMessage(&dicts[i]))
	}
	return resp, nil
}

func (s *synthesisService) CreatePronunciationDictionary(ctx context.Context, req *speechv1.CreatePronunciationDictionaryRequest) (*speechv1.CreatePronunciationDictionaryResponse, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	var v rpcerror.Violations
	items := checkEntries(&v, req.GetEntries())
	if err := v.Err(); err != nil {
		return nil, err
	}
	d, err := s.upstream.CreatePronunciationDictionary(ctx, items)
	if err != nil {
		return nil, err
	}
	return &speechv1.CreatePronunciationDictionaryResponse{Dictionary: dictionaryMessage(d)}, nil
}

func (s *synthesisService) UpdatePronunciationDictionary(ctx context.Context, req *speechv1.UpdatePronunciationDictionaryRequest) (*speechv1.UpdatePronunciationDictionaryResponse, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	var v rpcerror.Violations
	checkID(&v, "id", req.GetId(), true)
	items := checkEntries(&v, req.GetEntries())
	if err := v.Err(); err != nil {
		return nil, err
	}
	d, err := s.upstream.UpdatePronunciationDictionary(ctx, req.GetId(), items)
	if err != nil {
		return nil, err
	}
	if d.ID == "" {
		d.ID = req.GetId()
	}
	return &speechv1.UpdatePronunciationDictionaryResponse{Dictionary: dictionaryMessage(d)}, nil
}

func (s *synthesisService) DeletePronunciationDictionary(ctx context.Context, req *speechv1.DeletePronunciationDictionaryRequest) (*speechv1.DeletePronunciationDictionaryResponse, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	var v rpcerror.Violations
	checkID(&v, "id", req.GetId(), true)
	if err := v.Err(); err != nil {
		return nil, err
	}
	if err := s.upstream.DeletePronunciationDictionary(ctx, req.GetId()); err != nil {
		return nil, err
	}
	return &speechv1.DeletePronunciationDictionaryResponse{Id: req.GetId()}, nil
}

// checkEntries validates a dictionary's entries and returns them in Smallest's form.
func checkEntries(v *rpcerror.Violations, entries []*speechv1.PronunciationEntry) []smallest.PronunciationItem {
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

func dictionaryMessage(d *smallest.PronunciationDictionary) *speechv1.PronunciationDictionary {
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
// cloning takes (contract §1.6).
var cloneModels = map[speechv1.SynthesisModel]string{
	speechv1.SynthesisModel_SYNTHESIS_MODEL_UNSPECIFIED:        "lightning-v3.1",
	speechv1.SynthesisModel_SYNTHESIS_MODEL_LIGHTNING_V3_1:     "lightning-v3.1",
	speechv1.SynthesisModel_SYNTHESIS_MODEL_LIGHTNING_V3_1_PRO: "lightning-v3.1-pro",
}

func (s *synthesisService) CreateVoiceClone(ctx context.Context, req *speechv1.CreateVoiceCloneRequest) (*speechv1.CreateVoiceCloneResponse, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
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
	c, err := s.upstream.CreateVoiceClone(ctx, &smallest.CloneRequest{
		DisplayName: req.GetDisplayName(), Audio: req.GetAudio(), ContentType: mime, Model: model,
		Language: req.GetLanguage(), Description: req.GetDescription(), Accent: req.GetAccent(), Tags: req.GetTags(),
	})
	if err != nil {
		return nil, err
	}
	if len(c.ModelIDs) == 0 && c.Model != "" {
		c.ModelIDs = []string{c.Model}
	}
	return &speechv1.CreateVoiceCloneResponse{VoiceClone: cloneMessage(c)}, nil
}

func (s *synthesisService) ListVoiceClones(ctx context.Context, _ *speechv1.ListVoiceClonesRequest) (*speechv1.ListVoiceClonesResponse, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	clones, err := s.upstream.ListVoiceClones(ctx)
	if err != nil {
		return nil, err
	}
	resp := &speechv1.ListVoiceClonesResponse{}
	for i := range clones {
		resp.VoiceClones = append(resp.VoiceClones, cloneMessage(&clones[i]))
	}
	return resp, nil
}

var cloneStatuses = map[string]speechv1.VoiceCloneStatus{
	"pending":    speechv1.VoiceCloneStatus_VOICE_CLONE_STATUS_PENDING,
	"processing": speechv1.VoiceCloneStatus_VOICE_CLONE_STATUS_PROCESSING,
	"completed":  speechv1.VoiceCloneStatus_VOICE_CLONE_STATUS_COMPLETED,
	"failed":     speechv1.VoiceCloneStatus_VOICE_CLONE_STATUS_FAILED,
}

func cloneMessage(c *smallest.VoiceClone) *speechv1.VoiceClone {
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
