// Package rpcerror turns every failure the gateway can meet into a gRPC status
// with google.rpc details a caller can program against. It is the only place
// that decides which code an upstream failure gets: handlers return either the
// statuses built here (for bad requests) or the upstream client's errors, and
// the interceptors of this package translate the latter on the way out.
//
// Every status it makes carries a google.rpc.ErrorInfo in the "speechgate"
// domain. Its reason is Smallest's own error code when Smallest gave one
// (MODEL_DEPRECATED, LICENSE_EXPIRED, ...), otherwise one of the Reason
// constants; its metadata says what the upstream answered.
package rpcerror

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/protoadapt"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/speechgate/speechgate/internal/smallest"
)

// Domain is the ErrorInfo domain of every error the gateway returns.
const Domain = "speechgate"

// ErrorInfo reasons the gateway uses when Smallest gives no code of its own.
const (
	ReasonInvalidRequest             = "INVALID_REQUEST"
	ReasonMissingCredentials         = "MISSING_CREDENTIALS"
	ReasonInvalidCredentials         = "INVALID_CREDENTIALS"
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
	ReasonUpstreamStreamError        = "UPSTREAM_STREAM_ERROR"
	ReasonUpstreamMalformedResponse  = "UPSTREAM_MALFORMED_RESPONSE"
	ReasonUpstreamUnexpectedResponse = "UPSTREAM_UNEXPECTED_RESPONSE"
	ReasonCancelled                  = "CANCELLED"
	ReasonDeadlineExceeded           = "DEADLINE_EXCEEDED"
	ReasonUnimplemented              = "UNIMPLEMENTED"
	ReasonDraining                   = "DRAINING"
	ReasonCallerTooSlow              = "CALLER_TOO_SLOW"
	ReasonInternal                   = "INTERNAL"
)

