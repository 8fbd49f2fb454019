package smallest

import (
	"context"
	"net/http"
	"time"
)

// PronunciationDictionary is one of the account's dictionaries (docs/upstream.md §1.8).
type PronunciationDictionary struct {
	ID        string              `json:"id"`
	Items     []PronunciationItem `json:"items"`
	CreatedAt *time.Time          `json:"createdAt,omitempty"`
}

// PronunciationItem says how to say a word.
type PronunciationItem struct {
	Word          string `json:"word"`
	Pronunciation string `json:"pronunciation"`
}

const dictsPath = "/waves/v1/pronunciation-dicts"

// ListPronunciationDictionaries returns the account's dictionaries (a bare JSON array upstream).
func (c *Client) ListPronunciationDictionaries(ctx context.Context) ([]PronunciationDictionary, error) {
	var out []PronunciationDictionary
	return out, c.sendJSON(ctx, http.MethodGet, dictsPath, nil, &out)
}

// CreatePronunciationDictionary creates a dictionary.
func (c *Client) CreatePronunciationDictionary(ctx context.Context, items []PronunciationItem) (*PronunciationDictionary, error) {
	var out PronunciationDictionary
	return &out, c.sendJSON(ctx, http.MethodPost, dictsPath, map[string]any{"items": items}, &out)
}

// UpdatePronunciationDictionary replaces a dictionary's items.
func (c *Client) UpdatePronunciationDictionary(ctx context.Context, id string, items []PronunciationItem) (*PronunciationDictionary, error) {
	var out PronunciationDictionary
	return &out, c.sendJSON(ctx, http.MethodPut, dictsPath, map[string]any{"id": id, "items": items}, &out)
}

// DeletePronunciationDictionary deletes a dictionary; the id travels in a
// JSON body, as the API requires of its DELETE.
func (c *Client) DeletePronunciationDictionary(ctx context.Context, id string) error {
	return c.sendJSON(ctx, http.MethodDelete, dictsPath, map[string]string{"id": id}, nil)
}
