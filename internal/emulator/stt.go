package emulator

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
)

// MaxUpload is Pulse's documented payload limit (contract §2.2).
const MaxUpload = 250 << 20

var (
	pulseLanguages = []string{"en", "hi", "de", "es", "ru", "it", "fr", "nl", "pt", "uk", "pl", "cs", "sk", "lv", "et",
		"ro", "fi", "sv", "bg", "hu", "da", "lt", "mt", "zh", "ja", "ko", "multi-eu", "multi-asian", "multi-indic"}
	sttEncodings = []string{"linear16", "linear32", "alaw", "mulaw", "opus", "ogg_opus"}
)

// peekBytes is how much of an upload the transcriber keeps: enough to read a
// WAV header and an embedded text, while the rest is only counted, so that a
// 250 MB upload costs the emulator no more memory than a small one.
const peekBytes = 2 << 20

// transcribe serves POST /waves/v1/stt/ (contract §2.2, §2.3).
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

	var head []byte
	var size int64
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
		filename, size = body.URL[strings.LastIndex(body.URL, "/")+1:], 5*32000
	} else {
		var err error
		head, size, err = receive(r.Body, MaxUpload)
		if err != nil {
			return // the client went away
		}
		if size > MaxUpload {
			fail(http.StatusRequestEntityTooLarge, "File size exceeds maximum limit of 250MB.")
			return
		}
		if size == 0 {
			fail(http.StatusBadRequest, "No audio data received.")
			return
		}
	}
	if q.Get("webhook_url") != "" {
		writeJSON(w, http.StatusOK, map[string]string{"status": "processing", "request_id": reqID})
		return
	}

	duration, text := listen(head, size, q)
	words := strings.Fields(text)
	resp := map[string]any{"status": "success", "transcription": text}
	meta := map[string]any{"duration": round2(duration), "fileSize": size}
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

// receive reads an upload, keeping only its first peekBytes and counting the
// rest, up to one byte past limit so that the caller can tell it was too large.
func receive(r io.Reader, limit int64) (head []byte, size int64, err error) {
	var buf bytes.Buffer
	n, err := io.Copy(&buf, io.LimitReader(r, peekBytes))
	if err == nil && n == peekBytes {
		var rest int64
		rest, err = io.Copy(io.Discard, io.LimitReader(r, limit-peekBytes+1))
		n += rest
	}
	return buf.Bytes(), n, err
}

// listen works out the length of the audio and its "transcript": the text
// embedded by the emulator's synthesis if there is one, otherwise a sentence
// saying what was heard.
func listen(head []byte, size int64, q map[string][]string) (seconds float64, text string) {
	pcm, byteRate := head, 32000.0 // unknown audio: assume 16 kHz PCM16
	if len(head) >= 44 && string(head[0:4]) == "RIFF" && string(head[8:12]) == "WAVE" {
		if br := binary.LittleEndian.Uint32(head[28:32]); br > 0 {
			byteRate = float64(br)
		}
		pcm = head[44:]
		size -= 44
	} else if rate, err := strconv.Atoi(first(q["sample_rate"])); err == nil && rate > 0 {
		switch first(q["encoding"]) {
		case "linear16":
			byteRate = float64(rate * 2)
		case "linear32":
			byteRate = float64(rate * 4)
		case "mulaw", "alaw":
			byteRate = float64(rate)
		}
	}
	seconds = float64(size) / byteRate
	if t, ok := readWatermark(pcm); ok {
		return seconds, t
	}
	return seconds, fmt.Sprintf("This is the speechgate emulator. It heard %.2f seconds of audio.", seconds)
}

func first(v []string) string {
	if len(v) == 0 {
		return ""
	}
	return v[0]
}

// readWatermark extracts the text that the emulator's synthesis embedded in
// the least significant bits of PCM16 samples.
func readWatermark(pcm []byte) (string, bool) {
	bits := len(pcm) / 2
	byteAt := func(i int) (byte, bool) {
		if (i+1)*8 > bits {
			return 0, false
		}
		var b byte
		for k := range 8 {
			b = b<<1 | pcm[2*(i*8+k)]&1
		}
		return b, true
	}
	var head []byte
	for i := 0; ; i++ {
		b, ok := byteAt(i)
		if !ok || i > len(watermarkMagic)+8 {
			return "", false
		}
		if b == ':' && i >= len(watermarkMagic) {
			break
		}
		head = append(head, b)
	}
	if !strings.HasPrefix(string(head), watermarkMagic) {
		return "", false
	}
	n, err := strconv.Atoi(string(head[len(watermarkMagic):]))
	if err != nil || n < 0 {
		return "", false
	}
	text := make([]byte, n)
	for i := range n {
		b, ok := byteAt(len(head) + 1 + i)
		if !ok {
			return "", false
		}
		text[i] = b
	}
	return string(text), true
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
