package emulator

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/coder/websocket"
)

var (
	liveLanguages = []string{"en", "hi", "de", "es", "ru", "it", "fr", "nl", "pt", "zh", "yue", "ja", "ko", "gu", "mr", "or",
		"bn", "ta", "te", "kn", "ml", "north_indic", "multi-asian", "multi-south-indic"}
	usOnly    = []string{"zh", "yue", "ja", "ko", "multi-asian"}
	indiaOnly = []string{"ta", "te", "kn", "ml", "multi-south-indic"}
	liveRates = []int{8000, 16000, 22050, 24000, 44100, 48000}
)

// interimEvery is how much audio passes between interim transcripts.
const interimEvery = 500 * time.Millisecond

// live serves wss://…/waves/v1/stt/live (docs/upstream.md §2.4). us says whether the
// request came to the emulated US host, which alone serves some languages.
func (e *Emulator) live(us bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		lang := q.Get("language")
		rate := 16000
		if s := q.Get("sample_rate"); s != "" {
			rate, _ = strconv.Atoi(s)
		}
		enc := q.Get("encoding")
		if enc == "" {
			enc = "linear16"
		}
		bad := func(msg string) { writeJSON(w, http.StatusBadRequest, map[string]string{"error": msg}) }
		switch {
		case q.Get("model") == "pulse-pro":
			bad("Pulse Pro has no streaming transport. Use POST /waves/v1/stt/?model=pulse-pro instead.")
			return
		case q.Get("model") != "pulse":
			bad("Invalid or missing model: expected 'pulse'.")
			return
		case !slices.Contains(liveLanguages, lang):
			bad(fmt.Sprintf("Invalid or missing language %q.", lang))
			return
		case !slices.Contains(liveRates, rate):
			bad(fmt.Sprintf("Invalid sample_rate %q.", q.Get("sample_rate")))
			return
		case !slices.Contains(sttEncodings, enc):
			bad(fmt.Sprintf("Invalid encoding %q.", enc))
			return
		}
		// Counted before the handshake completes, so that a session the
		// client sees open is already counted.
		key := keyOf(r)
		admitted := e.accounts.enter(key, useLive)
		if admitted {
			defer e.accounts.leave(key, useLive)
		}
		conn, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer conn.CloseNow()
		if !admitted {
			conn.Close(websocket.StatusPolicyViolation, "concurrency limit reached")
			return
		}

		s := &liveSession{
			conn: conn, id: "sess_" + newID(), rate: rate, enc: enc, lang: lang, fault: newFrameFault(r.Context()),
			words: q.Get("word_timestamps") == "true", sentences: q.Get("sentence_timestamps") == "true",
			diarize: q.Get("diarize") == "true", vad: q.Get("vad_events") == "true" || q.Get("vad") == "true",
		}
		s.maxWords, _ = strconv.Atoi(q.Get("max_words"))
		if s.fault.f.after == 0 && s.fault.ws(r.Context(), conn) {
			s.ended = true // a fault at once: a refusal, a close, or silence
		}
		if (us && slices.Contains(indiaOnly, lang)) || (!us && slices.Contains(usOnly, lang)) {
			region := map[bool]string{true: "us-west-2", false: "ap-south-1"}[us]
			s.send(r.Context(), map[string]any{"type": "error", "error_code": "LANGUAGE_NOT_ENABLED_IN_REGION",
				"message": fmt.Sprintf("Language '%s' has not been enabled in this region (%s).", lang, region)})
			conn.Close(websocket.StatusNormalClosure, "")
			return
		}
		s.run(r.Context())
	}
}

// liveSession recognizes one stream. The "speech" it hears is the text the
// emulator's synthesis embedded in PCM16 audio; each word is revealed once
// the audio that speaks it has arrived. Other audio is heard as one
// placeholder word per half second.
type liveSession struct {
	conn                      *websocket.Conn
	id, enc, lang             string
	rate                      int
	words, sentences, diarize bool
	vad                       bool
	maxWords                  int
	ear                       ear   // finds the embedded texts
	bytes                     int64 // audio received
	spoken                    int   // words of the session revealed so far
	final                     int   // words already sent in final transcripts
	lastInterim               time.Duration
	speaking                  bool
	fault                     *frameFault
	ended                     bool // a fault ended the session
}

func (s *liveSession) run(ctx context.Context) {
	for {
		typ, data, err := s.conn.Read(ctx)
		if err != nil {
			return
		}
		if typ == websocket.MessageBinary {
			s.hear(ctx, data)
			continue
		}
		var msg struct {
			Type string `json:"type"`
		}
		_ = json.Unmarshal(data, &msg) // not JSON: no type, ignored like an unknown one
		switch msg.Type {
		case "finalize":
			s.finish(ctx, true, false)
		case "close_stream", "end":
			if !s.ended {
				s.finish(ctx, false, true)
			}
			if s.ended {
				continue // a failed session answers nothing more, and does not close
			}
			s.conn.Close(websocket.StatusNormalClosure, "")
			return
		}
	}
}

