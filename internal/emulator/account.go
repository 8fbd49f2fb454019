package emulator

import (
	"encoding/json"
	"net/http"
	"strings"
	"sync"
)

// The uses of an account the emulator limits and counts.
const (
	useSynthesis     = "synthesis"     // POST /waves/v1/tts/live
	useWebSocket     = "websocket"     // a synthesis WebSocket, for as long as it is open
	useLive          = "live"          // a realtime recognition session
	useTranscription = "transcription" // POST /waves/v1/stt/
)

// accounts emulates the concurrency limit Smallest enforces per account
// (docs/upstream.md §3.4, §6.7) and counts, per use, the most requests any
// one key had in progress at once, for tests and the bench to read through
// Stats or GET /_emulator/stats.
type accounts struct {
	limits map[string]int // by use; 0: none

	mu       sync.Mutex
	inUse    map[string]map[string]int // key → use → in progress
	peak     map[string]int            // use → most at once for one key
	refused  map[string]int            // use → refused for the limit
	requests map[string]int            // use → requests made
}

func newAccounts(o Options) *accounts {
	n := o.Concurrency
	live := n
	if o.MaxLiveSessions > 0 {
		live = o.MaxLiveSessions
	}
	return &accounts{
		// Up to 5 WebSocket connections per concurrency unit.
		limits: map[string]int{useSynthesis: n, useWebSocket: 5 * n, useLive: live, useTranscription: n},
		inUse:  map[string]map[string]int{}, peak: map[string]int{}, refused: map[string]int{}, requests: map[string]int{},
	}
}

// enter starts a use of key's account; false when the account's limit for
// it is reached, which the caller answers as Smallest does.
func (a *accounts) enter(key, use string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.inUse[key] == nil {
		a.inUse[key] = map[string]int{}
	}
	a.requests[use]++
	n := a.inUse[key][use]
	if limit := a.limits[use]; limit > 0 && n >= limit {
		a.refused[use]++
		return false
	}
	a.inUse[key][use] = n + 1
	a.peak[use] = max(a.peak[use], n+1)
	return true
}

func (a *accounts) leave(key, use string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.inUse[key][use]--
	if a.inUse[key][use] == 0 {
		delete(a.inUse[key], use)
	}
	if len(a.inUse[key]) == 0 {
		delete(a.inUse, key)
	}
}

// Stats is what the emulated accounts saw.
type Stats struct {
	// Limits are the limits in force, by use (0: none).
	Limits map[string]int `json:"limits"`
	// Peak is the most requests of each use one key had in progress at once.
	Peak map[string]int `json:"peak"`
	// Refused counts the requests refused for the limit, by use.
	Refused map[string]int `json:"refused"`
	// InUse is what is in progress now, across keys, by use.
	InUse map[string]int `json:"in_use"`
	// Requests counts the requests made, refused ones included, by use.
	Requests map[string]int `json:"requests"`
}

// Stats returns what the emulated accounts have seen since the start, or
// the last ResetStats.
func (e *Emulator) Stats() Stats {
	a := e.accounts
	a.mu.Lock()
	defer a.mu.Unlock()
	s := Stats{Limits: map[string]int{}, Peak: map[string]int{}, Refused: map[string]int{}, InUse: map[string]int{}, Requests: map[string]int{}}
	for k, v := range a.limits {
		s.Limits[k] = v
	}
	for k, v := range a.peak {
		s.Peak[k] = v
	}
	for k, v := range a.refused {
		s.Refused[k] = v
	}
	for k, v := range a.requests {
		s.Requests[k] = v
	}
	for _, uses := range a.inUse {
		for u, n := range uses {
			s.InUse[u] += n
		}
	}
	return s
}

// ResetStats starts counting peaks, refusals and requests afresh.
func (e *Emulator) ResetStats() {
	a := e.accounts
	a.mu.Lock()
	defer a.mu.Unlock()
	a.peak, a.refused, a.requests = map[string]int{}, map[string]int{}, map[string]int{}
}

// stats serves GET /_emulator/stats, and POST to reset them: the emulator's
// own endpoint, not Smallest's, for a bench in another process.
func (e *Emulator) stats(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodPost {
		e.ResetStats()
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(e.Stats())
}

// keyOf returns the key a request authenticates with.
func keyOf(r *http.Request) string {
	_, key, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok {
		return r.URL.Query().Get("api_key") // Hydra takes its key in the query
	}
	return strings.TrimSpace(key)
}

// limited counts a use of the requester's account for as long as h runs,
// and refuses it with 429 and the endpoint's error body beyond the limit.
func (e *Emulator) limited(use string, body func(requestID string) map[string]string, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		key := keyOf(r)
		if !e.accounts.enter(key, use) {
			writeJSON(w, http.StatusTooManyRequests, body(w.Header().Get("X-Request-Id")))
			return
		}
		defer e.accounts.leave(key, use)
		h(w, r)
	}
}

// ttsBusy is Lightning's 429, in the shape of its documented errors.
func ttsBusy(string) map[string]string {
	return map[string]string{"error": "TooManyRequests", "message": "Concurrency limit exceeded for this account. Retry later or raise the limit."}
}

// sttBusy is Pulse's 429, as /stt/ documents it.
func sttBusy(requestID string) map[string]string {
	return map[string]string{"error": "Too many concurrent requests for this account", "request_id": requestID}
}
