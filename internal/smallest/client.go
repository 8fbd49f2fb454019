// Package smallest is the gateway's client of Smallest AI's Waves API: Lightning
// text-to-speech over SSE, the voice catalog, and Pulse speech-to-text.
//
// It speaks the wire formats as the upstream contract (docs/upstream.md)
// documents them and tolerates every documented variant of frames and error
// bodies. Streams are read incrementally: nothing buffers a whole response.
// Every request lives in the caller's context, so cancelling the context ends
// the HTTP request at once. Failures are returned as *Error.
package smallest

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// Config configures a Client.
type Config struct {
	// BaseURL is the scheme and host (and optional path prefix) of the API.
	BaseURL string
	// USBaseURL is Smallest's US host, which alone serves realtime recognition
	// of some languages (see NeedsUSHost). Empty: BaseURL serves everything.
	USBaseURL string
	// HTTPClient makes the requests. Its Timeout must be zero: streams last as
	// long as the audio, and deadlines come from each call's context.
	HTTPClient *http.Client
	// Credential returns the API key to send for a call. It is asked once per
	// call with the call's context.
	Credential func(context.Context) string
	// AuthScheme is the word before the key in the Authorization header.
	// Default "Bearer".
	AuthScheme string
	// IdleTimeout ends a stream whose upstream sends nothing for this long
	// while the gateway waits to read from it. Zero means no limit beyond
	// the caller's deadline.
	IdleTimeout time.Duration
	// ResponseTimeout is how long Smallest may take to start answering on
	// the synthesis WebSocket: from a flush to its first message. (HTTP
	// requests get theirs from the transport; see NewTransport.) Zero:
	// IdleTimeout applies.
	ResponseTimeout time.Duration
	// UserAgent is sent as User-Agent and X-Source.
	UserAgent string
	// StreamIdleTimeout is the idle timeout asked of Lightning's WebSocket
	// (its ?timeout, default 60 s upstream). Zero leaves Smallest's default.
	StreamIdleTimeout time.Duration
	// StreamPoolSize is how many idle WebSocket synthesis sockets are kept
	// per key for reuse. Zero keeps none.
	StreamPoolSize int
	// VoicesTTL is how long a key's voice list is cached. Zero: no cache.
	VoicesTTL time.Duration
	// Gate, when set, admits every use of the account before it starts:
	// a synthesis stream, a WebSocket (for as long as it is open, pooled
	// or not), a realtime session, a transcription.
	Gate Gate
	// MaxAttempts bounds the requests made for one call, retries included
	// (see attempt). Default DefaultMaxAttempts; 1 makes no retries.
	MaxAttempts int
	// RetryBudget limits retries across the process. Default: one of the
	// client's own.
	RetryBudget *RetryBudget
	// OnRetry, when set, is told of each retry, with the endpoint and why.
	OnRetry func(endpoint, reason string)
	// Keepalive pings the realtime sockets (synthesis and recognition)
	// while a call uses them. Zero: no pings.
	Keepalive Keepalive
}

// Client calls Smallest's API. It is safe for concurrent use.
type Client struct {
	base        *url.URL
	usBase      *url.URL
	hc          *http.Client
	credential  func(context.Context) string
	scheme      string
	idleTimeout time.Duration
	// responseTimeout bounds the wait for a WebSocket synthesis to start.
	responseTimeout time.Duration
	userAgent       string
	tts             *ttsPool
	voices          *voiceCache
	gate            Gate
	maxAttempts     int
	retryBudget     *RetryBudget
	onRetry         func(endpoint, reason string)
	keepalive       Keepalive
}

// New returns a Client for cfg.
func New(cfg Config) (*Client, error) {
	base, err := parseBase(cfg.BaseURL)
	if err != nil {
		return nil, err
	}
	var usBase *url.URL
	if cfg.USBaseURL != "" {
		if usBase, err = parseBase(cfg.USBaseURL); err != nil {
			return nil, err
		}
	}
	if cfg.HTTPClient == nil {
		return nil, errors.New("smallest: Config.HTTPClient is required")
	}
	if cfg.Credential == nil {
		return nil, errors.New("smallest: Config.Credential is required")
	}
	c := &Client{
		base:            base,
		usBase:          usBase,
		hc:              cfg.HTTPClient,
		credential:      cfg.Credential,
		scheme:          cfg.AuthScheme,
		idleTimeout:     cfg.IdleTimeout,
		responseTimeout: cfg.ResponseTimeout,
		userAgent:       cfg.UserAgent,
		tts:             newTTSPool(cfg.StreamPoolSize, cfg.StreamIdleTimeout, cfg.Gate),
		voices:          newVoiceCache(cfg.VoicesTTL),
		gate:            cfg.Gate,
		maxAttempts:     cmp.Or(max(cfg.MaxAttempts, 0), DefaultMaxAttempts),
		retryBudget:     cfg.RetryBudget,
		onRetry:         cfg.OnRetry,
		keepalive:       cfg.Keepalive,
	}
	if c.retryBudget == nil {
		c.retryBudget = NewRetryBudget()
	}
	if c.scheme == "" {
		c.scheme = "Bearer"
	}
	return c, nil
}

