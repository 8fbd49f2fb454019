package emulator

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/speechgate/speechgate/internal/audio"
)

// ttsRequest is the TtsRequest body (docs/upstream.md §1.2). Pointers tell absent from zero.
type ttsRequest struct {
	Text         *string  `json:"text"`
	VoiceID      *string  `json:"voice_id"`
	Model        *string  `json:"model"`
	SampleRate   *int     `json:"sample_rate"`
	Speed        *float64 `json:"speed"`
	Language     *string  `json:"language"`
	OutputFormat *string  `json:"output_format"`
	SessionID    string   `json:"session_id"`
	RequestID    string   `json:"request_id"`
}

// zodIssue is one entry of the issue list Smallest's validator returns under "error".
type zodIssue struct {
	Code     string   `json:"code"`
	Path     []string `json:"path"`
	Message  string   `json:"message"`
	Received any      `json:"received,omitempty"`
	Options  []any    `json:"options,omitempty"`
}

var (
	ttsFormats  = []any{"wav", "ulaw", "alaw", "pcm", "mp3"}
	ttsRates    = []any{8000, 16000, 24000, 44100}
	ttsModels   = []any{"lightning_v3.1", "lightning_v3.1_pro"}
	ttsLanguage = []any{"auto", "en", "hi", "mr", "kn", "ta", "bn", "gu", "te", "ml", "pa", "or", "es", "de", "fr",
		"it", "nl", "sv", "pt", "ru", "el", "fi", "no", "pl", "ar", "zh", "id", "ja", "ko", "ms", "tr", "vi"}
)

func enumIssue(field string, received any, options []any) zodIssue {
	parts := make([]string, len(options))
	for i, o := range options {
		if s, ok := o.(string); ok {
			parts[i] = "'" + s + "'"
		} else {
			parts[i] = fmt.Sprint(o)
		}
	}
	return zodIssue{Code: "invalid_enum_value", Path: []string{field}, Received: received, Options: options,
		Message: fmt.Sprintf("Invalid enum value. Expected %s, received '%v'", strings.Join(parts, " | "), received)}
}

// synthesis is a validated request with its defaults applied.
type synthesis struct {
	text   string
	format string
	rate   int
	speed  float64
}

func (e *Emulator) parseTTS(r *http.Request) (synthesis, any) {
	var req ttsRequest
	if err := json.NewDecoder(http.MaxBytesReader(nil, r.Body, 1<<20)).Decode(&req); err != nil {
		return synthesis{}, map[string]string{"error": "InvalidRequest", "message": "The request body must be JSON."}
	}
	if req.Text == nil || strings.TrimSpace(*req.Text) == "" {
		return synthesis{}, map[string]string{"error": "InvalidRequest", "message": "The 'text' field is required."}
	}
	s := synthesis{text: *req.Text, format: "pcm", rate: 44100, speed: 1}
	var issues []zodIssue
	if req.VoiceID == nil || !e.knownVoice(*req.VoiceID) {
		issues = append(issues, zodIssue{Code: "custom", Path: []string{"voice_id"}, Message: "Invalid Voice ID"})
	}
	if req.OutputFormat != nil {
		if !slices.Contains(ttsFormats, any(*req.OutputFormat)) {
			issues = append(issues, enumIssue("output_format", *req.OutputFormat, ttsFormats))
		}
		s.format = *req.OutputFormat
	}
	if req.SampleRate != nil {
		if !slices.Contains(ttsRates, any(*req.SampleRate)) {
			issues = append(issues, enumIssue("sample_rate", *req.SampleRate, ttsRates))
		}
		s.rate = *req.SampleRate
	}
	if req.Model != nil && !slices.Contains(ttsModels, any(*req.Model)) {
		issues = append(issues, enumIssue("model", *req.Model, ttsModels))
	}
	if req.Language != nil && !slices.Contains(ttsLanguage, any(*req.Language)) {
		issues = append(issues, enumIssue("language", *req.Language, ttsLanguage))
	}
	if req.Speed != nil {
		switch {
		case *req.Speed < 0.5:
			issues = append(issues, zodIssue{Code: "too_small", Path: []string{"speed"}, Message: "Number must be greater than or equal to 0.5"})
		case *req.Speed > 2:
			issues = append(issues, zodIssue{Code: "too_big", Path: []string{"speed"}, Message: "Number must be less than or equal to 2"})
		}
		s.speed = *req.Speed
	}
	if len(issues) > 0 {
		return synthesis{}, map[string]any{"error": issues}
	}
	return s, nil
}

