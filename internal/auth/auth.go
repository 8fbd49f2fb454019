// Package auth decides who is calling the gateway and which Smallest API key
// each call uses. It supports three modes:
//
//   - passthrough: the caller's bearer token is its own Smallest key, forwarded
//     upstream; the gateway holds no secret.
//   - keys: callers present one of the gateway's client keys (compared in
//     constant time); the gateway calls Smallest with its own key, and the
//     client key's name identifies the caller in logs.
//   - none: the mesh is trusted to have authenticated the caller; the gateway
//     calls Smallest with its own key.
package auth

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"

	"github.com/speechgate/speechgate/internal/rpcerror"
)

// Mode is how callers are authenticated.
type Mode string

// The modes.
const (
	ModePassthrough Mode = "passthrough"
	ModeKeys        Mode = "keys"
	ModeNone        Mode = "none"
)

// ParseMode returns the Mode named s.
func ParseMode(s string) (Mode, error) {
	switch m := Mode(s); m {
	case ModePassthrough, ModeKeys, ModeNone:
		return m, nil
	}
	return "", fmt.Errorf("auth mode %q: must be passthrough, keys or none", s)
}

// ClientKey is one caller's key in keys mode.
type ClientKey struct {
	// Name identifies the caller in logs.
	Name string
	// Key is the secret the caller presents as a bearer token.
	Key string
	// Limits are the caller's quotas.
	Limits Limits
}

// Limits are a client's quotas, from its line of the keys file. Zero is
// unlimited.
type Limits struct {
	// RequestsPerMinute counts every call.
	RequestsPerMinute int
	// CharactersPerMinute counts the text given to synthesis.
	CharactersPerMinute int
	// AudioSecondsPerMinute counts the audio given to transcription.
	AudioSecondsPerMinute int
	// ConcurrentStreams counts the streaming calls in progress.
	ConcurrentStreams int
}

// limitOptions are the keys file's names for Limits' fields.
var limitOptions = map[string]func(*Limits) *int{
	"requests_per_minute":      func(l *Limits) *int { return &l.RequestsPerMinute },
	"characters_per_minute":    func(l *Limits) *int { return &l.CharactersPerMinute },
	"audio_seconds_per_minute": func(l *Limits) *int { return &l.AudioSecondsPerMinute },
	"concurrent_streams":       func(l *Limits) *int { return &l.ConcurrentStreams },
}

// Authenticator checks callers and chooses the upstream key. It is safe for
// concurrent use.
type Authenticator struct {
	mode        Mode
	upstreamKey string
	keys        atomic.Pointer[keySet] // replaced whole by SetKeys
	tokens      *Signer                // nil: no tokens
	now         func() time.Time
}

// keySet is the client keys of keys mode, as digests, with their limits.
type keySet struct {
	names   []string
	digests [][sha256.Size]byte
	limits  []Limits
}

// New returns an Authenticator. upstreamKey is required in keys and none
// modes and unused in passthrough; keys is required in keys mode only.
func New(mode Mode, upstreamKey string, keys []ClientKey) (*Authenticator, error) {
	a := &Authenticator{mode: mode, now: time.Now}
	switch mode {
	case ModePassthrough:
		if len(keys) > 0 {
			return nil, errors.New("auth: client keys are only used with --auth=keys")
		}
	case ModeKeys:
		if len(keys) == 0 {
			return nil, errors.New("auth: --auth=keys needs at least one client key (--keys-file)")
		}
		fallthrough
	case ModeNone:
		if upstreamKey == "" {
			return nil, fmt.Errorf("auth: --auth=%s needs the gateway's own Smallest key in SMALLEST_API_KEY", mode)
		}
		a.upstreamKey = upstreamKey
	default:
		return nil, fmt.Errorf("auth: unknown mode %q", mode)
	}
	a.keys.Store(newKeySet(keys))
	return a, nil
}

func newKeySet(keys []ClientKey) *keySet {
	ks := &keySet{}
	for _, k := range keys {
		ks.names = append(ks.names, k.Name)
		// Digests have a fixed length, so the comparison in match takes the
		// same time whatever the presented token's length.
		ks.digests = append(ks.digests, sha256.Sum256([]byte(k.Key)))
		ks.limits = append(ks.limits, k.Limits)
	}
	return ks
}

