package smallest

import (
	"context"
	"crypto/sha256"
	"net/http"
	"sync"
	"time"
)

// Voice is one entry of Lightning's voice catalog (docs/upstream.md §1.7).
type Voice struct {
	VoiceID     string    `json:"voiceId"`
	DisplayName string    `json:"displayName"`
	Tags        VoiceTags `json:"tags"`
	// Description and PreviewURL come from the browsing catalog
	// (get-all-models); empty when it does not describe the voice.
	Description string `json:"description"`
	PreviewURL  string `json:"audioPreview"`
}

// VoiceTags describes a voice. Any field may be empty.
type VoiceTags struct {
	Language []string `json:"language"`
	Accent   string   `json:"accent"`
	Gender   string   `json:"gender"`
	Age      string   `json:"age"`
	Emotions []string `json:"emotions"`
	UseCases []string `json:"usecases"`
}

// maxCatalog bounds the voice catalog response.
const maxCatalog = 16 << 20

// ListVoices returns the voices of GET /waves/v1/lightning-v3.1/get_voices,
// which lists the standard and Pro catalogs together. With Config.VoicesTTL
// the list is cached per key, and concurrent calls share one request.
func (c *Client) ListVoices(ctx context.Context) ([]Voice, error) {
	return c.voices.get(ctx, keyOf(c.credential(ctx)), func(ctx context.Context) ([]Voice, error) {
		var out struct {
			Voices []Voice `json:"voices"`
		}
		if err := c.getJSON(ctx, "/waves/v1/lightning-v3.1/get_voices", &out); err != nil {
			return nil, err
		}
		// The browsing catalog adds a description and a preview; the list
		// is whole without it, so its failure only leaves them out.
		var browse struct {
			Voices []Voice `json:"voices"`
		}
		if c.getJSON(ctx, "/waves/v1/voice/get-all-models", &browse) == nil {
			described := make(map[string]Voice, len(browse.Voices))
			for _, v := range browse.Voices {
				described[v.VoiceID] = v
			}
			for i, v := range out.Voices {
				if d, ok := described[v.VoiceID]; ok {
					out.Voices[i].Description, out.Voices[i].PreviewURL = d.Description, d.PreviewURL
				}
			}
		}
		return out.Voices, nil
	})
}

// getJSON GETs path and decodes its JSON response into v.
func (c *Client) getJSON(ctx context.Context, path string, v any) error {
	return c.sendJSON(ctx, http.MethodGet, path, nil, v)
}

func keyOf(secret string) string {
	d := sha256.Sum256([]byte(secret))
	return string(d[:])
}

// voiceCache holds voice lists per key for a short time: a busy gateway
// would otherwise ask Smallest on every call.
type voiceCache struct {
	ttl     time.Duration
	mu      sync.Mutex
	entries map[string]*voiceEntry
}

type voiceEntry struct {
	ready  chan struct{} // closed when voices and err are set
	voices []Voice
	err    error
	at     time.Time

	// waiters counts the callers waiting for the fetch (guarded by the
	// cache's mutex); the last to give up cancels it.
	waiters int
	cancel  context.CancelFunc
}

// maxCachedKeys bounds the cache; past it, expired entries are dropped.
const maxCachedKeys = 1024

// fetchTimeout bounds a shared fetch, which no single caller's deadline
// governs: a caller that joins a fetch must not inherit the deadline of the
// caller that started it.
const fetchTimeout = 30 * time.Second

func newVoiceCache(ttl time.Duration) *voiceCache {
	return &voiceCache{ttl: ttl, entries: map[string]*voiceEntry{}}
}

func (vc *voiceCache) get(ctx context.Context, key string, fetch func(context.Context) ([]Voice, error)) ([]Voice, error) {
	if vc.ttl <= 0 {
		return fetch(ctx)
	}
	vc.mu.Lock()
	e := vc.entries[key]
	if e == nil || (isClosed(e.ready) && (e.err != nil || time.Since(e.at) > vc.ttl)) {
		e = &voiceEntry{ready: make(chan struct{})}
		vc.prune()
		vc.entries[key] = e
		// The fetch serves every caller waiting on it, so no one caller's
		// cancel or deadline may end it: it runs while anyone waits, within
		// its own time limit.
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), fetchTimeout)
		e.cancel = cancel
		go func() {
			defer cancel()
			voices, err := fetch(fctx)
			vc.mu.Lock()
			e.voices, e.err, e.at = voices, err, time.Now()
			vc.mu.Unlock()
			close(e.ready)
		}()
	}
	e.waiters++
	vc.mu.Unlock()
	select {
	case <-e.ready:
		vc.mu.Lock()
		e.waiters--
		vc.mu.Unlock()
		return e.voices, e.err
	case <-ctx.Done():
		vc.mu.Lock()
		e.waiters--
		if e.waiters == 0 && !isClosed(e.ready) {
			// Nobody wants the answer any more: stop asking Smallest, and
			// let the next caller start afresh rather than join a fetch
			// that is being cancelled.
			e.cancel()
			if vc.entries[key] == e {
				delete(vc.entries, key)
			}
		}
		vc.mu.Unlock()
		return nil, ctx.Err()
	}
}

// invalidate forgets a key's list, after a change such as a new clone.
func (vc *voiceCache) invalidate(key string) {
	vc.mu.Lock()
	defer vc.mu.Unlock()
	if e := vc.entries[key]; e != nil && isClosed(e.ready) {
		delete(vc.entries, key)
	}
}

func (vc *voiceCache) prune() {
	if len(vc.entries) < maxCachedKeys {
		return
	}
	for k, e := range vc.entries {
		if isClosed(e.ready) && time.Since(e.at) > vc.ttl {
			delete(vc.entries, k)
		}
	}
}

func isClosed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
