package speech_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/grpc"

	speechv1 "github.com/speechgate/speechgate/gen/speech/v1"
	"github.com/speechgate/speechgate/internal/gatewaytest"
)

// pacedLightningWS is an independent stand-in for Lightning's synthesis
// WebSocket, written from tts-ws.yaml: it answers each flush, in order, with
// `chunks` audio frames `pace` apart and then a complete, as the newest
// documentation says. Each frame's audio is the flush's text (padded to
// whole samples), so that a test can tell which text any audio is of. It
// records every socket and whether the client closed it before its
// answers were all sent.
type pacedLightningWS struct {
	chunks int
	burst  int           // the first frames of each answer go at once,
	pace   time.Duration // the others this far apart
	repeat int           // times the text is repeated in each frame's audio

	mu        sync.Mutex
	sockets   int
	abandoned int // sockets the client closed with answers still to send
}

// audioOf is the stand-in's audio for a flush's text.
func audioOf(text string) []byte {
	b := []byte(text)
	if len(b)%2 == 1 {
		b = append(b, ' ')
	}
	return b
}

func (f *pacedLightningWS) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	defer c.CloseNow()
	f.mu.Lock()
	f.sockets++
	socket := f.sockets
	f.mu.Unlock()
	ctx := r.Context()
	flushes := make(chan string, 64)
	closed := make(chan struct{})
	go func() { // the reader: text in, flushes queued
		defer close(closed)
		var text strings.Builder
		for {
			_, data, err := c.Read(ctx)
			if err != nil {
				return
			}
			var m struct {
				Text     string `json:"text"`
				Flush    bool   `json:"flush"`
				Continue bool   `json:"continue"`
			}
			json.Unmarshal(data, &m)
			text.WriteString(m.Text)
			if m.Flush || !m.Continue {
				flushes <- text.String()
				text.Reset()
			}
		}
	}()
	for n := 0; ; n++ {
		var text string
		select {
		case text = <-flushes:
		case <-closed:
			return
		}
		id := fmt.Sprintf("req-%d-%d", socket, n)
		frame, _ := json.Marshal(map[string]any{"request_id": id, "status": "chunk",
			"data": map[string]string{"audio": base64.StdEncoding.EncodeToString(bytes.Repeat(audioOf(text), f.repeat))}})
		if !f.answer(ctx, c, frame, text, closed) {
			f.mu.Lock()
			f.abandoned++
			f.mu.Unlock()
			return
		}
		if c.Write(ctx, websocket.MessageText, fmt.Appendf(nil, `{"request_id":%q,"status":"complete"}`, id)) != nil {
			return
		}
	}
}

// answer sends a flush's audio frames; it reports whether they all went
// before the client closed the socket.
func (f *pacedLightningWS) answer(ctx context.Context, c *websocket.Conn, frame []byte, text string, closed <-chan struct{}) bool {
	if strings.TrimSpace(text) == "" {
		return true
	}
	for i := range f.chunks {
		select {
		case <-closed:
			return false
		default:
		}
		if i >= f.burst {
			time.Sleep(f.pace)
		}
		if c.Write(ctx, websocket.MessageText, frame) != nil {
			return false
		}
	}
	return true
}

