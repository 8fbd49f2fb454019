package sse_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/google/go-cmp/cmp"

	"github.com/speechgate/speechgate/internal/sse"
)

type event struct {
	Type, Data   string
	Unterminated bool
}

// readAll drains r into events; it returns the error that ended the stream.
func readAll(r *sse.Reader) ([]event, error) {
	var out []event
	for {
		ev, err := r.Next()
		if err != nil {
			return out, err
		}
		out = append(out, event{string(ev.Type), string(ev.Data), ev.Unterminated})
	}
}

// readAllBuffered drains src as readAll does, but after each Next takes the
// events already read with Buffered; it fails t if Buffered reads.
func readAllBuffered(t *testing.T, src io.Reader, limit int) ([]event, error) {
	c := &counting{r: src}
	r := sse.NewReader(c, limit)
	var out []event
	for {
		ev, err := r.Next()
		for err == nil {
			out = append(out, event{string(ev.Type), string(ev.Data), ev.Unterminated})
			reads := c.reads
			var ok bool
			ev, ok, err = r.Buffered()
			if c.reads != reads {
				t.Fatal("Buffered read from its source")
			}
			if err == nil && !ok {
				break
			}
		}
		if err != nil {
			return out, err
		}
	}
}

type counting struct {
	r     io.Reader
	reads int
}

func (c *counting) Read(p []byte) (int, error) {
	c.reads++
	return c.r.Read(p)
}

// reference parses a whole input the simple way, as the standard describes it.
func reference(in string) []event {
	in = strings.ReplaceAll(in, "\r\n", "\n")
	in = strings.ReplaceAll(in, "\r", "\n")
	var out []event
	var typ string
	var data []string
	dispatch := func(unterminated bool) {
		if data != nil {
			out = append(out, event{typ, strings.Join(data, "\n"), unterminated})
		}
		typ, data = "", nil
	}
	lines := strings.Split(in, "\n")
	if lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1] // what follows the last line ending is not a line
	}
	for _, line := range lines {
		if line == "" {
			dispatch(false)
			continue
		}
		if line[0] == ':' {
			continue
		}
		name, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch name {
		case "data":
			data = append(data, value)
		case "event":
			typ = value
		}
	}
	dispatch(true) // tolerate a last event without its blank line
	return out
}

func TestReader(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   string
		want []event
	}{
		{
			name: "smallest frames",
			in: "event: audio\ndata: {\"audio\": \"AAA=\", \"done\": false, \"status\": \"206\"}\n\n" +
				"data: {\"status\": \"200\", \"done\": true}\n\n",
			want: []event{
				{"audio", `{"audio": "AAA=", "done": false, "status": "206"}`, false},
				{"", `{"status": "200", "done": true}`, false},
			},
		},
		{name: "CRLF", in: "event: a\r\ndata: x\r\n\r\ndata: y\r\n\r\n", want: []event{{"a", "x", false}, {"", "y", false}}},
		{name: "lone CR", in: "data: x\r\rdata: y\r\r", want: []event{{"", "x", false}, {"", "y", false}}},
		{name: "multi-line data", in: "data: a\ndata:b\ndata\n\n", want: []event{{"", "a\nb\n", false}}},
		{name: "comments and unknown fields", in: ": ping\nid: 7\nretry: 10\nfoo\ndata: x\n\n", want: []event{{"", "x", false}}},
		{name: "event without data is dropped", in: "event: a\n\ndata: x\n\n", want: []event{{"", "x", false}}},
		{name: "last event without blank line", in: "data: x\n\ndata: {\"done\":true}\n", want: []event{{"", "x", false}, {"", `{"done":true}`, true}}},
		{name: "unterminated last line", in: "data: {\"done\":true}", want: []event{{"", `{"done":true}`, true}}},
		{name: "only one space is stripped", in: "data:  two\n\n", want: []event{{"", " two", false}}},
		{name: "empty", in: "", want: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			for split := range len(tt.in) + 1 {
				// Every split point in two reads, as well as one byte per read.
				src := io.MultiReader(strings.NewReader(tt.in[:split]), strings.NewReader(tt.in[split:]))
				got, err := readAll(sse.NewReader(src, 1<<10))
				if !errors.Is(err, io.EOF) {
					t.Fatalf("split %d: err = %v, want io.EOF", split, err)
				}
				if diff := cmp.Diff(tt.want, got); diff != "" {
					t.Fatalf("split %d: events differ (-want +got):\n%s", split, diff)
				}
				src = io.MultiReader(strings.NewReader(tt.in[:split]), strings.NewReader(tt.in[split:]))
				got, err = readAllBuffered(t, src, 1<<10)
				if !errors.Is(err, io.EOF) {
					t.Fatalf("split %d, with Buffered: err = %v, want io.EOF", split, err)
				}
				if diff := cmp.Diff(tt.want, got); diff != "" {
					t.Fatalf("split %d, with Buffered: events differ (-want +got):\n%s", split, diff)
				}
			}
			got, _ := readAll(sse.NewReader(iotest.OneByteReader(strings.NewReader(tt.in)), 1<<10))
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Fatalf("one byte per read: events differ (-want +got):\n%s", diff)
			}
		})
	}
}

