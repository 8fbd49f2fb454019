package synthcache

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"

	"github.com/speechgate/speechgate/internal/smallest"
)

// Key names one synthesis's audio: a digest of everything that shapes it.
type Key [sha256.Size]byte

// String is the key in hex, as Redis and logs see it.
func (k Key) String() string { return hex.EncodeToString(k[:]) }

// keyOf digests what shapes a synthesis's audio: the text, the voice and
// its settings, the output format, and the pronunciation dictionaries
// with their versions; scoped to an account unless scope is "". The
// request's ids, which Smallest only echoes, are left out.
func keyOf(scope string, r *smallest.SpeechRequest, dictionaries string) Key {
	shape := struct {
		Scope        string   `json:"scope"`
		Text         string   `json:"text"`
		Voice        string   `json:"voice"`
		Model        string   `json:"model"`
		Rate         int      `json:"rate"`
		Speed        float32  `json:"speed"`
		Language     string   `json:"language"`
		NumberLang   string   `json:"number_language"`
		Math         bool     `json:"math"`
		Format       string   `json:"format"`
		Dictionaries []string `json:"dictionaries"`
		Versions     string   `json:"versions"`
	}{scope, r.Text, r.VoiceID, r.Model, r.SampleRate, r.Speed, r.Language, r.NumberPronunciationLanguage,
		r.MathNotation, r.OutputFormat, r.PronunciationDicts, dictionaries}
	b, _ := json.Marshal(shape) // a struct of strings and numbers always marshals
	return sha256.Sum256(b)
}
