package speech_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/speechgate/speechgate/internal/gatewaytest"

	"github.com/coder/websocket"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	speechv1 "github.com/speechgate/speechgate/gen/speech/v1"
	"github.com/speechgate/speechgate/internal/audio"
	"github.com/speechgate/speechgate/internal/emulator"
	"github.com/speechgate/speechgate/internal/sentence"
)

func TestSynthesizeStreamSpeaksAsTextArrives(t *testing.T) {
	t.Parallel()
	g := gatewaytest.Start(t, emulator.New(emulator.Options{}), gatewaytest.Options{})
	ctx := gatewaytest.WithKey(t.Context(), callerKey)
	sentences := []string{"Voice agents write text a token at a time.", "The gateway speaks each sentence as it ends.", "Then it stops."}
	stream, err := g.Synth.SynthesizeStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	stream.Send(gatewaytest.TextConfig(&speechv1.SynthesisConfig{VoiceId: "avery", SampleRateHz: 16000, WordTimestamps: true,
		Encoding: speechv1.AudioEncoding_AUDIO_ENCODING_WAV}))
	arrived := make(chan struct{})
	result := make(chan *gatewaytest.Streamed, 1)
	go func() { result <- gatewaytest.Receive(stream, arrived) }()
	for i, sentence := range sentences {
		words := strings.Fields(sentence)
		for j, w := range words {
			stream.Send(gatewaytest.TextPiece(w+" ", j == len(words)-1)) // word by word, a flush at the sentence end
		}
		if i == 0 {
			// The rest of the paragraph is not written until audio has come:
			// a gateway that waited for the whole text would never send any.
			select {
			case <-arrived:
			case <-time.After(5 * time.Second):
				t.Fatal("no audio 5 s after the first sentence; audio must start before the text is complete")
			}
		}
	}
	stream.CloseSend()
	got := <-result
	if got.Err != nil {
		t.Fatal(got.Err)
	}
	if !got.Format.GetWordTimestamps() || got.Format.GetEncoding() != speechv1.AudioEncoding_AUDIO_ENCODING_WAV {
		t.Errorf("format = %v", got.Format)
	}
	if n := bytes.Count(got.Bytes(), []byte("RIFF")); n != 1 {
		t.Errorf("%d WAV headers in the stream, want 1", n)
	}

	// Word timings: one per word, in order, never going backwards, and each
	// sentence's words after the audio of the sentences before it.
	var all []string
	for _, s := range sentences {
		all = append(all, strings.Fields(s)...)
	}
	if len(got.Words) != len(all) {
		t.Fatalf("%d word timings for %d words", len(got.Words), len(all))
	}
	var last uint32
	for i, w := range got.Words {
		if w.GetWord() != all[i] || w.GetStartMs() < last || w.GetEndMs() < w.GetStartMs() {
			t.Fatalf("word %d = %v after a start of %d ms; want %q, monotonic", i, w, last, all[i])
		}
		last = w.GetStartMs()
	}
	firstSentenceMS := uint32(len(sentences[0]+" ")) * 60
	if second := got.Words[len(strings.Fields(sentences[0]))]; second.GetStartMs() < firstSentenceMS {
		t.Errorf("the second sentence starts at %d ms, inside the first sentence's %d ms of audio", second.GetStartMs(), firstSentenceMS)
	}
	tot := got.Totals
	if tot.GetWords() != uint32(len(all)) || tot.GetTextPieces() != 4 || tot.GetAudioBytes() != uint64(len(got.Bytes())) {
		t.Errorf("totals = %v; want %d words, 4 pieces (3 flushes and the end), %d bytes", tot, len(all), len(got.Bytes()))
	}

	// The audio says the whole paragraph: the emulator reads its own speech back.
	resp, err := g.Trans.Transcribe(ctx, &speechv1.TranscribeRequest{Source: &speechv1.TranscribeRequest_Audio{Audio: got.Bytes()}, Config: en()})
	if err != nil {
		t.Fatal(err)
	}
	if want, said := strings.Join(sentences, " "), strings.Join(strings.Fields(resp.GetTranscript().GetText()), " "); said != want {
		t.Errorf("the audio says %q, want %q", said, want)
	}
}

// fakeLightningWS is an independent stand-in for Lightning's synthesis
// WebSocket that answers each flush with fixed, distinctive audio.
type fakeLightningWS struct {
	chunks [][]byte
	hits   atomic.Int32
}