// FromError returns err as a gRPC status error. Status errors pass through
// unchanged; upstream failures, context errors and anything else are
// translated. It returns nil for nil.
func FromError(err error) error {
	if err == nil {
		return nil
	}
	var pe *partError
	if errors.As(err, &pe) {
		return locate(FromError(pe.err), pe)
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	var up *smallest.Error
	switch {
	case errors.As(err, &up):
		return fromUpstream(up)
	case errors.Is(err, context.Canceled):
		return build(codes.Canceled, "the call was cancelled", ReasonCancelled, nil)
	case errors.Is(err, context.DeadlineExceeded):
		return build(codes.DeadlineExceeded, "the call's deadline expired", ReasonDeadlineExceeded, nil)
	}
	return build(codes.Internal, "internal error: "+err.Error(), ReasonInternal, nil)
}

// mapping is how one class of upstream failure is presented.
type mapping struct {
	code   codes.Code
	reason string
	lead   string // the start of the status message
}

func classify(e *smallest.Error) mapping {
	switch e.Kind {
	case smallest.KindTimeout:
		return mapping{codes.DeadlineExceeded, ReasonUpstreamTimeout, "Smallest did not answer in time"}
	case smallest.KindUnreachable:
		return mapping{codes.Unavailable, ReasonUpstreamUnreachable, "could not reach Smallest (the request was not sent)"}
	case smallest.KindNoAnswer:
		return mapping{codes.Unavailable, ReasonUpstreamNoAnswer, "the connection to Smallest broke after the request was sent, before an answer"}
	case smallest.KindStreamBroken:
		return mapping{codes.Unavailable, ReasonUpstreamStreamBroken, "Smallest's stream broke off"}
	case smallest.KindMalformed:
		return mapping{codes.Internal, ReasonUpstreamMalformedResponse, "Smallest's answer could not be understood"}
	}
	s := e.Status()
	m := byStatus(s, e.Code)
	if e.Kind == smallest.KindStreamError && m.reason != ReasonUpstreamRateLimited {
		// An error frame inside a stream that had started: its status, if it
		// carried one, picks the code; the reason says where it came from.
		m.reason = ReasonUpstreamStreamError
		if s < 400 {
			m.code, m.lead = codes.Unavailable, "Smallest reported an error mid-stream"
		}
	}
	return m
}

func byStatus(s int, code string) mapping {
	switch {
	case s == http.StatusUnauthorized:
		return mapping{codes.Unauthenticated, ReasonUpstreamUnauthenticated, "Smallest rejected the credentials"}
	case s == http.StatusForbidden:
		return mapping{codes.PermissionDenied, ReasonUpstreamPermissionDenied, "Smallest denied access"}
	case s == http.StatusTooManyRequests:
		return mapping{codes.ResourceExhausted, ReasonUpstreamRateLimited, "Smallest's rate or concurrency limit was reached"}
	case s == http.StatusRequestEntityTooLarge || code == "FILE_TOO_LARGE":
		return mapping{codes.InvalidArgument, ReasonUpstreamPayloadTooLarge, "the audio is larger than Smallest accepts"}
	case s == http.StatusUnsupportedMediaType:
		return mapping{codes.InvalidArgument, ReasonUpstreamUnsupportedFormat, "Smallest does not accept this audio format"}
	case s == http.StatusBadRequest || s == http.StatusUnprocessableEntity:
		return mapping{codes.InvalidArgument, ReasonUpstreamInvalidArgument, "Smallest rejected the request"}
	case s == http.StatusNotFound:
		return mapping{codes.NotFound, ReasonUpstreamNotFound, "Smallest has no such resource"}
	case s == http.StatusGone:
		return mapping{codes.FailedPrecondition, ReasonUpstreamGone, "Smallest has retired this resource"}
	case s == http.StatusRequestTimeout:
		return mapping{codes.DeadlineExceeded, ReasonUpstreamTimeout, "Smallest timed out"}
	case s >= 500:
		return mapping{codes.Unavailable, ReasonUpstreamUnavailable, "Smallest is unavailable"}
	}
	return mapping{codes.Internal, ReasonUpstreamUnexpectedResponse, "Smallest answered unexpectedly"}
}

func fromUpstream(e *smallest.Error) error {
	m := classify(e)
	msg := m.lead
	switch {
	case e.HTTPStatus != 0:
		msg += fmt.Sprintf(" (HTTP %d)", e.HTTPStatus)
	case e.FrameStatus != 0:
		msg += fmt.Sprintf(" (status %d in the stream)", e.FrameStatus)
	case e.CloseCode != 0:
		msg += fmt.Sprintf(" (WebSocket close %d)", e.CloseCode)
	}
	if e.Message != "" {
		msg += ": " + e.Message
	}
	reason := m.reason
	if validReason.MatchString(e.Code) {
		reason = e.Code
	}
	meta := map[string]string{"endpoint": e.Endpoint}
	if e.HTTPStatus != 0 {
		meta["httpStatus"] = strconv.Itoa(e.HTTPStatus)
	}
	if e.FrameStatus != 0 {
		meta["frameStatus"] = strconv.Itoa(e.FrameStatus)
	}
	switch e.Kind {
	case smallest.KindUnreachable:
		meta["requestSent"] = "false"
	case smallest.KindNoAnswer:
		meta["requestSent"] = "true"
	}
	if e.CloseCode != 0 {
		meta["websocketCloseCode"] = strconv.Itoa(e.CloseCode)
	}
	if e.Code != "" {
		meta["upstreamCode"] = e.Code
	}
	if e.RequestID != "" {
		meta["upstreamRequestId"] = e.RequestID
	}
	for k, v := range e.Details {
		meta[camel(k)] = v
	}

	var details []protoadapt.MessageV1
	if e.RetryAfter > 0 {
		details = append(details, &errdetails.RetryInfo{RetryDelay: durationpb.New(e.RetryAfter)})
		meta["retryAfterSeconds"] = strconv.FormatFloat(e.RetryAfter.Seconds(), 'f', -1, 64)
	}
	switch m.code {
	case codes.ResourceExhausted:
		details = append(details, &errdetails.QuotaFailure{Violations: []*errdetails.QuotaFailure_Violation{{
			Subject:     "smallest:" + e.Endpoint,
			Description: orDefault(e.Message, "Smallest refused the request with 429 Too Many Requests"),
		}}})
	case codes.InvalidArgument:
		if br := badRequest(e, m.reason); br != nil {
			details = append(details, br)
		}
	}
	return build(m.code, msg, reason, meta, details...)
}

// badRequest lists the fields Smallest named, under the gateway's own field
// names, or the limit or formats that a size or format refusal implies.
func badRequest(e *smallest.Error, reason string) *errdetails.BadRequest {
	var v []*errdetails.BadRequest_FieldViolation
	for _, fv := range e.Violations {
		v = append(v, &errdetails.BadRequest_FieldViolation{Field: clip(fieldName(fv.Field), maxField),
			Description: clip(fv.Description, maxDescription), Reason: reason})
	}
	switch reason {
	case ReasonUpstreamPayloadTooLarge:
		limit := "Smallest's limit of 250 MB"
		if mb := e.Details["max_size_mb"]; mb != "" {
			limit = "the server's limit of " + mb + " MB"
		}
		v = append(v, &errdetails.BadRequest_FieldViolation{Field: "audio", Reason: reason,
			Description: "the audio must be at most " + limit})
	case ReasonUpstreamUnsupportedFormat:
		desc := "the audio format is not supported"
		if f := e.Details["supported_formats"]; f != "" {
			desc += "; supported: " + strings.ReplaceAll(f, ",", ", ")
		}
		v = append(v, &errdetails.BadRequest_FieldViolation{Field: "audio", Description: desc, Reason: reason})
	}
	if e.Code == "LANGUAGE_NOT_ENABLED_IN_REGION" && len(v) == 0 {
		v = append(v, &errdetails.BadRequest_FieldViolation{Field: "language", Reason: e.Code,
			Description: orDefault(e.Message, "the language is not enabled in this region")})
	}
	if len(v) == 0 {
		return nil
	}
	return boundedBadRequest(v)
}

// upstreamFields maps Smallest's request field names to the gateway's.
var upstreamFields = map[string]string{
	"output_format":       "encoding",
	"sample_rate":         "sample_rate_hz",
	"pronunciation_dicts": "pronunciation_dict_ids",
	"voiceId":             "voice_id",
	"displayName":         "display_name",
	"file":                "audio",
}

func fieldName(upstream string) string {
	head, rest, _ := strings.Cut(upstream, ".")
	if f, ok := upstreamFields[head]; ok {
		head = f
	}
	if rest != "" {
		return head + "." + rest
	}
	return head
}

// validReason is the form google.rpc.ErrorInfo requires of a reason.
var validReason = regexp.MustCompile(`^[A-Z][A-Z0-9_]{0,61}[A-Z0-9]$`)

// camel turns snake_case detail keys into the lowerCamelCase ErrorInfo metadata uses.
func camel(s string) string {
	parts := strings.Split(s, "_")
	for i := 1; i < len(parts); i++ {
		if parts[i] != "" {
			parts[i] = strings.ToUpper(parts[i][:1]) + parts[i][1:]
		}
	}
	return strings.Join(parts, "")
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// build makes a status with an ErrorInfo and any further details.
func build(code codes.Code, msg, reason string, meta map[string]string, details ...protoadapt.MessageV1) error {
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
	return build(codes.Unauthenticated, msg, reason, nil)
}

// Draining returns the status for a call that arrives while the gateway shuts
// down: UNAVAILABLE, which clients retry, on another replica.
func Draining() error {
	return build(codes.Unavailable, "the gateway is shutting down; retry on another instance", ReasonDraining, nil)
}

// DrainCut returns the status of a call still in flight when a shutdown's
// grace ran out: UNAVAILABLE with reason DRAINING, as for a call refused
// while draining, and a message that says the call was cut off.
func DrainCut(grace time.Duration) error {
	return build(codes.Unavailable, fmt.Sprintf("the gateway shut down before this call finished: its drain grace of %s ran out; retry on another instance", grace),
		ReasonDraining, map[string]string{"drainGrace": grace.String()})
}

// CallerTooSlow returns the status of a streaming call whose caller left
// it unread for longer than limit: the gateway stopped its upstream request.
func CallerTooSlow(limit time.Duration) error {
	return build(codes.Aborted, fmt.Sprintf("the caller left the stream unread for more than %s, so the gateway stopped the upstream request; read the stream as it arrives", limit),
		ReasonCallerTooSlow, map[string]string{"stallLimit": limit.String()})
}

// ReasonOf returns the reason of err's ErrorInfo, or "" if it has none.
func ReasonOf(err error) string {
	for _, d := range status.Convert(err).Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return info.GetReason()
		}
	}
	return ""
}

