package smallest

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/url"
	"strconv"
)

// UploadFormat is how a self-hosted server takes a recording.
type UploadFormat string

// The formats seen in Smallest's self-host material (docs/upstream.md §4).
const (
	// UploadMultipart posts a multipart form with the file in field "audio"
	// and the options as form fields, or JSON {"url"} for a URL: the
	// documented POST /v1/listen.
	UploadMultipart UploadFormat = "multipart"
	// UploadRaw posts the raw bytes with the options in the query string, as
	// Smallest's own test script does against /api/v1/lightning/get_text.
	UploadRaw UploadFormat = "raw"
)

// SelfHostConfig configures a client of Smallest's self-hosted server.
type SelfHostConfig struct {
	// BaseURL is the server, for example http://localhost:7100.
	BaseURL    string
	HTTPClient *http.Client
	// Credential returns the license key for a call; "" sends no Authorization.
	Credential func(context.Context) string
	// AuthScheme is the word before the license key: "Token" (the documented
	// default) or "Bearer".
	AuthScheme string
	// TranscribePath is the transcription endpoint: "/v1/listen" (documented),
	// "/api/v1/lightning/get_text" or "/waves/v1/pulse/get_text" (seen in
	// Smallest's deployment files).
	TranscribePath string
	// Format is how recordings are sent to TranscribePath.
	Format    UploadFormat
	UserAgent string
	// MaxUploadBytes is the largest recording the server accepts. Default
	// SelfHostMaxUpload, its documented limit.
	MaxUploadBytes int64
	// Gate, when set, admits each transcription (the server's documented
	// default is 10 at once) and synthesis.
	Gate Gate
	// SpeakPath is the synthesis endpoint, "/v1/speak" as documented
	// (docs/upstream.md §6.6); empty: no synthesis.
	SpeakPath string
	// SpeakSampleRate is the rate of headerless audio from SpeakPath; a WAV
	// answer says its own. Default 24000.
	SpeakSampleRate int
}

// SelfHostMaxUpload is the self-hosted server's documented file limit: 100 MB.
const SelfHostMaxUpload = 100 << 20

// SelfHost is a client of Smallest's self-hosted speech-to-text server. Its
// errors are *Error, as the cloud client's are.
type SelfHost struct {
	noSynthesis
	c         *Client
	path      string
	format    UploadFormat
	maxUpload int64
	speakPath string
	speakRate int
}

// Capabilities says what the self-hosted server offers: transcription of
// recordings, and a text's audio when its speech endpoint is configured.
func (s *SelfHost) Capabilities() Capabilities {
	return Capabilities{
		Backend:          "the self-hosted Smallest server",
		Synthesis:        s.speakPath != "",
		SynthesisFormats: []string{"pcm"},
		SynthesisMissing: "speech synthesis is not available: this gateway uses a self-hosted Smallest server with no " +
			"speech endpoint configured (--selfhost-speak-path)",
		StreamingMissing: "streamed synthesis is not available: this gateway uses a self-hosted Smallest server, whose " +
			"streaming text-to-speech protocol is not documented; use Synthesize",
		CatalogMissing: "the voice catalog, pronunciation dictionaries and voice clones are not available: this gateway " +
			"uses a self-hosted Smallest server, which documents none of them",
		LiveMissing: "realtime recognition is not available: this gateway uses a self-hosted Smallest server, " +
			"whose streaming protocol is not documented; use TranscribeUpload",
		HistoryMissing: "deleting a transcription is not available: this gateway uses a self-hosted Smallest server, " +
			"which keeps no history of transcriptions at Smallest",
		ConversationMissing: "conversations are not available: this gateway uses a self-hosted Smallest server, " +
			"which does not serve Hydra speech-to-speech",
		MaxUploadBytes: s.maxUpload,
	}
}

// NewSelfHost returns a self-host client.
func NewSelfHost(cfg SelfHostConfig) (*SelfHost, error) {
	if cfg.AuthScheme == "" {
		cfg.AuthScheme = "Token"
	}
	switch cfg.Format {
	case UploadMultipart, UploadRaw:
	default:
		return nil, fmt.Errorf("smallest: self-host upload format %q must be multipart or raw", cfg.Format)
	}
	if cfg.TranscribePath == "" || cfg.TranscribePath[0] != '/' {
		return nil, fmt.Errorf("smallest: self-host transcription path %q must start with /", cfg.TranscribePath)
	}
	c, err := New(Config{BaseURL: cfg.BaseURL, HTTPClient: cfg.HTTPClient, Credential: cfg.Credential,
		AuthScheme: cfg.AuthScheme, UserAgent: cfg.UserAgent, Gate: cfg.Gate})
	if err != nil {
		return nil, err
	}
	if cfg.SpeakPath != "" && cfg.SpeakPath[0] != '/' {
		return nil, fmt.Errorf("smallest: self-host speech path %q must start with /", cfg.SpeakPath)
	}
	return &SelfHost{c: c, path: cfg.TranscribePath, format: cfg.Format, maxUpload: cmp.Or(cfg.MaxUploadBytes, SelfHostMaxUpload),
		speakPath: cfg.SpeakPath, speakRate: cmp.Or(cfg.SpeakSampleRate, 24000)}, nil
}

