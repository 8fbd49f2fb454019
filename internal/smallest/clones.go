package smallest

import (
	"bytes"
	"context"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"strings"
	"time"
)

// VoiceClone is one of the account's voice clones (docs/upstream.md §1.9).
type VoiceClone struct {
	ID           string     `json:"_id"`
	VoiceID      string     `json:"voiceId"`
	DisplayName  string     `json:"displayName"`
	Description  string     `json:"description"`
	Accent       string     `json:"accent"`
	Tags         []string   `json:"tags"`
	Language     string     `json:"language"`
	Status       string     `json:"status"`
	CloningType  string     `json:"cloningType"`
	ModelIDs     []string   `json:"modelIds"`
	Model        string     `json:"model"`
	CreatedAt    *time.Time `json:"createdAt,omitempty"`
	AudioFileIDs []string   `json:"audioFileNames,omitempty"`
}

// CloneRequest is a sample to make a clone from.
type CloneRequest struct {
	DisplayName string
	// Audio is the sample, at most 5 MB; ContentType its MIME type.
	Audio       []byte
	ContentType string
	Model       string // "lightning-v3.1" or "lightning-v3.1-pro"
	Language    string
	Description string
	Accent      string
	Tags        []string
}

const clonesPath = "/waves/v1/voice-cloning"

// CreateVoiceClone posts a sample (multipart) to make an instant clone.
func (c *Client) CreateVoiceClone(ctx context.Context, r *CloneRequest) (*VoiceClone, error) {
	var body bytes.Buffer // the sample is at most 5 MB, so the form is built whole
	form := multipart.NewWriter(&body)
	for _, f := range [][2]string{{"displayName", r.DisplayName}, {"model", r.Model}, {"language", r.Language},
		{"description", r.Description}, {"accent", r.Accent}, {"tags", strings.Join(r.Tags, ",")}} {
		if f[1] == "" {
			continue
		}
		if err := form.WriteField(f[0], f[1]); err != nil {
			return nil, err
		}
	}
	h := textproto.MIMEHeader{}
	h.Set("Content-Disposition", `form-data; name="file"; filename="sample"`)
	h.Set("Content-Type", r.ContentType)
	part, err := form.CreatePart(h)
	if err != nil {
		return nil, err
	}
	if _, err := part.Write(r.Audio); err != nil {
		return nil, err
	}
	if err := form.Close(); err != nil {
		return nil, err
	}
	var resp *http.Response
	var cl call
	// Never retried: a clone Smallest made from a request that seemed to
	// fail would be made twice.
	_, err = c.attempt(ctx, use{endpoint: "POST " + clonesPath}, func() error {
		req, reqCall, err := c.newRequest(ctx, http.MethodPost, clonesPath, nil, &body)
		if err != nil {
			return err
		}
		cl = reqCall
		req.Header.Set("Content-Type", form.FormDataContentType())
		req.Header.Set("Accept", "application/json")
		resp, err = c.do(req, cl) //nolint:bodyclose // decodeJSON closes it
		return err
	})
	if err != nil {
		return nil, err
	}
	var out struct {
		Data VoiceClone `json:"data"`
	}
	if err := cl.decodeJSON(resp, maxCatalog, &out); err != nil {
		return nil, err
	}
	c.voices.invalidate(keyOf(cl.secret)) // the new clone belongs in the voice list
	return &out.Data, nil
}

// ListVoiceClones lists the account's clones.
func (c *Client) ListVoiceClones(ctx context.Context) ([]VoiceClone, error) {
	var out struct {
		Data []VoiceClone `json:"data"`
	}
	return out.Data, c.sendJSON(ctx, http.MethodGet, clonesPath, nil, &out)
}
