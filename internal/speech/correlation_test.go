package speech_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/speechgate/speechgate/internal/gatewaytest"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	speechv1 "github.com/speechgate/speechgate/gen/speech/v1"
)

func TestCorrelation(t *testing.T) {
	t.Parallel()
	fake := &fakeTTS{chunks: [][]byte{{1, 2}}, split: 1 << 20} // answers with X-Request-Id: fake-req-1
	g := gatewaytest.Start(t, fake, gatewaytest.Options{})
	tests := []struct {
		name   string
		sent   string // the caller's x-request-id
		wantID func(string) bool
	}{
		{name: "the caller's id is kept", sent: "checkout-42.a_b", wantID: func(id string) bool { return id == "checkout-42.a_b" }},
		{name: "an unusable id is replaced", sent: "has spaces/and slashes", wantID: func(id string) bool { return len(id) == 24 }},
		{name: "no id gets one", wantID: func(id string) bool { return len(id) == 24 }},
	}
	for _, tt := range tests {
		ctx := gatewaytest.WithKey(t.Context(), callerKey)
		if tt.sent != "" {
			ctx = metadata.AppendToOutgoingContext(ctx, "x-request-id", tt.sent)
		}
		var header metadata.MD
		stream, err := g.Synth.Synthesize(ctx, &speechv1.SynthesizeRequest{Text: "hi", VoiceId: "avery"}, grpc.Header(&header))
		if err != nil {
			t.Fatal(err)
		}
		for {
			if _, err := stream.Recv(); err != nil {
				break
			}
		}
		ids := header.Get("x-request-id")
		if len(ids) != 1 || !tt.wantID(ids[0]) {
			t.Fatalf("%s: response x-request-id = %v", tt.name, ids)
		}
		id := ids[0]
		if up := header.Get("x-upstream-request-id"); len(up) != 1 || up[0] != "fake-req-1" {
			t.Errorf("%s: x-upstream-request-id = %v, want Smallest's id", tt.name, up)
		}
		if body, _ := fake.body.Load().(map[string]any); body["request_id"] != id {
			t.Errorf("%s: Smallest got request_id %v, want %q", tt.name, body["request_id"], id)
		}
		found := false
		for _, line := range strings.Split(g.Logs.String(), "\n") {
			var m map[string]any
			if json.Unmarshal([]byte(line), &m) == nil && m["grpc.method"] == "Synthesize" && m["request_id"] == id {
				found = true
			}
		}
		if !found {
			t.Errorf("%s: no log line carries request_id %q", tt.name, id)
		}
	}
}
