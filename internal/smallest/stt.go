package smallest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// TranscribeRequest is a pre-recorded transcription on POST /waves/v1/stt/
// (docs/upstream.md §2.2): the audio as the raw body, or a URL as JSON, with every
// option in the query string.
type TranscribeRequest struct {
	// Audio is the recording, streamed as the request body; AudioSize is its
	// length in bytes, or -1 if unknown (the body is then sent chunked).
	Audio     io.Reader
	AudioSize int64
	// URL is a public recording for Smallest to fetch, instead of Audio.
	URL string

	Model            string
	Language         string
	WordTimestamps   bool
	Diarize          bool
	RedactPII        bool
	RedactPCI        bool
	EmotionDetection bool
	GenderDetection  bool
	// Encoding and SampleRate describe headerless audio; empty and 0 are not sent.
	Encoding   string
	SampleRate int
	// WebhookURL makes the call asynchronous (Pulse Pro).
	WebhookURL    string
	WebhookMethod string
	WebhookExtra  map[string]string
	ExpireContent bool
	// NumSpeakers (0: unset) and Punctuate (nil: unset) are options of the
	// self-hosted server only.
	NumSpeakers int
	Punctuate   *bool
}

func (r *TranscribeRequest) query() url.Values {
	q := url.Values{}
	set := func(k, v string) {
		if v != "" {
			q.Set(k, v)
		}
	}
	set("model", r.Model)
	set("language", r.Language)
	// Booleans are sent explicitly and in lowercase: the upstream compares
	// the strings with === 'true'.
	q.Set("word_timestamps", strconv.FormatBool(r.WordTimestamps))
	q.Set("diarize", strconv.FormatBool(r.Diarize))
	q.Set("redact_pii", strconv.FormatBool(r.RedactPII))
	q.Set("redact_pci", strconv.FormatBool(r.RedactPCI))
	q.Set("emotion_detection", strconv.FormatBool(r.EmotionDetection))
	q.Set("gender_detection", strconv.FormatBool(r.GenderDetection))
	set("encoding", r.Encoding)
	if r.SampleRate > 0 {
		q.Set("sample_rate", strconv.Itoa(r.SampleRate))
	}
	set("webhook_url", r.WebhookURL)
	set("webhook_method", r.WebhookMethod)
	if len(r.WebhookExtra) > 0 {
		pairs := make([]string, 0, len(r.WebhookExtra))
		for _, k := range slices.Sorted(maps.Keys(r.WebhookExtra)) {
			pairs = append(pairs, k+":"+r.WebhookExtra[k])
		}
		q.Set("webhook_extra", strings.Join(pairs, ","))
	}
	return q
}

// Transcript is Pulse's answer (docs/upstream.md §2.3, §4), normalized across the
// shapes Smallest has used: "transcription" or "transcript" or "text" for the
// text, "words" or "word_timestamps" for the words, "utterances" or the
// self-host's "speakers" for the turns, speakers as numbers or "speaker_N" /
// "SPEAKER_00" strings, and the duration at the top level or under metadata.
type Transcript struct {
	// Status is "success", or "processing" when a webhook will get the result.
	Status     string
	Text       string
	Words      []Word
	Utterances []Utterance
	Language   string
	// Duration is the audio length in seconds; 0 if unknown.
	Duration  float64
	RequestID string
	Gender    string
	Emotions  map[string]float64
}

// Word is one recognized word; times are in seconds.
type Word struct {
	Word              string   `json:"word"`
	Start             float64  `json:"start"`
	End               float64  `json:"end"`
	Confidence        float64  `json:"confidence"`
	Speaker           *Speaker `json:"speaker"`
	SpeakerConfidence float64  `json:"speaker_confidence"`
}

// Utterance is a sentence or speaker turn; times are in seconds.
type Utterance struct {
	Text    string   `json:"text"`
	Start   float64  `json:"start"`
	End     float64  `json:"end"`
	Speaker *Speaker `json:"speaker"`
}

// Speaker is a speaker number. Smallest sends it as 0, "0" or "speaker_0"
// depending on the endpoint and the document.
type Speaker int

// UnmarshalJSON accepts a number or a string ending in a number.
func (s *Speaker) UnmarshalJSON(b []byte) error {
	var n int
	if json.Unmarshal(b, &n) == nil {
		*s = Speaker(n)
		return nil
	}
	var str string
	if err := json.Unmarshal(b, &str); err != nil {
		return fmt.Errorf("speaker: %s is neither a number nor a string", b)
	}
	i := len(str)
	for i > 0 && str[i-1] >= '0' && str[i-1] <= '9' {
		i--
	}
	n, err := strconv.Atoi(str[i:])
	if err != nil {
		return fmt.Errorf("speaker: %q has no number", str)
	}
	*s = Speaker(n)
	return nil
}