// StreamSpeech synthesizes r's text on the server's speech endpoint, which
// answers with the whole audio (docs/upstream.md §6.6): it is streamed on
// as it is read, as PCM16, the rate said by a WAV header, or
// SpeakSampleRate for a headerless answer (SpeechStream.SampleRate).
func (s *SelfHost) StreamSpeech(ctx context.Context, r *SpeechRequest) (*SpeechStream, error) {
	if s.speakPath == "" {
		return nil, errNotOffered
	}
	payload, err := json.Marshal(map[string]string{"text": r.Text, "voice": r.VoiceID})
	if err != nil {
		return nil, err
	}
	var st *SpeechStream
	g, err := s.c.attempt(ctx, use{endpoint: "POST " + s.speakPath, gated: UseSynthesis, retries: true}, func() error {
		var err error
		st, err = s.c.openAudio(ctx, s.speakPath, payload, s.speakRate)
		return err
	})
	if err != nil {
		return nil, err
	}
	st.release, st.Attempts, st.Waited = g.release, g.attempts, g.waited
	return st, nil
}

// Account names the license a call of ctx uses, as the cloud client names
// accounts.
func (s *SelfHost) Account(ctx context.Context) string { return s.c.Account(ctx) }

// Unsupported lists the options of r, by their names in Smallest's cloud
// API, that this server's API has no way to carry, so that a caller can be
// told rather than having them dropped.
func (s *SelfHost) Unsupported(r *TranscribeRequest) []string {
	var out []string
	add := func(cond bool, field string) {
		if cond {
			out = append(out, field)
		}
	}
	add(r.Model != "" && r.Model != "pulse", "model")
	add(r.RedactPII, "redact_pii")
	add(r.RedactPCI, "redact_pci")
	add(r.Encoding != "" || r.SampleRate != 0, "encoding")
	add(r.WebhookMethod != "" && r.WebhookMethod != "POST", "webhook_method")
	add(len(r.WebhookExtra) > 0, "webhook_extra")
	switch s.format {
	case UploadMultipart:
		add(r.EmotionDetection, "emotion_detection")
		add(r.GenderDetection, "gender_detection")
	case UploadRaw:
		add(r.URL != "", "url")
		add(r.Diarize, "diarize")
		add(r.WebhookURL != "", "webhook_url")
	}
	return out
}

// Transcribe sends one recording, holding a slot of the server's
// transcription budget. The audio is streamed from r.Audio into the request
// body, multipart or raw, without being held whole; so it is not retried.
func (s *SelfHost) Transcribe(ctx context.Context, r *TranscribeRequest) (*Transcript, error) {
	var t *Transcript
	g, err := s.c.attempt(ctx, use{endpoint: "POST " + s.path, gated: UseTranscription}, func() error {
		var err error
		t, err = s.transcribe(ctx, r)
		return err
	})
	if err != nil {
		return nil, err
	}
	g.release()
	return t, nil
}

func (s *SelfHost) transcribe(ctx context.Context, r *TranscribeRequest) (*Transcript, error) {
	if s.format == UploadRaw {
		return s.transcribeRaw(ctx, r)
	}
	if r.URL != "" {
		body := map[string]any{"url": r.URL, "language": r.Language, "diarize": r.Diarize,
			"timestamps": r.WordTimestamps, "callback_url": r.WebhookURL}
		if r.NumSpeakers > 0 {
			body["num_speakers"] = r.NumSpeakers
		}
		if r.Punctuate != nil {
			body["punctuate"] = *r.Punctuate
		}
		payload, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		return s.post(ctx, nil, bytes.NewReader(payload), "application/json", int64(len(payload)))
	}
	// The form is written into a pipe as the request reads it, so that the
	// recording passes through in pieces.
	body, w := io.Pipe()
	form := multipart.NewWriter(w)
	written := make(chan struct{})
	go func() {
		defer close(written)
		w.CloseWithError(writeForm(form, r))
	}()
	t, err := s.post(ctx, nil, body, form.FormDataContentType(), -1)
	body.CloseWithError(errUploadDone) // stops the writer if the server answered early
	<-written
	return t, err
}

var errUploadDone = errors.New("the request has finished")

