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
	"strconv"
	"strings"
	"time"

	speechv1 "github.com/speechgate/speechgate/gen/speech/v1"
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

// Heartbeat intervals a stream may ask for, in milliseconds: often enough
// for any proxy's idle timer, and not so often that heartbeats are traffic.
const (
	minHeartbeatMS = 1000
	maxHeartbeatMS = 300_000
)

// CheckHeartbeat records a violation unless ms is 0 (no heartbeats) or an
// allowed interval, and returns the interval.
func CheckHeartbeat(v *rpcerror.Violations, field string, ms uint32) time.Duration {
	if ms != 0 && (ms < minHeartbeatMS || ms > maxHeartbeatMS) {
		v.Add(field, rpcerror.RuleOutOfRange, "must be 0 (no heartbeats) or from %d to %d, got %d", minHeartbeatMS, maxHeartbeatMS, ms)
	}
	return time.Duration(ms) * time.Millisecond
}

// assignedSegment is the form of the segment ids the gateway assigns.
var assignedSegment = regexp.MustCompile(`^seg-[0-9]+$`)

// AssignedSegmentID is the id the gateway gives a stream's n-th segment
// (from 1) when its flush names none.
func AssignedSegmentID(n int) string { return "seg-" + strconv.Itoa(n) }

// CheckSegmentID records what is wrong with the segment id a text piece
// gives, if any.
func CheckSegmentID(v *rpcerror.Violations, piece *speechv1.TextPiece) {
	id := piece.GetSegmentId()
	switch {
	case id == "":
	case !piece.GetFlush():
		v.Add("text.segment_id", rpcerror.RuleConflict, "may only be set with flush: it names the segment the flush ends")
	case assignedSegment.MatchString(id):
		v.Add("text.segment_id", rpcerror.RuleBadFormat, "must not have the form seg-<number>, which is how the gateway names segments given no id")
	default:
		CheckID(v, "text.segment_id", id, false)
	}
}
