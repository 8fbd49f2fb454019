package contract

import (
	"slices"
	"strings"

	"github.com/speechgate/speechgate/internal/rpcerror"
)

// synthesisLanguages are the language codes Lightning accepts (docs/upstream.md §1.2).
var synthesisLanguages = []string{"auto", "en", "hi", "mr", "kn", "ta", "bn", "gu", "te", "ml", "pa", "or", "es", "de",
	"fr", "it", "nl", "sv", "pt", "ru", "el", "fi", "no", "pl", "ar", "zh", "id", "ja", "ko", "ms", "tr", "vi"}

// transcriptionLanguages are the languages of Pulse's pre-recorded endpoint
// (docs/upstream.md §2.2), without da, lv, et and mt, which the newest changelog says
// batch transcription does not offer.
var transcriptionLanguages = []string{"en", "hi", "de", "es", "ru", "it", "fr", "nl", "pt", "uk", "pl", "cs", "sk",
	"ro", "fi", "sv", "bg", "hu", "lt", "zh", "ja", "ko", "multi-eu", "multi-asian", "multi-indic"}

// liveLanguages are the languages of Pulse's realtime endpoint (docs/upstream.md §2.4).
var liveLanguages = []string{"en", "hi", "de", "es", "ru", "it", "fr", "nl", "pt", "zh", "yue", "ja", "ko", "gu", "mr",
	"or", "bn", "ta", "te", "kn", "ml", "north_indic", "multi-asian", "multi-south-indic"}

// maxLanguageLen bounds a language code or tag: the longest Smallest uses
// is "multi-south-indic".
const maxLanguageLen = 32

// checkLanguage records a violation unless lang is empty or one of allowed.
func checkLanguage(v *rpcerror.Violations, field, lang string, allowed []string) {
	switch {
	case len(lang) > maxLanguageLen:
		v.Add(field, rpcerror.RuleTooLong, "must be a language code of at most %d characters, got %d bytes", maxLanguageLen, len(lang))
	case lang != "" && !slices.Contains(allowed, lang):
		v.Add(field, rpcerror.RuleNotAllowed, "must be one of %s, got %s", strings.Join(allowed, ", "), rpcerror.Quote(lang))
	}
}

// languageNames maps ISO 639-1 codes to the English names Smallest uses as
// voice language tags.
var languageNames = map[string]string{
	"en": "english", "hi": "hindi", "mr": "marathi", "kn": "kannada", "ta": "tamil", "bn": "bengali",
	"gu": "gujarati", "te": "telugu", "ml": "malayalam", "pa": "punjabi", "or": "odia", "es": "spanish",
	"de": "german", "fr": "french", "it": "italian", "nl": "dutch", "sv": "swedish", "pt": "portuguese",
	"ru": "russian", "el": "greek", "fi": "finnish", "no": "norwegian", "pl": "polish", "ar": "arabic",
	"zh": "chinese", "id": "indonesian", "ja": "japanese", "ko": "korean", "ms": "malay", "tr": "turkish",
	"vi": "vietnamese", "uk": "ukrainian", "cs": "czech", "sk": "slovak", "ro": "romanian", "bg": "bulgarian",
	"hu": "hungarian", "lt": "lithuanian",
}

// languageCode returns the ISO code of a Smallest language tag, or "".
func languageCode(tag string) string {
	tag = strings.ToLower(tag)
	for code, name := range languageNames {
		if name == tag {
			return code
		}
	}
	return ""
}