// noSynthesis answers the calls a self-hosted server cannot serve, its TTS
// and streaming protocols being undocumented; the gateway refuses them
// before they get here, as Capabilities says.
type noSynthesis struct{}

var errNotOffered = errors.New("smallest: the self-hosted server does not offer this")

func (noSynthesis) StreamSpeechText(context.Context, *StreamOptions) (*SpeechSession, error) {
	return nil, errNotOffered
}
func (noSynthesis) ListVoices(context.Context) ([]Voice, error) { return nil, errNotOffered }
func (noSynthesis) ListPronunciationDictionaries(context.Context) ([]PronunciationDictionary, error) {
	return nil, errNotOffered
}
func (noSynthesis) CreatePronunciationDictionary(context.Context, []PronunciationItem) (*PronunciationDictionary, error) {
	return nil, errNotOffered
}
func (noSynthesis) UpdatePronunciationDictionary(context.Context, string, []PronunciationItem) (*PronunciationDictionary, error) {
	return nil, errNotOffered
}
func (noSynthesis) DeletePronunciationDictionary(context.Context, string) error { return errNotOffered }
func (noSynthesis) CreateVoiceClone(context.Context, *CloneRequest) (*VoiceClone, error) {
	return nil, errNotOffered
}
func (noSynthesis) ListVoiceClones(context.Context) ([]VoiceClone, error) { return nil, errNotOffered }
func (noSynthesis) DeleteTranscription(context.Context, string) error     { return errNotOffered }
func (noSynthesis) Listen(context.Context, *LiveRequest) (*LiveSession, error) {
	return nil, errNotOffered
}
func (noSynthesis) Converse(context.Context, *ConversationRequest) (*Conversation, error) {
	return nil, errNotOffered
}

func writeForm(form *multipart.Writer, r *TranscribeRequest) error {
	fields := [][2]string{
		{"language", r.Language},
		{"diarize", strconv.FormatBool(r.Diarize)},
		{"timestamps", strconv.FormatBool(r.WordTimestamps)},
	}
	if r.NumSpeakers > 0 {
		fields = append(fields, [2]string{"num_speakers", strconv.Itoa(r.NumSpeakers)})
	}
	if r.Punctuate != nil {
		fields = append(fields, [2]string{"punctuate", strconv.FormatBool(*r.Punctuate)})
	}
	if r.WebhookURL != "" {
		fields = append(fields, [2]string{"callback_url", r.WebhookURL})
	}
	for _, f := range fields {
		if f[1] == "" {
			continue
		}
		if err := form.WriteField(f[0], f[1]); err != nil {
			return err
		}
	}
	part, err := form.CreateFormFile("audio", "audio")
	if err != nil {
		return err
	}
	if _, err := io.Copy(part, r.Audio); err != nil {
		return err
	}
	return form.Close()
}

func (s *SelfHost) transcribeRaw(ctx context.Context, r *TranscribeRequest) (*Transcript, error) {
	q := url.Values{"model": {"lightning"}, "language": {r.Language},
		"word_timestamps":   {strconv.FormatBool(r.WordTimestamps)},
		"gender_detection":  {strconv.FormatBool(r.GenderDetection)},
		"emotion_detection": {strconv.FormatBool(r.EmotionDetection)}}
	if r.NumSpeakers > 0 {
		q.Set("num_speakers", strconv.Itoa(r.NumSpeakers))
	}
	if r.Punctuate != nil {
		q.Set("punctuate", strconv.FormatBool(*r.Punctuate))
	}
	return s.post(ctx, q, r.Audio, "application/octet-stream", r.AudioSize)
}

func (s *SelfHost) post(ctx context.Context, q url.Values, body io.Reader, contentType string, size int64) (*Transcript, error) {
	req, cl, err := s.c.newRequest(ctx, http.MethodPost, s.path, q, body)
	if err != nil {
		return nil, err
	}
	req.ContentLength = size
	req.Header.Set("Content-Type", contentType)
	req.Header.Set("Accept", "application/json")
	resp, err := s.c.do(req, cl)
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

// Healthy asks the server's unauthenticated health endpoint at path whether
// it can serve: a 2xx answer is healthy, unless its body is the bare word
// false or says "status":"unhealthy" (the endpoints in docs/upstream.md §4 differ).
func (s *SelfHost) Healthy(ctx context.Context, path string) error {
	u := *s.c.base
	u.Path += path
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return err
	}
	resp, err := s.c.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("health endpoint answered %d: %s", resp.StatusCode, bytes.TrimSpace(body))
	}
	if b := bytes.TrimSpace(body); bytes.Equal(b, []byte("false")) || bytes.Contains(b, []byte(`"status":"unhealthy"`)) {
		return fmt.Errorf("health endpoint reports unhealthy: %s", b)
	}
	return nil
}
