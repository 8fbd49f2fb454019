package smallest

import (
	"bytes"
	"encoding/base64"
	"testing"
)

func TestFastFrame(t *testing.T) {
	t.Parallel()
	audio := base64.StdEncoding.EncodeToString([]byte{1, 2, 3, 4, 5})
	tests := []struct {
		name     string
		in       string
		ok       bool
		wantLen  int
		wantDone bool
	}{
		{name: "the usual frame", in: `{"audio": "` + audio + `", "done": false, "status": "206"}`, ok: true, wantLen: 5},
		{name: "the terminator", in: `{"status": "200", "done": true}`, ok: true, wantDone: true},
		{name: "numeric status", in: `{"audio":"` + audio + `","done":false,"status":206}`, ok: true, wantLen: 5},
		{name: "legacy terminator", in: `{"done": true}`, ok: true, wantDone: true},
		{name: "error status", in: `{"status": "500", "done": true}`},
		{name: "error word", in: `{"status": "error", "message": "x"}`},
		{name: "complete", in: `{"status": "complete", "done": true}`},
		{name: "envelope", in: `{"status": "chunk", "data": {"audio": "` + audio + `"}}`, ok: true, wantLen: 5},
		{name: "WebSocket chunk", in: `{"session_id":"ws_1","request_id":"task_1","status":"chunk","data":{"audio":"` + audio + `"}}`, ok: true, wantLen: 5},
		{name: "WebSocket word", in: `{"request_id":"task_1","status":"word_timestamp","data":{"word":"hi","start":0,"end":1}}`},
		{name: "WebSocket complete", in: `{"request_id":"task_1","status":"complete"}`},
		{name: "envelope with more data", in: `{"status": "chunk", "data": {"audio": "` + audio + `", "x": 1}}`},
		{name: "escaped slash", in: `{"audio": "ab\/cd"}`},
		{name: "another key", in: `{"audio": "` + audio + `", "error": "x"}`},
		{name: "trailing garbage", in: `{"done": true} x`},
		{name: "unterminated", in: `{"audio": "` + audio},
		{name: "bad base64", in: `{"audio": "!!!!"}`},
		{name: "done as a string", in: `{"done": "true"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f, ok := readFast([]byte(tt.in))
			b64, done := f.b64, f.done
			a, decoded := appendBase64(nil, b64, 0)
			ok = ok && decoded
			if ok != tt.ok || len(a) != tt.wantLen || done != tt.wantDone {
				t.Fatalf("fastFrame = %d bytes, done %v, ok %v; want %d, %v, %v", len(a), done, ok, tt.wantLen, tt.wantDone, tt.ok)
			}
		})
	}
}

// FuzzFastFrame checks that wherever the fast path accepts a frame, over
// SSE or the WebSocket, the full parser reads the same audio, end, request
// id and kind of message.
func FuzzFastFrame(f *testing.F) {
	f.Add([]byte(`{"audio": "AAECAw==", "done": false, "status": "206"}`))
	f.Add([]byte(`{"status":"200","done":true}`))
	f.Add([]byte(`{"audio":"AAEC","status":201}`))
	f.Add([]byte(`{"session_id":"ws_1","request_id":"task_1","status":"chunk","data":{"audio":"AAECAw=="}}`))
	cl := call{endpoint: "test"}
	f.Fuzz(func(t *testing.T, data []byte) {
		fast, ok := readFast(data)
		if !ok {
			return
		}
		audio, ok := appendBase64([]byte("prefix"), fast.b64, 3)
		if !ok {
			return // the full parser reads it
		}
		full, err := cl.readFull(data, []byte("prefix"), 3, "")
		if err != nil {
			t.Fatalf("fast path accepted %q, which the full parser refuses: %v", data, err)
		}
		if !bytes.Equal(audio, full.audio) || fast.done != full.done || string(fast.requestID) != full.requestID || fast.chunk != (full.status == "chunk") {
			t.Fatalf("%q: fast path read %x done %v id %q chunk %v; full parser %x done %v id %q status %q",
				data, audio, fast.done, fast.requestID, fast.chunk, full.audio, full.done, full.requestID, full.status)
		}
	})
}

// BenchmarkFrame reads one of Smallest's usual frames (960 bytes of audio)
// three ways: the fast path decoding into a reused buffer, the fast path
// into a new buffer each time (what the gateway must do, since gRPC may
// read a sent message later), and encoding/json, the baseline.
func BenchmarkFrame(b *testing.B) {
	data := []byte(`{"audio": "` + base64.StdEncoding.EncodeToString(make([]byte, 960)) + `", "done": false, "status": "206"}`)
	cl := call{endpoint: "bench"}
	reused := make([]byte, 0, 960)
	tests := []struct {
		name string
		read func() ([]byte, error)
	}{
		{"fast path, reused buffer", func() ([]byte, error) {
			f, _ := readFast(data)
			out, _ := appendBase64(reused[:0], f.b64, 0)
			return out, nil
		}},
		{"fast path, new buffer", func() ([]byte, error) {
			f, _ := readFast(data)
			out, _ := appendBase64(nil, f.b64, 0)
			return out, nil
		}},
		{"encoding/json", func() ([]byte, error) {
			f, err := cl.readFull(data, nil, 0, "")
			return f.audio, err
		}},
	}
	for _, tt := range tests {
		b.Run(tt.name, func(b *testing.B) {
			b.SetBytes(960)
			b.ReportAllocs()
			for b.Loop() {
				if out, err := tt.read(); err != nil || len(out) != 960 {
					b.Fatalf("%d bytes, %v", len(out), err)
				}
			}
		})
	}
}

// BenchmarkSpeechMessage reads one of Lightning's WebSocket audio messages
// (960 bytes of audio) as a SynthesizeStream session does.
func BenchmarkSpeechMessage(b *testing.B) {
	data := []byte(`{"session_id":"ws_1","request_id":"task_1","status":"chunk","data":{"audio":"` + base64.StdEncoding.EncodeToString(make([]byte, 960)) + `"}}`)
	s := &SpeechSession{call: call{endpoint: "bench"}}
	b.SetBytes(960)
	b.ReportAllocs()
	for b.Loop() {
		ev, err := s.event(nil, data)
		if err != nil || len(ev.Audio) != 960 {
			b.Fatal(err)
		}
	}
}
