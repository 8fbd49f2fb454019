package speech_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/speechgate/speechgate/internal/gatewaytest"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	speechv1 "github.com/speechgate/speechgate/gen/speech/v1"
	"github.com/speechgate/speechgate/internal/emulator"
)

func TestSynthesizeStreamDescribesItself(t *testing.T) {
	t.Parallel()
	g := gatewaytest.Start(t, emulator.New(emulator.Options{}), gatewaytest.Options{})
	const text = "Hello there. This stream describes itself." // 42 characters → 2.52 s of audio
	tests := []struct {
		name       string
		encoding   speechv1.AudioEncoding
		rate       uint32
		wantFormat *speechv1.SynthesisFormat
		wantBytes  uint64 // 0: not computable in advance
		wantMS     *uint32
	}{
		{
			name: "defaults are PCM at 24 kHz",
			wantFormat: &speechv1.SynthesisFormat{Encoding: speechv1.AudioEncoding_AUDIO_ENCODING_PCM_S16LE, SampleRateHz: 24000,
				Channels: 1, BitsPerSample: 16, Container: speechv1.AudioContainer_AUDIO_CONTAINER_NONE},
			wantBytes: 2520 * 48, wantMS: ptr[uint32](2520),
		},
		{
			name: "WAV at 16 kHz", encoding: speechv1.AudioEncoding_AUDIO_ENCODING_WAV, rate: 16000,
			wantFormat: &speechv1.SynthesisFormat{Encoding: speechv1.AudioEncoding_AUDIO_ENCODING_WAV, SampleRateHz: 16000,
				Channels: 1, BitsPerSample: 16, Container: speechv1.AudioContainer_AUDIO_CONTAINER_WAV},
			wantBytes: 44 + 2520*32, wantMS: ptr[uint32](2520),
		},
		{
			name: "mu-law at 8 kHz", encoding: speechv1.AudioEncoding_AUDIO_ENCODING_MULAW, rate: 8000,
			wantFormat: &speechv1.SynthesisFormat{Encoding: speechv1.AudioEncoding_AUDIO_ENCODING_MULAW, SampleRateHz: 8000,
				Channels: 1, BitsPerSample: 8, Container: speechv1.AudioContainer_AUDIO_CONTAINER_NONE},
			wantBytes: 2520 * 8, wantMS: ptr[uint32](2520),
		},
		{
			name: "A-law at 44.1 kHz", encoding: speechv1.AudioEncoding_AUDIO_ENCODING_ALAW, rate: 44100,
			wantFormat: &speechv1.SynthesisFormat{Encoding: speechv1.AudioEncoding_AUDIO_ENCODING_ALAW, SampleRateHz: 44100,
				Channels: 1, BitsPerSample: 8, Container: speechv1.AudioContainer_AUDIO_CONTAINER_NONE},
			wantBytes: 111132, wantMS: ptr[uint32](2520),
		},
		{
			name: "MP3 has no timing", encoding: speechv1.AudioEncoding_AUDIO_ENCODING_MP3, rate: 24000,
			wantFormat: &speechv1.SynthesisFormat{Encoding: speechv1.AudioEncoding_AUDIO_ENCODING_MP3, SampleRateHz: 24000,
				Channels: 1, BitsPerSample: 0, Container: speechv1.AudioContainer_AUDIO_CONTAINER_MP3},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := gatewaytest.Synthesize(gatewaytest.WithKey(t.Context(), callerKey), g.Synth, &speechv1.SynthesizeRequest{
				Text: text, VoiceId: "avery", Encoding: tt.encoding, SampleRateHz: tt.rate, RequestId: "mine-42"})
			if got.Err != nil {
				t.Fatal(got.Err)
			}
			if d := gatewaytest.Diff([]string{"format", "audio", "totals"}, got.Order); d != "" {
				t.Fatalf("message order (-want +got):\n%s", d)
			}
			want := formatOnly(tt.wantFormat)
			want.VoiceId, want.Model, want.RequestId = "avery", "lightning_v3.1", "mine-42"
			want.UpstreamRequestId, want.UpstreamSessionId = got.Format.GetUpstreamRequestId(), got.Format.GetUpstreamSessionId()
			if got.Format.GetUpstreamRequestId() == "" || got.Format.GetUpstreamSessionId() == "" {
				t.Error("format lacks the upstream ids")
			}
			if d := gatewaytest.Diff(want, got.Format); d != "" {
				t.Errorf("format (-want +got):\n%s", d)
			}

			var next uint32
			for i, c := range got.Audio {
				if c.GetSequence() != uint32(i) {
					t.Fatalf("chunk %d has sequence %d", i, c.GetSequence())
				}
				if tt.wantMS == nil {
					if c.OffsetMs != nil || c.DurationMs != nil {
						t.Fatalf("chunk %d has timing for an encoding without it", i)
					}
					continue
				}
				if c.GetOffsetMs() != next {
					t.Fatalf("chunk %d starts at %d ms, want %d (the end of the previous)", i, c.GetOffsetMs(), next)
				}
				next += c.GetDurationMs()
			}
			audio := got.Bytes()
			tot := got.Totals
			if tot.GetAudioBytes() != uint64(len(audio)) || tot.GetAudioChunks() != uint32(len(got.Audio)) {
				t.Errorf("totals say %d bytes in %d chunks; the stream had %d in %d", tot.GetAudioBytes(), tot.GetAudioChunks(), len(audio), len(got.Audio))
			}
			if tt.wantBytes != 0 && uint64(len(audio)) != tt.wantBytes {
				t.Errorf("%d audio bytes, want %d", len(audio), tt.wantBytes)
			}
			if tt.wantMS != nil && (tot.GetAudioDurationMs() != *tt.wantMS || next != *tt.wantMS) {
				t.Errorf("duration %d ms (chunks sum to %d), want %d", tot.GetAudioDurationMs(), next, *tt.wantMS)
			}
			if tt.wantMS == nil && tot.AudioDurationMs != nil {
				t.Error("totals claim a duration for MP3")
			}
			if tot.GetCharacters() != uint32(len(text)) || tot.GetUpstreamRequestId() != got.Format.GetUpstreamRequestId() {
				t.Errorf("totals = %v", tot)
			}
			if n := bytes.Count(audio, []byte("RIFF")); tt.encoding == speechv1.AudioEncoding_AUDIO_ENCODING_WAV &&
				(n != 1 || len(got.Audio[0].GetData()) != 44 || !bytes.HasPrefix(audio, []byte("RIFF"))) {
				t.Errorf("WAV stream has %d RIFF headers, first chunk of %d bytes; want exactly one header, alone in the first chunk", n, len(got.Audio[0].GetData()))
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

func formatOnly(f *speechv1.SynthesisFormat) *speechv1.SynthesisFormat {
	return &speechv1.SynthesisFormat{Encoding: f.Encoding, SampleRateHz: f.SampleRateHz, Channels: f.Channels,
		BitsPerSample: f.BitsPerSample, Container: f.Container}
}

// fakeTTS is an independent stand-in for POST /waves/v1/tts/live that sends
// chunks as documented, split into writes at awkward places, and records
// what it was asked.
type fakeTTS struct {
	chunks [][]byte
	split  int
	hits   atomic.Int32
	auth   atomic.Value // string
	body   atomic.Value // map[string]any
}

func (f *fakeTTS) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.hits.Add(1)
	f.auth.Store(r.Header.Get("Authorization"))
	var body map[string]any
	json.NewDecoder(r.Body).Decode(&body)
	f.body.Store(body)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("X-Request-Id", "fake-req-1")
	var sb strings.Builder
	for _, c := range f.chunks {
		fmt.Fprintf(&sb, "event: audio\ndata: {\"audio\": %q, \"done\": false, \"status\": \"206\"}\n\n", base64.StdEncoding.EncodeToString(c))
	}
	sb.WriteString("data: {\"status\": \"200\", \"done\": true}\n\n")
	s := sb.String()
	for len(s) > 0 {
		n := min(f.split, len(s))
		io.WriteString(w, s[:n])
		w.(http.Flusher).Flush()
		s = s[n:]
	}
}

func TestSynthesizeRelaysEveryUpstreamByteInOrder(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(1, 2))
	chunks := make([][]byte, 300)
	for i := range chunks {
		chunks[i] = make([]byte, 1+rng.IntN(3000))
		for j := range chunks[i] {
			chunks[i][j] = byte(rng.Uint32())
		}
	}
	fake := &fakeTTS{chunks: chunks, split: 777}
	g := gatewaytest.Start(t, fake, gatewaytest.Options{})
	got := gatewaytest.Synthesize(gatewaytest.WithKey(t.Context(), callerKey), g.Synth, &speechv1.SynthesizeRequest{
		Text: "anything", VoiceId: "magnus", Encoding: speechv1.AudioEncoding_AUDIO_ENCODING_WAV, Speed: 1.5,
		PronunciationDictIds: []string{"dict_1"}, RequestId: "mine-7"})
	if got.Err != nil {
		t.Fatal(got.Err)
	}
	if want := append([]byte(nil), bytes.Join(chunks, nil)...); !bytes.Equal(got.Bytes()[44:], want) {
		t.Fatalf("the caller got %d audio bytes after the header; the upstream sent %d, and they must be equal", len(got.Bytes())-44, len(want))
	}
	// Audio that arrives together may go out together, but only as whole
	// upstream chunks: a message never waits for the rest of a chunk.
	next := 0
	for i, m := range got.Audio[1:] {
		data := m.GetData()
		for len(data) > 0 && next < len(chunks) && bytes.HasPrefix(data, chunks[next]) {
			data = data[len(chunks[next]):]
			next++
		}
		if len(data) > 0 {
			t.Fatalf("audio message %d does not end on an upstream chunk's end", i+1)
		}
	}
	if auth := fake.auth.Load(); auth != "Bearer "+callerKey {
		t.Errorf("upstream Authorization = %q, want the caller's key as a bearer token", auth)
	}
	wantBody := map[string]any{"text": "anything", "voice_id": "magnus", "model": "lightning_v3.1", "sample_rate": 24000.0,
		"speed": 1.5, "output_format": "pcm", "pronunciation_dicts": []any{"dict_1"}, "request_id": "mine-7"}
	if d := gatewaytest.Diff(wantBody, fake.body.Load()); d != "" {
		t.Errorf("upstream request body (-want +got):\n%s", d)
	}
}

func TestSynthesizeValidatesBeforeCallingUpstream(t *testing.T) {
	t.Parallel()
	fake := &fakeTTS{split: 1 << 20}
	g := gatewaytest.Start(t, fake, gatewaytest.Options{})
	tests := []struct {
		name string
		req  *speechv1.SynthesizeRequest
		want []*errdetails.BadRequest_FieldViolation
	}{
		{
			name: "empty request",
			req:  &speechv1.SynthesizeRequest{},
			want: []*errdetails.BadRequest_FieldViolation{
				{Field: "text", Reason: "REQUIRED", Description: "is required and must not be only white space"},
				{Field: "voice_id", Reason: "REQUIRED", Description: "is required"},
			},
		},
		{
			name: "every field wrong",
			req: &speechv1.SynthesizeRequest{
				Text: strings.Repeat("é", 10001), VoiceId: "bad voice", Model: 9, Language: "xx", Speed: 2.5, SampleRateHz: 22050,
				Encoding: speechv1.AudioEncoding_AUDIO_ENCODING_OPUS, PronunciationDictIds: []string{""}, RequestId: strings.Repeat("a", 129),
				SessionId: "a/b", NumberPronunciationLanguage: "english",
			},
			want: []*errdetails.BadRequest_FieldViolation{
				{Field: "text", Reason: "TOO_LONG", Description: "must be at most 10000 characters, got 10001"},
				{Field: "voice_id", Reason: "BAD_FORMAT", Description: "must use only the characters [A-Za-z0-9_.-]"},
				{Field: "model", Reason: "NOT_ALLOWED", Description: "must be a SynthesisModel value, got 9"},
				{Field: "language", Reason: "NOT_ALLOWED", Description: `must be one of auto, en, hi, mr, kn, ta, bn, gu, te, ml, pa, or, es, de, fr, it, nl, sv, pt, ru, el, fi, no, pl, ar, zh, id, ja, ko, ms, tr, vi, got "xx"`},
				{Field: "number_pronunciation_language", Reason: "NOT_ALLOWED", Description: `must be one of auto, en, hi, mr, kn, ta, bn, gu, te, ml, pa, or, es, de, fr, it, nl, sv, pt, ru, el, fi, no, pl, ar, zh, id, ja, ko, ms, tr, vi, got "english"`},
				{Field: "speed", Reason: "OUT_OF_RANGE", Description: "must be from 0.5 to 2.0 (or 0 for 1.0), got 2.5"},
				{Field: "sample_rate_hz", Reason: "NOT_ALLOWED", Description: "must be one of 8000, 16000, 24000, 44100, got 22050"},
				{Field: "pronunciation_dict_ids[0]", Reason: "REQUIRED", Description: "is required"},
				{Field: "request_id", Reason: "TOO_LONG", Description: "must be at most 128 characters, got 129"},
				{Field: "session_id", Reason: "BAD_FORMAT", Description: "must use only the characters [A-Za-z0-9_.-]"},
				{Field: "encoding", Reason: "NOT_ALLOWED", Description: "must be PCM_S16LE, WAV, MP3, MULAW or ALAW for synthesis, got AUDIO_ENCODING_OPUS"},
			},
		},
		{
			name: "white space is not text",
			req:  &speechv1.SynthesizeRequest{Text: " \n\t", VoiceId: "avery"},
			want: []*errdetails.BadRequest_FieldViolation{{Field: "text", Reason: "REQUIRED", Description: "is required and must not be only white space"}},
		},
		{
			name: "too many dictionaries",
			req:  &speechv1.SynthesizeRequest{Text: "hi", VoiceId: "avery", PronunciationDictIds: strings.Fields(strings.Repeat("d ", 17))},
			want: []*errdetails.BadRequest_FieldViolation{{Field: "pronunciation_dict_ids", Reason: "TOO_MANY", Description: "must hold at most 16 ids, got 17"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := gatewaytest.Synthesize(gatewaytest.WithKey(t.Context(), callerKey), g.Synth, tt.req)
			if status.Code(got.Err) != codes.InvalidArgument {
				t.Fatalf("err = %v, want InvalidArgument", got.Err)
			}
			if d := gatewaytest.Diff(tt.want, gatewaytest.Detail[*errdetails.BadRequest](got.Err).GetFieldViolations()); d != "" {
				t.Errorf("field violations (-want +got):\n%s", d)
			}
			if r := gatewaytest.ErrorInfo(got.Err).GetReason(); r != "INVALID_REQUEST" {
				t.Errorf("ErrorInfo reason %q", r)
			}
		})
	}
	t.Cleanup(func() {
		if n := fake.hits.Load(); n != 0 {
			t.Errorf("the upstream was called %d times for invalid requests", n)
		}
	})
}

func TestCancelAndDeadlineReachUpstream(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		deadline time.Duration // 0: the client cancels instead
		want     codes.Code
	}{
		{name: "client cancel", want: codes.Canceled},
		{name: "deadline", deadline: 300 * time.Millisecond, want: codes.DeadlineExceeded},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ended := make(chan struct{})
			slow := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				defer close(ended)
				w.Header().Set("Content-Type", "text/event-stream")
				fmt.Fprintf(w, "event: audio\ndata: {\"audio\": \"AAAA\", \"done\": false, \"status\": \"206\"}\n\n")
				w.(http.Flusher).Flush()
				<-r.Context().Done() // an upstream that only stops when the gateway hangs up
			})
			g := gatewaytest.Start(t, slow, gatewaytest.Options{})
			ctx, cancel := context.WithCancel(gatewaytest.WithKey(t.Context(), callerKey))
			defer cancel()
			if tt.deadline > 0 {
				ctx, cancel = context.WithTimeout(ctx, tt.deadline)
				defer cancel()
			}
			stream, err := g.Synth.Synthesize(ctx, &speechv1.SynthesizeRequest{Text: "hi", VoiceId: "avery"})
			if err != nil {
				t.Fatal(err)
			}
			for range 2 { // the format, then the first audio
				if _, err := stream.Recv(); err != nil {
					t.Fatal(err)
				}
			}
			if tt.deadline == 0 {
				cancel()
			}
			select {
			case <-ended:
			case <-time.After(5 * time.Second):
				t.Fatal("the upstream request was still open 5 s after the caller gave up")
			}
			if _, err := stream.Recv(); status.Code(err) != tt.want {
				t.Fatalf("stream ended with %v, want %v", err, tt.want)
			}
		})
	}
}

