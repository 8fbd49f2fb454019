package server_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/speechgate/speechgate/internal/gatewaytest"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	speechv1 "github.com/speechgate/speechgate/gen/speech/v1"
	"github.com/speechgate/speechgate/internal/auth"
	"github.com/speechgate/speechgate/internal/emulator"
)

// upstreamAnswer is a canned upstream response, written as the documented
// wire format.
type upstreamAnswer struct {
	status  int
	headers map[string]string
	body    string
}

func (a upstreamAnswer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	io.Copy(io.Discard, r.Body)
	w.Header().Set("X-Request-Id", "up-err-1")
	for k, v := range a.headers {
		w.Header().Set(k, v)
	}
	if a.status == http.StatusOK {
		w.Header().Set("Content-Type", "text/event-stream")
	} else {
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
	}
	w.WriteHeader(a.status)
	io.WriteString(w, a.body)
}

func TestUpstreamFailuresBecomeStatuses(t *testing.T) {
	t.Parallel()
	frame := "event: audio\ndata: {\"audio\": \"AAECAw==\", \"done\": false, \"status\": \"206\"}\n\n"
	tests := []struct {
		name       string
		answer     upstreamAnswer
		wantCode   codes.Code
		wantReason string
		wantAudio  int // upstream audio frames whose audio arrives before the failure
		check      func(t *testing.T, err error)
	}{
		{
			name:     "401",
			answer:   upstreamAnswer{status: 401, body: `{"error":"Unauthorized","message":"Bearer token is missing or invalid."}`},
			wantCode: codes.Unauthenticated, wantReason: "UPSTREAM_UNAUTHENTICATED",
		},
		{
			name:     "403",
			answer:   upstreamAnswer{status: 403, body: `{"error":"Forbidden","message":"Plan does not include access to the requested model"}`},
			wantCode: codes.PermissionDenied, wantReason: "UPSTREAM_PERMISSION_DENIED",
		},
		{
			name:     "429 with Retry-After: 7",
			answer:   upstreamAnswer{status: 429, headers: map[string]string{"Retry-After": "7"}, body: `{"error":"Too many concurrent requests"}`},
			wantCode: codes.ResourceExhausted, wantReason: "UPSTREAM_RATE_LIMITED",
			check: func(t *testing.T, err error) {
				if d := gatewaytest.Detail[*errdetails.RetryInfo](err).GetRetryDelay().AsDuration(); d != 7*time.Second {
					t.Errorf("RetryInfo delay %v, want 7s", d)
				}
				if q := gatewaytest.Detail[*errdetails.QuotaFailure](err); len(q.GetViolations()) != 1 {
					t.Errorf("QuotaFailure = %v, want one violation", q)
				}
			},
		},
		{
			name:     "400 zod issue naming voice_id",
			answer:   upstreamAnswer{status: 400, body: `{"error":[{"code":"custom","path":["voice_id"],"message":"Invalid Voice ID"}]}`},
			wantCode: codes.InvalidArgument, wantReason: "UPSTREAM_INVALID_ARGUMENT",
			check: func(t *testing.T, err error) {
				want := []*errdetails.BadRequest_FieldViolation{{Field: "voice_id", Description: "Invalid Voice ID", Reason: "UPSTREAM_INVALID_ARGUMENT"}}
				if d := gatewaytest.Diff(want, gatewaytest.Detail[*errdetails.BadRequest](err).GetFieldViolations()); d != "" {
					t.Errorf("field violations (-want +got):\n%s", d)
				}
			},
		},
		{
			name: "410 retired",
			answer: upstreamAnswer{status: 410, body: `{"status":"error","error_code":"MODEL_DEPRECATED","message":"This model is retired.",` +
				`"recommended_endpoint":"/waves/v1/lightning-v3.1/get_speech"}`},
			wantCode: codes.FailedPrecondition, wantReason: "MODEL_DEPRECATED",
		},
		{
			name:     "500",
			answer:   upstreamAnswer{status: 500, body: `{"error":"InternalServerError","message":"boom"}`},
			wantCode: codes.Unavailable, wantReason: "UPSTREAM_UNAVAILABLE",
		},
		{
			name:     "stream cut off mid-way",
			answer:   upstreamAnswer{status: 200, body: frame + frame + "event: audio\ndata: {\"audio\": \"AAEC"},
			wantCode: codes.Unavailable, wantReason: "UPSTREAM_STREAM_BROKEN", wantAudio: 2,
		},
		{
			name:     "stream closed without its final frame",
			answer:   upstreamAnswer{status: 200, body: frame},
			wantCode: codes.Unavailable, wantReason: "UPSTREAM_STREAM_BROKEN", wantAudio: 1,
		},
		{
			name:     "error frame mid-stream",
			answer:   upstreamAnswer{status: 200, body: frame + "data: {\"status\":\"error\",\"message\":\"synthesis failed\"}\n\n"},
			wantCode: codes.Unavailable, wantReason: "UPSTREAM_STREAM_ERROR", wantAudio: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			g := gatewaytest.Start(t, tt.answer, gatewaytest.Options{})
			got := gatewaytest.Synthesize(gatewaytest.WithKey(t.Context(), callerKey), g.Synth, &speechv1.SynthesizeRequest{Text: "hi", VoiceId: "avery"})
			if status.Code(got.Err) != tt.wantCode {
				t.Fatalf("stream ended with %v, want %v", got.Err, tt.wantCode)
			}
			if got.Totals != nil {
				t.Error("a failed stream sent a totals message")
			}
			if want := bytes.Repeat([]byte{0, 1, 2, 3}, tt.wantAudio); !bytes.Equal(got.Bytes(), want) {
				t.Errorf("audio before the failure = %x, want %x: every frame that arrived, and nothing else", got.Bytes(), want)
			}
			info := gatewaytest.ErrorInfo(got.Err)
			if info.GetReason() != tt.wantReason || info.GetDomain() != "speechgate" || info.GetMetadata()["upstreamRequestId"] != "up-err-1" {
				t.Errorf("ErrorInfo = %v, want reason %s, domain speechgate and the upstream request id", info, tt.wantReason)
			}
			if tt.answer.status != 200 && info.GetMetadata()["httpStatus"] == "" {
				t.Error("ErrorInfo lacks the upstream HTTP status")
			}
			if tt.check != nil {
				tt.check(t, got.Err)
			}
			if strings.Contains(got.Err.Error(), callerKey) || strings.Contains(g.Logs.String(), callerKey) {
				t.Error("the caller's key reached an error or a log line")
			}
		})
	}
}

