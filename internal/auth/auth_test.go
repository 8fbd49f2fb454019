package auth_test

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/speechgate/speechgate/internal/auth"
)

const upstream = "sk_gateway_own_key_1234"

func incoming(ctx context.Context, authz ...string) context.Context {
	md := metadata.MD{}
	for _, a := range authz {
		md.Append("authorization", a)
	}
	return metadata.NewIncomingContext(ctx, md)
}

func reason(err error) string {
	for _, d := range status.Convert(err).Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return info.GetReason()
		}
	}
	return ""
}

func TestAuthenticate(t *testing.T) {
	t.Parallel()
	keys := []auth.ClientKey{{Name: "billing", Key: "billing-secret-0123456789"}, {Name: "search", Key: "search-secret-0123456789"}}
	tests := []struct {
		name         string
		mode         auth.Mode
		authz        []string
		wantReason   string // empty: success
		wantCaller   string
		wantUpstream string
	}{
		{name: "passthrough forwards the token", mode: auth.ModePassthrough, authz: []string{"Bearer sk_caller_key"},
			wantCaller: auth.Fingerprint("sk_caller_key"), wantUpstream: "sk_caller_key"},
		{name: "scheme is case-insensitive", mode: auth.ModePassthrough, authz: []string{"bearer   sk_caller_key "},
			wantCaller: auth.Fingerprint("sk_caller_key"), wantUpstream: "sk_caller_key"},
		{name: "passthrough without token", mode: auth.ModePassthrough, wantReason: "MISSING_CREDENTIALS"},
		{name: "passthrough with basic auth", mode: auth.ModePassthrough, authz: []string{"Basic dXNlcjpwYXNz"}, wantReason: "INVALID_CREDENTIALS"},
		{name: "empty bearer", mode: auth.ModePassthrough, authz: []string{"Bearer "}, wantReason: "INVALID_CREDENTIALS"},
		{name: "absurdly long token", mode: auth.ModePassthrough, authz: []string{"Bearer " + strings.Repeat("k", 1<<20)}, wantReason: "INVALID_CREDENTIALS"},
		{name: "longest token accepted", mode: auth.ModePassthrough, authz: []string{"Bearer " + strings.Repeat("k", 4089)},
			wantCaller: auth.Fingerprint(strings.Repeat("k", 4089)), wantUpstream: strings.Repeat("k", 4089)},
		{name: "token with a control character", mode: auth.ModePassthrough, authz: []string{"Bearer sk_a\x00b"}, wantReason: "INVALID_CREDENTIALS"},
		{name: "token with a non-ASCII character", mode: auth.ModePassthrough, authz: []string{"Bearer sk_é"}, wantReason: "INVALID_CREDENTIALS"},
		{name: "keys: absurdly long token", mode: auth.ModeKeys, authz: []string{"Bearer " + strings.Repeat("k", 5000)}, wantReason: "INVALID_CREDENTIALS"},
		{name: "two headers", mode: auth.ModePassthrough, authz: []string{"Bearer a", "Bearer b"}, wantReason: "INVALID_CREDENTIALS"},
		{name: "keys: first key", mode: auth.ModeKeys, authz: []string{"Bearer billing-secret-0123456789"}, wantCaller: "billing", wantUpstream: upstream},
		{name: "keys: second key", mode: auth.ModeKeys, authz: []string{"Bearer search-secret-0123456789"}, wantCaller: "search", wantUpstream: upstream},
		{name: "keys: wrong key", mode: auth.ModeKeys, authz: []string{"Bearer search-secret-012345678"}, wantReason: "INVALID_CREDENTIALS"},
		{name: "keys: missing", mode: auth.ModeKeys, wantReason: "MISSING_CREDENTIALS"},
		{name: "none trusts the mesh", mode: auth.ModeNone, wantCaller: "anonymous", wantUpstream: upstream},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var ks []auth.ClientKey
			up := ""
			if tt.mode != auth.ModePassthrough {
				up = upstream
			}
			if tt.mode == auth.ModeKeys {
				ks = keys
			}
			a, err := auth.New(tt.mode, up, ks)
			if err != nil {
				t.Fatal(err)
			}
			ctx, err := a.Authenticate(incoming(t.Context(), tt.authz...))
			if tt.wantReason != "" {
				if status.Code(err) != codes.Unauthenticated || reason(err) != tt.wantReason {
					t.Fatalf("err = %v (reason %q), want Unauthenticated with reason %s", err, reason(err), tt.wantReason)
				}
				for _, a := range tt.authz {
					if _, tok, _ := strings.Cut(a, " "); len(tok) > 3 && strings.Contains(err.Error(), tok) {
						t.Fatalf("error %q echoes the token", err)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := auth.Caller(ctx); got != tt.wantCaller {
				t.Errorf("Caller = %q, want %q", got, tt.wantCaller)
			}
			if got := a.UpstreamKey(ctx); got != tt.wantUpstream {
				t.Errorf("UpstreamKey = %q, want %q", got, tt.wantUpstream)
			}
		})
	}
}

func TestNewRefusesIncompleteConfig(t *testing.T) {
	t.Parallel()
	key := []auth.ClientKey{{Name: "a", Key: "0123456789abcdef"}}
	tests := []struct {
		name string
		mode auth.Mode
		up   string
		keys []auth.ClientKey
	}{
		{name: "keys without client keys", mode: auth.ModeKeys, up: upstream},
		{name: "keys without upstream key", mode: auth.ModeKeys, keys: key},
		{name: "none without upstream key", mode: auth.ModeNone},
		{name: "passthrough with client keys", mode: auth.ModePassthrough, keys: key},
		{name: "unknown mode", mode: "open"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if _, err := auth.New(tt.mode, tt.up, tt.keys); err == nil {
				t.Fatal("New accepted an incomplete configuration")
			}
		})
	}
}