type transcriptBody struct {
	Status         string             `json:"status"`
	Transcription  *string            `json:"transcription"`
	Transcript     *string            `json:"transcript"`
	Text           *string            `json:"text"`
	Words          []Word             `json:"words"`
	WordTimestamps []Word             `json:"word_timestamps"`
	Utterances     []Utterance        `json:"utterances"`
	Speakers       []Utterance        `json:"speakers"` // self-host: speaker turns
	JobID          string             `json:"job_id"`   // self-host: an accepted async job
	Language       string             `json:"language"`
	Duration       float64            `json:"duration"`
	AudioLength    float64            `json:"audio_length"`
	RequestID      string             `json:"request_id"`
	Gender         string             `json:"gender"`
	Emotions       map[string]float64 `json:"emotions"`
	Metadata       struct {
		Duration float64 `json:"duration"`
	} `json:"metadata"`
}

func (b *transcriptBody) transcript() *Transcript {
	t := &Transcript{
		Status:     b.Status,
		Words:      b.Words,
		Utterances: b.Utterances,
		Language:   b.Language,
		RequestID:  b.RequestID,
		Gender:     b.Gender,
		Emotions:   b.Emotions,
	}
	for _, s := range []*string{b.Transcription, b.Transcript, b.Text} {
		if s != nil {
			t.Text = *s
			break
		}
	}
	if len(t.Words) == 0 {
		t.Words = b.WordTimestamps
	}
	if len(t.Utterances) == 0 {
		t.Utterances = b.Speakers
	}
	if t.RequestID == "" {
		t.RequestID = b.JobID
	}
	for _, d := range []float64{b.Metadata.Duration, b.Duration, b.AudioLength} {
		if d > 0 {
			t.Duration = d
			break
		}
	}
	return t
}

// maxTranscript bounds a transcript response: hours of audio with word
// timings and diarization stay well under it.
const maxTranscript = 64 << 20

// DeleteTranscription soft-deletes a transcription from the account's
// history (DELETE /waves/v1/analytics/asr/history/{id}, docs/upstream.md
// §6.6). It is idempotent, so it is retried as a read is.
func (c *Client) DeleteTranscription(ctx context.Context, requestID string) error {
	path := "/waves/v1/analytics/asr/history/" + url.PathEscape(requestID)
	_, err := c.attempt(ctx, use{endpoint: "DELETE /waves/v1/analytics/asr/history/{id}", retries: true}, func() error {
		req, cl, err := c.newRequest(ctx, http.MethodDelete, path, nil, nil)
		if err != nil {
			return err
		}
		req.Header.Set("Accept", "application/json")
		resp, err := c.do(req, cl)
		if err != nil {
			return err
		}
		return resp.Body.Close()
	})
	return err
}

// Transcribe sends one recording to POST /waves/v1/stt/, holding a slot of
// the account's transcription budget. The audio is streamed from r.Audio
// into the request body as it is read; it is never held whole, and so a
// request with audio is not retried, while one with a URL may be.
func (c *Client) Transcribe(ctx context.Context, r *TranscribeRequest) (*Transcript, error) {
	var payload []byte
	if r.URL != "" {
		var err error
		if payload, err = json.Marshal(map[string]string{"url": r.URL}); err != nil {
			return nil, err
		}
	}
	var t *Transcript
	g, err := c.attempt(ctx, use{endpoint: "POST /waves/v1/stt/", gated: UseTranscription, retries: r.URL != ""}, func() error {
		var err error
		t, err = c.transcribe(ctx, r, payload)
		return err
	})
	if err != nil {
		return nil, err
	}
	g.release()
	return t, nil
}

// transcribe makes one request for a transcription.
func (c *Client) transcribe(ctx context.Context, r *TranscribeRequest, payload []byte) (*Transcript, error) {
	body, contentType := r.Audio, "application/octet-stream"
	if r.URL != "" {
		body, contentType = bytes.NewReader(payload), "application/json"
	}
	req, cl, err := c.newRequest(ctx, http.MethodPost, "/waves/v1/stt/", r.query(), body)
	if err != nil {
		return nil, err
	}
	if r.URL == "" {
		req.ContentLength = r.AudioSize
		if r.AudioSize == 0 {
			req.Body = http.NoBody
		}
	}
	req.Header.Set("Content-Type", contentType)
	req.Header.Set("Accept", "application/json")
	if r.ExpireContent {
		req.Header.Set("x-expire-content", "true")
	}
	resp, err := c.do(req, cl)
	if err != nil {
		return nil, err
	}
	var tb transcriptBody
	if err := cl.decodeJSON(resp, maxTranscript, &tb); err != nil {
		return nil, err
	}
	t := tb.transcript()
	if t.RequestID == "" {
		t.RequestID = resp.Header.Get("X-Request-Id")
	}
	return t, nil
}
