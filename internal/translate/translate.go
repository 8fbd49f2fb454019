// Package translate turns what a speech call failed with into the gRPC
// status its caller gets. It is the one place that decides which code and
// reason an upstream failure has, and only the server's interceptor chain
// uses it: handlers return the upstream client's errors as they are, or the
// statuses package rpcerror builds for bad requests, and the chain
// translates the former on the way out.
package translate

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"regexp"
	"strconv"
	"strings"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/protoadapt"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/speechgate/speechgate/internal/contract"
	"github.com/speechgate/speechgate/internal/rpcerror"
	"github.com/speechgate/speechgate/internal/smallest"
)

// FromError returns err as a gRPC status error. Status errors pass through
// unchanged; upstream failures, context errors and anything else are
// translated. It returns nil for nil.
func FromError(err error) error {
	if err == nil {
		return nil
	}
	var part *rpcerror.PartError
	if errors.As(err, &part) {
		return fromError(part.Err, part)
	}
	return fromError(err, nil)
}

// fromError translates err, placing it in part of the request if part is set.
func fromError(err error, part *rpcerror.PartError) error {
	if _, ok := status.FromError(err); ok {
		if part != nil {
			return locate(err, part)
		}
		return err
	}
	var up *smallest.Error
	switch {
	case errors.As(err, &up):
		return fromUpstream(up, part)
	case errors.Is(err, context.Canceled):
		return located(part, codes.Canceled, "the call was cancelled", rpcerror.ReasonCancelled, nil)
	case errors.Is(err, context.DeadlineExceeded):
		return located(part, codes.DeadlineExceeded, "the call's deadline expired", rpcerror.ReasonDeadlineExceeded, nil)
	}
	return located(part, codes.Internal, "internal error: "+err.Error(), rpcerror.ReasonInternal, nil)
}

// located makes a status, with part's description and metadata if set.
func located(part *rpcerror.PartError, code codes.Code, msg, reason string, meta map[string]string, details ...protoadapt.MessageV1) error {
	if part != nil {
		msg = part.Part + ": " + msg
		if meta == nil {
			meta = map[string]string{}
		}
		maps.Copy(meta, part.Meta)
	}
	return rpcerror.New(code, msg, reason, meta, details...)
}

// locate adds a part's description and metadata to a status already built.
func locate(err error, part *rpcerror.PartError) error {
	st := status.Convert(err).Proto()
	st.Message = part.Part + ": " + st.GetMessage()
	for i, a := range st.GetDetails() {
		var info errdetails.ErrorInfo
		if a.MessageIs(&info) && a.UnmarshalTo(&info) == nil {
			if info.Metadata == nil {
				info.Metadata = map[string]string{}
			}
			maps.Copy(info.Metadata, part.Meta)
			if b, err := anypb.New(&info); err == nil {
				st.Details[i] = b
			}
		}
	}
	return status.ErrorProto(st)
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
		return mapping{codes.DeadlineExceeded, rpcerror.ReasonUpstreamTimeout, "Smallest did not answer in time"}
	case smallest.KindUnreachable:
		return mapping{codes.Unavailable, rpcerror.ReasonUpstreamUnreachable, "could not reach Smallest (the request was not sent)"}
	case smallest.KindNoAnswer:
		return mapping{codes.Unavailable, rpcerror.ReasonUpstreamNoAnswer, "the connection to Smallest broke after the request was sent, before an answer"}
	case smallest.KindStreamBroken:
		return mapping{codes.Unavailable, rpcerror.ReasonUpstreamStreamBroken, "Smallest's stream broke off"}
	case smallest.KindUnresponsive:
		return mapping{codes.Unavailable, rpcerror.ReasonUpstreamUnresponsive, "Smallest stopped answering on the realtime socket"}
	case smallest.KindIdleClosed:
		return mapping{codes.Aborted, rpcerror.ReasonUpstreamSessionIdle, "Smallest ended the session for inactivity; open a new one"}
	case smallest.KindMalformed:
		return mapping{codes.Internal, rpcerror.ReasonUpstreamMalformedResponse, "Smallest's answer could not be understood"}
	}
	s := e.Status()
	if m, ok := entitlement(s, e.Message); ok {
		return m
	}
	m := byStatus(s, e.Code)
	if e.Kind == smallest.KindStreamError && m.reason != rpcerror.ReasonUpstreamRateLimited {
		// An error frame inside a stream that had started: its status, if it
		// carried one, picks the code; the reason says where it came from.
		m.reason = rpcerror.ReasonUpstreamStreamError
		if s < 400 {
			m.code, m.lead = codes.Unavailable, "Smallest reported an error mid-stream"
		}
	}
	return m
}

