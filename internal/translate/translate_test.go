package translate_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/speechgate/speechgate/internal/rpcerror"
	"github.com/speechgate/speechgate/internal/smallest"
	"github.com/speechgate/speechgate/internal/translate"
)

const tts = "POST /waves/v1/tts/live"

func info(reason string, meta map[string]string) *errdetails.ErrorInfo {
	return &errdetails.ErrorInfo{Reason: reason, Domain: "speechgate", Metadata: meta}
}

func want(code codes.Code, msg string, details ...proto.Message) *spb.Status {
	s := &spb.Status{Code: int32(code), Message: msg}
	for _, d := range details {
		a, err := anypb.New(d)
		if err != nil {
			panic(err)
		}
		s.Details = append(s.Details, a)
	}
	return s
}

func TestFromUpstreamError(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   *smallest.Error
		want *spb.Status
	}{
		{
			name: "401",
			in:   &smallest.Error{Kind: smallest.KindHTTP, Endpoint: tts, HTTPStatus: 401, Message: "Bearer token is missing or invalid.", RequestID: "r1"},
			want: want(codes.Unauthenticated, "Smallest rejected the credentials (HTTP 401): Bearer token is missing or invalid.",
				info("UPSTREAM_UNAUTHENTICATED", map[string]string{"endpoint": tts, "httpStatus": "401", "upstreamRequestId": "r1"})),
		},
		{
			name: "403",
			in:   &smallest.Error{Kind: smallest.KindHTTP, Endpoint: tts, HTTPStatus: 403, Message: "Plan does not include access"},
			want: want(codes.PermissionDenied, "Smallest denied access (HTTP 403): Plan does not include access",
				info("UPSTREAM_PERMISSION_DENIED", map[string]string{"endpoint": tts, "httpStatus": "403"})),
		},
		{
			name: "429 with Retry-After",
			in:   &smallest.Error{Kind: smallest.KindHTTP, Endpoint: tts, HTTPStatus: 429, RetryAfter: 7 * time.Second},
			want: want(codes.ResourceExhausted, "Smallest's rate or concurrency limit was reached (HTTP 429)",
				info("UPSTREAM_RATE_LIMITED", map[string]string{"endpoint": tts, "httpStatus": "429", "retryAfterSeconds": "7"}),
				&errdetails.RetryInfo{RetryDelay: durationpb.New(7 * time.Second)},
				&errdetails.QuotaFailure{Violations: []*errdetails.QuotaFailure_Violation{{
					Subject: "smallest:" + tts, Description: "Smallest refused the request with 429 Too Many Requests"}}}),
		},
		{
			name: "429 self-host code becomes the reason",
			in: &smallest.Error{Kind: smallest.KindHTTP, Endpoint: "POST /v1/listen", HTTPStatus: 429, Code: "RATE_LIMIT_EXCEEDED",
				Message: "Rate limit exceeded", RetryAfter: time.Minute},
			want: want(codes.ResourceExhausted, "Smallest's rate or concurrency limit was reached (HTTP 429): Rate limit exceeded",
				info("RATE_LIMIT_EXCEEDED", map[string]string{"endpoint": "POST /v1/listen", "httpStatus": "429", "upstreamCode": "RATE_LIMIT_EXCEEDED", "retryAfterSeconds": "60"}),
				&errdetails.RetryInfo{RetryDelay: durationpb.New(time.Minute)},
				&errdetails.QuotaFailure{Violations: []*errdetails.QuotaFailure_Violation{{Subject: "smallest:POST /v1/listen", Description: "Rate limit exceeded"}}}),
		},
		{
			name: "400 naming fields, renamed to ours",
			in: &smallest.Error{Kind: smallest.KindHTTP, Endpoint: tts, HTTPStatus: 400, Message: "Invalid Voice ID; Invalid enum value",
				Violations: []smallest.FieldViolation{{Field: "voice_id", Description: "Invalid Voice ID"}, {Field: "output_format", Description: "Invalid enum value"}}},
			want: want(codes.InvalidArgument, "Smallest rejected the request (HTTP 400): Invalid Voice ID; Invalid enum value",
				info("UPSTREAM_INVALID_ARGUMENT", map[string]string{"endpoint": tts, "httpStatus": "400"}),
				&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{
					{Field: "voice_id", Description: "Invalid Voice ID", Reason: "UPSTREAM_INVALID_ARGUMENT"},
					{Field: "encoding", Description: "Invalid enum value", Reason: "UPSTREAM_INVALID_ARGUMENT"},
				}}),
		},
		{
			name: "400 without fields has no BadRequest",
			in:   &smallest.Error{Kind: smallest.KindHTTP, Endpoint: tts, HTTPStatus: 400, Message: "The 'text' field is required."},
			want: want(codes.InvalidArgument, "Smallest rejected the request (HTTP 400): The 'text' field is required.",
				info("UPSTREAM_INVALID_ARGUMENT", map[string]string{"endpoint": tts, "httpStatus": "400"})),
		},
		{
			name: "400 language not in region",
			in: &smallest.Error{Kind: smallest.KindHTTP, Endpoint: "POST /waves/v1/stt/", HTTPStatus: 400, Code: "LANGUAGE_NOT_ENABLED_IN_REGION",
				Message: "Language not enabled", Details: map[string]string{"region": "ap-south-1"}},
			want: want(codes.InvalidArgument, "Smallest rejected the request (HTTP 400): Language not enabled",
				info("LANGUAGE_NOT_ENABLED_IN_REGION", map[string]string{"endpoint": "POST /waves/v1/stt/", "httpStatus": "400",
					"upstreamCode": "LANGUAGE_NOT_ENABLED_IN_REGION", "region": "ap-south-1"}),
				&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{
					{Field: "language", Description: "Language not enabled", Reason: "LANGUAGE_NOT_ENABLED_IN_REGION"}}}),
		},
		{
			name: "404",
			in:   &smallest.Error{Kind: smallest.KindHTTP, Endpoint: tts, HTTPStatus: 404},
			want: want(codes.NotFound, "Smallest has no such resource (HTTP 404)", info("UPSTREAM_NOT_FOUND", map[string]string{"endpoint": tts, "httpStatus": "404"})),
		},
		{
			name: "410 retired model",
			in: &smallest.Error{Kind: smallest.KindHTTP, Endpoint: tts, HTTPStatus: 410, Code: "MODEL_DEPRECATED", Message: "This model is retired.",
				Details: map[string]string{"recommended_endpoint": "/waves/v1/tts"}},
			want: want(codes.FailedPrecondition, "Smallest has retired this resource (HTTP 410): This model is retired.",
				info("MODEL_DEPRECATED", map[string]string{"endpoint": tts, "httpStatus": "410", "upstreamCode": "MODEL_DEPRECATED", "recommendedEndpoint": "/waves/v1/tts"})),
		},
		{
			name: "413 states the limit",
			in:   &smallest.Error{Kind: smallest.KindHTTP, Endpoint: "POST /waves/v1/stt/", HTTPStatus: 413, Message: "File size exceeds maximum limit of 250MB."},
			want: want(codes.InvalidArgument, "the audio is larger than Smallest accepts (HTTP 413): File size exceeds maximum limit of 250MB.",
				info("UPSTREAM_PAYLOAD_TOO_LARGE", map[string]string{"endpoint": "POST /waves/v1/stt/", "httpStatus": "413"}),
				&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{
					{Field: "audio", Description: "the audio must be at most Smallest's limit of 250 MB", Reason: "UPSTREAM_PAYLOAD_TOO_LARGE"}}}),
		},
		{
			name: "422 self-host file too large",
			in: &smallest.Error{Kind: smallest.KindHTTP, Endpoint: "POST /v1/listen", HTTPStatus: 422, Code: "FILE_TOO_LARGE", Message: "Audio file too large",
				Details: map[string]string{"max_size_mb": "100"}},
			want: want(codes.InvalidArgument, "the audio is larger than Smallest accepts (HTTP 422): Audio file too large",
				info("FILE_TOO_LARGE", map[string]string{"endpoint": "POST /v1/listen", "httpStatus": "422", "upstreamCode": "FILE_TOO_LARGE", "maxSizeMb": "100"}),
				&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{
					{Field: "audio", Description: "the audio must be at most the server's limit of 100 MB", Reason: "UPSTREAM_PAYLOAD_TOO_LARGE"}}}),
		},
		{
			name: "415 lists formats",
			in: &smallest.Error{Kind: smallest.KindHTTP, Endpoint: "POST /v1/listen", HTTPStatus: 415, Code: "UNSUPPORTED_FORMAT",
				Details: map[string]string{"supported_formats": "wav,mp3"}},
			want: want(codes.InvalidArgument, "Smallest does not accept this audio format (HTTP 415)",
				info("UNSUPPORTED_FORMAT", map[string]string{"endpoint": "POST /v1/listen", "httpStatus": "415", "upstreamCode": "UNSUPPORTED_FORMAT", "supportedFormats": "wav,mp3"}),
				&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{
					{Field: "audio", Description: "the audio format is not supported; supported: wav, mp3", Reason: "UPSTREAM_UNSUPPORTED_FORMAT"}}}),
		},
		{
			name: "503 with retry",
			in:   &smallest.Error{Kind: smallest.KindHTTP, Endpoint: "POST /waves/v1/stt/", HTTPStatus: 503, Message: "Worker temporarily unavailable", RetryAfter: 30 * time.Second},
			want: want(codes.Unavailable, "Smallest is unavailable (HTTP 503): Worker temporarily unavailable",
				info("UPSTREAM_UNAVAILABLE", map[string]string{"endpoint": "POST /waves/v1/stt/", "httpStatus": "503", "retryAfterSeconds": "30"}),
				&errdetails.RetryInfo{RetryDelay: durationpb.New(30 * time.Second)}),
		},
		{
			name: "500",
			in:   &smallest.Error{Kind: smallest.KindHTTP, Endpoint: tts, HTTPStatus: 500, Code: "voice_clone_error"},
			want: want(codes.Unavailable, "Smallest is unavailable (HTTP 500)",
				info("UPSTREAM_UNAVAILABLE", map[string]string{"endpoint": tts, "httpStatus": "500", "upstreamCode": "voice_clone_error"})),
		},
		{
			name: "unexpected 4xx",
			in:   &smallest.Error{Kind: smallest.KindHTTP, Endpoint: tts, HTTPStatus: 405},
			want: want(codes.Internal, "Smallest answered unexpectedly (HTTP 405)", info("UPSTREAM_UNEXPECTED_RESPONSE", map[string]string{"endpoint": tts, "httpStatus": "405"})),
		},
		{
			name: "timeout",
			in:   &smallest.Error{Kind: smallest.KindTimeout, Endpoint: tts, Message: "no response in time"},
			want: want(codes.DeadlineExceeded, "Smallest did not answer in time: no response in time", info("UPSTREAM_TIMEOUT", map[string]string{"endpoint": tts})),
		},
		{
			name: "unreachable",
			in:   &smallest.Error{Kind: smallest.KindUnreachable, Endpoint: tts, Message: "connection refused"},
			want: want(codes.Unavailable, "could not reach Smallest (the request was not sent): connection refused",
				info("UPSTREAM_UNREACHABLE", map[string]string{"endpoint": tts, "requestSent": "false"})),
		},
		{
			name: "sent, no answer",
			in:   &smallest.Error{Kind: smallest.KindNoAnswer, Endpoint: tts, Message: "EOF"},
			want: want(codes.Unavailable, "the connection to Smallest broke after the request was sent, before an answer: EOF",
				info("UPSTREAM_NO_ANSWER", map[string]string{"endpoint": tts, "requestSent": "true"})),
		},
		{
			name: "broken stream",
			in:   &smallest.Error{Kind: smallest.KindStreamBroken, Endpoint: tts, RequestID: "r9", Message: "the stream ended before its final frame"},
			want: want(codes.Unavailable, "Smallest's stream broke off: the stream ended before its final frame",
				info("UPSTREAM_STREAM_BROKEN", map[string]string{"endpoint": tts, "upstreamRequestId": "r9"})),
		},
		{
			name: "error frame without status",
			in:   &smallest.Error{Kind: smallest.KindStreamError, Endpoint: tts, Message: "boom"},
			want: want(codes.Unavailable, "Smallest reported an error mid-stream: boom", info("UPSTREAM_STREAM_ERROR", map[string]string{"endpoint": tts})),
		},
		{
			name: "WebSocket closed without the last transcript",
			in:   &smallest.Error{Kind: smallest.KindStreamBroken, Endpoint: "WS /waves/v1/stt/live", CloseCode: 1011, Message: "Smallest closed the session before its last transcript"},
			want: want(codes.Unavailable, "Smallest's stream broke off (WebSocket close 1011): Smallest closed the session before its last transcript",
				info("UPSTREAM_STREAM_BROKEN", map[string]string{"endpoint": "WS /waves/v1/stt/live", "websocketCloseCode": "1011"})),
		},
		{
			name: "error frame with a 429 status",
			in:   &smallest.Error{Kind: smallest.KindStreamError, Endpoint: tts, FrameStatus: 429, Message: "busy"},
			want: want(codes.ResourceExhausted, "Smallest's rate or concurrency limit was reached (status 429 in the stream): busy",
				info("UPSTREAM_RATE_LIMITED", map[string]string{"endpoint": tts, "frameStatus": "429"}),
				&errdetails.QuotaFailure{Violations: []*errdetails.QuotaFailure_Violation{{Subject: "smallest:" + tts, Description: "busy"}}}),
		},
		{
			// A 200 whose stream then carried {"status":"500"}: not an HTTP 500.
			name: "error frame with a 500 status",
			in:   &smallest.Error{Kind: smallest.KindStreamError, Endpoint: tts, FrameStatus: 500, Message: "synthesis failed"},
			want: want(codes.Unavailable, "Smallest is unavailable (status 500 in the stream): synthesis failed",
				info("UPSTREAM_STREAM_ERROR", map[string]string{"endpoint": tts, "frameStatus": "500"})),
		},
		{
			name: "coded error frame without status",
			in: &smallest.Error{Kind: smallest.KindStreamError, Endpoint: "WS /waves/v1/stt/live", Code: "LANGUAGE_NOT_ENABLED_IN_REGION",
				Message: "Language 'multi-south-indic' has not been enabled in this region."},
			want: want(codes.InvalidArgument, "Smallest rejected the request: Language 'multi-south-indic' has not been enabled in this region.",
				info("LANGUAGE_NOT_ENABLED_IN_REGION", map[string]string{"endpoint": "WS /waves/v1/stt/live", "upstreamCode": "LANGUAGE_NOT_ENABLED_IN_REGION"}),
				&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: "language",
					Description: "Language 'multi-south-indic' has not been enabled in this region.", Reason: "LANGUAGE_NOT_ENABLED_IN_REGION"}}}),
		},
		{
			name: "WebSocket close 1008",
			in:   &smallest.Error{Kind: smallest.KindStreamError, Endpoint: "WS /waves/v1/stt/live", CloseCode: 1008, Message: "too many concurrent sessions"},
			want: want(codes.ResourceExhausted, "Smallest's rate or concurrency limit was reached (WebSocket close 1008): too many concurrent sessions",
				info("UPSTREAM_RATE_LIMITED", map[string]string{"endpoint": "WS /waves/v1/stt/live", "websocketCloseCode": "1008"}),
				&errdetails.QuotaFailure{Violations: []*errdetails.QuotaFailure_Violation{{Subject: "smallest:WS /waves/v1/stt/live", Description: "too many concurrent sessions"}}}),
		},
		{
			name: "malformed",
			in:   &smallest.Error{Kind: smallest.KindMalformed, Endpoint: tts, Message: "a frame was not JSON"},
			want: want(codes.Internal, "Smallest's answer could not be understood: a frame was not JSON", info("UPSTREAM_MALFORMED_RESPONSE", map[string]string{"endpoint": tts})),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			// Wrapped, as a handler might return it.
			got := status.Convert(translate.FromError(fmt.Errorf("synthesize: %w", tt.in))).Proto()
			if diff := cmp.Diff(tt.want, got, protocmp.Transform()); diff != "" {
				t.Fatalf("status differs (-want +got):\n%s", diff)
			}
		})
	}
}