// TestLongStreamKeepsHeapBounded streams 32 MiB of audio through the gateway
// and samples the heap as it goes: the gateway must relay, not accumulate.
// Not parallel, so that no other test's allocations are counted.
func TestLongStreamKeepsHeapBounded(t *testing.T) {
	const chunk, chunks = 16 << 10, 2048 // 32 MiB
	body := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		frame := fmt.Sprintf("event: audio\ndata: {\"audio\": %q, \"done\": false, \"status\": \"206\"}\n\n",
			base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, chunk)))
		for range chunks {
			if _, err := io.WriteString(w, frame); err != nil {
				return
			}
		}
		io.WriteString(w, "data: {\"status\": \"200\", \"done\": true}\n\n")
	}
	g := gatewaytest.Start(t, http.HandlerFunc(body), gatewaytest.Options{})
	stream, err := g.Synth.Synthesize(gatewaytest.WithKey(t.Context(), callerKey), &speechv1.SynthesizeRequest{Text: "hi", VoiceId: "avery"})
	if err != nil {
		t.Fatal(err)
	}
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base, peak := ms.HeapAlloc, ms.HeapAlloc
	var received int
	for i := 0; ; i++ {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		received += len(msg.GetAudio().GetData())
		if i%256 == 0 {
			runtime.GC() // count what is live, not garbage awaiting collection
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapAlloc)
		}
	}
	if received != chunk*chunks {
		t.Fatalf("received %d bytes, want %d", received, chunk*chunks)
	}
	growth := int64(peak) - int64(base)
	t.Logf("live heap grew by at most %.1f MiB while relaying 32 MiB", float64(growth)/(1<<20))
	// gRPC's flow-control windows legitimately hold some audio in flight; a
	// gateway that kept the stream would hold all 32 MiB.
	if growth > 8<<20 {
		t.Fatalf("live heap grew by %d MiB while relaying 32 MiB; the stream is being accumulated", growth>>20)
	}
}
