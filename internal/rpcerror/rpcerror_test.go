package rpcerror_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/speechgate/speechgate/internal/rpcerror"
)

func TestViolations(t *testing.T) {
	t.Parallel()
	var v rpcerror.Violations
	if v.Err() != nil {
		t.Fatal("no violations must mean no error")
	}
	v.Add("text", rpcerror.RuleRequired, "must not be empty")
	v.Add("speed", rpcerror.RuleOutOfRange, "must be from %.1f to %.1f, got %g", 0.5, 2.0, 3.0)
	st := status.Convert(v.Err())
	if st.Code() != codes.InvalidArgument || st.Message() != "invalid request: text: must not be empty; speed: must be from 0.5 to 2.0, got 3" {
		t.Errorf("status %v %q", st.Code(), st.Message())
	}
	want := []proto.Message{
		&errdetails.ErrorInfo{Reason: "INVALID_REQUEST", Domain: "speechgate"},
		&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{
			{Field: "text", Reason: "REQUIRED", Description: "must not be empty"},
			{Field: "speed", Reason: "OUT_OF_RANGE", Description: "must be from 0.5 to 2.0, got 3"},
		}},
	}
	var got []proto.Message
	for _, d := range st.Details() {
		got = append(got, d.(proto.Message))
	}
	if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
		t.Fatalf("details differ (-want +got):\n%s", diff)
	}
}

func TestQuoteIsBounded(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in, want string
	}{
		{"", `""`},
		{"en", `"en"`},
		{strings.Repeat("a", 64), `"` + strings.Repeat("a", 64) + `"`},
		{strings.Repeat("a", 65), `"` + strings.Repeat("a", 24) + `"… (65 bytes)`},
		{strings.Repeat("é", 1000), `"` + strings.Repeat("é", 24) + `"… (2000 bytes)`},
		{"\xff\xfe", `"\xff\xfe"… (2 bytes)`},
	}
	for _, tt := range tests {
		if got := rpcerror.Quote(tt.in); got != tt.want {
			t.Errorf("Quote(%.20q) = %s, want %s", tt.in, got, tt.want)
		}
	}
}

func TestViolationsAreBounded(t *testing.T) {
	t.Parallel()
	var v rpcerror.Violations
	for i := range 10000 {
		v.Add(fmt.Sprintf("keywords[%d].text", i), rpcerror.RuleBadFormat, "bad %s", strings.Repeat("x", 5000))
	}
	st := status.Convert(v.Err())
	if n := len(st.Message()); n > 1024 {
		t.Errorf("message is %d bytes", n)
	}
	var br *errdetails.BadRequest
	for _, d := range st.Details() {
		if b, ok := d.(*errdetails.BadRequest); ok {
			br = b
		}
	}
	if n := len(br.GetFieldViolations()); n != 32 {
		t.Fatalf("%d violations listed, want 32", n)
	}
	if last := br.GetFieldViolations()[31].GetDescription(); last != "and 9969 more violations, not listed" {
		t.Errorf("last violation says %q", last)
	}
	if n := proto.Size(st.Proto()); n > 16<<10 {
		t.Errorf("status is %d bytes", n)
	}
}
