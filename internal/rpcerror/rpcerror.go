// Package rpcerror builds the gRPC statuses the gateway returns, each with
// google.rpc details a caller can program against: the ErrorInfo every
// status carries, the reasons it uses, BadRequest field violations, and
// caller input quoted at a bounded size. It depends on nothing of the
// gateway's own, so that every layer can build its refusals with it; the
// translation of upstream failures is package translate's.
package rpcerror

import (
	"fmt"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/protoadapt"
	"google.golang.org/protobuf/types/known/durationpb"
)

// Domain is the ErrorInfo domain of every error the gateway returns.
const Domain = "speechgate"

// ErrorInfo reasons the gateway uses when Smallest gives no code of its own.
const (
	ReasonInvalidRequest             = "INVALID_REQUEST"
	ReasonMissingCredentials         = "MISSING_CREDENTIALS"
	ReasonInvalidCredentials         = "INVALID_CREDENTIALS"
	ReasonTokenExpired               = "TOKEN_EXPIRED"
	ReasonTokenScope                 = "TOKEN_SCOPE"
	ReasonUpstreamUnauthenticated    = "UPSTREAM_UNAUTHENTICATED"
	ReasonUpstreamPermissionDenied   = "UPSTREAM_PERMISSION_DENIED"
	ReasonUpstreamRateLimited        = "UPSTREAM_RATE_LIMITED"
	ReasonUpstreamInvalidArgument    = "UPSTREAM_INVALID_ARGUMENT"
	ReasonUpstreamNotFound           = "UPSTREAM_NOT_FOUND"
	ReasonUpstreamGone               = "UPSTREAM_GONE"
	ReasonUpstreamPayloadTooLarge    = "UPSTREAM_PAYLOAD_TOO_LARGE"
	ReasonUpstreamUnsupportedFormat  = "UPSTREAM_UNSUPPORTED_FORMAT"
	ReasonUpstreamUnavailable        = "UPSTREAM_UNAVAILABLE"
	ReasonUpstreamTimeout            = "UPSTREAM_TIMEOUT"
	ReasonUpstreamUnreachable        = "UPSTREAM_UNREACHABLE"
	ReasonUpstreamNoAnswer           = "UPSTREAM_NO_ANSWER"
	ReasonUpstreamStreamBroken       = "UPSTREAM_STREAM_BROKEN"
	ReasonUpstreamUnresponsive       = "UPSTREAM_UNRESPONSIVE"
	ReasonUpstreamSessionIdle        = "UPSTREAM_SESSION_IDLE"
	ReasonUpstreamStreamError        = "UPSTREAM_STREAM_ERROR"
	ReasonUpstreamMalformedResponse  = "UPSTREAM_MALFORMED_RESPONSE"
	ReasonUpstreamUnexpectedResponse = "UPSTREAM_UNEXPECTED_RESPONSE"
	ReasonCancelled                  = "CANCELLED"
	ReasonDeadlineExceeded           = "DEADLINE_EXCEEDED"
	ReasonUnimplemented              = "UNIMPLEMENTED"
	ReasonDraining                   = "DRAINING"
	ReasonCallerTooSlow              = "CALLER_TOO_SLOW"
	ReasonInternal                   = "INTERNAL"
	// ReasonUpstreamBusy: the account's concurrency budget stayed full for
	// as long as the call could wait.
	ReasonUpstreamBusy = "UPSTREAM_BUSY"
	// ReasonQuotaExceeded: the caller's own quota (keys mode) is spent.
	ReasonQuotaExceeded = "QUOTA_EXCEEDED"
	// ReasonPlanNotEntitled: the account's plan does not include the
	// feature (Smallest says so with a 400 that asks to upgrade the plan).
	ReasonPlanNotEntitled = "PLAN_NOT_ENTITLED"
	// ReasonNotAvailableForOrganization: the feature is on an allow-list
	// the organisation is not on, which upgrading does not change.
	ReasonNotAvailableForOrganization = "NOT_AVAILABLE_FOR_ORGANIZATION"
	// ReasonCloneLimitExceeded: the account's voice clones are at their limit.
	ReasonCloneLimitExceeded = "CLONE_LIMIT_EXCEEDED"
	// ReasonCacheMiss: a cache-only synthesis found nothing cached.
	ReasonCacheMiss = "CACHE_MISS"
	// ReasonCacheUnavailable: cached audio could not be read back whole.
	ReasonCacheUnavailable = "CACHE_UNAVAILABLE"
)

