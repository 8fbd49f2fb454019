// Package config reads speechgate's settings. Every setting is a flag with
// an environment variable behind it: the flag wins, then the variable, then
// the default. Secrets are read from the environment only, since command
// lines are visible to every user of the machine.
package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/speechgate/speechgate/internal/auth"
)

// Upstream names which Smallest the gateway talks to.
type Upstream string

// The upstreams.
const (
	UpstreamCloud    Upstream = "cloud"
	UpstreamSelfhost Upstream = "selfhost"
	UpstreamEmulator Upstream = "emulator"
)

// Default base URLs per upstream.
const (
	CloudBaseURL    = "https://api.smallest.ai"
	CloudUSBaseURL  = "https://api.us.smallest.ai"
	SelfhostBaseURL = "http://localhost:7100"
)

// Config is every setting of the gateway.
type Config struct {
	GRPCAddr  string
	AdminAddr string
	// HTTPAddr serves the HTTP access (Connect, gRPC-Web, REST, audio);
	// empty: off. CORSOrigins may call it from browsers.
	HTTPAddr    string
	CORSOrigins []string
	Pprof       bool
	Upstream    Upstream
	Auth        auth.Mode
	KeysFile    string
	// TokenSigningKeys sign and verify short-lived tokens in keys mode;
	// nil: no tokens.
	TokenSigningKeys *auth.Signer
	// KeysFileCheckInterval is how often the keys file is looked at for
	// changes; 0: never.
	KeysFileCheckInterval time.Duration

	// SmallestBaseURL is empty unless set; BaseURL applies the default.
	SmallestBaseURL string
	// SmallestUSBaseURL is Smallest's US host, for realtime languages only it serves.
	SmallestUSBaseURL string
	// SmallestAPIKey is the gateway's own key (keys and none modes); from the environment only.
	SmallestAPIKey string
	// SmallestLicenseKey is the self-hosted server's license key; from the environment only.
	SmallestLicenseKey string

	SelfhostAuthScheme      string
	SelfhostTranscribePath  string
	SelfhostUploadFormat    string
	SelfhostHealthPath      string
	SelfhostHealthInterval  time.Duration
	SelfhostMaxUploadBytes  int
	SelfhostSpeakPath       string
	SelfhostSpeakSampleRate int

	TLSCert, TLSKey string

	ShutdownGrace         time.Duration
	MaxRecvMsgBytes       int
	MaxSendMsgBytes       int
	KeepaliveMinTime      time.Duration
	MaxConnectionAge      time.Duration
	MaxConnectionAgeGrace time.Duration

	UpstreamTimeout     time.Duration
	UpstreamIdleTimeout time.Duration
	// UpstreamIdleConnTimeout is how long an idle upstream connection is kept.
	UpstreamIdleConnTimeout time.Duration
	CallerStallTimeout      time.Duration
	// UpstreamPingInterval and UpstreamPongTimeout are the keep-alive of
	// realtime upstream sockets (interval 0: no pings).
	UpstreamPingInterval time.Duration
	UpstreamPongTimeout  time.Duration

	SynthesisPieceChars int
	SynthesisLookahead  int
	// The synthesis cache: its in-process budget (0: off), entry limit,
	// lifetime, sharing across accounts, and budget in Redis.
	SynthesisCacheBytes         int
	SynthesisCacheMaxEntryBytes int
	SynthesisCacheTTL           time.Duration
	SynthesisCacheShared        bool
	SynthesisCacheRedisBytes    int
	VoicesCacheTTL              time.Duration
	StreamIdleTimeout           time.Duration
	StreamPoolSize              int

	// Budgets are the concurrency budgets per Smallest account, by use
	// (0: unlimited).
	BudgetSynthesis      int
	BudgetWebSockets     int
	BudgetLiveSessions   int
	BudgetTranscriptions int
	AdmissionMaxWait     time.Duration
	UpstreamMaxAttempts  int
	// RedisURL, when set, shares budgets and quotas across replicas.
	RedisURL  string
	FleetSize int

	EmulatorPace float64
	// EmulatorConcurrency is the emulated account's concurrency limit (0: none).
	EmulatorConcurrency    int
	EmulatorFirstByteDelay time.Duration
	// EmulatorFaults is a list of faults and rates, "http-503=0.02,...",
	// read by the emulator package.
	EmulatorFaults string

	LogLevel  slog.Level
	LogFormat string
}

