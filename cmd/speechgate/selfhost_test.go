package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/speechgate/speechgate/internal/audio"
	"github.com/speechgate/speechgate/internal/gatewaytest"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	speechv1 "github.com/speechgate/speechgate/gen/speech/v1"
)

// selfHostStandIn is an independent stand-in for Smallest's self-hosted
// server (docs/upstream.md §4.1): it answers POST /v1/listen with whatever it is set
// to, records the Authorization header, answers POST /v1/speak with a 16 kHz
// WAV file of speech, and answers GET /health.
type selfHostStandIn struct {
	mu      sync.Mutex
	status  int
	body    string
	auth    []string
	speak   []string // the texts asked for on /v1/speak
	healthy bool
}

// standInSpeech is the PCM the stand-in's /v1/speak answers with, at 16 kHz.
var standInSpeech = func() []byte {
	b := make([]byte, 3200) // 100 ms
	for i := range b {
		b[i] = byte(i * 13)
	}
	return b
}()

func (s *selfHostStandIn) set(status int, body string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.status, s.body = status, body
}

func (s *selfHostStandIn) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r.URL.Path == "/health" {
		if !s.healthy {
			w.WriteHeader(503)
			io.WriteString(w, `{"status":"unhealthy","reason":"No ASR workers available"}`)
			return
		}
		io.WriteString(w, `{"status":"healthy"}`)
		return
	}
	if r.URL.Path == "/v1/speak" {
		var req struct{ Text, Voice string }
		if json.NewDecoder(r.Body).Decode(&req) != nil || req.Voice == "" || r.Header.Get("Authorization") != "Token lic-0123456789" {
			w.WriteHeader(400)
			io.WriteString(w, `{"error":"Missing required parameter: text or voice","code":"MISSING_PARAMETER"}`)
			return
		}
		s.speak = append(s.speak, req.Text)
		w.Header().Set("Content-Type", "audio/wav")
		w.Write(audio.AppendWAVHeader(nil, 16000, 1, 16, uint32(len(standInSpeech))))
		w.Write(standInSpeech)
		return
	}
	io.Copy(io.Discard, r.Body)
	s.auth = append(s.auth, r.Header.Get("Authorization"))
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(s.status)
	io.WriteString(w, s.body)
}

