package emulator

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"strings"
)

// SelfHostMaxUpload is the self-hosted server's documented file limit (docs/upstream.md §4.1).
const SelfHostMaxUpload = 100 << 20

var selfHostFormats = []string{"wav", "mp3", "flac", "ogg", "m4a"}

// selfHostAuthed checks the license key as the self-hosted server documents
// it: "Authorization: Token <key>" (Bearer is accepted too, as the docs call
// the scheme "Bearer token authentication").
func (e *Emulator) selfHostAuthed(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		scheme, key, _ := strings.Cut(r.Header.Get("Authorization"), " ")
		if (scheme != "Token" && scheme != "Bearer") || strings.TrimSpace(key) == "" {
			writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "Invalid license key", "code": "INVALID_LICENSE"})
			return
		}
		h(w, r)
	}
}

// speakV1 serves the self-hosted POST /v1/speak (docs/upstream.md §6.6):
// JSON {"text", "voice"}, answered with the whole audio, a 24 kHz WAV file.
func (e *Emulator) speakV1(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Text  string `json:"text"`
		Voice string `json:"voice"`
	}
	if json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&body) != nil || strings.TrimSpace(body.Text) == "" {
		selfHostError(w, http.StatusBadRequest, "Missing required parameter: text", "MISSING_PARAMETER", nil)
		return
	}
	enc := newEncoder(synthesis{text: body.Text, format: "wav", rate: 24000, speed: 1}, e.opts)
	w.Header().Set("Content-Type", "audio/wav")
	w.Header().Set("X-Request-Id", newID())
	for {
		chunk, _ := enc.next()
		if chunk == nil {
			return
		}
		if _, err := w.Write(chunk); err != nil {
			return
		}
	}
}

// listenV1 serves the documented POST /v1/listen: multipart with the file in
// "audio", or JSON {"url"}; options as form fields or JSON fields.
func (e *Emulator) listenV1(w http.ResponseWriter, r *http.Request) {
	opts := map[string]string{}
	heard := &ear{}
	mediaType, params, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	switch mediaType {
	case "application/json":
		var body map[string]any
		if json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&body) != nil || body["url"] == nil || body["url"] == "" {
			selfHostError(w, http.StatusBadRequest, "Missing required parameter: url or audio file", "MISSING_PARAMETER", nil)
			return
		}
		for k, v := range body {
			if b, err := json.Marshal(v); err == nil {
				opts[k] = strings.Trim(string(b), `"`)
			}
		}
		heard.n = 5 * 32000 // the emulator cannot fetch: it hears 5 s
	case "multipart/form-data":
		mr := multipart.NewReader(r.Body, params["boundary"])
		for {
			part, err := mr.NextPart()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				selfHostError(w, http.StatusBadRequest, "Malformed multipart body", "MISSING_PARAMETER", nil)
				return
			}
			if part.FormName() == "audio" {
				if heard, err = hear(part, SelfHostMaxUpload); err != nil {
					return
				}
				continue
			}
			v, _ := io.ReadAll(io.LimitReader(part, 4096))
			opts[part.FormName()] = string(v)
		}
		if heard.n == 0 {
			selfHostError(w, http.StatusBadRequest, "Missing required parameter: url or audio file", "MISSING_PARAMETER", nil)
			return
		}
	default:
		selfHostError(w, http.StatusBadRequest, "Missing required parameter: url or audio file", "MISSING_PARAMETER", nil)
		return
	}
	if heard.n > SelfHostMaxUpload {
		selfHostError(w, http.StatusUnprocessableEntity, "Audio file too large", "FILE_TOO_LARGE", map[string]any{"max_size_mb": 100})
		return
	}
	if heard.header != nil && containerOf(heard.header) == "" {
		selfHostError(w, http.StatusUnsupportedMediaType, "Unsupported audio format", "UNSUPPORTED_FORMAT",
			map[string]any{"supported_formats": selfHostFormats})
		return
	}
	reqID := newID()
	if opts["callback_url"] != "" {
		writeJSON(w, http.StatusOK, map[string]string{"job_id": reqID, "status": "processing"})
		return
	}
	lang := opts["language"]
	if lang == "" {
		lang = "en"
	}
	duration, text := heard.transcript(nil)
	resp := map[string]any{"request_id": reqID, "text": text, "confidence": 0.97, "duration": round2(duration), "language": lang}
	if opts["timestamps"] == "true" {
		words := timedWords(strings.Fields(text), duration, false)
		for _, w := range words {
			delete(w, "speaker")
		}
		resp["words"] = words
	}
	if opts["diarize"] == "true" {
		resp["speakers"] = []map[string]any{{"speaker": "SPEAKER_00", "text": text, "start": 0.0, "end": round2(duration)}}
	}
	writeJSON(w, http.StatusOK, resp)
}

// getText serves /api/v1/lightning/get_text as Smallest's self-host test
// script calls it: raw bytes, options in the query, the cloud Pulse answer.
func (e *Emulator) getText(w http.ResponseWriter, r *http.Request) {
	heard, err := hear(r.Body, SelfHostMaxUpload)
	if err != nil {
		return
	}
	if heard.n > SelfHostMaxUpload {
		selfHostError(w, http.StatusUnprocessableEntity, "Audio file too large", "FILE_TOO_LARGE", map[string]any{"max_size_mb": 100})
		return
	}
	q := r.URL.Query()
	duration, text := heard.transcript(q)
	resp := map[string]any{"status": "success", "transcription": text,
		"metadata": map[string]any{"duration": round2(duration), "fileSize": heard.n}}
	if q.Get("word_timestamps") == "true" {
		resp["word_timestamps"] = timedWords(strings.Fields(text), duration, false)
	}
	writeJSON(w, http.StatusOK, resp)
}

func (e *Emulator) selfHostHealth(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/healthz":
		io.WriteString(w, "true")
	default:
		writeJSON(w, http.StatusOK, map[string]string{"status": "healthy"})
	}
}

func selfHostError(w http.ResponseWriter, code int, msg, errCode string, extra map[string]any) {
	body := map[string]any{"error": msg, "code": errCode}
	for k, v := range extra {
		body[k] = v
	}
	writeJSON(w, code, body)
}

// containerOf names the audio container from its first bytes, or "".
func containerOf(b []byte) string {
	switch {
	case len(b) >= 12 && string(b[:4]) == "RIFF" && string(b[8:12]) == "WAVE":
		return "wav"
	case bytes.HasPrefix(b, []byte("ID3")) || (len(b) >= 2 && b[0] == 0xFF && b[1]&0xE0 == 0xE0):
		return "mp3"
	case bytes.HasPrefix(b, []byte("fLaC")):
		return "flac"
	case bytes.HasPrefix(b, []byte("OggS")):
		return "ogg"
	case len(b) >= 8 && string(b[4:8]) == "ftyp":
		return "m4a"
	case bytes.HasPrefix(b, []byte{0x1A, 0x45, 0xDF, 0xA3}):
		return "webm"
	}
	return ""
}
