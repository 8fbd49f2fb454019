package contract

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"

	speechv1 "github.com/speechgate/speechgate/gen/speech/v1"
	"github.com/speechgate/speechgate/internal/rpcerror"
)

// TestKeywordWeights: a keyword's weight goes upstream as Smallest's
// intensifier, fractions and zero included; the whole-number intensifier
// it supersedes still works; neither set means 1.
func TestKeywordWeights(t *testing.T) {
	t.Parallel()
	var v rpcerror.Violations
	got := PlanLive(&v, &speechv1.LiveTranscriptionConfig{Language: "en", Keywords: []*speechv1.Keyword{
		{Text: "Blackwell", Weight: proto.Float64(1.5)},
		{Text: "Jensen Huang", Intensifier: 3},
		{Text: "Hopper"},
		{Text: "GPU", Weight: proto.Float64(0)},
	}})
	if err := v.Err(); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]string{"Blackwell:1.5", "Jensen Huang:3", "Hopper:1", "GPU:0"}, got.Keywords); d != "" {
		t.Errorf("keywords sent (-want +got):\n%s", d)
	}
}