// Unimplemented returns the status for a feature the configured upstream does not offer.
func Unimplemented(msg string) error {
	return build(codes.Unimplemented, msg, ReasonUnimplemented, nil)
}

// partError is a failure in one part of a request.
type partError struct {
	err  error
	part string
	meta map[string]string
}

func (e *partError) Error() string { return e.part + ": " + e.err.Error() }
func (e *partError) Unwrap() error { return e.err }

// InPart says which part of the request err happened in: FromError puts part
// in front of the status message and meta into the ErrorInfo metadata.
func InPart(err error, part string, meta map[string]string) error {
	if err == nil {
		return nil
	}
	return &partError{err: err, part: part, meta: meta}
}

// locate adds a part's description and metadata to a translated status.
func locate(err error, pe *partError) error {
	st := status.Convert(err).Proto()
	st.Message = pe.part + ": " + st.GetMessage()
	for i, a := range st.GetDetails() {
		var info errdetails.ErrorInfo
		if a.MessageIs(&info) && a.UnmarshalTo(&info) == nil {
			if info.Metadata == nil {
				info.Metadata = map[string]string{}
			}
			maps.Copy(info.Metadata, pe.meta)
			if b, err := anypb.New(&info); err == nil {
				st.Details[i] = b
			}
		}
	}
	return status.ErrorProto(st)
}
