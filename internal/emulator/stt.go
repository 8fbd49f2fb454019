package emulator

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"strings"
)

// MaxUpload is Pulse's documented payload limit (docs/upstream.md §2.2).
const MaxUpload = 250 << 20

var (
	pulseLanguages = []string{"en", "hi", "de", "es", "ru", "it", "fr", "nl", "pt", "uk", "pl", "cs", "sk", "lv", "et",
		"ro", "fi", "sv", "bg", "hu", "da", "lt", "mt", "zh", "ja", "ko", "multi-eu", "multi-asian", "multi-indic"}
	sttEncodings = []string{"linear16", "linear32", "alaw", "mulaw", "opus", "ogg_opus"}
)

// deleteHistory serves DELETE /waves/v1/analytics/asr/history/{id}: a soft
// delete, idempotent (docs/upstream.md §6.6). The emulator keeps no history,
// so every id is deleted.
func (e *Emulator) deleteHistory(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"request_id": r.PathValue("id"), "deleted": true})
}

// transcribe serves POST /waves/v1/stt/ (docs/upstream.md §2.2, §2.3).
func (e *Emulator) transcribe(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	reqID := w.Header().Get("X-Request-Id")
	fail := func(code int, msg string) {
		writeJSON(w, code, map[string]string{"error": msg, "request_id": reqID})
	}
	model, lang := q.Get("model"), q.Get("language")
	switch {
	case model != "pulse" && model != "pulse-pro":
		fail(http.StatusBadRequest, "Invalid or missing model: expected 'pulse' or 'pulse-pro'.")
		return
	case !slices.Contains(pulseLanguages, lang):
		fail(http.StatusBadRequest, fmt.Sprintf("Invalid or missing language %q.", lang))
		return
	case model == "pulse-pro" && lang != "en":
		fail(http.StatusBadRequest, "Pulse Pro supports only language 'en'.")
		return
	case q.Get("encoding") != "" && !slices.Contains(sttEncodings, q.Get("encoding")):
		fail(http.StatusBadRequest, fmt.Sprintf("Invalid encoding %q.", q.Get("encoding")))
		return
	case q.Get("webhook_url") != "" && model != "pulse-pro":
		fail(http.StatusBadRequest, "Async (webhook) mode is Pulse Pro only.")
		return
	}

	var heard *ear
	var filename string
	if strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
		var body struct {
			URL string `json:"url"`
		}
		if json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&body) != nil || body.URL == "" {
			fail(http.StatusBadRequest, "The JSON body must be {\"url\": \"...\"}.")
			return
		}
		// The emulator cannot fetch: it answers as if it had fetched a 5 s file.
		filename, heard = body.URL[strings.LastIndex(body.URL, "/")+1:], &ear{n: 5 * 32000}
	} else {
		var err error
		if heard, err = hear(r.Body, MaxUpload); err != nil {
			return // the client went away
		}
		if heard.n > MaxUpload {
			fail(http.StatusRequestEntityTooLarge, "File size exceeds maximum limit of 250MB.")
			return
		}
		if heard.n == 0 {
			fail(http.StatusBadRequest, "No audio data received.")
			return
		}
		// Pulse detects the format from the container unless told the
		// encoding of raw audio: anything else cannot be decoded.
		if q.Get("encoding") == "" && containerOf(heard.header) == "" {
			fail(http.StatusBadRequest, "Could not decode the audio: no supported format was detected (WAV, MP3, FLAC, OGG, M4A or WebM); "+
				"for raw audio, set encoding and sample_rate.")
			return
		}
	}
	if q.Get("webhook_url") != "" {
		writeJSON(w, http.StatusOK, map[string]string{"status": "processing", "request_id": reqID})
		return
	}

	duration, text := heard.transcript(q)
	words := strings.Fields(text)
	resp := map[string]any{"status": "success", "transcription": text}
	meta := map[string]any{"duration": round2(duration), "fileSize": heard.n}
	if filename != "" {
		meta["filename"] = filename
	}
	resp["metadata"] = meta
	if q.Get("word_timestamps") == "true" {
		diarize := q.Get("diarize") == "true" && model == "pulse"
		resp["words"] = timedWords(words, duration, diarize)
		if model == "pulse" {
			u := map[string]any{"text": text, "start": 0.0, "end": round2(duration)}
			if diarize {
				u["speaker"] = 0
			}
			resp["utterances"] = []any{u}
		}
	}
	if q.Get("gender_detection") == "true" && model == "pulse" {
		resp["gender"] = "female"
	}
	if q.Get("emotion_detection") == "true" {
		resp["emotions"] = map[string]float64{"neutral": 0.8, "happy": 0.15, "calm": 0.05}
	}
	if model == "pulse-pro" {
		resp["language"] = lang
		resp["request_id"] = reqID
		delete(resp, "utterances") // Pulse Pro returns none
	}
	writeJSON(w, http.StatusOK, resp)
}

func timedWords(words []string, duration float64, diarize bool) []map[string]any {
	out := make([]map[string]any, len(words))
	step := duration / math.Max(1, float64(len(words)))
	for i, w := range words {
		m := map[string]any{"word": w, "start": round2(float64(i) * step), "end": round2(float64(i+1) * step), "confidence": 0.98}
		if diarize {
			m["speaker"] = 0
			m["speaker_confidence"] = 0.95
		}
		out[i] = m
	}
	return out
}

func round2(f float64) float64 { return math.Round(f*100) / 100 }
