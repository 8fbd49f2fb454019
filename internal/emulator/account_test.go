package emulator_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/coder/websocket"

	"github.com/speechgate/speechgate/internal/emulator"
	"github.com/speechgate/speechgate/internal/smallest"
)

// TestAccountConcurrencyLimit: with a limit of N, the emulator refuses
// what Smallest refuses beyond it, each in its documented way, per key,
// and counts the most it saw at once.
func TestAccountConcurrencyLimit(t *testing.T) {
	t.Parallel()
	e := emulator.New(emulator.Options{Concurrency: 1, Pace: 0.01}) // 1% of real time: a synthesis lasts
	srv := httptest.NewServer(e)
	t.Cleanup(srv.Close)
	post := func(path, key, body string) *http.Response {
		t.Helper()
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, srv.URL+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+key)
		req.Header.Set("Content-Type", "application/json")
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		return resp
	}
	synthesis := `{"text":"a long enough text to take a while","voice_id":"avery"}`
	first := post("/waves/v1/tts/live", "key-a", synthesis)
	if first.StatusCode != http.StatusOK {
		t.Fatalf("the first synthesis: %s", first.Status)
	}
	second := post("/waves/v1/tts/live", "key-a", synthesis)
	body, _ := io.ReadAll(second.Body)
	if second.StatusCode != http.StatusTooManyRequests || !strings.Contains(string(body), `"error":"TooManyRequests"`) {
		t.Errorf("a second synthesis of the same account: %s %s; want 429 with Lightning's error body", second.Status, body)
	}
	if other := post("/waves/v1/tts/live", "key-b", synthesis); other.StatusCode != http.StatusOK {
		t.Errorf("another account was refused: %s", other.Status)
	}
	// A realtime session beyond the limit is closed with 1008.
	dial := func(key string) *websocket.Conn {
		c, _, err := websocket.Dial(t.Context(), "ws"+strings.TrimPrefix(srv.URL, "http")+"/waves/v1/stt/live?model=pulse&language=en",
			&websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + key}}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.CloseNow() })
		return c
	}
	dial("key-a")
	_, _, err := dial("key-a").Read(t.Context())
	if websocket.CloseStatus(err) != websocket.StatusPolicyViolation {
		t.Errorf("a second realtime session: %v; want a close with 1008", err)
	}

	resp, err := srv.Client().Get(srv.URL + "/_emulator/stats")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st emulator.Stats
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	if st.Peak["synthesis"] != 1 || st.Refused["synthesis"] != 1 || st.Refused["live"] != 1 || st.Limits["websocket"] != 5 {
		t.Errorf("stats = %+v; want a peak of 1 synthesis per key, one synthesis and one session refused, 5 WebSockets allowed", st)
	}
}

// TestVoicePreviews: the emulator's browsing catalog describes its voices
// and points at previews it serves.
func TestVoicePreviews(t *testing.T) {
	t.Parallel()
	c := client(t, emulator.Options{})
	voices, err := c.ListVoices(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var avery smallest.Voice
	for _, v := range voices {
		if v.VoiceID == "avery" {
			avery = v
		}
	}
	if avery.Description == "" || !strings.HasSuffix(avery.PreviewURL, "/_emulator/previews/avery.wav") {
		t.Fatalf("avery = %+v; want a description and a preview", avery)
	}
	resp, err := http.Get(avery.PreviewURL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || !bytes.HasPrefix(b, []byte("RIFF")) || len(b) < 10000 {
		t.Errorf("the preview: %s, %d bytes; want a WAV file", resp.Status, len(b))
	}
}
