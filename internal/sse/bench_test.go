package sse_test

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/speechgate/speechgate/internal/sse"
)

// frames is a Lightning SSE body of n frames of 960 bytes of audio, the size
// Smallest sends.
func frames(n int) []byte {
	var b bytes.Buffer
	audio := base64.StdEncoding.EncodeToString(make([]byte, 960))
	for range n {
		fmt.Fprintf(&b, "event: audio\ndata: {\"audio\": %q, \"done\": false, \"status\": \"206\"}\n\n", audio)
	}
	b.WriteString("data: {\"status\": \"200\", \"done\": true}\n\n")
	return b.Bytes()
}

// BenchmarkReader reads SSE events from a stream arriving in 4 KiB reads.
func BenchmarkReader(b *testing.B) {
	body := frames(1000)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		r := sse.NewReader(&pieces{b: body, n: 4096}, 1<<20)
		for {
			if _, err := r.Next(); errors.Is(err, io.EOF) {
				break
			}
		}
	}
}

// pieces returns at most n bytes per read, as a socket does.
type pieces struct {
	b []byte
	n int
}

func (p *pieces) Read(dst []byte) (int, error) {
	if len(p.b) == 0 {
		return 0, io.EOF
	}
	k := copy(dst[:min(len(dst), p.n)], p.b)
	p.b = p.b[k:]
	return k, nil
}
