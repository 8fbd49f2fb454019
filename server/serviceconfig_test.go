package server_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/speechgate/speechgate/internal/gatewaytest"
	"github.com/speechgate/speechgate/internal/smallest"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	speechv1 "github.com/speechgate/speechgate/gen/speech/v1"
)

// flaky answers get_voices with failures first, then the list.
type flaky struct {
	calls    atomic.Int32
	failures int32
	status   int
	header   map[string]string
}

func (f *flaky) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if f.calls.Add(1) <= f.failures {
		for k, v := range f.header {
			w.Header().Set(k, v)
		}
		w.WriteHeader(f.status)
		io.WriteString(w, `{"error":"try again"}`)
		return
	}
	io.WriteString(w, `{"voices":[{"voiceId":"avery","displayName":"Avery"}]}`)
}

// TestPublishedServiceConfigRetries dials the gateway with the service
// config clients are told to load, and checks that it retries what is safe
// to retry, honouring the gateway's pushback.
func TestPublishedServiceConfigRetries(t *testing.T) {
	t.Parallel()
	sc, err := os.ReadFile("../deploy/service-config.json")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		upstream *flaky
		config   bool
		wantCode codes.Code
		minTime  time.Duration
	}{
		{name: "without the config an UNAVAILABLE reaches the caller", upstream: &flaky{failures: 1, status: 503}, wantCode: codes.Unavailable},
		{name: "with it the call is retried", upstream: &flaky{failures: 2, status: 503}, config: true, wantCode: codes.OK},
		{name: "a 429's Retry-After is waited out", upstream: &flaky{failures: 1, status: 429, header: map[string]string{"Retry-After": "1"}},
			config: true, wantCode: codes.OK, minTime: time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			// The gateway's own retries are off: this is about the client's.
			g := gatewaytest.Start(t, tt.upstream, gatewaytest.Options{Client: func(c *smallest.Config) { c.MaxAttempts = 1 }})
			opts := []grpc.DialOption{
				grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return g.DialRaw(ctx) }),
				grpc.WithTransportCredentials(insecure.NewCredentials()),
			}
			if tt.config {
				opts = append(opts, grpc.WithDefaultServiceConfig(string(sc)))
			}
			conn, err := grpc.NewClient("passthrough:///bufnet", opts...)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			began := time.Now()
			_, err = speechv1.NewSynthesisServiceClient(conn).ListVoices(gatewaytest.WithKey(t.Context(), callerKey), &speechv1.ListVoicesRequest{})
			if status.Code(err) != tt.wantCode {
				t.Fatalf("ListVoices = %v, want %v", err, tt.wantCode)
			}
			if took := time.Since(began); took < tt.minTime {
				t.Errorf("the retry came after %v; the pushback asked for %v", took, tt.minTime)
			}
		})
	}
}