func TestAuthModes(t *testing.T) {
	t.Parallel()
	keys := []auth.ClientKey{{Name: "billing-svc", Key: "client-key-0123456789"}}
	tests := []struct {
		name       string
		mode       auth.Mode
		token      string // "" sends no credentials
		wantCode   codes.Code
		wantCaller string
		wantKeyUp  string // the key the upstream must see
	}{
		{name: "passthrough without token", mode: auth.ModePassthrough, wantCode: codes.Unauthenticated},
		{name: "passthrough forwards the caller's key", mode: auth.ModePassthrough, token: callerKey, wantCode: codes.OK,
			wantCaller: auth.Fingerprint(callerKey), wantKeyUp: callerKey},
		{name: "keys with a wrong key", mode: auth.ModeKeys, token: "client-key-0123456780", wantCode: codes.Unauthenticated},
		{name: "keys with a client key uses the gateway's key", mode: auth.ModeKeys, token: "client-key-0123456789", wantCode: codes.OK,
			wantCaller: "billing-svc", wantKeyUp: "sk_gateway_own_key_0123"},
		{name: "none", mode: auth.ModeNone, wantCode: codes.OK, wantCaller: "anonymous", wantKeyUp: "sk_gateway_own_key_0123"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var seen atomic.Value
			seen.Store("")
			up := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				seen.Store(r.Header.Get("Authorization"))
				emulator.New(emulator.Options{}).ServeHTTP(w, r)
			})
			o := gatewaytest.Options{Auth: tt.mode}
			if tt.mode == auth.ModeKeys {
				o.Keys = keys
			}
			g := gatewaytest.Start(t, up, o)
			ctx := t.Context()
			if tt.token != "" {
				ctx = gatewaytest.WithKey(ctx, tt.token)
			}
			_, err := g.Synth.ListVoices(ctx, &speechv1.ListVoicesRequest{})
			if status.Code(err) != tt.wantCode {
				t.Fatalf("ListVoices: %v, want %v", err, tt.wantCode)
			}
			if tt.wantCode != codes.OK {
				if seen.Load() != "" {
					t.Error("an unauthenticated call reached the upstream")
				}
				return
			}
			if seen.Load() != "Bearer "+tt.wantKeyUp {
				t.Errorf("upstream saw Authorization %q, want Bearer %s", seen, tt.wantKeyUp)
			}
			var line map[string]any
			for _, l := range strings.Split(strings.TrimSpace(g.Logs.String()), "\n") {
				json.Unmarshal([]byte(l), &line)
				if line["grpc.method"] == "ListVoices" {
					break
				}
			}
			if line["caller"] != tt.wantCaller {
				t.Errorf("log line caller = %v, want %q (line %v)", line["caller"], tt.wantCaller, line)
			}
			if strings.Contains(g.Logs.String(), "sk_gateway_own_key") || strings.Contains(g.Logs.String(), callerKey) {
				t.Error("a key reached the log")
			}
		})
	}
}