func (ks *keySet) equal(o *keySet) bool {
	return slices.Equal(ks.names, o.names) && slices.Equal(ks.digests, o.digests) && slices.Equal(ks.limits, o.limits)
}

// Limits returns the quotas of the client named name, as the keys file
// says now: a reload changes them for the calls that start after it. A
// caller with no limits (or not in keys mode) has the zero Limits.
func (a *Authenticator) Limits(name string) Limits {
	ks := a.keys.Load()
	if ks == nil {
		return Limits{}
	}
	if i := slices.Index(ks.names, name); i >= 0 {
		return ks.limits[i]
	}
	return Limits{}
}

// SetKeys replaces the client keys of keys mode at once: a call checked
// after it returns is checked against the new keys only. Calls already
// admitted keep their identity.
func (a *Authenticator) SetKeys(keys []ClientKey) error {
	switch {
	case a.mode != ModeKeys:
		return fmt.Errorf("auth: client keys are only used with --auth=keys, not %s", a.mode)
	case len(keys) == 0:
		return errors.New("auth: a keys file without keys would lock every caller out")
	}
	a.keys.Store(newKeySet(keys))
	return nil
}

// WatchKeysFile reloads the client keys from path whenever its contents
// change, looking every interval, until ctx ends. A file that cannot be read
// or parsed leaves the keys as they were, and says why in the log; so does
// one without keys. This follows a Kubernetes Secret mounted as a file, which
// the kubelet rewrites in place when the Secret changes.
func (a *Authenticator) WatchKeysFile(ctx context.Context, path string, interval time.Duration, log *slog.Logger) {
	// The first look reads the file whatever it holds: it may have changed
	// since the keys in use were read from it.
	var last [sha256.Size]byte
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		b, err := os.ReadFile(path)
		if err != nil {
			log.WarnContext(ctx, "client keys file unreadable; keeping the keys in use", "path", path, "error", err)
			continue
		}
		digest := sha256.Sum256(b)
		if digest == last {
			continue
		}
		last = digest
		keys, err := ReadKeys(bytes.NewReader(b))
		if err == nil && a.keys.Load().equal(newKeySet(keys)) {
			continue
		}
		if err == nil {
			err = a.SetKeys(keys)
		}
		if err != nil {
			log.ErrorContext(ctx, "client keys file changed but is not valid; keeping the keys in use", "path", path, "error", err)
			continue
		}
		log.InfoContext(ctx, "client keys reloaded", "path", path, "keys", len(keys))
	}
}

type ctxKey int

const (
	callerKey ctxKey = iota
	tokenKey
	methodKey
)

// WithMethod records the full gRPC method a call is of, for Authenticate:
// a token may allow only some. (The transport knows it; this package
// stays free of it.)
func WithMethod(ctx context.Context, method string) context.Context {
	return context.WithValue(ctx, methodKey, method)
}

// Authenticate checks the caller's credentials in the incoming metadata and
// returns a context that carries its identity (and, in passthrough mode, its
// key). Failures are UNAUTHENTICATED statuses. It has the shape of
// go-grpc-middleware's auth.AuthFunc.
func (a *Authenticator) Authenticate(ctx context.Context) (context.Context, error) {
	if a.mode == ModeNone {
		return context.WithValue(ctx, callerKey, "anonymous"), nil
	}
	token, err := bearerToken(ctx)
	if err != nil {
		return nil, err
	}
	switch a.mode {
	case ModePassthrough:
		ctx = context.WithValue(ctx, tokenKey, token)
		return context.WithValue(ctx, callerKey, Fingerprint(token)), nil
	default: // ModeKeys
		if IsToken(token) {
			return a.fromToken(ctx, token)
		}
		name, ok := a.match(token)
		if !ok {
			return nil, rpcerror.Unauthenticated(rpcerror.ReasonInvalidCredentials, "the bearer token is not a valid client key")
		}
		return context.WithValue(ctx, callerKey, name), nil
	}
}

