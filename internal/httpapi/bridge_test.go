package httpapi_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/coder/websocket"

	"github.com/speechgate/speechgate/internal/emulator"
)

// dialBridge opens the bridge for method, with the query q.
func dialBridge(t *testing.T, base, method, q string, header http.Header) (*websocket.Conn, *http.Response, error) {
	t.Helper()
	ws, resp, err := websocket.Dial(t.Context(), "ws"+strings.TrimPrefix(base, "http")+"/v1/ws/"+method+q, &websocket.DialOptions{HTTPHeader: header})
	if err == nil {
		t.Cleanup(func() { ws.CloseNow() })
		ws.SetReadLimit(1 << 20)
	}
	return ws, resp, err
}

// frames reads until the socket closes: the JSON frames, the bytes of the
// binary ones, and the close.
func frames(ctx context.Context, ws *websocket.Conn) (jsons []map[string]any, binary int, closed websocket.CloseError) {
	for {
		typ, data, err := ws.Read(ctx)
		if err != nil {
			errors.As(err, &closed)
			return
		}
		if typ == websocket.MessageBinary {
			binary += len(data)
			continue
		}
		var m map[string]any
		json.Unmarshal(data, &m)
		jsons = append(jsons, m)
	}
}

func has(jsons []map[string]any, key string) int {
	n := 0
	for _, m := range jsons {
		if _, ok := m[key]; ok {
			n++
		}
	}
	return n
}

func TestBridge(t *testing.T) {
	t.Parallel()
	base := start(t, emulator.New(emulator.Options{}), "https://app.example.com")
	ctx := t.Context()
	auth := http.Header{"Authorization": {"Bearer " + key}}

	t.Run("SynthesizeStream, audio as binary frames", func(t *testing.T) {
		ws, _, err := dialBridge(t, base, "synthesize-stream", "?binary_audio=true", auth)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range []string{`{"config": {"voice_id": "avery", "sample_rate_hz": 16000}}`, `{"text": {"text": "Hello there.", "flush": true}}`, "end"} {
			ws.Write(ctx, websocket.MessageText, []byte(f))
		}
		jsons, binary, closed := frames(ctx, ws)
		if closed.Code != websocket.StatusNormalClosure || binary != 12*60*32 || has(jsons, "format") != 1 || has(jsons, "totals") != 1 {
			t.Errorf("close %v, %d bytes of audio, %v", closed, binary, jsons)
		}
	})
	t.Run("TranscribeLive, audio in binary frames, a token in the URL", func(t *testing.T) {
		_, wav, err := do(t, "POST", base+"/v1/speech:synthesize", key, strings.NewReader(`{"text": "Browsers listen too.", "voice_id": "avery", "sample_rate_hz": 16000}`))
		if err != nil {
			t.Fatal(err)
		}
		ws, _, err := dialBridge(t, base, "transcribe-live", "?access_token="+key, nil)
		if err != nil {
			t.Fatal(err)
		}
		ws.Write(ctx, websocket.MessageText, []byte(`{"config": {"language": "en", "sample_rate_hz": 16000}}`))
		for pcm := wav[44:]; len(pcm) > 0; pcm = pcm[min(3200, len(pcm)):] {
			ws.Write(ctx, websocket.MessageBinary, pcm[:min(3200, len(pcm))])
		}
		ws.Write(ctx, websocket.MessageText, []byte("end"))
		jsons, _, closed := frames(ctx, ws)
		var text []string
		for _, m := range jsons {
			if tr, ok := m["transcript"].(map[string]any); ok && tr["isFinal"] == true {
				text = append(text, tr["text"].(string))
			}
		}
		if closed.Code != websocket.StatusNormalClosure || strings.Join(text, " ") != "Browsers listen too." {
			t.Errorf("close %v, final text %q", closed, text)
		}
	})
	t.Run("a bad config: the status, then close 4003", func(t *testing.T) {
		ws, _, err := dialBridge(t, base, "transcribe-live", "", auth)
		if err != nil {
			t.Fatal(err)
		}
		ws.Write(ctx, websocket.MessageText, []byte(`{"config": {"language": "xx"}}`))
		jsons, _, closed := frames(ctx, ws)
		if closed.Code != 4003 || len(jsons) != 1 || !strings.Contains(toJSON(jsons[0]), "config.language") {
			t.Errorf("close %v, frames %v; want the BadRequest on config.language and 4003", closed, jsons)
		}
	})
	t.Run("no credentials: close 4016", func(t *testing.T) {
		ws, _, err := dialBridge(t, base, "converse", "", nil)
		if err != nil {
			t.Fatal(err)
		}
		ws.Write(ctx, websocket.MessageText, []byte(`{"config": {}}`))
		jsons, _, closed := frames(ctx, ws)
		if closed.Code != 4016 || len(jsons) != 1 || !strings.Contains(toJSON(jsons[0]), "MISSING_CREDENTIALS") {
			t.Errorf("close %v, frames %v", closed, jsons)
		}
	})
	t.Run("a frame that is not a message", func(t *testing.T) {
		ws, _, err := dialBridge(t, base, "synthesize-stream", "", auth)
		if err != nil {
			t.Fatal(err)
		}
		ws.Write(ctx, websocket.MessageText, []byte(`{"config": {"voice_id": "avery"}}`))
		ws.Write(ctx, websocket.MessageText, []byte(`{"txt": "hi"}`))
		_, _, closed := frames(ctx, ws)
		if closed.Code != 4003 {
			t.Errorf("close %v, want 4003", closed)
		}
	})
	t.Run("a page of another origin cannot open it", func(t *testing.T) {
		_, resp, err := dialBridge(t, base, "converse", "", http.Header{"Origin": {"https://evil.example.com"}, "Authorization": {"Bearer " + key}})
		if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
			t.Errorf("err %v, response %v; want 403", err, resp)
		}
		if _, _, err := dialBridge(t, base, "converse", "", http.Header{"Origin": {"https://app.example.com"}}); err != nil {
			t.Errorf("the allowed origin: %v", err)
		}
	})
}

func toJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
