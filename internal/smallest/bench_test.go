package smallest_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"testing"

	"github.com/speechgate/speechgate/internal/smallest"
)

// memTransport answers every request with a fixed SSE body, from memory, so
// that the benchmark measures the client rather than a network.
type memTransport struct{ body []byte }

func (m memTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	return &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"text/event-stream"}},
		Body: io.NopCloser(bytes.NewReader(m.body)), Request: r}, nil
}

// BenchmarkSpeechStream parses and decodes a synthesis of 1000 frames of
// 960 bytes: the per-frame work of the gateway's hot path, from the upstream
// bytes to decoded audio.
func BenchmarkSpeechStream(b *testing.B) {
	var body bytes.Buffer
	audio := base64.StdEncoding.EncodeToString(make([]byte, 960))
	for range 1000 {
		fmt.Fprintf(&body, "event: audio\ndata: {\"audio\": %q, \"done\": false, \"status\": \"206\"}\n\n", audio)
	}
	body.WriteString("data: {\"status\": \"200\", \"done\": true}\n\n")
	c, err := smallest.New(smallest.Config{BaseURL: "http://upstream", HTTPClient: &http.Client{Transport: memTransport{body.Bytes()}},
		Credential: func(context.Context) string { return "k" }})
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(1000 * 960) // decoded audio
	b.ReportAllocs()
	for b.Loop() {
		s, err := c.StreamSpeech(b.Context(), &smallest.SpeechRequest{Text: "x", VoiceOptions: smallest.VoiceOptions{VoiceID: "v"}})
		if err != nil {
			b.Fatal(err)
		}
		for {
			if _, err := s.Next(); err != nil {
				if !errors.Is(err, io.EOF) {
					b.Fatal(err)
				}
				break
			}
		}
		s.Close()
	}
}