// MintMethod is the method that mints tokens, which no token may call.
const MintMethod = "/speech.v1.TokenService/MintToken"

// EnableTokens makes keys mode accept the tokens s signed. Call it before
// the Authenticator is used.
func (a *Authenticator) EnableTokens(s *Signer) { a.tokens = s }

// Tokens returns the Signer of keys mode's tokens; nil: tokens are off.
func (a *Authenticator) Tokens() *Signer {
	if a.mode != ModeKeys {
		return nil
	}
	return a.tokens
}

// fromToken authenticates a call by a token: it acts as its client, if that
// client's key still exists, for the methods it names.
func (a *Authenticator) fromToken(ctx context.Context, token string) (context.Context, error) {
	if a.tokens == nil {
		return nil, rpcerror.Unauthenticated(rpcerror.ReasonInvalidCredentials, "the bearer token is a token, and this gateway has no token signing keys")
	}
	c, err := a.tokens.Verify(token, a.now())
	switch {
	case errors.Is(err, errTokenExpired):
		return nil, rpcerror.Unauthenticated(rpcerror.ReasonTokenExpired, "the token has expired: mint a new one")
	case err != nil:
		return nil, rpcerror.Unauthenticated(rpcerror.ReasonInvalidCredentials, err.Error())
	case !slices.Contains(a.keys.Load().names, c.Client):
		return nil, rpcerror.Unauthenticated(rpcerror.ReasonInvalidCredentials, "the token's client key no longer exists")
	}
	method, _ := ctx.Value(methodKey).(string)
	if method == MintMethod {
		return nil, rpcerror.New(codes.PermissionDenied, "a token cannot mint tokens: mint with the client key", rpcerror.ReasonTokenScope, nil)
	}
	if len(c.Methods) > 0 && !slices.Contains(c.Methods, method) {
		return nil, rpcerror.New(codes.PermissionDenied, fmt.Sprintf("the token does not allow %s; it allows %s", method,
			strings.Join(c.Methods, ", ")), rpcerror.ReasonTokenScope, nil)
	}
	return context.WithValue(ctx, callerKey, c.Client), nil
}

// match finds the client key equal to token. It compares against every key,
// in constant time each, so that timing reveals neither which key matched
// nor how much of a key was right.
func (a *Authenticator) match(token string) (string, bool) {
	ks := a.keys.Load()
	d := sha256.Sum256([]byte(token))
	found := -1
	for i := range ks.digests {
		if subtle.ConstantTimeCompare(d[:], ks.digests[i][:]) == 1 {
			found = i
		}
	}
	if found < 0 {
		return "", false
	}
	return ks.names[found], true
}

func bearerToken(ctx context.Context) (string, error) {
	vals := metadata.ValueFromIncomingContext(ctx, "authorization")
	switch len(vals) {
	case 0:
		return "", rpcerror.Unauthenticated(rpcerror.ReasonMissingCredentials,
			"missing credentials: send metadata 'authorization: Bearer <token>'")
	case 1:
	default:
		return "", rpcerror.Unauthenticated(rpcerror.ReasonInvalidCredentials, "more than one authorization header")
	}
	if len(vals[0]) > maxHeaderLen {
		// Refused here rather than forwarded: Smallest answers an absurd
		// header with 431, which says nothing useful to the caller.
		return "", rpcerror.Unauthenticated(rpcerror.ReasonInvalidCredentials,
			fmt.Sprintf("the authorization header is %d bytes; at most %d are accepted", len(vals[0]), maxHeaderLen))
	}
	scheme, token, ok := strings.Cut(strings.TrimSpace(vals[0]), " ")
	token = strings.TrimSpace(token)
	if !ok || !strings.EqualFold(scheme, "bearer") || token == "" {
		return "", rpcerror.Unauthenticated(rpcerror.ReasonInvalidCredentials,
			"the authorization header must be 'Bearer <token>'")
	}
	if !visibleASCII(token) {
		return "", rpcerror.Unauthenticated(rpcerror.ReasonInvalidCredentials,
			"the bearer token must be printable ASCII without spaces")
	}
	return token, nil
}

