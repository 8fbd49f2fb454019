package config_test

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/speechgate/speechgate/internal/auth"
	"github.com/speechgate/speechgate/internal/config"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestDefaults(t *testing.T) {
	t.Parallel()
	c, err := config.Load(nil, env(nil), nil)
	if err != nil {
		t.Fatal(err)
	}
	want := &config.Config{
		GRPCAddr: ":50051", AdminAddr: ":9090", HTTPAddr: ":8080", Upstream: config.UpstreamCloud, Auth: auth.ModePassthrough, KeysFileCheckInterval: 10 * time.Second,
		ShutdownGrace: 30 * time.Second, MaxRecvMsgBytes: 32 << 20, MaxSendMsgBytes: 16 << 20, KeepaliveMinTime: 10 * time.Second,
		UpstreamTimeout: 30 * time.Second, UpstreamIdleTimeout: 30 * time.Second, CallerStallTimeout: time.Minute, UpstreamPingInterval: 15 * time.Second, UpstreamPongTimeout: 10 * time.Second, UpstreamIdleConnTimeout: 90 * time.Second, LogLevel: slog.LevelInfo, LogFormat: "json",
		SmallestUSBaseURL: "https://api.us.smallest.ai", SelfhostAuthScheme: "Token", SelfhostTranscribePath: "/v1/listen",
		SelfhostUploadFormat: "multipart", SelfhostHealthPath: "/health", SelfhostHealthInterval: 5 * time.Second, SelfhostMaxUploadBytes: 100 << 20,
		SelfhostSpeakPath: "/v1/speak", SelfhostSpeakSampleRate: 24000,
		SynthesisPieceChars: 250, SynthesisLookahead: 1, VoicesCacheTTL: time.Minute, StreamIdleTimeout: 300 * time.Second, StreamPoolSize: 4,
		AdmissionMaxWait: 10 * time.Second, UpstreamMaxAttempts: 3, FleetSize: 1,
		SynthesisCacheBytes: 64 << 20, SynthesisCacheMaxEntryBytes: 4 << 20, SynthesisCacheTTL: time.Hour, SynthesisCacheRedisBytes: 128 << 20,
	}
	if d := cmp.Diff(want, c); d != "" {
		t.Fatalf("defaults (-want +got):\n%s", d)
	}
	if c.BaseURL() != "https://api.smallest.ai" {
		t.Errorf("BaseURL = %q", c.BaseURL())
	}
}

func TestFlagsWinOverEnvironment(t *testing.T) {
	t.Parallel()
	c, err := config.Load([]string{"--grpc-addr=127.0.0.1:9", "--shutdown-grace", "5s", "--pprof"}, env(map[string]string{
		"SPEECHGATE_GRPC_ADDR": ":1", "SPEECHGATE_SHUTDOWN_GRACE": "1m", "SPEECHGATE_UPSTREAM": "selfhost",
		"SPEECHGATE_LOG_LEVEL": "debug", "SMALLEST_API_KEY": "sk_x", "SPEECHGATE_AUTH": "none", "SMALLEST_LICENSE_KEY": "lic",
	}), nil)
	if err != nil {
		t.Fatal(err)
	}
	got := []any{c.GRPCAddr, c.ShutdownGrace, c.Upstream, c.LogLevel, c.SmallestAPIKey, c.Auth, c.BaseURL(), c.Pprof}
	want := []any{"127.0.0.1:9", 5 * time.Second, config.UpstreamSelfhost, slog.LevelDebug, "sk_x", auth.ModeNone, "http://localhost:7100", true}
	if d := cmp.Diff(want, got); d != "" {
		t.Fatalf("settings (-want +got):\n%s", d)
	}
}

func TestRejectsBadSettings(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		wantErr string
	}{
		{name: "unknown upstream", args: []string{"--upstream=aws"}, wantErr: "must be one of cloud, selfhost, emulator"},
		{name: "bad env duration", env: map[string]string{"SPEECHGATE_SHUTDOWN_GRACE": "soon"}, wantErr: `SPEECHGATE_SHUTDOWN_GRACE="soon": not a duration`},
		{name: "negative duration", args: []string{"--upstream-timeout=-1s"}, wantErr: "must not be negative"},
		{name: "zero message size", args: []string{"--max-recv-msg-bytes=0"}, wantErr: "must be a positive whole number"},
		{name: "keys without file", args: []string{"--auth=keys"}, env: map[string]string{"SMALLEST_API_KEY": "k"}, wantErr: "--auth=keys needs --keys-file"},
		{name: "none without key", args: []string{"--auth=none"}, wantErr: "needs the gateway's own key in SMALLEST_API_KEY"},
		{name: "selfhost without license", args: []string{"--auth=none", "--upstream=selfhost"}, wantErr: "needs the license key in SMALLEST_LICENSE_KEY"},
		{name: "selfhost path", args: []string{"--selfhost-transcribe-path=v1/listen"}, wantErr: "must start with /"},
		{name: "selfhost scheme", args: []string{"--selfhost-auth-scheme=Basic"}, wantErr: "must be one of Token, Bearer, none"},
		{name: "half TLS", args: []string{"--tls-cert=c.pem"}, wantErr: "--tls-cert and --tls-key go together"},
		{name: "relative base URL", args: []string{"--smallest-base-url=api.smallest.ai"}, wantErr: "must be an absolute http or https URL"},
		{name: "stray argument", args: []string{"serve"}, wantErr: `unexpected argument "serve"`},
		{name: "unknown flag", args: []string{"--port=1"}, wantErr: "flag provided but not defined: -port"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := config.Load(tt.args, env(tt.env), nil)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
			}
		})
	}
}

func TestHelpListsEverySetting(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	if _, err := config.Load([]string{"--help"}, env(nil), &out); !errors.Is(err, config.ErrHelp) {
		t.Fatalf("err = %v, want ErrHelp", err)
	}
	help := out.String()
	for _, want := range []string{
		"--grpc-addr  ", "SPEECHGATE_GRPC_ADDR", ":50051", "--upstream", "SPEECHGATE_UPSTREAM", "--auth", "SPEECHGATE_AUTH", "passthrough",
		"--keys-file", "--smallest-base-url", "SMALLEST_BASE_URL", "--shutdown-grace", "30s", "SMALLEST_API_KEY", "--emulator-pace",
	} {
		if !strings.Contains(help, want) {
			t.Errorf("help lacks %q:\n%s", want, help)
		}
	}
}
