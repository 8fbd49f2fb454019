package emulator

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"
)

// wordTimestampVoices are the "base-queue" voices for which Lightning sends
// word timings (docs/upstream.md §1.5); other voices silently send none.
var wordTimestampVoices = []string{"meher", "devansh", "kartik", "maithili", "liam", "avery"}

// wsMessage is a client message on the synthesis WebSocket.
type wsMessage struct {
	Text           string   `json:"text"`
	VoiceID        string   `json:"voice_id"`
	SampleRate     *int     `json:"sample_rate"`
	Speed          *float64 `json:"speed"`
	Continue       bool     `json:"continue"`
	Flush          bool     `json:"flush"`
	WordTimestamps bool     `json:"word_timestamps"`
	RequestID      string   `json:"request_id"`
	// CompleteBackoffMS delays each complete after its audio; unset, the
	// emulator answers at once, which a test or a trial wants more than
	// Smallest's 4 s default.
	CompleteBackoffMS *int `json:"complete_backoff_ms"`
}

// ttsWS serves wss://…/waves/v1/tts/live (docs/upstream.md §1.5): text in with
// continue/flush, chunk and word_timestamp frames out, complete after the
// last message, and an error then a close after ?timeout seconds (default
// 60) without a client message.
func (e *Emulator) ttsWS(w http.ResponseWriter, r *http.Request) {
	idle := 60 * time.Second
	if t, err := strconv.Atoi(r.URL.Query().Get("timeout")); err == nil && t > 0 {
		idle = time.Duration(t) * time.Second
	}
	conn, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	defer conn.CloseNow()
	conn.SetReadLimit(1 << 20)
	// The request's context outlives a hijacked connection: this one ends
	// when the client does, so that the synthesis stops with it.
	ctx, cancel := context.WithCancel(r.Context())
	sess := &ttsWSSession{e: e, conn: conn, id: "ws_" + newID(), msgs: make(chan wsMessage, 64), fault: newFrameFault(r.Context())}
	worked := make(chan struct{})
	go func() { defer close(worked); sess.work(ctx) }()
	defer func() { cancel(); close(sess.msgs); <-worked }()
	// Idleness is timed apart from Read: a Read whose context expires closes
	// the socket before the inactivity message could be sent.
	timer := time.AfterFunc(idle, func() {
		sess.send(ctx, map[string]string{"status": "error",
			"message": fmt.Sprintf("Connection timed out after %d seconds of inactivity", int(idle/time.Second))})
		conn.Close(websocket.StatusNormalClosure, "idle")
	})
	defer timer.Stop()
	for {
		_, data, err := conn.Read(ctx)
		if err != nil {
			return
		}
		timer.Reset(idle)
		var m wsMessage
		if json.Unmarshal(data, &m) != nil {
			sess.send(ctx, map[string]any{"status": "error", "error": map[string]string{"message": "Invalid JSON", "code": "invalid_request"}})
			continue
		}
		select {
		case sess.msgs <- m:
		case <-ctx.Done():
			return
		}
	}
}

type ttsWSSession struct {
	e     *Emulator
	conn  *websocket.Conn
	id    string
	msgs  chan wsMessage
	n     int // syntheses so far
	fault *frameFault
	ended bool // a fault ended the session
}

// work synthesizes the buffered text at every flush, in order, so that
// reading the next message never waits for audio.
func (s *ttsWSSession) work(ctx context.Context) {
	var text strings.Builder
	for m := range s.msgs {
		if !s.e.knownVoice(m.VoiceID) {
			s.send(ctx, map[string]string{"status": "error", "message": "Invalid Voice ID"})
			continue
		}
		text.WriteString(m.Text)
		if !m.Flush && m.Continue {
			continue
		}
		if strings.TrimSpace(text.String()) != "" {
			s.speak(ctx, m, text.String())
		}
		text.Reset()
		// Every flush is answered with complete after its audio
		// (tts-ws.yaml), the end of the input included.
		if m.CompleteBackoffMS != nil && !sleepUntil(ctx, time.Now().Add(time.Duration(*m.CompleteBackoffMS)*time.Millisecond)) {
			return
		}
		s.send(ctx, map[string]string{"session_id": s.id, "request_id": s.requestID(), "status": "complete"})
		if !m.Continue && s.e.opts.CloseAfterComplete { // as stream-tts.mdx describes; LiveKit sees sockets kept open
			s.conn.Close(websocket.StatusNormalClosure, "complete")
			return
		}
	}
}

func (s *ttsWSSession) requestID() string { return fmt.Sprintf("task_%s_%d", s.id, s.n) }

// speak sends one synthesis: PCM chunks, with word timings (seconds from the
// start of this synthesis) sent as the audio that ends each word goes out.
func (s *ttsWSSession) speak(ctx context.Context, m wsMessage, text string) {
	s.n++
	syn := synthesis{text: text, format: "pcm", rate: 24000, speed: 1}
	if m.SampleRate != nil {
		syn.rate = *m.SampleRate
	}
	if m.Speed != nil && *m.Speed > 0 {
		syn.speed = *m.Speed
	}
	var words []timedWord
	if m.WordTimestamps && slices.Contains(wordTimestampVoices, m.VoiceID) {
		perChar := time.Duration(float64(s.e.opts.AudioPerChar) / syn.speed)
		pos := 0
		for _, w := range strings.Fields(text) {
			i := strings.Index(text[pos:], w) + pos
			start := time.Duration(utf8.RuneCountInString(text[:i])) * perChar
			words = append(words, timedWord{w, start, start + time.Duration(utf8.RuneCountInString(w))*perChar})
			pos = i + len(w)
		}
	}
	enc := newEncoder(syn, s.e.opts)
	start := time.Now()
	sent := 0
	for {
		chunk, n := enc.next()
		if chunk == nil {
			break
		}
		due := s.e.opts.FirstByteDelay
		if s.e.opts.Pace > 0 {
			due += time.Duration(float64(sent) / float64(syn.rate) / s.e.opts.Pace * float64(time.Second))
		}
		if !sleepUntil(ctx, start.Add(due)) {
			return
		}
		s.send(ctx, map[string]any{"session_id": s.id, "request_id": s.requestID(), "status": "chunk",
			"data": map[string]string{"audio": base64.StdEncoding.EncodeToString(chunk)}})
		sent += n
		played := time.Duration(float64(sent) / float64(syn.rate) * float64(time.Second))
		for len(words) > 0 && words[0].end <= played {
			w := words[0]
			words = words[1:]
			s.send(ctx, map[string]any{"session_id": s.id, "request_id": s.requestID(), "status": "word_timestamp",
				"data": map[string]any{"word": w.word, "start": w.start.Seconds(), "end": w.end.Seconds()}})
		}
	}
}

func (s *ttsWSSession) send(ctx context.Context, v any) {
	if s.ended || s.fault.ws(ctx, s.conn) {
		s.ended = true
		return
	}
	b, _ := json.Marshal(v)
	s.conn.Write(ctx, websocket.MessageText, b)
}
