package rpcerror

import (
	"fmt"
	"strings"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
)

// Violations collects what is wrong with a request, field by field, so that a
// caller learns every problem at once rather than one per attempt.
type Violations struct {
	list   *[]*errdetails.BadRequest_FieldViolation
	prefix string
}

// Add records that field breaks a rule. reason is a short UPPER_SNAKE
// classification (REQUIRED, OUT_OF_RANGE, ...); the description states the rule.
func (v *Violations) Add(field, reason, format string, args ...any) {
	if v.list == nil {
		v.list = new([]*errdetails.BadRequest_FieldViolation)
	}
	if v.prefix != "" {
		field = v.prefix + "." + field
	}
	*v.list = append(*v.list, FieldViolation(field, fmt.Sprintf(format, args...), reason))
}

// Under returns a Violations that records into v with field names inside
// the message field prefix ("config" makes "language" "config.language").
func (v *Violations) Under(prefix string) *Violations {
	if v.list == nil {
		v.list = new([]*errdetails.BadRequest_FieldViolation)
	}
	if prefix == "" {
		return v
	}
	if v.prefix != "" {
		prefix = v.prefix + "." + prefix
	}
	return &Violations{list: v.list, prefix: prefix}
}

// Err returns nil if nothing was recorded, otherwise an INVALID_ARGUMENT
// status whose message lists every violation and whose google.rpc.BadRequest
// names each field.
func (v *Violations) Err() error {
	if v.list == nil || len(*v.list) == 0 {
		return nil
	}
	all := *v.list
	parts := make([]string, 0, min(len(all), maxListed)+1)
	for _, fv := range all[:min(len(all), maxListed)] {
		parts = append(parts, fv.GetField()+": "+fv.GetDescription())
	}
	if len(all) > maxListed {
		parts = append(parts, fmt.Sprintf("and %d more (see the BadRequest detail)", len(all)-maxListed))
	}
	return New(codes.InvalidArgument, "invalid request: "+strings.Join(parts, "; "), ReasonInvalidRequest, nil,
		BadRequest(all))
}

// FieldViolation is one violation for a BadRequest, its field and
// description bounded in size.
func FieldViolation(field, description, reason string) *errdetails.BadRequest_FieldViolation {
	return &errdetails.BadRequest_FieldViolation{Field: clip(field, maxField), Description: clip(description, maxDescription), Reason: reason}
}

// BadRequest lists violations in a BadRequest of bounded size: a request
// can break a rule thousands of times (10,000 keywords), and the first few
// say what to fix; a last entry says how many more there were.
func BadRequest(all []*errdetails.BadRequest_FieldViolation) *errdetails.BadRequest {
	if len(all) <= maxViolations {
		return &errdetails.BadRequest{FieldViolations: all}
	}
	listed := make([]*errdetails.BadRequest_FieldViolation, 0, maxViolations)
	listed = append(listed, all[:maxViolations-1]...)
	listed = append(listed, &errdetails.BadRequest_FieldViolation{
		Reason:      ReasonInvalidRequest,
		Description: fmt.Sprintf("and %d more violations, not listed", len(all)-(maxViolations-1)),
	})
	return &errdetails.BadRequest{FieldViolations: listed}
}

// Violation reasons used by the gateway's own validation.
const (
	RuleRequired   = "REQUIRED"
	RuleTooLong    = "TOO_LONG"
	RuleTooMany    = "TOO_MANY"
	RuleOutOfRange = "OUT_OF_RANGE"
	RuleNotAllowed = "NOT_ALLOWED"
	RuleBadFormat  = "BAD_FORMAT"
	RuleConflict   = "CONFLICT"
)
