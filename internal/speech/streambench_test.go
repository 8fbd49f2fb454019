package speech_test

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"

	"github.com/coder/websocket"

	speechv1 "github.com/speechgate/speechgate/gen/speech/v1"
	"github.com/speechgate/speechgate/internal/gatewaytest"
)

// lightningFromMemory answers every flush on Lightning's WebSocket with the
// same frames from memory, then a complete, as fast as the socket takes
// them.
type lightningFromMemory struct{ frames [][]byte }

func (l lightningFromMemory) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	defer c.CloseNow()
	ctx := r.Context()
	for {
		_, data, err := c.Read(ctx)
		if err != nil {
			return
		}
		var m struct {
			Text  string `json:"text"`
			Flush bool   `json:"flush"`
		}
		json.Unmarshal(data, &m)
		if !m.Flush || m.Text == "" {
			continue
		}
		for _, f := range l.frames {
			if c.Write(ctx, websocket.MessageText, f) != nil {
				return
			}
		}
		if c.Write(ctx, websocket.MessageText, []byte(`{"request_id":"r","status":"complete"}`)) != nil {
			return
		}
	}
}

// BenchmarkSynthesizeStream runs whole SynthesizeStream calls through the
// gateway, in memory, against a Lightning socket that answers from memory:
// one flush, 1000 chunks of 960 bytes. Pooled sockets carry the calls after
// the first, as in production.
func BenchmarkSynthesizeStream(b *testing.B) {
	frame := fmt.Appendf(nil, `{"request_id":"r","status":"chunk","data":{"audio":%q}}`, base64.StdEncoding.EncodeToString(make([]byte, 960)))
	frames := make([][]byte, 1000)
	for i := range frames {
		frames[i] = frame
	}
	g := gatewaytest.Start(b, lightningFromMemory{frames: frames}, gatewaytest.Options{})
	ctx := gatewaytest.WithKey(b.Context(), callerKey)
	b.SetBytes(1000 * 960)
	b.ReportAllocs()
	for b.Loop() {
		stream, err := g.Synth.SynthesizeStream(ctx)
		if err != nil {
			b.Fatal(err)
		}
		stream.Send(gatewaytest.TextConfig(&speechv1.SynthesisConfig{VoiceId: "magnus", SampleRateHz: 24000}))
		stream.Send(gatewaytest.TextPiece("Hello there.", true))
		stream.CloseSend()
		n := 0
		for {
			msg, err := stream.Recv()
			if err != nil {
				if n != 1000*960 {
					b.Fatalf("%v after %d bytes", err, n)
				}
				break
			}
			n += len(msg.GetAudio().GetData())
		}
	}
}