func (f *fakeLightningWS) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.hits.Add(1)
	c, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	defer c.CloseNow()
	for n := 0; ; n++ {
		_, data, err := c.Read(r.Context())
		if err != nil {
			return
		}
		var m map[string]any
		json.Unmarshal(data, &m)
		if m["flush"] == true && m["text"] != "" {
			for _, ch := range f.chunks {
				b, _ := json.Marshal(map[string]any{"request_id": fmt.Sprint("r", n), "status": "chunk", "data": map[string]string{"audio": base64.StdEncoding.EncodeToString(ch)}})
				c.Write(r.Context(), websocket.MessageText, b)
			}
		}
		if m["continue"] == false {
			c.Write(r.Context(), websocket.MessageText, []byte(`{"status":"complete"}`))
		}
	}
}

func TestSynthesizeStreamRelaysUpstreamBytes(t *testing.T) {
	t.Parallel()
	// Odd-sized chunks: samples are split across them.
	fake := &fakeLightningWS{chunks: [][]byte{{1, 2, 3}, {4, 5, 6, 7, 8}, {9, 10}}}
	g := gatewaytest.Start(t, fake, gatewaytest.Options{})
	for _, tt := range []struct {
		enc  speechv1.AudioEncoding
		want func([]byte) []byte
	}{
		{enc: speechv1.AudioEncoding_AUDIO_ENCODING_PCM_S16LE, want: func(b []byte) []byte { return b }},
		{enc: speechv1.AudioEncoding_AUDIO_ENCODING_MULAW, want: mulaw},
	} {
		stream, err := g.Synth.SynthesizeStream(gatewaytest.WithKey(t.Context(), callerKey))
		if err != nil {
			t.Fatal(err)
		}
		stream.Send(gatewaytest.TextConfig(&speechv1.SynthesisConfig{VoiceId: "magnus", Encoding: tt.enc}))
		stream.Send(gatewaytest.TextPiece("One.", true))
		stream.Send(gatewaytest.TextPiece("Two.", true))
		stream.CloseSend()
		got := gatewaytest.Receive(stream, nil)
		if got.Err != nil {
			t.Fatal(got.Err)
		}
		pcm := bytes.Repeat(bytes.Join(fake.chunks, nil), 2)
		if want := tt.want(pcm); !bytes.Equal(got.Bytes(), want) {
			t.Errorf("%v: the caller got %v, want %v", tt.enc, got.Bytes(), want)
		}
	}
}

// mulaw encodes whole PCM16 samples, as the gateway must across chunk boundaries.
func mulaw(pcm []byte) []byte {
	out := make([]byte, len(pcm)/2)
	for i := range out {
		out[i] = audio.MulawEncode(int16(uint16(pcm[2*i]) | uint16(pcm[2*i+1])<<8))
	}
	return out
}