func TestReaderLimits(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   string
	}{
		{name: "line without end", in: "data: " + strings.Repeat("x", 200)},
		{name: "data over many lines", in: strings.Repeat("data: "+strings.Repeat("x", 40)+"\n", 10) + "\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := readAll(sse.NewReader(strings.NewReader(tt.in), 128))
			if !errors.Is(err, sse.ErrEventTooLarge) {
				t.Fatalf("err = %v, want ErrEventTooLarge", err)
			}
		})
	}
}

func TestReaderPassesOnReadErrors(t *testing.T) {
	t.Parallel()
	boom := errors.New("connection reset")
	src := io.MultiReader(strings.NewReader("data: x\n\ndata: partial"), iotest.ErrReader(boom))
	got, err := readAll(sse.NewReader(src, 1<<10))
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v, want %v", err, boom)
	}
	// The complete event arrives; the cut one must not be dispatched as if whole.
	if diff := cmp.Diff([]event{{"", "x", false}}, got); diff != "" {
		t.Fatalf("events differ (-want +got):\n%s", diff)
	}
}

func FuzzReader(f *testing.F) {
	f.Add("event: audio\ndata: {\"audio\":\"AA==\"}\n\ndata: {\"done\":true}\n\n", uint8(3))
	f.Add("data: a\r\ndata: b\r\r\n:c\n\n", uint8(1))
	f.Fuzz(func(t *testing.T, in string, chunk uint8) {
		if bytes.ContainsRune([]byte(in), 0) {
			t.Skip()
		}
		size := int(chunk%16) + 1
		got, err := readAll(sse.NewReader(iotest.HalfReader(&chunked{s: in, n: size}), 1<<20))
		if !errors.Is(err, io.EOF) {
			t.Fatalf("err = %v", err)
		}
		if diff := cmp.Diff(reference(in), got); diff != "" {
			t.Fatalf("events differ from the reference (-want +got):\n%s", diff)
		}
		got, err = readAllBuffered(t, iotest.HalfReader(&chunked{s: in, n: size}), 1<<20)
		if !errors.Is(err, io.EOF) {
			t.Fatalf("with Buffered: err = %v", err)
		}
		if diff := cmp.Diff(reference(in), got); diff != "" {
			t.Fatalf("with Buffered: events differ from the reference (-want +got):\n%s", diff)
		}
	})
}

// chunked returns at most n bytes per read.
type chunked struct {
	s string
	n int
}

func (c *chunked) Read(p []byte) (int, error) {
	if c.s == "" {
		return 0, io.EOF
	}
	k := copy(p[:min(len(p), c.n)], c.s)
	c.s = c.s[k:]
	return k, nil
}

// countingReader counts the reads made of it.
type countingReader struct {
	r     io.Reader
	reads int
}

func (c *countingReader) Read(p []byte) (int, error) {
	c.reads++
	return c.r.Read(p)
}

// TestReaderGrowsWhenInputWaits: input that fills every read is taken in
// bigger reads, and every event still comes out whole and in order.
func TestReaderGrowsWhenInputWaits(t *testing.T) {
	t.Parallel()
	var in bytes.Buffer
	const events = 1000
	data := strings.Repeat("A", 1300) // about one of Smallest's base64 frames
	for i := range events {
		fmt.Fprintf(&in, "event: audio\ndata: {\"n\": %d, \"audio\": %q}\n\n", i, data)
	}
	total := in.Len()
	src := &countingReader{r: &in}
	r := sse.NewReader(src, 1<<20)
	for i := range events {
		ev, err := r.Next()
		if err != nil || !strings.HasPrefix(string(ev.Data), fmt.Sprintf(`{"n": %d, `, i)) || len(ev.Data) != len(data)+len(fmt.Sprint(i))+20 {
			t.Fatalf("event %d: %q…, %v", i, string(ev.Data[:min(30, len(ev.Data))]), err)
		}
	}
	// 4 KiB reads would take total/4096 reads; 32 KiB ones an eighth of that.
	if max := total/(16<<10) + 4; src.reads > max {
		t.Errorf("%d reads for %d bytes, want at most %d: the buffer did not grow", src.reads, total, max)
	}
}
