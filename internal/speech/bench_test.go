package speech_test

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"testing"

	"github.com/speechgate/speechgate/internal/gatewaytest"
	"github.com/speechgate/speechgate/internal/speech"
	"github.com/speechgate/speechgate/internal/synthcache"

	"google.golang.org/protobuf/proto"

	speechv1 "github.com/speechgate/speechgate/gen/speech/v1"
)

// BenchmarkAudioMessage builds and encodes one audio message as the relay
// does for each chunk.
func BenchmarkAudioMessage(b *testing.B) {
	data := make([]byte, 960)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	var off uint32
	for b.Loop() {
		dur := uint32(20)
		msg := &speechv1.SynthesizeResponse{Event: &speechv1.SynthesizeResponse_Audio{Audio: &speechv1.AudioChunk{
			Data: data, Sequence: 7, OffsetMs: &off, DurationMs: &dur}}}
		if _, err := proto.Marshal(msg); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSynthesize runs whole Synthesize calls through the gateway, over
// an in-memory gRPC connection, against an upstream that answers from
// memory: 1000 chunks of 960 bytes per call. Its allocations per operation,
// divided by 1000, are the gateway's cost per chunk.
func BenchmarkSynthesize(b *testing.B) {
	var body bytes.Buffer
	audio := base64.StdEncoding.EncodeToString(make([]byte, 960))
	for range 1000 {
		fmt.Fprintf(&body, "event: audio\ndata: {\"audio\": %q, \"done\": false, \"status\": \"206\"}\n\n", audio)
	}
	body.WriteString("data: {\"status\": \"200\", \"done\": true}\n\n")
	upstream := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/event-stream")
		w.Write(body.Bytes())
	})
	run := func(b *testing.B, opts gatewaytest.Options, text func(i int) string, mode speechv1.CacheMode) {
		g := gatewaytest.Start(b, upstream, opts)
		ctx := gatewaytest.WithKey(b.Context(), callerKey)
		b.SetBytes(1000 * 960)
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			i++
			got := gatewaytest.Synthesize(ctx, g.Synth, &speechv1.SynthesizeRequest{Text: text(i), VoiceId: "avery", CacheMode: mode})
			n := 0
			for _, c := range got.Audio {
				n += len(c.GetData())
			}
			if got.Err != nil || n != 1000*960 {
				b.Fatalf("%v, %d bytes", got.Err, n)
			}
		}
	}
	same := func(int) string { return "hi" }
	// Each text new: every call a miss, its audio written into the cache.
	unique := func(i int) string { return fmt.Sprint("hi ", i) }
	b.Run("no cache", func(b *testing.B) { run(b, gatewaytest.Options{}, same, 0) })
	b.Run("cache miss", func(b *testing.B) { run(b, withCache(b), unique, 0) })
	b.Run("cache bypass", func(b *testing.B) { run(b, withCache(b), same, speechv1.CacheMode_CACHE_MODE_BYPASS) })
	b.Run("cache hit", func(b *testing.B) { run(b, withCache(b), same, 0) })
}

// BenchmarkSynthesizeRealtime is the real-time shape of BenchmarkSynthesize:
// each upstream frame (20 ms of 24 kHz audio) is written only after the
// caller has received the one before, so that every frame travels alone,
// as it does when Smallest paces a stream, and each becomes one message.
// Its allocations per operation, divided by 1000, are the gateway's per
// message in that regime.
func BenchmarkSynthesizeRealtime(b *testing.B) {
	const frames = 1000
	frame := fmt.Appendf(nil, "event: audio\ndata: {\"audio\": %q, \"done\": false, \"status\": \"206\"}\n\n", base64.StdEncoding.EncodeToString(make([]byte, 960)))
	next := make(chan struct{}, 1)
	upstream := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/event-stream")
		rc := http.NewResponseController(w)
		for range frames {
			w.Write(frame)
			rc.Flush()
			select {
			case <-next:
			case <-r.Context().Done():
				return
			}
		}
		w.Write([]byte("data: {\"status\": \"200\", \"done\": true}\n\n"))
	})
	run := func(b *testing.B, opts gatewaytest.Options) {
		g := gatewaytest.Start(b, upstream, opts)
		ctx := gatewaytest.WithKey(b.Context(), callerKey)
		b.SetBytes(frames * 960)
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			i++ // a new text each call: with a cache, every call is a miss
			stream, err := g.Synth.Synthesize(ctx, &speechv1.SynthesizeRequest{Text: fmt.Sprint("hi ", i), VoiceId: "avery", SampleRateHz: 24000})
			if err != nil {
				b.Fatal(err)
			}
			n := 0
			for {
				msg, err := stream.Recv()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					b.Fatal(err)
				}
				if a := msg.GetAudio(); a != nil {
					n++
					next <- struct{}{}
				}
			}
			if n != frames {
				b.Fatalf("%d audio messages, want %d: frames were joined", n, frames)
			}
		}
	}
	b.Run("no cache", func(b *testing.B) { run(b, gatewaytest.Options{}) })
	// The default: the cache on, and a text it has not seen.
	b.Run("cache miss", func(b *testing.B) { run(b, withCache(b)) })
}

// BenchmarkSynthesizeCall is a call of one frame: what the gateway spends
// on a call besides its audio (the interceptors, validation, the upstream
// request, the format and totals messages), which every caller waits for
// before its first audio.
func BenchmarkSynthesizeCall(b *testing.B) {
	body := fmt.Appendf(nil, "event: audio\ndata: {\"audio\": %q, \"done\": false, \"status\": \"206\"}\n\ndata: {\"status\": \"200\", \"done\": true}\n\n",
		base64.StdEncoding.EncodeToString(make([]byte, 960)))
	upstream := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/event-stream")
		w.Write(body)
	})
	g := gatewaytest.Start(b, upstream, gatewaytest.Options{})
	ctx := gatewaytest.WithKey(b.Context(), callerKey)
	b.ReportAllocs()
	for b.Loop() {
		got := gatewaytest.Synthesize(ctx, g.Synth, &speechv1.SynthesizeRequest{Text: "hi", VoiceId: "avery", SampleRateHz: 24000})
		if got.Err != nil || len(got.Audio) != 1 {
			b.Fatalf("%v, %d audio messages", got.Err, len(got.Audio))
		}
	}
}

// withCache gives the gateway an in-process synthesis cache of 64 MiB, the
// default.
func withCache(b *testing.B) gatewaytest.Options {
	cache, err := synthcache.New(synthcache.Config{Bytes: 64 << 20, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cache.Close() })
	return gatewaytest.Options{Speech: func(o *speech.Options) { o.Cache = cache }}
}
