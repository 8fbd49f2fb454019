// Package contract is the mapping between the speech.v1 API and Smallest's,
// in both directions, and the one home of the rules that join them: a
// request is validated against the documented limits and turned into the
// upstream client's request (Plan*); Smallest's answers are turned into
// speech.v1 messages (Transcript, Voice, ...); and Smallest's names for
// request fields and options are turned back into the contract's, for the
// field violations of errors (FieldName, RefuseUnsupported).
//
// The tables here (languages, models, encodings, the voices with word
// timings) are the facts docs/upstream.md records, with their sources.
package contract

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/speechgate/speechgate/internal/rpcerror"
)

// Limits documented in the .proto; the validation below enforces them.
const (
	maxTextChars     = 10000
	maxIDLen         = 128
	maxDictIDs       = 16
	maxURLLen        = 2048
	maxWebhookExtras = 16
	maxExtraKeyLen   = 64
	maxExtraValueLen = 256
	minSpeed         = 0.5
	maxSpeed         = 2.0
	defaultRate      = 24000
)

// idPattern is the form Smallest requires of request and session ids.
var idPattern = regexp.MustCompile(`^[A-Za-z0-9_.\-]+$`)

// CheckID records a violation unless id is empty or a valid identifier.
func CheckID(v *rpcerror.Violations, field, id string, required bool) {
	switch {
	case id == "":
		if required {
			v.Add(field, rpcerror.RuleRequired, "is required")
		}
	case len(id) > maxIDLen:
		v.Add(field, rpcerror.RuleTooLong, "must be at most %d characters, got %d", maxIDLen, len(id))
	case !idPattern.MatchString(id):
		v.Add(field, rpcerror.RuleBadFormat, "must use only the characters [A-Za-z0-9_.-]")
	}
}

func list[T any](vals []T) string {
	parts := make([]string, len(vals))
	for i, x := range vals {
		parts[i] = fmt.Sprint(x)
	}
	return strings.Join(parts, ", ")
}