func TestSynthesizeStreamBargeIn(t *testing.T) {
	t.Parallel()
	// A long answer: a burst of frames large enough that gRPC's flow
	// control holds the gateway back (when the clear comes, much of the old
	// answer waits in the gateway, which must drop it), then frames at a
	// pace, so that the answer is still going when the clear comes.
	fake := &pacedLightningWS{chunks: 400, burst: 100, pace: 2 * time.Millisecond, repeat: 300}
	g := gatewaytest.Start(t, fake, gatewaytest.Options{})
	// Fixed flow-control windows: gRPC's bandwidth estimate would otherwise
	// grow them, on a busy machine, until the whole burst fits on the wire
	// and nothing is left in the gateway to drop.
	client := speechv1.NewSynthesisServiceClient(g.Dial(t, grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10)))
	stream, err := client.SynthesizeStream(gatewaytest.WithKey(t.Context(), callerKey))
	if err != nil {
		t.Fatal(err)
	}
	stream.Send(gatewaytest.TextConfig(&speechv1.SynthesisConfig{VoiceId: "magnus", SampleRateHz: 16000}))
	const old1, old2, fresh = "The old answer, first part. ", "The old answer goes on. ", "A new answer."
	stream.Send(gatewaytest.TextPiece(old1, true))
	stream.Send(gatewaytest.TextPiece(old2, true))
	stream.Send(gatewaytest.TextPiece("and unflushed text", false))

	// Barge in once the old answer is well under way.
	var before []*speechv1.SynthesizeStreamResponse
	for audio := 0; audio < 20; {
		msg, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		before = append(before, msg)
		if msg.GetAudio() != nil {
			audio++
		}
	}
	if err := stream.Send(&speechv1.SynthesizeStreamRequest{Part: &speechv1.SynthesizeStreamRequest_Clear{Clear: &speechv1.ClearAudio{}}}); err != nil {
		t.Fatal(err)
	}
	stream.Send(&speechv1.SynthesizeStreamRequest{Part: &speechv1.SynthesizeStreamRequest_Text{Text: &speechv1.TextPiece{
		Text: fresh, Flush: true, SegmentId: "answer-2"}}})
	stream.CloseSend()
	rest := gatewaytest.Receive(stream, nil)
	if rest.Err != nil {
		t.Fatal(rest.Err)
	}
	all := slices.Concat(before, rest.Events)

	// Find the answer to the clear; everything after it is of the new text.
	at := -1
	var lastAudio *speechv1.AudioChunk
	for i, m := range all {
		if m.GetCleared() != nil {
			at = i
			break
		}
		if a := m.GetAudio(); a != nil {
			lastAudio = a
			if !bytes.Equal(a.GetData(), bytes.Repeat(audioOf(old1), fake.repeat)) && !bytes.Equal(a.GetData(), bytes.Repeat(audioOf(old2), fake.repeat)) {
				t.Fatalf("audio %d before the clear is of neither old segment: %.40q…", a.GetSequence(), a.GetData())
			}
		}
	}
	if at < 0 {
		t.Fatal("no cleared event")
	}
	cleared := all[at].GetCleared()
	if cleared.LastAudioSequence == nil || cleared.GetLastAudioSequence() != lastAudio.GetSequence() {
		t.Errorf("cleared.last_audio_sequence = %v, want %d, the last audio before it", cleared.LastAudioSequence, lastAudio.GetSequence())
	}
	if d := gatewaytest.Diff([]string{"seg-1", "seg-2"}, cleared.GetSegmentIds()); d != "" {
		t.Errorf("cleared segments (-want +got):\n%s", d)
	}
	var after []byte
	next := lastAudio.GetSequence() + 1
	for _, m := range all[at+1:] {
		switch {
		case m.GetAudio() != nil:
			a := m.GetAudio()
			if !bytes.Equal(a.GetData(), bytes.Repeat(audioOf(fresh), fake.repeat)) || a.GetSegmentId() != "answer-2" {
				t.Fatalf("stale audio after cleared: %.40q… of segment %q", a.GetData(), a.GetSegmentId())
			}
			if a.GetSequence() != next {
				t.Errorf("audio sequence %d after cleared, want %d: no gaps", a.GetSequence(), next)
			}
			next++
			after = append(after, a.GetData()...)
		case m.GetSegmentDone() != nil && m.GetSegmentDone().GetSegmentId() != "answer-2":
			t.Errorf("segment_done for a cleared segment: %v", m.GetSegmentDone())
		}
	}
	if want := bytes.Repeat(audioOf(fresh), fake.chunks*fake.repeat); !bytes.Equal(after, want) {
		t.Errorf("after the clear: %d bytes of audio, want the new answer's %d", len(after), len(want))
	}
	if len(rest.Segments) != 1 || rest.Segments[0].GetSegmentId() != "answer-2" || rest.Segments[0].GetCharacters() != uint32(len(fresh)) {
		t.Errorf("segment_done events after the clear = %v; want one, for answer-2", rest.Segments)
	}
	if tot := rest.Totals; tot.GetClears() != 1 || tot.GetAudioChunks() != next || tot.GetDiscardedAudioBytes() == 0 {
		t.Errorf("totals = %v; want 1 clear, %d audio messages, and audio discarded", tot, next)
	}

	// The abandoned socket was closed mid-answer, and not reused: the new
	// text went on a second socket.
	fake.mu.Lock()
	defer fake.mu.Unlock()
	if fake.sockets != 2 || fake.abandoned != 1 {
		t.Errorf("the stand-in saw %d sockets, %d closed mid-answer; want 2 and 1", fake.sockets, fake.abandoned)
	}
}