// Capabilities says what a Smallest server offers the gateway.
type Capabilities struct {
	// Backend names the server for callers: "Smallest's cloud", "the
	// self-hosted Smallest server".
	Backend string
	// Synthesis: Synthesize, a text's audio.
	Synthesis bool
	// StreamingSynthesis: SynthesizeStream, over Lightning's WebSocket.
	StreamingSynthesis bool
	// Catalog: the voice catalog, pronunciation dictionaries, voice clones.
	Catalog bool
	// SynthesisFormats are the output formats Synthesize can ask for
	// ("pcm", "mp3", ...); nil: every one.
	SynthesisFormats []string
	// Live: Pulse's realtime recognition.
	Live bool
	// History: deleting a transcription from the account's history.
	History bool
	// Conversation: Hydra's speech-to-speech sessions.
	Conversation bool
	// The ...Missing fields say, when one is not offered, why not, in words
	// for the caller.
	SynthesisMissing, StreamingMissing, CatalogMissing, LiveMissing, HistoryMissing, ConversationMissing string
	// MaxUploadBytes is the largest recording transcription accepts.
	MaxUploadBytes int64
}

// MaxUploadBytes is Pulse's documented payload limit: 250 MB.
const MaxUploadBytes = 250 << 20

// Capabilities says what Smallest's cloud offers: everything.
func (c *Client) Capabilities() Capabilities {
	return Capabilities{Backend: "Smallest's cloud", Synthesis: true, StreamingSynthesis: true, Catalog: true, Live: true, History: true, Conversation: true,
		MaxUploadBytes: MaxUploadBytes}
}

// Unsupported lists the options of r the cloud cannot carry: those of the
// self-hosted server only.
func (c *Client) Unsupported(r *TranscribeRequest) []string {
	var out []string
	if r.NumSpeakers != 0 {
		out = append(out, "num_speakers")
	}
	if r.Punctuate != nil {
		out = append(out, "punctuate")
	}
	return out
}

// Close releases the pooled WebSocket sockets. Calls in flight are not affected.
func (c *Client) Close() { c.tts.close() }

func parseBase(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("smallest: base URL %q must be an absolute http or https URL", raw)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	return u, nil
}

// NewTransport returns an HTTP transport tuned for a gateway that holds many
// concurrent upstream streams: keep-alive pools sized for them, HTTP/2 where
// the upstream offers it, a bound on how long the upstream may take to
// start answering, and how long an idle connection is kept (0: 90 s).
func NewTransport(responseHeaderTimeout, idleConnTimeout time.Duration) *http.Transport {
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          1024,
		MaxIdleConnsPerHost:   1024, // HTTP/1.1 upstreams need one per stream in flight
		IdleConnTimeout:       cmp.Or(idleConnTimeout, 90*time.Second),
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: responseHeaderTimeout,
		ExpectContinueTimeout: time.Second,
	}
}

// call is one request in flight, with what is needed to report its failure.
type call struct {
	endpoint string
	secret   string
	// sent is set once the whole request has been written: a failure after
	// that may have been acted on (and billed) by Smallest, one before it
	// was certainly not.
	sent *atomic.Bool
}

func newCall(endpoint, secret string) call {
	return call{endpoint: endpoint, secret: secret, sent: new(atomic.Bool)}
}

// traced returns ctx with a trace that marks cl sent once its request is
// written.
func (cl call) traced(ctx context.Context) context.Context {
	return httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{WroteRequest: func(info httptrace.WroteRequestInfo) {
		if info.Err == nil {
			cl.sent.Store(true)
		}
	}})
}

// newRequest builds an authenticated request to path under the base URL.
func (c *Client) newRequest(ctx context.Context, method, path string, query url.Values, body io.Reader) (*http.Request, call, error) {
	u := *c.base
	u.Path += path
	u.RawQuery = query.Encode()
	cl := newCall(method+" "+u.Path, c.credential(ctx))
	req, err := http.NewRequestWithContext(cl.traced(ctx), method, u.String(), body)
	if err != nil {
		return nil, cl, err
	}
	req.Header = c.header(cl.secret)
	return req, cl, nil
}