func TestFromOtherErrors(t *testing.T) {
	t.Parallel()
	existing := status.Error(codes.NotFound, "kept")
	tests := []struct {
		name string
		in   error
		want *spb.Status
	}{
		{name: "nil", in: nil, want: nil},
		{name: "status passes through", in: existing, want: status.Convert(existing).Proto()},
		{name: "cancel", in: context.Canceled, want: want(codes.Canceled, "the call was cancelled", info("CANCELLED", nil))},
		{name: "deadline", in: fmt.Errorf("read: %w", context.DeadlineExceeded), want: want(codes.DeadlineExceeded, "the call's deadline expired", info("DEADLINE_EXCEEDED", nil))},
		{name: "anything else", in: errors.New("boom"), want: want(codes.Internal, "internal error: boom", info("INTERNAL", nil))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := translate.FromError(tt.in)
			var got *spb.Status
			if err != nil {
				got = status.Convert(err).Proto()
			}
			if diff := cmp.Diff(tt.want, got, protocmp.Transform()); diff != "" {
				t.Fatalf("status differs (-want +got):\n%s", diff)
			}
		})
	}
}

func TestInPart(t *testing.T) {
	t.Parallel()
	in := rpcerror.InPart(fmt.Errorf("wrapped: %w", &smallest.Error{Kind: smallest.KindHTTP, Endpoint: tts, HTTPStatus: 500, Message: "boom"}),
		"text piece 3 of 7 (characters 501-748)", map[string]string{"textPiece": "3", "textStart": "501"})
	got := status.Convert(translate.FromError(in)).Proto()
	w := want(codes.Unavailable, "text piece 3 of 7 (characters 501-748): Smallest is unavailable (HTTP 500): boom",
		info("UPSTREAM_UNAVAILABLE", map[string]string{"endpoint": tts, "httpStatus": "500", "textPiece": "3", "textStart": "501"}))
	if diff := cmp.Diff(w, got, protocmp.Transform()); diff != "" {
		t.Fatalf("status differs (-want +got):\n%s", diff)
	}
	if rpcerror.InPart(nil, "x", nil) != nil {
		t.Error("InPart(nil) must be nil")
	}
}