// maxHeaderLen bounds the authorization header. Smallest keys are a few
// dozen characters and signed tokens a few hundred.
const maxHeaderLen = 4096

// visibleASCII reports whether s holds only the characters a token can
// (RFC 6750's b64token, and any other printable ASCII), none of which
// can split a header or hide in a log.
func visibleASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// UpstreamKey returns the Smallest key for a call authenticated by Authenticate.
func (a *Authenticator) UpstreamKey(ctx context.Context) string {
	if a.mode == ModePassthrough {
		token, _ := ctx.Value(tokenKey).(string)
		return token
	}
	return a.upstreamKey
}

// Caller returns the identity Authenticate recorded: a client key's name, a
// passthrough key's fingerprint, or "anonymous".
func Caller(ctx context.Context) string {
	c, _ := ctx.Value(callerKey).(string)
	return c
}

// Fingerprint names a secret in logs without revealing it: the first 8 hex
// digits of its SHA-256.
func Fingerprint(secret string) string {
	d := sha256.Sum256([]byte(secret))
	return "key:" + hex.EncodeToString(d[:4])
}

// minKeyLen is the shortest client key accepted: shorter keys can be guessed.
const minKeyLen = 16

var namePattern = regexp.MustCompile(`^[A-Za-z0-9_.@-]{1,64}$`)

// ReadKeys parses a keys file: one "<name> <key>" pair per line, with blank
// lines and lines starting with '#' ignored. Names are 1 to 64 characters from
// [A-Za-z0-9_.@-]; keys are at least 16 characters without spaces. A pair may
// be followed by the client's limits, as name=value with a positive whole
// number: requests_per_minute, characters_per_minute,
// audio_seconds_per_minute, concurrent_streams. Errors name the line but
// never echo a key.
func ReadKeys(r io.Reader) ([]ClientKey, error) {
	var keys []ClientKey
	names := map[string]bool{}
	secrets := map[string]bool{}
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Fields(line)
		switch {
		case len(fields) < 2:
			return nil, fmt.Errorf("keys file line %d: want '<name> <key> [limit=value ...]'", n)
		case !namePattern.MatchString(fields[0]):
			return nil, fmt.Errorf("keys file line %d: name must be 1 to 64 characters from [A-Za-z0-9_.@-]", n)
		case len(fields[1]) < minKeyLen:
			return nil, fmt.Errorf("keys file line %d: the key of %q is shorter than %d characters", n, fields[0], minKeyLen)
		case names[fields[0]]:
			return nil, fmt.Errorf("keys file line %d: name %q appears twice", n, fields[0])
		case secrets[fields[1]]:
			return nil, fmt.Errorf("keys file line %d: the key of %q is also another name's key", n, fields[0])
		}
		limits, err := readLimits(fields[2:])
		if err != nil {
			return nil, fmt.Errorf("keys file line %d: %w", n, err)
		}
		names[fields[0]], secrets[fields[1]] = true, true
		keys = append(keys, ClientKey{Name: fields[0], Key: fields[1], Limits: limits})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("keys file: %w", err)
	}
	return keys, nil
}

// readLimits parses a line's limit options.
func readLimits(opts []string) (Limits, error) {
	var l Limits
	seen := map[string]bool{}
	for i, o := range opts {
		name, value, ok := strings.Cut(o, "=")
		field, known := limitOptions[name]
		switch {
		case !ok || !known:
			// Not repeated: it may be a key pasted in the wrong place.
			return Limits{}, fmt.Errorf("option %d after the key is not a limit: want requests_per_minute=N, characters_per_minute=N, audio_seconds_per_minute=N or concurrent_streams=N", i+1)
		case seen[name]:
			return Limits{}, fmt.Errorf("the limit %s appears twice", name)
		}
		v, err := strconv.Atoi(value)
		if err != nil || v <= 0 || v > 1_000_000_000 {
			return Limits{}, fmt.Errorf("the limit %s must be a whole number from 1 to 1000000000", name)
		}
		seen[name] = true
		*field(&l) = v
	}
	return l, nil
}

// ReadKeysFile reads a keys file from path (see ReadKeys).
func ReadKeysFile(path string) ([]ClientKey, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ReadKeys(f)
}
