package emulator

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

type dictItem struct {
	Word          string `json:"word"`
	Pronunciation string `json:"pronunciation"`
}

type dictionary struct {
	ID        string     `json:"id"`
	Items     []dictItem `json:"items"`
	CreatedAt time.Time  `json:"createdAt"`
}

// dictIssues validates items as the API documents (minItems 1, strings
// minLength 1) and answers in its zod shape.
func dictIssues(items []dictItem) []map[string]any {
	if len(items) == 0 {
		return []map[string]any{{"code": "too_small", "path": []any{"items"}, "message": "Array must contain at least 1 element(s)"}}
	}
	var out []map[string]any
	for i, it := range items {
		for field, v := range map[string]string{"word": it.Word, "pronunciation": it.Pronunciation} {
			if v == "" {
				out = append(out, map[string]any{"code": "too_small", "path": []any{"items", i, field},
					"message": "String must contain at least 1 character(s)"})
			}
		}
	}
	return out
}

func readDictBody(w http.ResponseWriter, r *http.Request, v any) bool {
	if json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(v) != nil {
		writeJSON(w, http.StatusBadRequest, map[string]any{"error": "Invalid request body", "details": []any{}})
		return false
	}
	return true
}

func (e *Emulator) listDicts(w http.ResponseWriter, _ *http.Request) {
	e.mu.Lock()
	out := make([]*dictionary, 0, len(e.dicts))
	for _, d := range e.dicts {
		out = append(out, d)
	}
	e.mu.Unlock()
	writeJSON(w, http.StatusOK, out) // a bare array, as documented
}

func (e *Emulator) createDict(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Items []dictItem `json:"items"`
	}
	if !readDictBody(w, r, &body) {
		return
	}
	if issues := dictIssues(body.Items); issues != nil {
		writeJSON(w, http.StatusBadRequest, map[string]any{"error": "Invalid request body", "details": issues})
		return
	}
	d := &dictionary{ID: "dict_" + newID(), Items: body.Items, CreatedAt: time.Now().UTC().Truncate(time.Second)}
	e.mu.Lock()
	e.dicts[d.ID] = d
	e.mu.Unlock()
	writeJSON(w, http.StatusOK, d)
}

func (e *Emulator) updateDict(w http.ResponseWriter, r *http.Request) {
	var body struct {
		ID    string     `json:"id"`
		Items []dictItem `json:"items"`
	}
	if !readDictBody(w, r, &body) {
		return
	}
	if issues := dictIssues(body.Items); issues != nil {
		writeJSON(w, http.StatusBadRequest, map[string]any{"error": "Invalid request body", "details": issues})
		return
	}
	e.mu.Lock()
	d := e.dicts[body.ID]
	if d != nil {
		d.Items = body.Items
	}
	e.mu.Unlock()
	if d == nil {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "Pronunciation dictionary not found"})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"id": d.ID, "items": d.Items})
}

func (e *Emulator) deleteDict(w http.ResponseWriter, r *http.Request) {
	var body struct {
		ID string `json:"id"`
	}
	if !readDictBody(w, r, &body) {
		return
	}
	e.mu.Lock()
	_, ok := e.dicts[body.ID]
	delete(e.dicts, body.ID)
	e.mu.Unlock()
	if !ok {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "Pronunciation dictionary not found"})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"id": body.ID, "deleted": true})
}

// cloneMaxBytes is the documented sample limit (docs/upstream.md §1.9).
const cloneMaxBytes = 5 << 20

type clone struct {
	ID          string    `json:"_id"`
	VoiceID     string    `json:"voiceId"`
	DisplayName string    `json:"displayName"`
	Description string    `json:"description"`
	Accent      string    `json:"accent"`
	Tags        []string  `json:"tags"`
	Language    string    `json:"language"`
	Status      string    `json:"status"`
	CloningType string    `json:"cloningType"`
	ModelIDs    []string  `json:"modelIds"`
	CreatedAt   time.Time `json:"createdAt"`
	listed      int       // times listed: a clone is ready once it has been seen processing
}

// status reports the clone's state: "processing" until it has been listed once.
func (c *clone) status() string {
	if c.listed > 0 {
		return "completed"
	}
	return "processing"
}

func (e *Emulator) createClone(w http.ResponseWriter, r *http.Request) {
	bad := func(msg string) { writeJSON(w, http.StatusBadRequest, map[string]string{"error": msg}) }
	if err := r.ParseMultipartForm(cloneMaxBytes + 1<<20); err != nil {
		bad("Invalid multipart body")
		return
	}
	defer func() { _ = r.MultipartForm.RemoveAll() }() // temporary files only
	name := r.FormValue("displayName")
	model := r.FormValue("model")
	if model == "" {
		model = "lightning-v3.1"
	}
	switch {
	case model == "lightning-v2":
		bad("Voice cloning for lightning-v2 is deprecated. Please use lightning-v3.1")
		return
	case model != "lightning-v3.1" && model != "lightning-v3.1-pro":
		bad(fmt.Sprintf("Invalid model %q", model))
		return
	case name == "" || len(name) > 500:
		bad("displayName is required (1-500 characters)")
		return
	}
	file, header, err := r.FormFile("file")
	if err != nil {
		bad("No file provided")
		return
	}
	file.Close()
	if header.Size > cloneMaxBytes {
		bad("File too large. Maximum size is 5MB")
		return
	}
	var tags []string
	if t := r.FormValue("tags"); t != "" {
		tags = strings.Split(t, ",")
	}
	c := &clone{ID: newID(), VoiceID: "voice_" + newID()[:12], DisplayName: name, Description: r.FormValue("description"),
		Accent: r.FormValue("accent"), Tags: tags, Language: r.FormValue("language"), Status: "processing",
		CloningType: "instant", ModelIDs: []string{model}, CreatedAt: time.Now().UTC().Truncate(time.Second)}
	e.mu.Lock()
	e.clones = append(e.clones, c)
	e.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{"message": "Voice clone created successfully", "data": map[string]any{
		"voiceId": c.VoiceID, "displayName": c.DisplayName, "model": model, "status": "processing", "language": c.Language,
		"audioFileNames": []string{header.Filename}, "createdAt": c.CreatedAt, "organizationId": "org_emulator"}})
}

func (e *Emulator) listClones(w http.ResponseWriter, _ *http.Request) {
	e.mu.Lock()
	out := make([]clone, 0, len(e.clones))
	for _, c := range e.clones {
		cp := *c
		cp.Status = c.status()
		out = append(out, cp)
		c.listed++
	}
	e.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{"data": out})
}

// languageTag turns an ISO code into Smallest's voice language tag.
func languageTag(code string) string {
	return map[string]string{"en": "english", "hi": "hindi", "fr": "french", "de": "german", "es": "spanish"}[code]
}