// BaseURL returns the Smallest base URL for the configured upstream.
func (c *Config) BaseURL() string {
	if c.SmallestBaseURL != "" {
		return c.SmallestBaseURL
	}
	if c.Upstream == UpstreamSelfhost {
		return SelfhostBaseURL
	}
	return CloudBaseURL
}

// entry is one setting as --help shows it.
type entry struct {
	flag, env, def, usage string
}

// loader registers settings on a FlagSet, applying environment variables to
// their defaults as it goes.
type loader struct {
	fs      *flag.FlagSet
	getenv  func(string) string
	entries []entry
	errs    []error
}

// value registers a setting. parse sets the destination from text; it is
// called with the default, then the environment variable if set, then the
// flag if given.
func (l *loader) value(name, env, def, usage string, parse func(string) error) {
	l.preset(name, env, def, usage, parse)
	l.fs.Func(name, usage, parse)
}

// preset applies the default and the environment variable, and records the
// setting for --help.
func (l *loader) preset(name, env, def, usage string, parse func(string) error) {
	l.entries = append(l.entries, entry{"--" + name, env, def, usage})
	if err := parse(def); err != nil {
		panic(fmt.Sprintf("config: default of --%s: %v", name, err)) // a programming error
	}
	if v := l.getenv(env); v != "" {
		if err := parse(v); err != nil {
			l.errs = append(l.errs, fmt.Errorf("%s=%q: %w", env, v, err))
		}
	}
}

func (l *loader) str(p *string, name, env, def, usage string) {
	l.value(name, env, def, usage, func(s string) error { *p = s; return nil })
}

func (l *loader) duration(p *time.Duration, name, env, def, usage string) {
	l.value(name, env, def, usage, func(s string) error {
		d, err := time.ParseDuration(s)
		if err != nil {
			return errors.New("not a duration (like 30s or 2m)")
		}
		if d < 0 {
			return errors.New("must not be negative")
		}
		*p = d
		return nil
	})
}

func (l *loader) integer(p *int, name, env, def, usage string) {
	l.value(name, env, def, usage, func(s string) error {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			return errors.New("must be a positive whole number")
		}
		*p = n
		return nil
	})
}

// boolean registers a flag that may be given bare (--pprof) or with a value.
func (l *loader) boolean(p *bool, name, env, def, usage string) {
	parse := func(s string) error {
		b, err := strconv.ParseBool(s)
		if err != nil {
			return errors.New("must be true or false")
		}
		*p = b
		return nil
	}
	l.preset(name, env, def, usage, parse)
	l.fs.BoolFunc(name, usage, parse)
}

// count is integer allowing zero.
func (l *loader) count(p *int, name, env, def, usage string) {
	l.value(name, env, def, usage, func(s string) error {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return errors.New("must be a whole number, 0 or more")
		}
		*p = n
		return nil
	})
}

func (l *loader) float(p *float64, name, env, def, usage string) {
	l.value(name, env, def, usage, func(s string) error {
		f, err := strconv.ParseFloat(s, 64)
		if err != nil || f < 0 {
			return errors.New("must be a number, 0 or more")
		}
		*p = f
		return nil
	})
}

// oneOf returns a parse function that accepts only the given words.
func oneOf[T ~string](p *T, words ...string) func(string) error {
	return func(s string) error {
		for _, w := range words {
			if s == w {
				*p = T(s)
				return nil
			}
		}
		return fmt.Errorf("must be one of %s", strings.Join(words, ", "))
	}
}

// ErrHelp is returned by Load after it has written the help text.
var ErrHelp = flag.ErrHelp

// ErrVersion is returned by Load when --version asks for the version.
var ErrVersion = errors.New("config: --version")

