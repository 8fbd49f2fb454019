package emulator_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http/httptest"
	"testing"

	"github.com/speechgate/speechgate/internal/emulator"
	"github.com/speechgate/speechgate/internal/smallest"
)

func selfHostClient(t *testing.T, path string, format smallest.UploadFormat, key string) *smallest.SelfHost {
	t.Helper()
	srv := httptest.NewServer(emulator.New(emulator.Options{}))
	t.Cleanup(srv.Close)
	c, err := smallest.NewSelfHost(smallest.SelfHostConfig{BaseURL: srv.URL, HTTPClient: srv.Client(),
		Credential: func(context.Context) string { return key }, TranscribePath: path, Format: format})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestSelfHostEndpoints(t *testing.T) {
	t.Parallel()
	cloud := client(t, emulator.Options{})
	text := "Self hosted transcription."
	wav, _, err := synthesize(t, cloud, &smallest.SpeechRequest{Text: text, VoiceOptions: smallest.VoiceOptions{VoiceID: "avery", SampleRate: 16000}, OutputFormat: "wav"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		path   string
		format smallest.UploadFormat
	}{{"/v1/listen", smallest.UploadMultipart}, {"/api/v1/lightning/get_text", smallest.UploadRaw}} {
		c := selfHostClient(t, tt.path, tt.format, "license")
		tr, err := c.Transcribe(t.Context(), &smallest.TranscribeRequest{Audio: bytes.NewReader(wav), AudioSize: int64(len(wav)),
			Language: "en", WordTimestamps: true, Diarize: tt.format == smallest.UploadMultipart})
		if err != nil {
			t.Fatalf("%s: %v", tt.path, err)
		}
		if tr.Text != text || len(tr.Words) != 3 {
			t.Errorf("%s: transcript %+v", tt.path, tr)
		}
		if tt.format == smallest.UploadMultipart && (len(tr.Utterances) != 1 || tr.Utterances[0].Speaker == nil) {
			t.Errorf("%s: diarized speakers missing: %+v", tt.path, tr.Utterances)
		}
		if err := c.Healthy(t.Context(), "/health"); err != nil {
			t.Errorf("health: %v", err)
		}
	}
}

func TestSelfHostErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		key      string
		audio    io.Reader
		size     int64
		wantCode string
		wantHTTP int
	}{
		{name: "no license", audio: bytes.NewReader([]byte("RIFF")), size: 4, wantCode: "INVALID_LICENSE", wantHTTP: 401},
		{name: "not audio", key: "k", audio: bytes.NewReader([]byte("hello, world")), size: 12, wantCode: "UNSUPPORTED_FORMAT", wantHTTP: 415},
		{name: "over 100 MB", key: "k", audio: io.MultiReader(bytes.NewReader([]byte("RIFF0000WAVE")), io.LimitReader(zeros{}, emulator.SelfHostMaxUpload)),
			size: -1, wantCode: "FILE_TOO_LARGE", wantHTTP: 422},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := selfHostClient(t, "/v1/listen", smallest.UploadMultipart, tt.key)
			_, err := c.Transcribe(t.Context(), &smallest.TranscribeRequest{Audio: tt.audio, AudioSize: tt.size, Language: "en"})
			var e *smallest.Error
			if !errors.As(err, &e) || e.Code != tt.wantCode || e.HTTPStatus != tt.wantHTTP {
				t.Fatalf("err = %v, want %d %s", err, tt.wantHTTP, tt.wantCode)
			}
		})
	}
}