// New makes a status with an ErrorInfo (reason, metadata) and any further
// details. The message is bounded in size.
func New(code codes.Code, msg, reason string, meta map[string]string, details ...protoadapt.MessageV1) error {
	st := status.New(code, clip(msg, maxMessage))
	all := append([]protoadapt.MessageV1{&errdetails.ErrorInfo{Reason: reason, Domain: Domain, Metadata: meta}}, details...)
	if withDetails, err := st.WithDetails(all...); err == nil {
		st = withDetails
	}
	return st.Err()
}

// Unauthenticated returns the status for a caller whose credentials are
// missing or wrong. reason is ReasonMissingCredentials or ReasonInvalidCredentials.
func Unauthenticated(reason, msg string) error {
	return New(codes.Unauthenticated, msg, reason, nil)
}

// Draining returns the status for a call that arrives while the gateway shuts
// down: UNAVAILABLE, which clients retry, on another replica.
func Draining() error {
	return New(codes.Unavailable, "the gateway is shutting down; retry on another instance", ReasonDraining, nil)
}

// DrainCut returns the status of a call still in flight when a shutdown's
// grace ran out: UNAVAILABLE with reason DRAINING, as for a call refused
// while draining, and a message that says the call was cut off.
func DrainCut(grace time.Duration) error {
	return New(codes.Unavailable, fmt.Sprintf("the gateway shut down before this call finished: its drain grace of %s ran out; retry on another instance", grace),
		ReasonDraining, map[string]string{"drainGrace": grace.String()})
}

// CallerTooSlow returns the status of a streaming call whose caller left
// it unread for longer than limit: the gateway stopped its upstream request.
func CallerTooSlow(limit time.Duration) error {
	return New(codes.Aborted, fmt.Sprintf("the caller left the stream unread for more than %s, so the gateway stopped the upstream request; read the stream as it arrives", limit),
		ReasonCallerTooSlow, map[string]string{"stallLimit": limit.String()})
}

// Cancelled returns the status of a call its caller cancelled, or left.
func Cancelled() error {
	return New(codes.Canceled, "the call was cancelled", ReasonCancelled, nil)
}

// DeadlineExceeded returns the status of a call whose deadline expired.
func DeadlineExceeded() error {
	return New(codes.DeadlineExceeded, "the call's deadline expired", ReasonDeadlineExceeded, nil)
}

// Unimplemented returns the status for a feature the configured upstream does not offer.
func Unimplemented(msg string) error {
	return New(codes.Unimplemented, msg, ReasonUnimplemented, nil)
}

// Exhausted returns a RESOURCE_EXHAUSTED status for a limit the gateway
// enforces: an ErrorInfo with reason and meta, a QuotaFailure naming the
// limit's subject (never a key) and what was exceeded, and, when retryAfter
// is positive, a RetryInfo saying when to try again.
func Exhausted(msg, reason string, meta map[string]string, subject, description string, retryAfter time.Duration) error {
	details := []protoadapt.MessageV1{&errdetails.QuotaFailure{Violations: []*errdetails.QuotaFailure_Violation{{
		Subject: subject, Description: description}}}}
	if retryAfter > 0 {
		details = append(details, &errdetails.RetryInfo{RetryDelay: durationpb.New(retryAfter)})
	}
	return New(codes.ResourceExhausted, msg, reason, meta, details...)
}

// Summary is what the log line, the metrics and the retry pushback of a
// failed call need from its status, read once.
type Summary struct {
	Code              codes.Code
	Reason            string
	UpstreamRequestID string
	// RetryDelay is RetryInfo's delay; 0 when there is none.
	RetryDelay time.Duration
}

// Summarize reads err's status and details once.
func Summarize(err error) Summary {
	st := status.Convert(err)
	s := Summary{Code: st.Code()}
	for _, d := range st.Details() {
		switch d := d.(type) {
		case *errdetails.ErrorInfo:
			if s.Reason == "" {
				s.Reason, s.UpstreamRequestID = d.GetReason(), d.GetMetadata()["upstreamRequestId"]
			}
		case *errdetails.RetryInfo:
			s.RetryDelay = d.GetRetryDelay().AsDuration()
		}
	}
	return s
}

// ReasonOf returns the reason of err's ErrorInfo, or "" if it has none.
func ReasonOf(err error) string { return Summarize(err).Reason }

// PartError is a failure in one part of a request, such as one text piece
// of a long synthesis: its status says which part, in the message and in
// the ErrorInfo metadata.
type PartError struct {
	Err  error
	Part string
	Meta map[string]string
}

func (e *PartError) Error() string { return e.Part + ": " + e.Err.Error() }
func (e *PartError) Unwrap() error { return e.Err }

// InPart says which part of the request err happened in.
func InPart(err error, part string, meta map[string]string) error {
	if err == nil {
		return nil
	}
	return &PartError{Err: err, Part: part, Meta: meta}
}
