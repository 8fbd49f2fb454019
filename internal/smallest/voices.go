package smallest

import (
	"context"
	"net/http"
)

// Voice is one entry of Lightning's voice catalog (contract §1.7).
type Voice struct {
	VoiceID     string    `json:"voiceId"`
	DisplayName string    `json:"displayName"`
	Tags        VoiceTags `json:"tags"`
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
// which lists the standard and Pro catalogs together.
func (c *Client) ListVoices(ctx context.Context) ([]Voice, error) {
	var out struct {
		Voices []Voice `json:"voices"`
	}
	if err := c.getJSON(ctx, "/waves/v1/lightning-v3.1/get_voices", &out); err != nil {
		return nil, err
	}
	return out.Voices, nil
}

// getJSON GETs path and decodes its JSON response into v.
func (c *Client) getJSON(ctx context.Context, path string, v any) error {
	req, cl, err := c.newRequest(ctx, http.MethodGet, path, nil, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.do(req, cl)
	if err != nil {
		return err
	}
	return cl.decodeJSON(resp, maxCatalog, v)
}