func TestSynthesizeStreamValidates(t *testing.T) {
	t.Parallel()
	fake := &fakeLightningWS{}
	g := gatewaytest.Start(t, fake, gatewaytest.Options{})
	tests := []struct {
		name string
		msgs []*speechv1.SynthesizeStreamRequest
		want []*errdetails.BadRequest_FieldViolation
	}{
		{
			name: "config problems",
			msgs: []*speechv1.SynthesizeStreamRequest{gatewaytest.TextConfig(&speechv1.SynthesisConfig{VoiceId: "magnus", WordTimestamps: true,
				Encoding: speechv1.AudioEncoding_AUDIO_ENCODING_MP3, MaxBufferFlushMs: 2000, Speed: 9})},
			want: []*errdetails.BadRequest_FieldViolation{
				{Field: "config.speed", Reason: "OUT_OF_RANGE", Description: "must be from 0.5 to 2.0 (or 0 for 1.0), got 9"},
				{Field: "config.encoding", Reason: "NOT_ALLOWED", Description: "must be PCM_S16LE, WAV, MULAW or ALAW for streamed text (Lightning's WebSocket produces PCM), got AUDIO_ENCODING_MP3"},
				{Field: "config.word_timestamps", Reason: "NOT_ALLOWED", Description: `voice "magnus" does not provide word timings; voices that do: avery, devansh, kartik, liam, maithili, meher`},
				{Field: "config.max_buffer_flush_ms", Reason: "OUT_OF_RANGE", Description: "must be from 0 to 1000, got 2000"},
			},
		},
		{
			name: "text first",
			msgs: []*speechv1.SynthesizeStreamRequest{gatewaytest.TextPiece("hi", true)},
			want: []*errdetails.BadRequest_FieldViolation{{Field: "config", Reason: "REQUIRED", Description: "the first message must hold the config; text follows it"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			stream, err := g.Synth.SynthesizeStream(gatewaytest.WithKey(t.Context(), callerKey))
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range tt.msgs {
				stream.Send(m)
			}
			stream.CloseSend()
			got := gatewaytest.Receive(stream, nil)
			if status.Code(got.Err) != codes.InvalidArgument {
				t.Fatalf("err = %v", got.Err)
			}
			if d := gatewaytest.Diff(tt.want, gatewaytest.Detail[*errdetails.BadRequest](got.Err).GetFieldViolations()); d != "" {
				t.Errorf("violations (-want +got):\n%s", d)
			}
		})
	}
	t.Run("a piece too long ends the session", func(t *testing.T) {
		t.Parallel()
		stream, err := g.Synth.SynthesizeStream(gatewaytest.WithKey(t.Context(), callerKey))
		if err != nil {
			t.Fatal(err)
		}
		stream.Send(gatewaytest.TextConfig(&speechv1.SynthesisConfig{VoiceId: "magnus"}))
		stream.Send(gatewaytest.TextPiece(strings.Repeat("a", 2001), false))
		got := gatewaytest.Receive(stream, nil)
		if v := gatewaytest.Detail[*errdetails.BadRequest](got.Err).GetFieldViolations(); len(v) != 1 || v[0].GetField() != "text.text" {
			t.Fatalf("err = %v", got.Err)
		}
	})
	t.Cleanup(func() {
		if n := fake.hits.Load(); n != 1 {
			t.Errorf("%d upstream sessions; only the session with a valid config may open one", n)
		}
	})
}

// recordingSSE stands in for POST /waves/v1/tts/live and records the text of
// every request; its "audio" is the text's own bytes, in two frames, so that
// the order the caller hears is visible. hold, if set, may refuse a request;
// midway, if set, is called between the frames, with the response under way.
type recordingSSE struct {
	mu     sync.Mutex
	texts  []string
	hold   func(i int, text string) (status int)
	midway func(text string)
}

func (f *recordingSSE) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Text string `json:"text"`
	}
	json.NewDecoder(r.Body).Decode(&body)
	f.mu.Lock()
	i := len(f.texts)
	f.texts = append(f.texts, body.Text)
	f.mu.Unlock()
	if f.hold != nil {
		if code := f.hold(i, body.Text); code != 200 {
			w.WriteHeader(code)
			io.WriteString(w, `{"error":"boom"}`)
			return
		}
	}
	w.Header().Set("X-Request-Id", "piece-"+strings.Fields(body.Text)[2]) // "Sentence number N ..."
	half := len(body.Text) / 2
	for i, part := range []string{body.Text[:half], body.Text[half:]} {
		fmt.Fprintf(w, "event: audio\ndata: {\"audio\": %q, \"done\": false, \"status\": \"206\"}\n\n", base64.StdEncoding.EncodeToString([]byte(part)))
		w.(http.Flusher).Flush()
		if i == 0 && f.midway != nil {
			f.midway(body.Text)
		}
	}
	io.WriteString(w, "data: {\"status\": \"200\", \"done\": true}\n\n")
}

func longText() string {
	var b strings.Builder
	for i := 0; b.Len() < 5000; i++ {
		fmt.Fprintf(&b, "Sentence number %d says something worth hearing, and then a little more. ", i)
	}
	return strings.TrimSpace(b.String())[:5000]
}