func (s *liveSession) bytesPerSecond() float64 {
	switch s.enc {
	case "linear16":
		return float64(s.rate * 2)
	case "linear32":
		return float64(s.rate * 4)
	case "mulaw", "alaw":
		return float64(s.rate)
	}
	return 4000 // compressed audio: about 32 kbit/s
}

// elapsed is the audio time received so far.
func (s *liveSession) elapsed() time.Duration {
	return time.Duration(float64(s.bytes) / s.bytesPerSecond() * float64(time.Second))
}

func (s *liveSession) hear(ctx context.Context, audio []byte) {
	if s.bytes == 0 && s.vad {
		s.speaking = true
		s.send(ctx, map[string]any{"type": "speech_started", "session_id": s.id, "timestamp": 0.0})
	}
	if s.enc == "linear16" {
		_, _ = s.ear.Write(audio) // an ear's Write never fails
	}
	s.bytes += int64(len(audio))
	s.spoken = s.wordsSpokenBy(s.elapsed())
	if s.maxWords > 0 && s.spoken-s.final >= s.maxWords {
		s.finish(ctx, false, false)
		return
	}
	if s.elapsed()-s.lastInterim >= interimEvery && s.spoken > s.final {
		s.lastInterim = s.elapsed()
		s.send(ctx, s.transcript(false, false, false))
	}
}

// wordsSpokenBy counts the words whose audio ends by t.
func (s *liveSession) wordsSpokenBy(t time.Duration) int {
	n := 0
	for _, w := range s.allWords() {
		if w.end <= t {
			n++
		}
	}
	return n
}

type timedWord struct {
	word       string
	start, end time.Duration
}

// allWords is the session's whole "speech" as far as it is known: the words
// of every embedded text, timed from where its synthesis starts.
func (s *liveSession) allWords() []timedWord {
	const perChar = 60 * time.Millisecond // the synthesis' pace at speed 1
	var out []timedWord
	for _, t := range s.ear.scan.texts() {
		base := time.Duration(t.sample) * time.Second / time.Duration(s.rate)
		pos := 0
		for _, w := range strings.Fields(t.text) {
			i := strings.Index(t.text[pos:], w) + pos
			start := base + time.Duration(len([]rune(t.text[:i])))*perChar
			out = append(out, timedWord{w, start, start + time.Duration(len([]rune(w)))*perChar})
			pos = i + len(w)
		}
	}
	if len(out) > 0 {
		return out
	}
	for i := range int(s.elapsed() / interimEvery) {
		start := time.Duration(i) * interimEvery
		out = append(out, timedWord{"speech", start, start + interimEvery})
	}
	return out
}

// finish sends the final transcript of the current utterance.
func (s *liveSession) finish(ctx context.Context, fromFinalize, last bool) {
	if last {
		s.spoken = len(s.allWords())
	}
	s.send(ctx, s.transcript(true, last, fromFinalize))
	s.final = s.spoken
	if s.vad && s.speaking && (fromFinalize || last) {
		s.speaking = false
		s.send(ctx, map[string]any{"type": "speech_ended", "session_id": s.id, "timestamp": s.elapsed().Seconds()})
	}
}

func (s *liveSession) transcript(final, last, fromFinalize bool) map[string]any {
	words := s.allWords()[s.final:s.spoken]
	texts := make([]string, len(words))
	for i, w := range words {
		texts[i] = w.word
	}
	text := strings.Join(texts, " ")
	m := map[string]any{"type": "transcription", "status": "success", "session_id": s.id,
		"transcript": text, "transcription": text, "is_final": final, "is_last": last}
	if !final {
		return m
	}
	m["from_finalize"] = fromFinalize
	m["language"] = s.lang
	m["languages"] = []string{s.lang}
	if s.words {
		list := make([]map[string]any, len(words))
		for i, w := range words {
			list[i] = map[string]any{"word": w.word, "start": w.start.Seconds(), "end": w.end.Seconds(), "confidence": 0.97}
			if s.diarize {
				list[i]["speaker"] = 0
				list[i]["speaker_confidence"] = 0.9
			}
		}
		m["words"] = list
	}
	if s.sentences && len(words) > 0 {
		u := map[string]any{"text": text, "start": words[0].start.Seconds(), "end": words[len(words)-1].end.Seconds()}
		if s.diarize {
			u["speaker"] = 0
		}
		m["utterances"] = []any{u}
	}
	return m
}

func (s *liveSession) send(ctx context.Context, v any) {
	if s.ended || s.fault.ws(ctx, s.conn) {
		s.ended = true
		return
	}
	b, _ := json.Marshal(v)
	s.conn.Write(ctx, websocket.MessageText, b)
}
