package smallest

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Kind classifies how a call to Smallest failed.
type Kind int

// The kinds of failure. The gateway turns each into a gRPC status in one place
// (package rpcerror); here they only record what happened.
const (
	// KindHTTP: Smallest answered with an HTTP error status (HTTPStatus).
	KindHTTP Kind = iota + 1
	// KindStreamError: an error frame arrived inside a stream.
	KindStreamError
	// KindStreamBroken: the stream ended before Smallest's final frame.
	KindStreamBroken
	// KindTimeout: Smallest did not answer, or went silent, for too long.
	KindTimeout
	// KindUnreachable: the request was never sent: no connection could be
	// made, or it failed before the request was written. Safe to retry.
	KindUnreachable
	// KindMalformed: the answer could not be understood.
	KindMalformed
	// KindNoAnswer: the request was sent, then the connection failed before
	// an answer came. Smallest may have done (and billed) the work, so a
	// retry is not free.
	KindNoAnswer
	// KindUnresponsive: a realtime socket's peer stopped answering
	// WebSocket pings, and sent nothing else: the connection is presumed
	// dead.
	KindUnresponsive
	// KindIdleClosed: Smallest closed a session normally, on its own, while
	// the caller still held it: Hydra's idle timeout.
	KindIdleClosed
)

func (k Kind) String() string {
	switch k {
	case KindHTTP:
		return "http"
	case KindStreamError:
		return "stream error"
	case KindStreamBroken:
		return "stream broken"
	case KindTimeout:
		return "timeout"
	case KindUnreachable:
		return "unreachable"
	case KindMalformed:
		return "malformed"
	case KindNoAnswer:
		return "no answer"
	case KindUnresponsive:
		return "unresponsive"
	case KindIdleClosed:
		return "idle close"
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

// FieldViolation is one problem Smallest found with one request field.
type FieldViolation struct {
	// Field is Smallest's name for the field, dotted for nested paths ("items.0.word").
	Field string
	// Description is Smallest's message about it.
	Description string
}

// Error is a failed call to Smallest. Its text never contains a credential:
// upstream messages are scrubbed when the Error is made.
type Error struct {
	Kind Kind
	// Endpoint names the call, for example "POST /waves/v1/tts/live".
	Endpoint string
	// HTTPStatus is the HTTP status Smallest answered with; 0 when there was
	// no HTTP error (a stream that failed after a 200, a WebSocket session).
	HTTPStatus int
	// FrameStatus is the status an error frame inside a stream carried
	// ({"status":"500",...}); 0 when there was none. It is not an HTTP status:
	// the response itself was a 200.
	FrameStatus int
	// CloseCode is the WebSocket close code that ended a session; 0 if none.
	CloseCode int
	// Code is Smallest's machine-readable error code (error_code, code), if any.
	Code string
	// Message is Smallest's human-readable message, scrubbed of secrets.
	Message string
	// RequestID is Smallest's id for the request (X-Request-Id or request_id).
	RequestID string
	// RetryAfter is how long Smallest asked the caller to wait; 0 if it did not say.
	RetryAfter time.Duration
	// Violations lists the request fields Smallest named as invalid.
	Violations []FieldViolation
	// Details holds further facts from the error body that a caller can act on
	// (expires_at, max_size_mb, supported_formats, language, region, ...).
	Details map[string]string
	// Attempts is how many requests the call made, retries included; 0
	// when the failure came after the request was answered (in a stream).
	Attempts int

	cause error
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("smallest: ")
	b.WriteString(e.Endpoint)
	switch {
	case e.HTTPStatus != 0:
		fmt.Fprintf(&b, ": %d", e.HTTPStatus)
		if t := http.StatusText(e.HTTPStatus); t != "" {
			b.WriteString(" " + t)
		}
	case e.FrameStatus != 0:
		fmt.Fprintf(&b, ": %s with status %d", e.Kind, e.FrameStatus)
	case e.CloseCode != 0:
		fmt.Fprintf(&b, ": WebSocket close %d", e.CloseCode)
	default:
		b.WriteString(": " + e.Kind.String())
	}
	if e.Code != "" {
		b.WriteString(" (" + e.Code + ")")
	}
	if e.Message != "" {
		b.WriteString(": " + e.Message)
	}
	return b.String()
}

// Unwrap returns the transport error behind the failure, if any. A cause
// that is, or wraps, io.EOF is given as io.ErrUnexpectedEOF: streams end
// with io.EOF, and a failure must never read as that clean end (a socket
// that dropped mid-synthesis once ended a call OK, with its audio cut short).
func (e *Error) Unwrap() error {
	if errors.Is(e.cause, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return e.cause
}

// errorBody is the union of every error body shape Smallest documents (contract
// §3.2 and §4.1): each field may be absent, and several have more than one type.
type errorBody struct {
	Message    json.RawMessage `json:"message"`
	Error      json.RawMessage `json:"error"`  // string, zod issue array, or {message, code}
	Errors     json.RawMessage `json:"errors"` // string or list of strings
	ErrorCode  string          `json:"error_code"`
	Code       json.RawMessage `json:"code"`
	RequestID  string          `json:"request_id"`
	RetryAfter json.RawMessage `json:"retry_after"` // seconds, number or string
	Details    json.RawMessage `json:"details"`     // zod-like issue list
	Status     json.RawMessage `json:"status"`

	// Facts a caller can act on, carried into Error.Details.
	ExpiresAt           string          `json:"expires_at"`
	MaxSizeMB           json.RawMessage `json:"max_size_mb"`
	SupportedFormats    []string        `json:"supported_formats"`
	Language            string          `json:"language"`
	Region              string          `json:"region"`
	RecommendedEndpoint string          `json:"recommended_endpoint"`
}

type issue struct {
	Path    []any  `json:"path"`
	Message string `json:"message"`
	Code    string `json:"code"`
}

// maxErrorBody bounds how much of an error response is read: error bodies are
// small JSON, and a proxy's HTML page must not be buffered whole.
const maxErrorBody = 64 << 10

// responseError builds the Error for a non-2xx HTTP response.
func responseError(endpoint string, resp *http.Response, secret string) *Error {
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	e := &Error{Kind: KindHTTP, Endpoint: endpoint, HTTPStatus: resp.StatusCode}
	if !e.parseBody(raw, secret) {
		e.Message = "the response body was not JSON"
	}
	if id := resp.Header.Get("X-Request-Id"); id != "" {
		e.RequestID = id
	}
	if d, ok := parseRetryAfter(resp.Header.Get("Retry-After"), time.Now()); ok {
		e.RetryAfter = d
	}
	return e
}

// parseBody fills e from a JSON error body. It reports whether raw was a JSON object.
func (e *Error) parseBody(raw []byte, secret string) bool {
	var body errorBody
	if json.Unmarshal(raw, &body) != nil {
		return false
	}
	var msgs []string
	addMsg := func(s string) {
		if s = strings.TrimSpace(s); s != "" && !slices.Contains(msgs, s) {
			msgs = append(msgs, s)
		}
	}
	if s, ok := jsonString(body.Message); ok {
		addMsg(s)
	}
	if s, ok := jsonString(body.Error); ok {
		addMsg(s)
	} else if len(body.Error) > 0 {
		var issues []issue
		var nested struct {
			Message string          `json:"message"`
			Code    json.RawMessage `json:"code"`
		}
		switch {
		case json.Unmarshal(body.Error, &issues) == nil:
			for _, is := range issues {
				e.addIssue(is)
				addMsg(is.Message)
			}
		case json.Unmarshal(body.Error, &nested) == nil:
			addMsg(nested.Message)
			if c, ok := jsonScalar(nested.Code); ok {
				e.Code = c
			}
		}
	}
	if s, ok := jsonString(body.Errors); ok {
		addMsg(s)
	} else {
		var list []string
		if json.Unmarshal(body.Errors, &list) == nil {
			for _, s := range list {
				addMsg(s)
			}
		}
	}
	var details []issue
	if json.Unmarshal(body.Details, &details) == nil {
		for _, is := range details {
			e.addIssue(is)
		}
	}
	if body.ErrorCode != "" {
		e.Code = body.ErrorCode
	} else if c, ok := jsonScalar(body.Code); ok && e.Code == "" {
		e.Code = c
	}
	e.RequestID = body.RequestID
	if s, ok := jsonScalar(body.RetryAfter); ok {
		if d, ok := parseRetryAfter(s, time.Now()); ok {
			e.RetryAfter = d
		}
	}
	e.Message = scrub(strings.Join(msgs, "; "), secret)
	e.addDetail("expires_at", body.ExpiresAt)
	if s, ok := jsonScalar(body.MaxSizeMB); ok {
		e.addDetail("max_size_mb", s)
	}
	e.addDetail("supported_formats", strings.Join(body.SupportedFormats, ","))
	e.addDetail("language", body.Language)
	e.addDetail("region", body.Region)
	e.addDetail("recommended_endpoint", body.RecommendedEndpoint)
	for i := range e.Violations {
		e.Violations[i].Description = scrub(e.Violations[i].Description, secret)
	}
	return true
}

func (e *Error) addIssue(is issue) {
	parts := make([]string, 0, len(is.Path))
	for _, p := range is.Path {
		parts = append(parts, fmt.Sprint(p))
	}
	if len(parts) == 0 {
		return
	}
	e.Violations = append(e.Violations, FieldViolation{Field: strings.Join(parts, "."), Description: is.Message})
}

func (e *Error) addDetail(key, value string) {
	if value == "" {
		return
	}
	if e.Details == nil {
		e.Details = make(map[string]string)
	}
	e.Details[key] = value
}

// jsonString returns raw as a string if it is a JSON string.
func jsonString(raw json.RawMessage) (string, bool) {
	var s string
	if len(raw) == 0 || raw[0] != '"' || json.Unmarshal(raw, &s) != nil {
		return "", false
	}
	return s, true
}

// jsonScalar returns a JSON string or number as text.
func jsonScalar(raw json.RawMessage) (string, bool) {
	if s, ok := jsonString(raw); ok {
		return s, s != ""
	}
	var n json.Number
	if len(raw) == 0 || json.Unmarshal(raw, &n) != nil {
		return "", false
	}
	return n.String(), true
}

// jsonTrue reports whether raw is true, as a JSON boolean or the string "true".
func jsonTrue(raw json.RawMessage) bool {
	return string(raw) == "true" || string(raw) == `"true"`
}

// parseRetryAfter reads a Retry-After value: delay seconds (integer or
// fractional, as some servers send) or an HTTP date.
func parseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if secs, err := strconv.ParseFloat(v, 64); err == nil {
		if secs < 0 || secs > 24*3600 {
			return 0, false
		}
		return time.Duration(secs * float64(time.Second)), true
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(t.Sub(now), 0), true
	}
	return 0, false
}

// maxMessage bounds an upstream message carried into an error.
const maxMessage = 512

// keyPattern matches Smallest API keys, which start with "sk_".
var keyPattern = regexp.MustCompile(`sk_[A-Za-z0-9_\-]{4,}`)

// scrub removes credentials from upstream text before it can reach a caller
// or a log: the key used for the request, anything shaped like a Smallest key,
// and anything after a "Bearer" or "Token" scheme word.
func scrub(s, secret string) string {
	if secret != "" {
		s = strings.ReplaceAll(s, secret, "[redacted]")
	}
	s = keyPattern.ReplaceAllString(s, "[redacted]")
	s = schemePattern.ReplaceAllString(s, "$1 [redacted]")
	if len(s) > maxMessage {
		s = strings.ToValidUTF8(s[:maxMessage], "") + "…" // the cut may split a rune
	}
	return s
}

var schemePattern = regexp.MustCompile(`(?i)\b(bearer|token)\s+[A-Za-z0-9._~+/=\-]{8,}`)

// ClosePolicyViolation is the WebSocket close code with which Smallest
// refuses a session over the account's concurrency limit.
const ClosePolicyViolation = 1008

// Status is the failure as an HTTP status, whatever carried it: the HTTP
// status, the status in an error frame, the status Smallest's documented
// error code stands for, or 429 for a session closed with 1008. It is 0
// when nothing says (a timeout, a broken connection). Every judgement of
// an upstream failure (its gRPC code, whether it is a rate limit) starts here.
func (e *Error) Status() int {
	switch {
	case e.HTTPStatus != 0:
		return e.HTTPStatus
	case e.CloseCode == ClosePolicyViolation || e.CloseCode == CloseTryAgainLater:
		return http.StatusTooManyRequests
	case e.FrameStatus >= 400:
		return e.FrameStatus
	}
	return codeStatus[e.Code]
}

// codeStatus gives the HTTP status that Smallest's documented error codes
// stand for, for errors that arrive without one (WebSocket error messages).
var codeStatus = map[string]int{
	"MISSING_PARAMETER":              http.StatusBadRequest,
	"LANGUAGE_NOT_ENABLED_IN_REGION": http.StatusBadRequest,
	"INVALID_LICENSE":                http.StatusUnauthorized,
	"LICENSE_EXPIRED":                http.StatusForbidden,
	"MODEL_DEPRECATED":               http.StatusGone,
	"UNSUPPORTED_FORMAT":             http.StatusUnsupportedMediaType,
	"FILE_TOO_LARGE":                 http.StatusUnprocessableEntity,
	"RATE_LIMIT_EXCEEDED":            http.StatusTooManyRequests,
	"SERVICE_UNAVAILABLE":            http.StatusServiceUnavailable,
	// Hydra's codes (docs/upstream.md §6.5).
	"invalid_audio":         http.StatusBadRequest,
	"invalid_request_error": http.StatusBadRequest,
	"invalid_frame":         http.StatusBadRequest,
	"server_full":           http.StatusTooManyRequests,
	"tool_response_timeout": http.StatusRequestTimeout,
	"internal_error":        http.StatusInternalServerError,
}

// IsRateLimited reports whether err is Smallest refusing for its rate or
// concurrency limit (HTTP 429 however it came, or a WebSocket closed with 1008).
func IsRateLimited(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Status() == http.StatusTooManyRequests
}

// IsKind reports whether err is an *Error of kind k.
func IsKind(err error, k Kind) bool {
	var e *Error
	return errors.As(err, &e) && e.Kind == k
}