// ttsLive serves POST /waves/v1/tts/live: SSE frames of base64 audio (docs/upstream.md §1.4).
func (e *Emulator) ttsLive(w http.ResponseWriter, r *http.Request) {
	s, problem := e.parseTTS(r)
	if problem != nil {
		writeJSON(w, http.StatusBadRequest, problem)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("X-Session-Id", newID())
	w.WriteHeader(http.StatusOK)
	flusher, _ := w.(http.Flusher)

	enc := newEncoder(s, e.opts)
	start := time.Now()
	var frame []byte
	faulty := newFrameFault(r.Context())
	for sent := 0; ; {
		chunk, samples := enc.next()
		if chunk == nil {
			break
		}
		if faulty.sse(r.Context(), w, r) {
			return
		}
		due := e.opts.FirstByteDelay
		if e.opts.Pace > 0 {
			due += time.Duration(float64(sent) / float64(s.rate) / e.opts.Pace * float64(time.Second))
		}
		if !sleepUntil(r.Context(), start.Add(due)) {
			return
		}
		frame = append(frame[:0], "event: audio\ndata: {\"audio\": \""...)
		frame = base64.StdEncoding.AppendEncode(frame, chunk)
		frame = append(frame, "\", \"done\": false, \"status\": \"206\"}\n\n"...)
		if _, err := w.Write(frame); err != nil {
			return
		}
		if flusher != nil {
			flusher.Flush()
		}
		sent += samples
	}
	w.Write([]byte("data: {\"status\": \"200\", \"done\": true}\n\n"))
}

// sleepUntil waits for t or the end of ctx; it reports whether t came first.
func sleepUntil(ctx context.Context, t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err() == nil
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// encoder produces a synthesis chunk by chunk, so that however long the audio,
// the emulator holds one chunk of it.
type encoder struct {
	format     string
	rate       int
	total      int // samples in the whole synthesis
	done       int // samples produced so far
	loop       []int16
	mark       []byte // watermark payload, embedded bit by bit
	chunkBytes int
	buf        []byte
	header     bool // WAV: the header has been written
}

func newEncoder(s synthesis, o Options) *encoder {
	perChar := float64(o.AudioPerChar) / float64(time.Second) / s.speed
	total := int(math.Round(math.Max(0.2, perChar*float64(utf8.RuneCountInString(s.text))) * float64(s.rate)))
	enc := &encoder{format: s.format, rate: s.rate, total: total, loop: humLoop(s.rate), chunkBytes: o.ChunkBytes}
	if s.format == "pcm" || s.format == "wav" {
		enc.mark = watermark(s.text)
	}
	return enc
}

// next returns the next chunk in the output format and the number of samples
// it covers, or nil at the end. The chunk is reused by the following call.
func (e *encoder) next() ([]byte, int) {
	if e.done >= e.total {
		return nil, 0
	}
	e.buf = e.buf[:0]
	if e.format == "mp3" {
		return e.nextMP3()
	}
	if e.format == "wav" && !e.header {
		e.header = true
		e.buf = audio.AppendWAVHeader(e.buf, e.rate, 1, 16, uint32(e.total*2))
	}
	width := 2
	if e.format == "ulaw" || e.format == "alaw" {
		width = 1
	}
	n := min(e.chunkBytes/width, e.total-e.done)
	for i := range n {
		s := e.sample(e.done + i)
		switch e.format {
		case "ulaw":
			e.buf = append(e.buf, audio.MulawEncode(s))
		case "alaw":
			e.buf = append(e.buf, audio.AlawEncode(s))
		default:
			e.buf = binary.LittleEndian.AppendUint16(e.buf, uint16(s))
		}
	}
	e.done += n
	return e.buf, n
}

// sample returns sample i of the synthesis, with bit i of the watermark in its
// least significant bit.
func (e *encoder) sample(i int) int16 {
	s := e.loop[i%len(e.loop)]
	if bit := i; bit < len(e.mark)*8 {
		s = s&^1 | int16(e.mark[bit/8]>>(7-bit%8)&1)
	}
	return s
}

func (e *encoder) nextMP3() ([]byte, int) {
	frame, spf := silentMP3Frame(e.rate)
	frames := max(1, e.chunkBytes/len(frame))
	n := 0
	for ; n < frames && e.done < e.total; n++ {
		e.buf = append(e.buf, frame...)
		e.done += spf
	}
	return e.buf, n * spf
}

// humLoops holds one second of the emulator's voice per supported rate,
// computed once: streaming copies it rather than computing waveforms, which
// keeps the emulator cheap enough to drive thousands of streams in benchmarks.
var humLoops = func() map[int][]int16 {
	m := map[int][]int16{}
	for _, r := range ttsRates {
		rate := r.(int)
		loop := make([]int16, rate)
		for i := range loop {
			t := float64(i) / float64(rate)
			// A 140 Hz voice with two harmonics, shaped into 4 syllables a second.
			v := math.Sin(2*math.Pi*140*t) + 0.5*math.Sin(2*math.Pi*280*t) + 0.25*math.Sin(2*math.Pi*420*t)
			env := math.Abs(math.Sin(math.Pi * 4 * t))
			loop[i] = int16(v * env * 6000)
		}
		m[rate] = loop
	}
	return m
}()

func humLoop(rate int) []int16 { return humLoops[rate] }

// silentMP3Frame returns one valid, silent MPEG Layer III mono frame for rate
// and the number of samples it holds: MPEG-1 at 44.1 kHz (64 kbit/s), MPEG-2
// at 24 and 16 kHz (32 kbit/s), MPEG-2.5 at 8 kHz (16 kbit/s). An all-zero side
// info and main data decode to silence.
func silentMP3Frame(rate int) ([]byte, int) {
	var header [4]byte
	var size, spf int
	switch rate {
	case 44100: // MPEG-1, Layer III, no CRC; 64 kbit/s, 44.1 kHz; mono
		header, size, spf = [4]byte{0xFF, 0xFB, 0x50, 0xC4}, 144*64000/44100, 1152
	case 24000: // MPEG-2; 32 kbit/s, 24 kHz
		header, size, spf = [4]byte{0xFF, 0xF3, 0x44, 0xC4}, 72*32000/24000, 576
	case 16000: // MPEG-2; 32 kbit/s, 16 kHz
		header, size, spf = [4]byte{0xFF, 0xF3, 0x48, 0xC4}, 72*32000/16000, 576
	default: // 8000: MPEG-2.5; 16 kbit/s, 8 kHz
		header, size, spf = [4]byte{0xFF, 0xE3, 0x28, 0xC4}, 72*16000/8000, 576
	}
	frame := make([]byte, size)
	copy(frame, header[:])
	return frame, spf
}

// voices serves GET /waves/v1/lightning-v3.1/get_voices (docs/upstream.md §1.7).
func (e *Emulator) voices(w http.ResponseWriter, _ *http.Request) {
	type tags struct {
		Language []string `json:"language"`
		Accent   string   `json:"accent"`
		Gender   string   `json:"gender"`
		Age      string   `json:"age"`
		Emotions []string `json:"emotions"`
		UseCases []string `json:"usecases"`
	}
	type voice struct {
		VoiceID     string `json:"voiceId"`
		DisplayName string `json:"displayName"`
		Tags        tags   `json:"tags"`
	}
	out := make([]voice, 0, len(catalog))
	for _, v := range catalog {
		out = append(out, voice{v.id, v.name, tags{v.languages, v.accent, v.gender, v.age, []string{}, v.useCases}})
	}
	e.mu.Lock()
	for _, c := range e.clones {
		if c.status() == "completed" {
			out = append(out, voice{c.VoiceID, c.DisplayName, tags{[]string{languageTag(c.Language)}, c.Accent, "", "", []string{}, nil}})
		}
	}
	e.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{"voices": out})
}

type catalogVoice struct {
	id, name, accent, gender, age string
	languages, useCases           []string
}

// describe is a catalog voice as the browsing catalog describes it.
func (v catalogVoice) describe() string {
	return fmt.Sprintf("%s %s %s voice for %s.", strings.ToUpper(v.age[:1])+v.age[1:], v.accent, v.gender, strings.Join(v.useCases, " and "))
}

// browse serves GET /waves/v1/voice/get-all-models (docs/upstream.md §1.7):
// the catalog with descriptions and previews, which the emulator serves
// itself under /_emulator/previews/.
func (e *Emulator) browse(w http.ResponseWriter, r *http.Request) {
	type voice struct {
		ID           string `json:"_id"`
		VoiceID      string `json:"voiceId"`
		DisplayName  string `json:"displayName"`
		Description  string `json:"description"`
		AudioPreview string `json:"audioPreview"`
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	out := make([]voice, 0, len(catalog))
	for i, v := range catalog {
		out = append(out, voice{ID: fmt.Sprintf("%024x", i+1), VoiceID: v.id, DisplayName: v.name, Description: v.describe(),
			AudioPreview: fmt.Sprintf("%s://%s/_emulator/previews/%s.wav", scheme, r.Host, v.id)})
	}
	writeJSON(w, http.StatusOK, map[string]any{"voices": out})
}

// preview serves a voice's preview: a short synthesis, as a WAV file.
func (e *Emulator) preview(w http.ResponseWriter, r *http.Request) {
	id := strings.TrimSuffix(r.PathValue("file"), ".wav")
	if !e.knownVoice(id) {
		http.NotFound(w, r)
		return
	}
	enc := newEncoder(synthesis{text: "Hello, this is " + id + ".", format: "wav", rate: 24000, speed: 1}, e.opts)
	w.Header().Set("Content-Type", "audio/wav")
	for {
		chunk, _ := enc.next()
		if chunk == nil {
			return
		}
		w.Write(chunk)
	}
}

// catalog is the emulator's voice list: real Lightning voice ids, so that
// requests tried on the emulator work unchanged against Smallest.
var catalog = []catalogVoice{
	{"magnus", "Magnus", "american", "male", "middle-aged", []string{"english"}, []string{"narration"}},
	{"avery", "Avery", "american", "female", "young", []string{"english"}, []string{"conversational"}},
	{"liam", "Liam", "american", "male", "young", []string{"english"}, []string{"conversational"}},
	{"meher", "Meher", "indian", "female", "young", []string{"english", "hindi"}, []string{"conversational"}},
	{"devansh", "Devansh", "indian", "male", "young", []string{"english", "hindi"}, []string{"conversational"}},
	{"kartik", "Kartik", "indian", "male", "middle-aged", []string{"english", "hindi"}, []string{"support"}},
	{"maithili", "Maithili", "indian", "female", "middle-aged", []string{"english", "hindi"}, []string{"support"}},
	{"ines", "Inès", "french", "female", "young", []string{"french"}, []string{"narration"}},
	{"lukas", "Lukas", "german", "male", "middle-aged", []string{"german"}, []string{"narration"}},
	{"sofia", "Sofía", "spanish", "female", "young", []string{"spanish"}, []string{"conversational"}},
}

// knownVoice reports whether id is a catalog voice or a finished clone.
func (e *Emulator) knownVoice(id string) bool {
	for i := range catalog {
		if catalog[i].id == id {
			return true
		}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, c := range e.clones {
		if c.VoiceID == id && c.status() == "completed" {
			return true
		}
	}
	return false
}

// watermarkMagic starts an embedded text, so that the transcriber can tell
// the emulator's audio from any other.
const watermarkMagic = "SGE1"

// watermark is the payload embedded in PCM output: magic, length, UTF-8 text.
func watermark(text string) []byte {
	b := append([]byte(watermarkMagic), strconv.Itoa(len(text))...)
	b = append(b, ':')
	return append(b, text...)
}
