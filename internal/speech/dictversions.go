package speech

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"strings"
	"sync"
	"time"
)

// dictVersions names the current content of an account's pronunciation
// dictionaries, so that cached audio made with a dictionary is not reused
// once the dictionary changed. The listing is kept briefly per account, and
// dropped when this gateway changes a dictionary; a change made elsewhere
// (Smallest's dashboard) is seen within dictVersionsTTL.
type dictVersions struct {
	up Upstream

	mu       sync.Mutex
	accounts map[string]dictListing
}

type dictListing struct {
	at       time.Time
	versions map[string]string // id → digest of its entries
}

// dictVersionsTTL bounds how stale a dictionary's version may be.
const dictVersionsTTL = 30 * time.Second

func newDictVersions(up Upstream) *dictVersions {
	return &dictVersions{up: up, accounts: map[string]dictListing{}}
}

// of returns the versions of ids, for the cache key; false when they
// cannot be known now (the listing failed), and the cache must be left out.
func (d *dictVersions) of(ctx context.Context, account string, ids []string) (string, bool) {
	if len(ids) == 0 {
		return "", true
	}
	d.mu.Lock()
	l, ok := d.accounts[account]
	d.mu.Unlock()
	if !ok || time.Since(l.at) > dictVersionsTTL {
		all, err := d.up.ListPronunciationDictionaries(ctx)
		if err != nil {
			return "", false
		}
		l = dictListing{at: time.Now(), versions: map[string]string{}}
		for _, dict := range all {
			b, _ := json.Marshal(dict.Items)
			sum := sha256.Sum256(b)
			l.versions[dict.ID] = hex.EncodeToString(sum[:8])
		}
		d.mu.Lock()
		if len(d.accounts) >= 1024 {
			clear(d.accounts) // passthrough callers bring their own accounts: keep this bounded
		}
		d.accounts[account] = l
		d.mu.Unlock()
	}
	parts := make([]string, len(ids))
	for i, id := range ids {
		parts[i] = id + "=" + l.versions[id] // "" for a dictionary Smallest does not list
	}
	return strings.Join(parts, ","), true
}

// changed drops an account's listing after this gateway changed one of its
// dictionaries.
func (d *dictVersions) changed(account string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.accounts, account)
}