func TestReadKeys(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		in      string
		want    int
		wantErr string
	}{
		{name: "valid with comments", in: "# team keys\n\nbilling  0123456789abcdef0123\nsearch\tfedcba9876543210fedc\n", want: 2},
		{name: "short key", in: "billing short\n", wantErr: "line 1: the key of \"billing\" is shorter than 16"},
		{name: "one field", in: "a\n", wantErr: "line 1: want '<name> <key> [limit=value ...]'"},
		{name: "limits", in: "a 0123456789abcdef requests_per_minute=60 concurrent_streams=2\nb fedcba9876543210 characters_per_minute=5000 audio_seconds_per_minute=600\n", want: 2},
		{name: "unknown limit", in: "a 0123456789abcdef rpm=60\n", wantErr: "line 1: option 1 after the key is not a limit"},
		{name: "a key pasted as a limit is not echoed", in: "a 0123456789abcdef fedcba9876543210fedc\n", wantErr: "option 1 after the key is not a limit"},
		{name: "bad limit value", in: "a 0123456789abcdef concurrent_streams=0\n", wantErr: "concurrent_streams must be a whole number from 1"},
		{name: "limit twice", in: "a 0123456789abcdef concurrent_streams=1 concurrent_streams=2\n", wantErr: "concurrent_streams appears twice"},
		{name: "bad name", in: "bad/name 0123456789abcdef\n", wantErr: "line 1: name must be"},
		{name: "duplicate name", in: "a 0123456789abcdef\na fedcba9876543210\n", wantErr: "line 2: name \"a\" appears twice"},
		{name: "duplicate key", in: "a 0123456789abcdef\nb 0123456789abcdef\n", wantErr: "line 2: the key of \"b\" is also"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := auth.ReadKeys(strings.NewReader(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
				}
				if strings.Contains(err.Error(), "0123456789abcdef") || strings.Contains(err.Error(), "fedcba9876543210") {
					t.Fatalf("error %q echoes a key", err)
				}
				return
			}
			if err != nil || len(got) != tt.want {
				t.Fatalf("got %d keys, err %v; want %d", len(got), err, tt.want)
			}
		})
	}
}