// entitlement recognizes the refusals that are about what the account may
// use, not about the request, from their text (docs/upstream.md §6.1): a
// caller told INVALID_ARGUMENT would fix the request and retry in vain.
func entitlement(s int, message string) (mapping, bool) {
	msg := strings.ToLower(message)
	switch {
	case s == http.StatusBadRequest && strings.Contains(msg, "clone limit exceeded"):
		return mapping{codes.ResourceExhausted, rpcerror.ReasonCloneLimitExceeded,
			"the account has as many voice clones as its plan allows"}, true
	case (s == http.StatusBadRequest || s == http.StatusForbidden) && strings.Contains(msg, "upgrade") && strings.Contains(msg, "plan"):
		return mapping{codes.PermissionDenied, rpcerror.ReasonPlanNotEntitled,
			"the Smallest account's plan does not include this; a higher plan would"}, true
	case s == http.StatusForbidden && strings.Contains(msg, "not available for your organization"):
		return mapping{codes.PermissionDenied, rpcerror.ReasonNotAvailableForOrganization,
			"this is not available to the Smallest account's organization (an allow-list a plan upgrade does not change)"}, true
	}
	return mapping{}, false
}

func byStatus(s int, code string) mapping {
	switch {
	case s == http.StatusUnauthorized:
		return mapping{codes.Unauthenticated, rpcerror.ReasonUpstreamUnauthenticated, "Smallest rejected the credentials"}
	case s == http.StatusForbidden:
		return mapping{codes.PermissionDenied, rpcerror.ReasonUpstreamPermissionDenied, "Smallest denied access"}
	case s == http.StatusTooManyRequests:
		return mapping{codes.ResourceExhausted, rpcerror.ReasonUpstreamRateLimited, "Smallest's rate or concurrency limit was reached"}
	case s == http.StatusRequestEntityTooLarge || code == "FILE_TOO_LARGE":
		return mapping{codes.InvalidArgument, rpcerror.ReasonUpstreamPayloadTooLarge, "the audio is larger than Smallest accepts"}
	case s == http.StatusUnsupportedMediaType:
		return mapping{codes.InvalidArgument, rpcerror.ReasonUpstreamUnsupportedFormat, "Smallest does not accept this audio format"}
	case s == http.StatusBadRequest || s == http.StatusUnprocessableEntity:
		return mapping{codes.InvalidArgument, rpcerror.ReasonUpstreamInvalidArgument, "Smallest rejected the request"}
	case s == http.StatusNotFound:
		return mapping{codes.NotFound, rpcerror.ReasonUpstreamNotFound, "Smallest has no such resource"}
	case s == http.StatusGone:
		return mapping{codes.FailedPrecondition, rpcerror.ReasonUpstreamGone, "Smallest has retired this resource"}
	case s == http.StatusRequestTimeout:
		return mapping{codes.DeadlineExceeded, rpcerror.ReasonUpstreamTimeout, "Smallest timed out"}
	case s >= 500:
		return mapping{codes.Unavailable, rpcerror.ReasonUpstreamUnavailable, "Smallest is unavailable"}
	}
	return mapping{codes.Internal, rpcerror.ReasonUpstreamUnexpectedResponse, "Smallest answered unexpectedly"}
}

func fromUpstream(e *smallest.Error, part *rpcerror.PartError) error {
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
	if e.Attempts > 0 {
		meta["attempts"] = strconv.Itoa(e.Attempts) // requests made, retries included
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
		subject := "smallest:" + e.Endpoint
		if m.reason == rpcerror.ReasonCloneLimitExceeded {
			subject = "smallest-account:voice-clones"
		}
		details = append(details, &errdetails.QuotaFailure{Violations: []*errdetails.QuotaFailure_Violation{{
			Subject:     subject,
			Description: orDefault(e.Message, "Smallest refused the request with 429 Too Many Requests"),
		}}})
	case codes.InvalidArgument:
		if br := badRequest(e, m.reason); br != nil {
			details = append(details, br)
		}
	}
	return located(part, m.code, msg, reason, meta, details...)
}

// badRequest lists the fields Smallest named, under the contract's field
// names, or the limit or formats that a size or format refusal implies.
func badRequest(e *smallest.Error, reason string) *errdetails.BadRequest {
	var v []*errdetails.BadRequest_FieldViolation
	for _, fv := range e.Violations {
		v = append(v, rpcerror.FieldViolation(contract.FieldName(fv.Field), fv.Description, reason))
	}
	switch reason {
	case rpcerror.ReasonUpstreamPayloadTooLarge:
		limit := "Smallest's limit of 250 MB"
		if mb := e.Details["max_size_mb"]; mb != "" {
			limit = "the server's limit of " + mb + " MB"
		}
		v = append(v, rpcerror.FieldViolation("audio", "the audio must be at most "+limit, reason))
	case rpcerror.ReasonUpstreamUnsupportedFormat:
		desc := "the audio format is not supported"
		if f := e.Details["supported_formats"]; f != "" {
			desc += "; supported: " + strings.ReplaceAll(f, ",", ", ")
		}
		v = append(v, rpcerror.FieldViolation("audio", desc, reason))
	}
	if e.Code == "LANGUAGE_NOT_ENABLED_IN_REGION" && len(v) == 0 {
		v = append(v, rpcerror.FieldViolation("language", orDefault(e.Message, "the language is not enabled in this region"), e.Code))
	}
	if len(v) == 0 {
		return nil
	}
	return rpcerror.BadRequest(v)
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

// UnaryServerInterceptor translates a handler's error with FromError.
func UnaryServerInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		resp, err := handler(ctx, req)
		return resp, FromError(err)
	}
}

// StreamServerInterceptor translates a stream handler's error with FromError.
func StreamServerInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		return FromError(handler(srv, ss))
	}
}