// Load reads the configuration from args and the environment. On --help it
// writes the help text to out and returns ErrHelp.
func Load(args []string, getenv func(string) string, out io.Writer) (*Config, error) {
	c := &Config{}
	fs := flag.NewFlagSet("speechgate", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	l := &loader{fs: fs, getenv: getenv}

	l.str(&c.GRPCAddr, "grpc-addr", "SPEECHGATE_GRPC_ADDR", ":50051", "address to serve gRPC on (plaintext h2c unless TLS is set)")
	l.str(&c.HTTPAddr, "http-addr", "SPEECHGATE_HTTP_ADDR", ":8080", "address of the HTTP access: Connect, gRPC-Web, REST/JSON and audio over HTTP (empty: off)")
	l.value("cors-origins", "SPEECHGATE_CORS_ORIGINS", "", "comma-separated origins browsers may call the HTTP access from (* for any; empty: none)", func(s string) error {
		c.CORSOrigins = nil
		for o := range strings.SplitSeq(s, ",") {
			if o = strings.TrimSpace(o); o != "" {
				c.CORSOrigins = append(c.CORSOrigins, o)
			}
		}
		return nil
	})
	l.str(&c.AdminAddr, "admin-addr", "SPEECHGATE_ADMIN_ADDR", ":9090", "address of the admin HTTP server: /metrics, /healthz, /readyz (empty: off)")
	l.boolean(&c.Pprof, "pprof", "SPEECHGATE_PPROF", "false", "serve /debug/pprof/ on the admin server")
	l.value("upstream", "SPEECHGATE_UPSTREAM", "cloud", "which Smallest to call: cloud, selfhost, or emulator (built in, for trying and testing)",
		oneOf(&c.Upstream, string(UpstreamCloud), string(UpstreamSelfhost), string(UpstreamEmulator)))
	l.value("auth", "SPEECHGATE_AUTH", "passthrough", "caller authentication: passthrough (caller's bearer token is its Smallest key), keys (client keys from --keys-file), or none (trust the mesh)",
		oneOf(&c.Auth, string(auth.ModePassthrough), string(auth.ModeKeys), string(auth.ModeNone)))
	l.value("token-signing-keys", "SPEECHGATE_TOKEN_SIGNING_KEYS", "", "with --auth=keys: keys that sign short-lived tokens (MintToken), as id=base64secret,...; the first signs, all verify (prefer the variable: a flag shows in ps)", func(s string) error {
		var err error
		c.TokenSigningKeys, err = auth.ParseSigningKeys(s)
		return err
	})
	l.str(&c.KeysFile, "keys-file", "SPEECHGATE_KEYS_FILE", "", "file of client keys for --auth=keys: one '<name> <key>' per line")
	l.duration(&c.KeysFileCheckInterval, "keys-file-check-interval", "SPEECHGATE_KEYS_FILE_CHECK_INTERVAL", "10s", "how often --keys-file is read again, its new keys taking effect when it changed and is valid (0: only at start)")
	l.str(&c.SmallestBaseURL, "smallest-base-url", "SMALLEST_BASE_URL", "", "Smallest API base URL (default "+CloudBaseURL+"; "+SelfhostBaseURL+" with --upstream=selfhost)")
	l.str(&c.SmallestUSBaseURL, "smallest-us-base-url", "SMALLEST_US_BASE_URL", CloudUSBaseURL, "Smallest's US host, used for realtime recognition of zh, yue, ja, ko and multi-asian")
	l.value("selfhost-auth-scheme", "SPEECHGATE_SELFHOST_AUTH_SCHEME", "Token", "with --upstream=selfhost: the scheme before the license key: Token, Bearer, or none",
		oneOf(&c.SelfhostAuthScheme, "Token", "Bearer", "none"))
	l.str(&c.SelfhostTranscribePath, "selfhost-transcribe-path", "SPEECHGATE_SELFHOST_TRANSCRIBE_PATH", "/v1/listen", "with --upstream=selfhost: the transcription endpoint (/v1/listen, /api/v1/lightning/get_text, ...)")
	l.value("selfhost-upload-format", "SPEECHGATE_SELFHOST_UPLOAD_FORMAT", "multipart", "with --upstream=selfhost: how recordings are sent: multipart (field audio) or raw (bytes, options in the query)",
		oneOf(&c.SelfhostUploadFormat, "multipart", "raw"))
	l.str(&c.SelfhostHealthPath, "selfhost-health-path", "SPEECHGATE_SELFHOST_HEALTH_PATH", "/health", "with --upstream=selfhost: the server's unauthenticated health endpoint, which the gateway's health follows")
	l.duration(&c.SelfhostHealthInterval, "selfhost-health-interval", "SPEECHGATE_SELFHOST_HEALTH_INTERVAL", "5s", "with --upstream=selfhost: how often to check it (3 failures in a row mark the gateway NOT_SERVING, 2 successes SERVING again)")
	l.integer(&c.SelfhostMaxUploadBytes, "selfhost-max-upload-bytes", "SPEECHGATE_SELFHOST_MAX_UPLOAD_BYTES", "104857600", "with --upstream=selfhost: the largest recording the server accepts (its documented default: 100 MB)")
	l.str(&c.SelfhostSpeakPath, "selfhost-speak-path", "SPEECHGATE_SELFHOST_SPEAK_PATH", "/v1/speak", "with --upstream=selfhost: the speech endpoint Synthesize uses (empty: no synthesis)")
	l.integer(&c.SelfhostSpeakSampleRate, "selfhost-speak-sample-rate", "SPEECHGATE_SELFHOST_SPEAK_SAMPLE_RATE", "24000", "with --upstream=selfhost: the sample rate of the speech endpoint's audio when it sends no WAV header")
	l.str(&c.TLSCert, "tls-cert", "SPEECHGATE_TLS_CERT", "", "PEM certificate file; with --tls-key, serves TLS instead of h2c")
	l.str(&c.TLSKey, "tls-key", "SPEECHGATE_TLS_KEY", "", "PEM private key file for --tls-cert")
	l.duration(&c.ShutdownGrace, "shutdown-grace", "SPEECHGATE_SHUTDOWN_GRACE", "30s", "on SIGTERM, how long calls in flight may run before they are cut off")
	l.integer(&c.MaxRecvMsgBytes, "max-recv-msg-bytes", "SPEECHGATE_MAX_RECV_MSG_BYTES", "33554432", "largest request message accepted, in bytes (bounds unary Transcribe audio)")
	l.integer(&c.MaxSendMsgBytes, "max-send-msg-bytes", "SPEECHGATE_MAX_SEND_MSG_BYTES", "16777216", "largest response message sent, in bytes")
	l.duration(&c.KeepaliveMinTime, "keepalive-min-time", "SPEECHGATE_KEEPALIVE_MIN_TIME", "10s", "shortest client ping interval tolerated (sidecars ping)")
	l.duration(&c.MaxConnectionAge, "max-connection-age", "SPEECHGATE_MAX_CONNECTION_AGE", "0s", "ask clients to reconnect after this long, to spread load (0: never)")
	l.duration(&c.MaxConnectionAgeGrace, "max-connection-age-grace", "SPEECHGATE_MAX_CONNECTION_AGE_GRACE", "0s", "how long streams may outlive --max-connection-age (0: forever); make it longer than the longest stream")
	l.duration(&c.UpstreamTimeout, "upstream-timeout", "SPEECHGATE_UPSTREAM_TIMEOUT", "30s", "how long Smallest may take to start answering a request")
	l.duration(&c.UpstreamIdleTimeout, "upstream-idle-timeout", "SPEECHGATE_UPSTREAM_IDLE_TIMEOUT", "30s", "how long a Smallest stream may go silent before it is treated as failed (0: no limit)")
	l.duration(&c.UpstreamIdleConnTimeout, "upstream-idle-conn-timeout", "SPEECHGATE_UPSTREAM_IDLE_CONN_TIMEOUT", "90s", "how long an idle connection to Smallest is kept for reuse")
	l.duration(&c.UpstreamPingInterval, "upstream-ping-interval", "SPEECHGATE_UPSTREAM_PING_INTERVAL", "15s", "how often the realtime sockets to Smallest (SynthesizeStream, TranscribeLive) are pinged, to find a connection that died without a close (0: never)")
	l.duration(&c.UpstreamPongTimeout, "upstream-pong-timeout", "SPEECHGATE_UPSTREAM_PONG_TIMEOUT", "10s", "how long a ping's answer may take, while nothing else arrives either, before the call ends with UNAVAILABLE/UPSTREAM_UNRESPONSIVE")
	l.duration(&c.CallerStallTimeout, "caller-stall-timeout", "SPEECHGATE_CALLER_STALL_TIMEOUT", "60s", "how long a caller may leave a stream unread before the gateway stops its upstream request and ends the call with ABORTED/CALLER_TOO_SLOW (0: no limit)")
	l.integer(&c.SynthesisPieceChars, "synthesis-piece-chars", "SPEECHGATE_SYNTHESIS_PIECE_CHARS", "250", "Synthesize splits longer text at sentence boundaries into pieces of at most this many characters")
	l.count(&c.SynthesisLookahead, "synthesis-lookahead", "SPEECHGATE_SYNTHESIS_LOOKAHEAD", "1", "how many pieces of a long text are requested ahead of the one streaming (0: none)")
	l.count(&c.SynthesisCacheBytes, "synthesis-cache-bytes", "SPEECHGATE_SYNTHESIS_CACHE_BYTES", "67108864", "memory for the in-process synthesis cache, in bytes (0: no cache; identical syntheses in flight are still shared)")
	l.integer(&c.SynthesisCacheMaxEntryBytes, "synthesis-cache-max-entry-bytes", "SPEECHGATE_SYNTHESIS_CACHE_MAX_ENTRY_BYTES", "4194304", "the largest audio of one text piece the synthesis cache keeps, in bytes")
	l.duration(&c.SynthesisCacheTTL, "synthesis-cache-ttl", "SPEECHGATE_SYNTHESIS_CACHE_TTL", "1h", "how long a synthesis stays cached")
	l.boolean(&c.SynthesisCacheShared, "synthesis-cache-shared", "SPEECHGATE_SYNTHESIS_CACHE_SHARED", "false", "share cached syntheses across Smallest accounts (by default each account sees only its own: one tenant must not learn what another synthesized)")
	l.count(&c.SynthesisCacheRedisBytes, "synthesis-cache-redis-bytes", "SPEECHGATE_SYNTHESIS_CACHE_REDIS_BYTES", "134217728", "with --redis-url: the synthesis cache's budget in Redis, in bytes, kept by deleting the oldest entries (0: none in Redis)")
	l.duration(&c.VoicesCacheTTL, "voices-cache-ttl", "SPEECHGATE_VOICES_CACHE_TTL", "60s", "how long ListVoices answers from its cache, per Smallest key (0: no cache)")
	l.duration(&c.StreamIdleTimeout, "stream-idle-timeout", "SPEECHGATE_STREAM_IDLE_TIMEOUT", "300s", "the idle timeout asked of Lightning's WebSocket for SynthesizeStream (upstream default 60s); longer pauses reopen it")
	l.count(&c.StreamPoolSize, "stream-pool-size", "SPEECHGATE_STREAM_POOL_SIZE", "4", "idle Lightning WebSocket connections kept per Smallest key for reuse (0: none)")
	l.count(&c.BudgetSynthesis, "budget-synthesis", "SPEECHGATE_BUDGET_SYNTHESIS", "0", "synthesis streams over HTTP (Synthesize) at once per Smallest account; more wait their turn (0: unlimited)")
	l.count(&c.BudgetWebSockets, "budget-websockets", "SPEECHGATE_BUDGET_WEBSOCKETS", "0", "WebSocket connections per Smallest account: Lightning's (SynthesizeStream, idle pooled ones included) and Hydra's (Converse), which share the plan's pool (0: unlimited)")
	l.count(&c.BudgetLiveSessions, "budget-live-sessions", "SPEECHGATE_BUDGET_LIVE_SESSIONS", "0", "realtime recognition sessions (TranscribeLive) at once per Smallest account (0: unlimited)")
	l.count(&c.BudgetTranscriptions, "budget-transcriptions", "SPEECHGATE_BUDGET_TRANSCRIPTIONS", "0", "recordings being transcribed (Transcribe, TranscribeUpload) at once per Smallest account (0: unlimited)")
	l.duration(&c.AdmissionMaxWait, "admission-max-wait", "SPEECHGATE_ADMISSION_MAX_WAIT", "10s", "the longest a call waits for a budget's slot; a call's deadline can make it shorter")
	l.integer(&c.UpstreamMaxAttempts, "upstream-max-attempts", "SPEECHGATE_UPSTREAM_MAX_ATTEMPTS", "3", "requests made to Smallest for one call at most, retries of refusals (429, 503) and unsent requests included (1: no retries)")
	l.str(&c.RedisURL, "redis-url", "SPEECHGATE_REDIS_URL", "", "Redis shared by the replicas, for budgets and quotas, as redis://[:password@]host:port[/db] (empty: this process alone; prefer the variable for a URL with a password)")
	l.integer(&c.FleetSize, "fleet-size", "SPEECHGATE_FLEET_SIZE", "1", "with --redis-url: how many replicas share the budgets; while Redis is unreachable each keeps to 1/fleet-size of every budget and quota")
	l.float(&c.EmulatorPace, "emulator-pace", "SPEECHGATE_EMULATOR_PACE", "0", "with --upstream=emulator: audio speed relative to real time (1 streams as long as the audio lasts; 0: as fast as possible)")
	l.duration(&c.EmulatorFirstByteDelay, "emulator-first-byte-delay", "SPEECHGATE_EMULATOR_FIRST_BYTE_DELAY", "0s", "with --upstream=emulator: simulated time to first audio byte")
	l.count(&c.EmulatorConcurrency, "emulator-concurrency", "SPEECHGATE_EMULATOR_CONCURRENCY", "0", "with --upstream=emulator: the emulated account's concurrency limit, as Smallest enforces one: HTTP syntheses and transcriptions beyond it get 429, realtime sessions close with 1008, WebSocket handshakes beyond 5 per unit get 429 (0: none)")
	l.str(&c.EmulatorFaults, "emulator-faults", "SPEECHGATE_EMULATOR_FAULTS", "", "with --upstream=emulator: faults injected at random, as <fault>=<rate>,... (for example http-503=0.02,reset-after-3=0.01); a caller can also pick one with the key fault-<fault>")
	l.value("log-level", "SPEECHGATE_LOG_LEVEL", "info", "debug, info, warn or error", func(s string) error { return c.LogLevel.UnmarshalText([]byte(s)) })
	l.value("log-format", "SPEECHGATE_LOG_FORMAT", "json", "json or text", oneOf(&c.LogFormat, "json", "text"))
	version := fs.Bool("version", false, "print the version and exit")
	l.entries = append(l.entries, entry{"--version", "", "", "print the version and exit"})
	c.SmallestAPIKey = getenv("SMALLEST_API_KEY")
	c.SmallestLicenseKey = getenv("SMALLEST_LICENSE_KEY")
	l.entries = append(l.entries,
		entry{"(environment only)", "SMALLEST_API_KEY", "", "the gateway's own Smallest key, for --auth=keys and --auth=none"},
		entry{"(environment only)", "SMALLEST_LICENSE_KEY", "", "the self-hosted server's license key, for --upstream=selfhost with --auth=keys or none"})

	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			writeHelp(out, l.entries)
			return nil, ErrHelp
		}
		return nil, err
	}
	if *version {
		return nil, ErrVersion
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q (flags start with --)", fs.Arg(0))
	}
	if err := errors.Join(l.errs...); err != nil {
		return nil, err
	}
	return c, c.check()
}

