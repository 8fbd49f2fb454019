// Package emulator is a stand-in for Smallest AI's Waves API, so that the
// gateway can be tried, tested and benchmarked with no key and no network.
//
// It speaks the documented wire formats (docs/upstream.md): Lightning
// synthesis as SSE frames of base64 audio at the requested rate and encoding,
// the voice catalog, Pulse transcription JSON and its realtime WebSocket, the
// self-hosted server's endpoints, and the documented error bodies. It accepts
// any non-empty key.
//
// Its audio is synthetic: a hum with a syllable rhythm, not speech. PCM and WAV
// output carry the synthesized text in the least significant bit of the
// samples, and the emulated transcription reads it back, so that transcribing
// the emulator's own speech returns the text that was spoken.
package emulator

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Options tune the emulator. The zero value behaves like the real API at full speed.
type Options struct {
	// ChunkBytes is the decoded audio size of one SSE frame. Default 960,
	// which matches what Smallest sends.
	ChunkBytes int
	// Pace is how fast audio is sent relative to real time: 1 sends one second
	// of audio per second, 0 sends as fast as possible.
	Pace float64
	// FirstByteDelay is waited before the first audio frame, as upstream
	// synthesis latency.
	FirstByteDelay time.Duration
	// AudioPerChar is the audio length of one character of text at speed 1.
	// Default 60 ms, close to natural speech.
	AudioPerChar time.Duration
	// CloseAfterComplete makes the synthesis WebSocket close after its
	// complete message, as one of Smallest's pages says it does; by default
	// it stays open for another synthesis, as LiveKit's plugin finds.
	CloseAfterComplete bool
	// MaxLiveSessions caps concurrent realtime sessions; one more is closed
	// with code 1008, as Smallest does. Zero: Concurrency's.
	MaxLiveSessions int
	// Concurrency is each account's (each key's) concurrency limit, as
	// Smallest enforces one: HTTP syntheses and transcriptions beyond it
	// get 429, realtime sessions are closed with 1008, and synthesis
	// WebSocket handshakes beyond 5 per unit get 429. Zero: no limit; the
	// use is counted either way (see Stats).
	Concurrency int
	// Faults are injected at random into a share of requests (see faults.go);
	// a request can also name its own fault in its key.
	Faults []FaultRate
	// HydraIdleTimeout is how long a Hydra session may pass with no traffic
	// either way before it is closed. Default 30 s, as Smallest documents.
	HydraIdleTimeout time.Duration
	// HydraToolTimeout is how long Hydra waits for a called tool's output
	// and response.create before it reports tool_response_timeout.
	// Default 10 s.
	HydraToolTimeout time.Duration
	// Logger receives a line per request; nil logs nothing.
	Logger *slog.Logger
}

// USPrefix is the path under which the emulator plays Smallest's US host.
const USPrefix = "/us"

// Emulator is an http.Handler that serves the emulated API.
type Emulator struct {
	opts Options
	log  *slog.Logger
	mux  *http.ServeMux

	accounts *accounts

	mu     sync.Mutex
	dicts  map[string]*dictionary
	clones []*clone
}

