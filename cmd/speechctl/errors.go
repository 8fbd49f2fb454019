package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// usageError is a mistake on the command line.
type usageError struct{ error }

// Exit codes by class of failure, so that scripts can tell them apart.
const (
	exitOK          = 0
	exitFailure     = 1 // anything else
	exitBadRequest  = 2 // usage, or a request the gateway refused: fix it, do not retry
	exitCredentials = 3 // the token was refused
	exitRetryable   = 4 // unavailable, rate limited, timed out: worth another try
	exitInterrupted = 130
)

// exitCode prints err, with the advice in its details, and returns the exit code.
func exitCode(err error, stderr io.Writer) int {
	if err == nil {
		return exitOK
	}
	var ue usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(stderr, "speechctl: %v\n", ue.error)
		return exitBadRequest
	}
	if errors.Is(err, context.Canceled) {
		return exitInterrupted
	}
	st, ok := status.FromError(err)
	if !ok {
		fmt.Fprintf(stderr, "speechctl: %v\n", err)
		return exitFailure
	}
	fmt.Fprintf(stderr, "speechctl: %s: %s\n", st.Code(), st.Message())
	for _, d := range st.Details() {
		switch d := d.(type) {
		case *errdetails.BadRequest:
			for _, v := range d.GetFieldViolations() {
				fmt.Fprintf(stderr, "  field %s: %s\n", v.GetField(), v.GetDescription())
			}
		case *errdetails.RetryInfo:
			fmt.Fprintf(stderr, "  retry after %s\n", d.GetRetryDelay().AsDuration())
		case *errdetails.QuotaFailure:
			for _, v := range d.GetViolations() {
				fmt.Fprintf(stderr, "  quota %s: %s\n", v.GetSubject(), v.GetDescription())
			}
		case *errdetails.ErrorInfo:
			line := "  reason " + d.GetReason()
			if id := d.GetMetadata()["upstreamRequestId"]; id != "" {
				line += "; Smallest request id " + id
			}
			fmt.Fprintln(stderr, line)
			if d.GetReason() == "MISSING_CREDENTIALS" {
				fmt.Fprintln(stderr, "  give a token with --token, or in SPEECHCTL_TOKEN (your Smallest key, or a client key of the gateway's)")
			}
		}
	}
	switch st.Code() {
	case codes.InvalidArgument, codes.FailedPrecondition, codes.NotFound, codes.OutOfRange, codes.AlreadyExists, codes.Unimplemented:
		return exitBadRequest
	case codes.Unauthenticated, codes.PermissionDenied:
		return exitCredentials
	case codes.Unavailable, codes.ResourceExhausted, codes.DeadlineExceeded, codes.Aborted:
		return exitRetryable
	case codes.Canceled:
		return exitInterrupted
	}
	return exitFailure
}