// check validates settings that depend on one another.
func (c *Config) check() error {
	var errs []error
	if c.Auth == auth.ModeKeys && c.KeysFile == "" {
		errs = append(errs, errors.New("--auth=keys needs --keys-file"))
	}
	if c.Auth != auth.ModeKeys && c.KeysFile != "" {
		errs = append(errs, errors.New("--keys-file is only used with --auth=keys"))
	}
	if c.Auth != auth.ModeKeys && c.TokenSigningKeys != nil {
		errs = append(errs, errors.New("--token-signing-keys is only used with --auth=keys: tokens act as a client key"))
	}
	switch {
	case c.Auth == auth.ModePassthrough || c.Upstream == UpstreamEmulator:
	case c.Upstream == UpstreamCloud && c.SmallestAPIKey == "":
		errs = append(errs, fmt.Errorf("--auth=%s needs the gateway's own key in SMALLEST_API_KEY", c.Auth))
	case c.Upstream == UpstreamSelfhost && c.SmallestLicenseKey == "" && c.SelfhostAuthScheme != "none":
		errs = append(errs, fmt.Errorf("--auth=%s with --upstream=selfhost needs the license key in SMALLEST_LICENSE_KEY (or --selfhost-auth-scheme=none)", c.Auth))
	}
	if !strings.HasPrefix(c.SelfhostTranscribePath, "/") || !strings.HasPrefix(c.SelfhostHealthPath, "/") {
		errs = append(errs, errors.New("--selfhost-transcribe-path and --selfhost-health-path must start with /"))
	}
	if c.SelfhostSpeakPath != "" && !strings.HasPrefix(c.SelfhostSpeakPath, "/") {
		errs = append(errs, errors.New("--selfhost-speak-path must start with / (or be empty)"))
	}
	if c.FleetSize > 1 && c.RedisURL == "" {
		errs = append(errs, errors.New("--fleet-size is only used with --redis-url"))
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		errs = append(errs, errors.New("--tls-cert and --tls-key go together"))
	}
	for flag, raw := range map[string]string{"--smallest-base-url": c.BaseURL(), "--smallest-us-base-url": c.SmallestUSBaseURL} {
		if u, err := url.Parse(raw); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, fmt.Errorf("%s %q must be an absolute http or https URL", flag, raw))
		}
	}
	return errors.Join(errs...)
}

func writeHelp(out io.Writer, entries []entry) {
	fmt.Fprint(out, `speechgate serves Smallest AI's speech APIs over gRPC.

Usage: speechgate [flags]

Every flag can also be set by its environment variable; a flag given on the
command line wins over the variable.

`)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "FLAG\tENVIRONMENT\tDEFAULT\tMEANING")
	for _, e := range entries {
		def := e.def
		if def == "" {
			def = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", e.flag, e.env, def, e.usage)
	}
	tw.Flush()
}