// New returns an Emulator.
func New(opts Options) *Emulator {
	if opts.ChunkBytes <= 0 {
		opts.ChunkBytes = 960
	}
	if opts.AudioPerChar <= 0 {
		opts.AudioPerChar = 60 * time.Millisecond
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	e := &Emulator{opts: opts, log: log.With("component", "emulator"), mux: http.NewServeMux(), dicts: map[string]*dictionary{},
		accounts: newAccounts(opts)}
	e.mux.HandleFunc("POST /waves/v1/tts/live", e.authed(e.limited(useSynthesis, ttsBusy, e.ttsLive)))
	e.mux.HandleFunc("GET /waves/v1/tts/live", e.authed(e.limited(useWebSocket, ttsBusy, e.ttsWS)))
	e.mux.HandleFunc("GET /waves/v1/pronunciation-dicts", e.authed(e.listDicts))
	e.mux.HandleFunc("POST /waves/v1/pronunciation-dicts", e.authed(e.createDict))
	e.mux.HandleFunc("PUT /waves/v1/pronunciation-dicts", e.authed(e.updateDict))
	e.mux.HandleFunc("DELETE /waves/v1/pronunciation-dicts", e.authed(e.deleteDict))
	e.mux.HandleFunc("POST /waves/v1/voice-cloning", e.authed(e.createClone))
	e.mux.HandleFunc("GET /waves/v1/voice-cloning", e.authed(e.listClones))
	e.mux.HandleFunc("GET /waves/v1/lightning-v3.1/get_voices", e.authed(e.voices))
	e.mux.HandleFunc("GET /waves/v1/voice/get-all-models", e.authed(e.browse))
	e.mux.HandleFunc("GET /_emulator/previews/{file}", e.preview)
	e.mux.HandleFunc("POST /waves/v1/stt/", e.authed(e.limited(useTranscription, sttBusy, e.transcribe)))
	e.mux.HandleFunc("DELETE /waves/v1/analytics/asr/history/{id}", e.authed(e.deleteHistory))
	e.mux.HandleFunc("GET /waves/v1/stt/live", e.authed(e.live(false)))
	// The US host, which alone serves some realtime languages, is emulated
	// under this prefix: point the gateway's US base URL at it.
	e.mux.HandleFunc("GET "+USPrefix+"/waves/v1/stt/live", e.authed(e.live(true)))
	e.mux.HandleFunc("GET /waves/v1/s2s", e.hydra)
	e.mux.HandleFunc("GET /waves/v1/health", e.health)
	e.mux.HandleFunc("/_emulator/stats", e.stats)
	// The self-hosted server's routes (docs/upstream.md §4), side by side with the
	// cloud's, so that one emulator serves either backend.
	e.mux.HandleFunc("POST /v1/listen", e.selfHostAuthed(e.listenV1))
	e.mux.HandleFunc("POST /v1/speak", e.selfHostAuthed(e.speakV1))
	e.mux.HandleFunc("POST /api/v1/lightning/get_text", e.getText) // Smallest's own test script sends no key
	for _, p := range []string{"/health", "/api/v1/health", "/healthz"} {
		e.mux.HandleFunc("GET "+p, e.selfHostHealth)
	}
	// Retired routes answer as the real API documents (docs/upstream.md §1.1).
	for _, model := range []string{"lightning-v2", "lightning-large", "prof-voice-cloning"} {
		e.mux.HandleFunc("/waves/v1/"+model+"/", e.retired)
	}
	return e
}

func (e *Emulator) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if f, ok := e.pickFault(r); ok {
		e.log.InfoContext(r.Context(), "injecting a fault", "fault", f.kind, "after", f.after, "method", r.Method, "path", r.URL.Path)
		if e.answerFault(f, w, r) {
			return
		}
		r = r.WithContext(context.WithValue(r.Context(), faultKey{}, f))
		streamed := r.Header.Get("Upgrade") != "" || strings.HasSuffix(r.URL.Path, "/tts/live")
		if f.kind == "malformed" && !streamed {
			w = &malformedBody{ResponseWriter: w}
		}
	}
	e.mux.ServeHTTP(w, r)
}

// authed accepts any non-empty bearer key, as the issue of keys is not the
// emulator's to judge; a missing key gets the documented 401 body.
func (e *Emulator) authed(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		scheme, key, _ := strings.Cut(r.Header.Get("Authorization"), " ")
		if !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(key) == "" {
			writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "Unauthorized", "message": "Bearer token is missing or invalid."})
			return
		}
		id := newID()
		w.Header().Set("X-Request-Id", id)
		e.log.DebugContext(r.Context(), "emulated request", "method", r.Method, "path", r.URL.Path, "request_id", id)
		h(w, r)
	}
}

func (e *Emulator) health(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"status": "ok", "emulator": true,
		"mongo": map[string]string{"status": "connected"}, "redis": map[string]string{"status": "connected"}})
}

func (e *Emulator) retired(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusGone, map[string]string{
		"status": "error", "error_code": "MODEL_DEPRECATED",
		"message":              "This model is retired. Use lightning_v3.1.",
		"recommended_endpoint": "/waves/v1/tts",
	})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

func newID() string {
	var b [12]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
