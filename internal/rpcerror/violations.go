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
	*v.list = append(*v.list, &errdetails.BadRequest_FieldViolation{
		Field:       field,
		Reason:      reason,
		Description: fmt.Sprintf(format, args...),
	})
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
	parts := make([]string, len(*v.list))
	for i, fv := range *v.list {
		parts[i] = fv.GetField() + ": " + fv.GetDescription()
	}
	return build(codes.InvalidArgument, "invalid request: "+strings.Join(parts, "; "), ReasonInvalidRequest, nil,
		&errdetails.BadRequest{FieldViolations: *v.list})
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
