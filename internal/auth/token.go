package auth

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Short-lived tokens stand in for a client key where the key must not go,
// such as a browser: a client mints one with its key, and the token acts as
// that client, for a few minutes, for the methods it names. A token is
// "sgt1.<key id>.<claims>.<signature>", the claims base64url JSON, the
// signature an HMAC-SHA256 of what precedes it under the signing key of
// that id. Signing keys come from configuration, so tokens outlive a
// restart, and a new key can be added (first: it signs) while the old one
// still verifies the tokens it signed.
const tokenPrefix = "sgt1."

// MaxTokenTTL is the longest a token lives.
const MaxTokenTTL = 15 * time.Minute

// maxKeyID bounds a signing key's id, which tokens carry.
const maxKeyID = 16

// minSigningKey is the shortest signing secret accepted: HMAC-SHA256's
// output size.
const minSigningKey = 32

// Signer mints and verifies tokens. The zero value is not usable; see
// ParseSigningKeys.
type Signer struct {
	keys []signingKey // the first signs
}

type signingKey struct {
	id     string
	secret []byte
}

// Claims are what a token says.
type Claims struct {
	// Client is the client key's name the token acts as.
	Client string `json:"c"`
	// Methods are the full gRPC method names it may call; none: any the
	// client may.
	Methods []string `json:"m,omitempty"`
	// Expires is when it stops working, in Unix seconds.
	Expires int64 `json:"e"`
}

// ParseSigningKeys reads "id=secret,id2=secret2": ids of [A-Za-z0-9_-],
// secrets base64 (standard or URL alphabet) of at least 32 bytes. The
// first key signs; all verify. Empty text: nil, no tokens.
func ParseSigningKeys(s string) (*Signer, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	sg := &Signer{}
	for item := range strings.SplitSeq(s, ",") {
		id, secret, ok := strings.Cut(strings.TrimSpace(item), "=")
		// An id is short: a secret missing its "id=" is not taken for one,
		// and so never repeated in an error.
		if !ok || id == "" || len(id) > maxKeyID || strings.Trim(id, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") != "" {
			return nil, fmt.Errorf("token signing keys: want id=base64secret,... with ids of 1 to %d characters of [A-Za-z0-9_-]", maxKeyID)
		}
		key, err := decodeSecret(secret)
		if err != nil || len(key) < minSigningKey {
			// The secret is never repeated in the error.
			return nil, fmt.Errorf("token signing key %q: want at least %d bytes, base64-encoded (openssl rand -base64 32)", id, minSigningKey)
		}
		if slices.ContainsFunc(sg.keys, func(k signingKey) bool { return k.id == id }) {
			return nil, fmt.Errorf("token signing key %q is given twice", id)
		}
		sg.keys = append(sg.keys, signingKey{id: id, secret: key})
	}
	return sg, nil
}

func decodeSecret(s string) ([]byte, error) {
	s = strings.TrimRight(strings.TrimSpace(s), "=")
	if b, err := base64.RawStdEncoding.DecodeString(s); err == nil {
		return b, nil
	}
	return base64.RawURLEncoding.DecodeString(s)
}

// Mint returns a token for c, signed with the first key.
func (s *Signer) Mint(c Claims) string {
	payload, _ := json.Marshal(c) // strings and numbers: cannot fail
	k := s.keys[0]
	head := tokenPrefix + k.id + "." + base64.RawURLEncoding.EncodeToString(payload)
	return head + "." + base64.RawURLEncoding.EncodeToString(sign(k.secret, head))
}

func sign(secret []byte, head string) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(head))
	return m.Sum(nil)
}

// Token verification failures: what a caller is told, never which part
// was wrong beyond that.
var (
	errTokenInvalid = errors.New("the token is not one this gateway signed")
	errTokenExpired = errors.New("the token has expired")
)

// IsToken reports whether a bearer credential is a token rather than a key.
func IsToken(bearer string) bool { return strings.HasPrefix(bearer, tokenPrefix) }

// Verify checks a token's signature, in constant time, and its expiry, and
// returns its claims.
func (s *Signer) Verify(token string, now time.Time) (Claims, error) {
	rest, ok := strings.CutPrefix(token, tokenPrefix)
	parts := strings.Split(rest, ".")
	if !ok || len(parts) != 3 {
		return Claims{}, errTokenInvalid
	}
	i := slices.IndexFunc(s.keys, func(k signingKey) bool { return k.id == parts[0] })
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if i < 0 || err != nil {
		return Claims{}, errTokenInvalid
	}
	if !hmac.Equal(sig, sign(s.keys[i].secret, tokenPrefix+parts[0]+"."+parts[1])) {
		return Claims{}, errTokenInvalid
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	var c Claims
	if err != nil || json.Unmarshal(payload, &c) != nil || c.Client == "" {
		return Claims{}, errTokenInvalid
	}
	if now.Unix() >= c.Expires {
		return Claims{}, errTokenExpired
	}
	return c, nil
}