func TestSynthesizeLongText(t *testing.T) {
	t.Parallel()
	text := longText()
	want := sentence.Split(text, 250)
	second := make(chan struct{})
	fake := &recordingSSE{
		hold: func(_ int, piece string) int {
			if piece == want[1].Text {
				close(second)
			}
			return 200
		},
		midway: func(piece string) {
			if piece != want[0].Text {
				return
			}
			// The first piece streams on only once the second is requested: the look-ahead.
			select {
			case <-second:
			case <-time.After(5 * time.Second):
				t.Error("the second piece was not requested while the first gatewaytest.Streamed")
			}
		},
	}
	g := gatewaytest.Start(t, fake, gatewaytest.Options{})
	got := gatewaytest.Synthesize(gatewaytest.WithKey(t.Context(), callerKey), g.Synth, &speechv1.SynthesizeRequest{Text: text, VoiceId: "magnus",
		Encoding: speechv1.AudioEncoding_AUDIO_ENCODING_WAV, SampleRateHz: 8000})
	if got.Err != nil {
		t.Fatal(got.Err)
	}
	if d := gatewaytest.Diff([]string{"format", "audio", "totals"}, got.Order); d != "" {
		t.Fatalf("one continuous stream expected (-want +got):\n%s", d)
	}
	fake.mu.Lock()
	requested := len(fake.texts)
	fake.mu.Unlock()
	if requested != len(want) || len(want) < 20 {
		t.Fatalf("%d upstream requests for 5,000 characters in %d pieces", requested, len(want))
	}
	for i, p := range want {
		if len([]rune(p.Text)) > 250 || (i < len(want)-1 && !strings.HasSuffix(p.Text, ".")) {
			t.Errorf("piece %d (%d characters) = %q; want at most 250, ending a sentence", i, len([]rune(p.Text)), p.Text)
		}
	}
	audio := got.Bytes()
	if !bytes.HasPrefix(audio, []byte("RIFF")) || bytes.Count(audio, []byte("RIFF")) != 1 {
		t.Error("want exactly one WAV header, at the start")
	}
	// The fake's audio is each piece's text: the caller must hear them all, in order.
	var heard []string
	for _, p := range want {
		heard = append(heard, p.Text)
	}
	if string(audio[44:]) != strings.Join(heard, "") || strings.Join(strings.Fields(strings.Join(heard, " ")), " ") != strings.Join(strings.Fields(text), " ") {
		t.Error("the stream does not hold every piece of the text, in order")
	}
	var next uint32
	for i, c := range got.Audio {
		if c.GetSequence() != uint32(i) || c.GetOffsetMs() != next {
			t.Fatalf("chunk %d: sequence %d, offset %d ms; want %d, %d", i, c.GetSequence(), c.GetOffsetMs(), i, next)
		}
		next += c.GetDurationMs()
	}
	tot := got.Totals
	if tot.GetTextPieces() != uint32(len(want)) || tot.GetCharacters() != 5000 || tot.GetAudioDurationMs() != next {
		t.Errorf("totals %v", tot)
	}
	firstID, lastID := "piece-"+strings.Fields(want[0].Text)[2], "piece-"+strings.Fields(want[len(want)-1].Text)[2]
	if got.Format.GetUpstreamRequestId() != firstID || tot.GetUpstreamRequestId() != lastID {
		t.Errorf("format names %q, totals %q; want %q and %q", got.Format.GetUpstreamRequestId(), tot.GetUpstreamRequestId(), firstID, lastID)
	}
}

func TestSynthesizeLongTextFailures(t *testing.T) {
	t.Parallel()
	t.Run("a failed piece is named", func(t *testing.T) {
		t.Parallel()
		pieces := sentence.Split(longText(), 250)
		g := gatewaytest.Start(t, &recordingSSE{hold: func(_ int, text string) int {
			if text == pieces[2].Text {
				return 500
			}
			return 200
		}}, gatewaytest.Options{})
		got := gatewaytest.Synthesize(gatewaytest.WithKey(t.Context(), callerKey), g.Synth, &speechv1.SynthesizeRequest{Text: longText(), VoiceId: "magnus"})
		wantMsg := fmt.Sprintf("text piece 3 of %d (characters %d to %d): Smallest is unavailable (HTTP 500): boom", len(pieces), pieces[2].Start+1, pieces[2].End)
		meta := gatewaytest.ErrorInfo(got.Err).GetMetadata()
		if status.Code(got.Err) != codes.Unavailable || status.Convert(got.Err).Message() != wantMsg || meta["textPiece"] != "3" || meta["textStart"] != fmt.Sprint(pieces[2].Start) {
			t.Fatalf("err = %v (metadata %v); want Unavailable: %s", got.Err, meta, wantMsg)
		}
		if got.Totals != nil || len(got.Audio) == 0 {
			t.Errorf("the pieces before the failure must arrive, and no totals")
		}
	})
	t.Run("look-ahead over the concurrency limit waits its turn", func(t *testing.T) {
		t.Parallel()
		var active atomic.Int32
		var mu sync.Mutex
		g := gatewaytest.Start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if active.Add(1) > 1 { // one request at a time, as the published limits say
				active.Add(-1)
				w.WriteHeader(429)
				io.WriteString(w, `{"error":"Too many concurrent requests"}`)
				return
			}
			defer active.Add(-1)
			mu.Lock()
			defer mu.Unlock()
			(&recordingSSE{}).ServeHTTP(w, r)
		}), gatewaytest.Options{})
		got := gatewaytest.Synthesize(gatewaytest.WithKey(t.Context(), callerKey), g.Synth, &speechv1.SynthesizeRequest{Text: longText(), VoiceId: "magnus"})
		if got.Err != nil || got.Totals.GetTextPieces() < 20 {
			t.Fatalf("err = %v, totals %v", got.Err, got.Totals)
		}
	})
}