// header returns the headers every request carries: the key, and who sends it.
func (c *Client) header(secret string) http.Header {
	h := http.Header{}
	if secret != "" {
		h.Set("Authorization", c.scheme+" "+secret)
	}
	if c.userAgent != "" {
		h.Set("User-Agent", c.userAgent)
		h.Set("X-Source", c.userAgent)
	}
	return h
}

// dialWS opens the WebSocket at u for cl. A refusal of the upgrade is an
// *Error made from Smallest's answer.
func (c *Client) dialWS(ctx context.Context, cl call, u string, header http.Header) (*websocket.Conn, error) {
	ws, resp, err := websocket.Dial(cl.traced(ctx), u, &websocket.DialOptions{HTTPClient: c.hc, HTTPHeader: header})
	if err != nil {
		if resp != nil {
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusSwitchingProtocols {
				return nil, responseError(cl.endpoint, resp, cl.secret)
			}
		}
		return nil, cl.transportError(ctx, err)
	}
	return ws, nil
}

// do sends req and returns the response if its status is 2xx. Any other
// outcome is an *Error, or the context's error when the caller gave up.
func (c *Client) do(req *http.Request, cl call) (*http.Response, error) {
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, cl.transportError(req.Context(), err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		defer resp.Body.Close()
		return nil, responseError(cl.endpoint, resp, cl.secret)
	}
	return resp, nil
}

// errIdle is the cause recorded when a stream's idle timer ends it.
var errIdle = errors.New("upstream sent nothing within the idle timeout")

// transportError classifies a failure to send a request or read a response.
// When the caller's own context ended, its error is returned unchanged, so
// that a cancel reads as a cancel and not as an upstream fault.
func (cl call) transportError(ctx context.Context, err error) error {
	if cause := context.Cause(ctx); cause != nil {
		if errors.Is(cause, errIdle) {
			return &Error{Kind: KindTimeout, Endpoint: cl.endpoint, Message: errIdle.Error(), cause: err}
		}
		return cause
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return &Error{Kind: KindTimeout, Endpoint: cl.endpoint, Message: "no response in time", cause: err}
	}
	kind := KindUnreachable
	if cl.sent != nil && cl.sent.Load() {
		kind = KindNoAnswer
	}
	return &Error{Kind: kind, Endpoint: cl.endpoint, Message: scrub(rootCause(err), cl.secret), cause: err}
}

// rootCause returns the innermost error text, without the URL that
// *url.Error puts in front of it.
func rootCause(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return err.Error()
}

// sendJSON makes a JSON request (body may be nil) and decodes the JSON
// answer into out (which may be nil).
func (c *Client) sendJSON(ctx context.Context, method, path string, body, out any) error {
	var payload []byte
	if body != nil {
		var err error
		if payload, err = json.Marshal(body); err != nil {
			return err
		}
	}
	var resp *http.Response
	var cl call
	// Reads are retried; requests that create or change something are not.
	_, err := c.attempt(ctx, use{endpoint: method + " " + path, retries: method == http.MethodGet}, func() error {
		var r io.Reader
		if payload != nil {
			r = bytes.NewReader(payload)
		}
		req, reqCall, err := c.newRequest(ctx, method, path, nil, r)
		if err != nil {
			return err
		}
		cl = reqCall
		req.Header.Set("Accept", "application/json")
		if body != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err = c.do(req, cl) //nolint:bodyclose // closed below, or by decodeJSON
		return err
	})
	if err != nil {
		return err
	}
	if out == nil {
		return resp.Body.Close()
	}
	return cl.decodeJSON(resp, maxCatalog, out)
}

// decodeJSON decodes a successful response's JSON body, read up to limit
// bytes, into v, and closes the body.
func (cl call) decodeJSON(resp *http.Response, limit int64, v any) error {
	defer resp.Body.Close()
	err := json.NewDecoder(io.LimitReader(resp.Body, limit)).Decode(v)
	if err == nil {
		return nil
	}
	if ctx := resp.Request.Context(); ctx.Err() != nil {
		return cl.transportError(ctx, err)
	}
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	if errors.As(err, &syntax) || errors.As(err, &typ) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return &Error{Kind: KindMalformed, Endpoint: cl.endpoint, RequestID: resp.Header.Get("X-Request-Id"),
			Message: "the response was not the expected JSON: " + err.Error(), cause: err}
	}
	return cl.transportError(resp.Request.Context(), err)
}