func TestParseMode(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"passthrough", "keys", "none"} {
		if m, err := auth.ParseMode(s); err != nil || string(m) != s {
			t.Errorf("ParseMode(%q) = %q, %v", s, m, err)
		}
	}
	if _, err := auth.ParseMode("None"); err == nil {
		t.Error("ParseMode accepted a mode in the wrong case")
	}
}

// FuzzReadKeys: a keys file of any content parses to valid keys or an error
// that names the line, and no error ever repeats a key.
func FuzzReadKeys(f *testing.F) {
	f.Add("# name key\nbilling-svc 2f0c7a1e9b4d4f3c8a61d0e5b7c9a2f4\n\nsearch-svc 8d3b6e0a1c5f4e7b9a2d6c8f0b1e3a5d\n")
	f.Add("billing short\n")
	f.Add("a 0123456789abcdef\na 0123456789abcdef0\n")
	f.Add("a 0123456789abcdef\nb 0123456789abcdef\n")
	f.Add("bad name! 0123456789abcdef\n")
	// A key may appear in an error by chance, as part of its fixed text.
	template := "keys file line : want '<name> <key> [limit=value ...]' name must be 1 to 64 characters from [A-Za-z0-9_.@-] " +
		"option after the key is not a limit: want requests_per_minute=N, characters_per_minute=N, audio_seconds_per_minute=N or concurrent_streams=N " +
		"must be a whole number from 1 to 1000000000 appears twice"
	f.Fuzz(func(t *testing.T, file string) {
		keys, err := auth.ReadKeys(strings.NewReader(file))
		if err != nil {
			for _, line := range strings.Split(file, "\n") {
				fields := strings.Fields(line)
				if len(fields) >= 2 && len(fields[1]) >= 16 && !strings.Contains(fields[0], fields[1]) &&
					!strings.Contains(template, fields[1]) &&
					strings.Contains(err.Error(), fields[1]) {
					t.Fatalf("the error %q repeats a key", err)
				}
			}
			return
		}
		names := map[string]bool{}
		for _, k := range keys {
			if len(k.Key) < 16 || strings.ContainsAny(k.Key, " \t\n") || names[k.Name] || len(k.Name) == 0 || len(k.Name) > 64 {
				t.Fatalf("accepted an invalid key %+v", k)
			}
			names[k.Name] = true
		}
	})
}

// TestLimitsFollowTheKeysFile: a client's limits are read from its line,
// and a reload changes them.
func TestLimitsFollowTheKeysFile(t *testing.T) {
	t.Parallel()
	read := func(file string) []auth.ClientKey {
		keys, err := auth.ReadKeys(strings.NewReader(file))
		if err != nil {
			t.Fatal(err)
		}
		return keys
	}
	a, err := auth.New(auth.ModeKeys, upstream, read("billing 0123456789abcdef requests_per_minute=60 characters_per_minute=5000\nsearch fedcba9876543210\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := a.Limits("billing"), (auth.Limits{RequestsPerMinute: 60, CharactersPerMinute: 5000}); got != want {
		t.Errorf("billing's limits = %+v, want %+v", got, want)
	}
	if got := a.Limits("search"); got != (auth.Limits{}) {
		t.Errorf("a line without limits has %+v", got)
	}
	if err := a.SetKeys(read("billing 0123456789abcdef concurrent_streams=2 audio_seconds_per_minute=600\n")); err != nil {
		t.Fatal(err)
	}
	if got, want := a.Limits("billing"), (auth.Limits{ConcurrentStreams: 2, AudioSecondsPerMinute: 600}); got != want {
		t.Errorf("after a reload billing's limits = %+v, want %+v", got, want)
	}
}