func TestSelfHostBackend(t *testing.T) {
	t.Parallel()
	standIn := &selfHostStandIn{healthy: true}
	up := httptest.NewServer(standIn)
	t.Cleanup(up.Close)

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	pr, pw := io.Pipe()
	logs := newLogWatcher()
	go logs.consume(pr)
	env := map[string]string{"SMALLEST_LICENSE_KEY": "lic-0123456789"}
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"--upstream=selfhost", "--auth=none", "--grpc-addr=127.0.0.1:0", "--admin-addr=", "--http-addr=", "--smallest-base-url=" + up.URL,
			"--selfhost-health-interval=20ms"}, func(k string) string { return env[k] }, io.Discard, pw)
		pw.Close()
	}()
	conn := dial(t, logs.waitAddr(t))
	trans := speechv1.NewTranscriptionServiceClient(conn)
	call := func() error {
		_, err := trans.Transcribe(t.Context(), &speechv1.TranscribeRequest{
			Source: &speechv1.TranscribeRequest_Audio{Audio: []byte("RIFF0000WAVE")}, Config: &speechv1.TranscriptionConfig{Language: "en"}})
		return err
	}

	standIn.set(200, `{"request_id":"r1","text":"hello","duration":1.5,"language":"en"}`)
	if err := call(); err != nil {
		t.Fatalf("a good answer: %v", err)
	}
	tests := []struct {
		name       string
		status     int
		body       string
		wantCode   codes.Code
		wantReason string
		check      func(t *testing.T, err error)
	}{
		{name: "invalid license", status: 401, body: `{"error":"Invalid license key","code":"INVALID_LICENSE"}`,
			wantCode: codes.Unauthenticated, wantReason: "INVALID_LICENSE"},
		{name: "license expired", status: 403, body: `{"error":"License expired","code":"LICENSE_EXPIRED","expires_at":"2024-12-31T23:59:59Z"}`,
			wantCode: codes.PermissionDenied, wantReason: "LICENSE_EXPIRED", check: func(t *testing.T, err error) {
				if got := gatewaytest.Detail[*errdetails.ErrorInfo](err).GetMetadata()["expiresAt"]; got != "2024-12-31T23:59:59Z" {
					t.Errorf("ErrorInfo expiresAt = %q", got)
				}
			}},
		{name: "rate limited", status: 429, body: `{"error":"Rate limit exceeded","code":"RATE_LIMIT_EXCEEDED","retry_after":60}`,
			wantCode: codes.ResourceExhausted, wantReason: "RATE_LIMIT_EXCEEDED", check: func(t *testing.T, err error) {
				if d := gatewaytest.Detail[*errdetails.RetryInfo](err).GetRetryDelay().AsDuration(); d != time.Minute {
					t.Errorf("RetryInfo = %v, want 60s", d)
				}
			}},
		{name: "unsupported format", status: 415, body: `{"error":"Unsupported audio format","code":"UNSUPPORTED_FORMAT","supported_formats":["wav","mp3","flac","ogg","m4a"]}`,
			wantCode: codes.InvalidArgument, wantReason: "UNSUPPORTED_FORMAT", check: func(t *testing.T, err error) {
				v := gatewaytest.Detail[*errdetails.BadRequest](err).GetFieldViolations()
				if len(v) != 1 || !strings.Contains(v[0].GetDescription(), "wav, mp3, flac, ogg, m4a") {
					t.Errorf("BadRequest = %v, want the supported formats listed", v)
				}
			}},
		{name: "file too large", status: 422, body: `{"error":"Audio file too large","code":"FILE_TOO_LARGE","max_size_mb":100}`,
			wantCode: codes.InvalidArgument, wantReason: "FILE_TOO_LARGE", check: func(t *testing.T, err error) {
				v := gatewaytest.Detail[*errdetails.BadRequest](err).GetFieldViolations()
				if len(v) != 1 || v[0].GetField() != "audio" || !strings.Contains(v[0].GetDescription(), "100 MB") {
					t.Errorf("BadRequest = %v, want the 100 MB limit on audio", v)
				}
			}},
		{name: "no workers", status: 503, body: `{"error":"No ASR workers available","code":"SERVICE_UNAVAILABLE","retry_after":30}`,
			wantCode: codes.Unavailable, wantReason: "SERVICE_UNAVAILABLE", check: func(t *testing.T, err error) {
				if d := gatewaytest.Detail[*errdetails.RetryInfo](err).GetRetryDelay().AsDuration(); d != 30*time.Second {
					t.Errorf("RetryInfo = %v, want 30s", d)
				}
			}},
		{name: "missing parameter", status: 400, body: `{"error":"Missing required parameter: url or audio file","code":"MISSING_PARAMETER"}`,
			wantCode: codes.InvalidArgument, wantReason: "MISSING_PARAMETER"},
	}
	for _, tt := range tests {
		standIn.set(tt.status, tt.body)
		err := call()
		info := gatewaytest.Detail[*errdetails.ErrorInfo](err)
		if status.Code(err) != tt.wantCode || info.GetReason() != tt.wantReason || info.GetDomain() != "speechgate" {
			t.Errorf("%s: %v (reason %q), want %v with reason %s", tt.name, err, info.GetReason(), tt.wantCode, tt.wantReason)
			continue
		}
		if tt.check != nil {
			tt.check(t, err)
		}
	}
	standIn.mu.Lock()
	if len(standIn.auth) != 1+len(tests) {
		t.Errorf("the stand-in got %d transcription requests, want %d", len(standIn.auth), 1+len(tests))
	}
	for _, a := range standIn.auth {
		if a != "Token lic-0123456789" {
			t.Errorf("the stand-in saw Authorization %q, want the license key as Token", a)
		}
	}
	standIn.mu.Unlock()

	// What the self-hosted server cannot do is refused by name, not dropped.
	_, err := trans.Transcribe(t.Context(), &speechv1.TranscribeRequest{Source: &speechv1.TranscribeRequest_Audio{Audio: []byte{1}},
		Config: &speechv1.TranscriptionConfig{Language: "en", RedactPii: true}})
	if v := gatewaytest.Detail[*errdetails.BadRequest](err).GetFieldViolations(); len(v) != 1 || v[0].GetField() != "config.redact_pii" {
		t.Errorf("redact_pii on self-host: %v", err)
	}
	synth := speechv1.NewSynthesisServiceClient(conn)
	if _, err := synth.ListVoices(t.Context(), &speechv1.ListVoicesRequest{}); status.Code(err) != codes.Unimplemented {
		t.Errorf("ListVoices on self-host: %v, want Unimplemented", err)
	}
	testSelfHostSynthesis(t, synth, standIn)

	// Health follows the server's, through its hysteresis.
	health := healthpb.NewHealthClient(conn)
	state := func(svc string) healthpb.HealthCheckResponse_ServingStatus {
		resp, _ := health.Check(t.Context(), &healthpb.HealthCheckRequest{Service: svc})
		return resp.GetStatus()
	}
	if got := state("speech.v1.SynthesisService"); got != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("synthesis health on self-host with /v1/speak = %v, want SERVING", got)
	}
	standIn.mu.Lock()
	standIn.healthy = false
	standIn.mu.Unlock()
	waitUntil(t, func() bool {
		return state("") == healthpb.HealthCheckResponse_NOT_SERVING && state("speech.v1.TranscriptionService") == healthpb.HealthCheckResponse_NOT_SERVING &&
			state("speech.v1.SynthesisService") == healthpb.HealthCheckResponse_NOT_SERVING
	})
	standIn.mu.Lock()
	standIn.healthy = true
	standIn.mu.Unlock()
	waitUntil(t, func() bool { return state("") == healthpb.HealthCheckResponse_SERVING })

	conn.Close()
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// testSelfHostSynthesis tries Synthesize against the stand-in's /v1/speak:
// its audio comes through at the rate its WAV header says, in the encodings
// the gateway can make of PCM, and what it cannot give is refused by name.
func testSelfHostSynthesis(t *testing.T, synth speechv1.SynthesisServiceClient, standIn *selfHostStandIn) {
	t.Helper()
	synthesize := func(req *speechv1.SynthesizeRequest) (*speechv1.SynthesisFormat, []byte, error) {
		stream, err := synth.Synthesize(t.Context(), req)
		if err != nil {
			return nil, nil, err
		}
		var format *speechv1.SynthesisFormat
		var got []byte
		for {
			m, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				return format, got, nil
			}
			if err != nil {
				return format, got, err
			}
			if f := m.GetFormat(); f != nil {
				format = f
			}
			got = append(got, m.GetAudio().GetData()...)
		}
	}
	tests := []struct {
		name      string
		req       *speechv1.SynthesizeRequest
		wantRate  uint32
		wantAudio []byte
		wantCode  codes.Code
		wantField string // of a BadRequest violation
	}{
		{name: "PCM at the server's rate", req: &speechv1.SynthesizeRequest{Text: "Hello from the server.", VoiceId: "default"},
			wantRate: 16000, wantAudio: standInSpeech},
		{name: "WAV, with the gateway's header", req: &speechv1.SynthesizeRequest{Text: "Hello as WAV.", VoiceId: "default",
			Encoding: speechv1.AudioEncoding_AUDIO_ENCODING_WAV},
			wantRate: 16000, wantAudio: append(audio.AppendWAVHeader(nil, 16000, 1, 16, audio.UnknownSize), standInSpeech...)},
		{name: "the server's rate asked for", req: &speechv1.SynthesizeRequest{Text: "Hello at 16 kHz.", VoiceId: "default", SampleRateHz: 16000},
			wantRate: 16000, wantAudio: standInSpeech},
		{name: "another rate is refused", req: &speechv1.SynthesizeRequest{Text: "Hello at 24 kHz.", VoiceId: "default", SampleRateHz: 24000},
			wantCode: codes.FailedPrecondition},
		{name: "MP3 is refused before the server is called", req: &speechv1.SynthesizeRequest{Text: "Hello as MP3.", VoiceId: "default",
			Encoding: speechv1.AudioEncoding_AUDIO_ENCODING_MP3}, wantCode: codes.InvalidArgument, wantField: "encoding"},
	}
	for _, tt := range tests {
		format, got, err := synthesize(tt.req)
		if status.Code(err) != tt.wantCode {
			t.Errorf("%s: %v, want %v", tt.name, err, tt.wantCode)
			continue
		}
		if tt.wantField != "" {
			if v := gatewaytest.Detail[*errdetails.BadRequest](err).GetFieldViolations(); len(v) != 1 || v[0].GetField() != tt.wantField {
				t.Errorf("%s: violations %v, want one on %s", tt.name, v, tt.wantField)
			}
		}
		if err != nil {
			continue
		}
		if format.GetSampleRateHz() != tt.wantRate || !bytes.Equal(got, tt.wantAudio) {
			t.Errorf("%s: %d Hz, %d bytes; want %d Hz and the %d bytes the server spoke", tt.name, format.GetSampleRateHz(), len(got),
				tt.wantRate, len(tt.wantAudio))
		}
	}
	standIn.mu.Lock()
	defer standIn.mu.Unlock()
	if slices.Contains(standIn.speak, "Hello as MP3.") {
		t.Error("the server was asked for MP3, which the gateway should have refused first")
	}

	// Streamed synthesis needs a protocol the self-hosted server does not document.
	stream, err := synth.SynthesizeStream(t.Context())
	if err == nil {
		_, err = stream.Recv()
	}
	if status.Code(err) != codes.Unimplemented {
		t.Errorf("SynthesizeStream on self-host: %v, want Unimplemented", err)
	}
}

func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
