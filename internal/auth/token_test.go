package auth_test

import (
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/speechgate/speechgate/internal/auth"
)

func secret(b byte) string {
	return base64.StdEncoding.EncodeToString([]byte(strings.Repeat(string(b), 32)))
}

func TestTokens(t *testing.T) {
	t.Parallel()
	now := time.Unix(1_800_000_000, 0)
	old, err := auth.ParseSigningKeys("k1=" + secret('a'))
	if err != nil {
		t.Fatal(err)
	}
	rotated, err := auth.ParseSigningKeys("k2=" + secret('b') + ",k1=" + secret('a'))
	if err != nil {
		t.Fatal(err)
	}
	other, err := auth.ParseSigningKeys("k1=" + secret('c'))
	if err != nil {
		t.Fatal(err)
	}
	good := old.Mint(auth.Claims{Client: "web", Methods: []string{"/m"}, Expires: now.Add(time.Minute).Unix()})
	parts := strings.Split(good, ".")
	forged := strings.Join([]string{parts[0], parts[1], base64.RawURLEncoding.EncodeToString([]byte(`{"c":"admin","e":1900000000}`)), parts[3]}, ".")
	tests := []struct {
		name    string
		signer  *auth.Signer
		token   string
		at      time.Time
		wantErr string
	}{
		{name: "valid", signer: old, token: good, at: now},
		{name: "after a rotation the old key still verifies", signer: rotated, token: good, at: now},
		{name: "expired", signer: old, token: good, at: now.Add(time.Minute), wantErr: "expired"},
		{name: "claims changed", signer: old, token: forged, at: now, wantErr: "not one this gateway signed"},
		{name: "another secret under the same id", signer: other, token: good, at: now, wantErr: "not one this gateway signed"},
		{name: "a key id not configured", signer: old, token: rotated.Mint(auth.Claims{Client: "web", Expires: now.Add(time.Minute).Unix()}),
			at: now, wantErr: "not one this gateway signed"},
		{name: "not a token", signer: old, token: "sgt1.k1.x", at: now, wantErr: "not one this gateway signed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := tt.signer.Verify(tt.token, tt.at)
			switch {
			case tt.wantErr == "" && (err != nil || c.Client != "web" || len(c.Methods) != 1):
				t.Errorf("Verify = %+v, %v; want the web client's claims", c, err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("Verify err = %v, want %q", err, tt.wantErr)
			}
		})
	}
}

func TestParseSigningKeys(t *testing.T) {
	t.Parallel()
	tests := []struct{ name, in, wantErr string }{
		{name: "none", in: ""},
		{name: "URL alphabet, unpadded", in: "a=" + strings.TrimRight(base64.URLEncoding.EncodeToString([]byte(strings.Repeat("\xff", 32))), "=")},
		{name: "too short", in: "a=" + base64.StdEncoding.EncodeToString([]byte("short")), wantErr: "at least 32 bytes"},
		{name: "no id", in: secret('a'), wantErr: "want id=base64secret"},
		{name: "an id with a space", in: "a b=" + secret('a'), wantErr: "want id=base64secret"},
		{name: "an id twice", in: "a=" + secret('a') + ",a=" + secret('b'), wantErr: "given twice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := auth.ParseSigningKeys(tt.in)
			if (err == nil) != (tt.wantErr == "") || err != nil && !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want %q", err, tt.wantErr)
			}
			if err != nil && strings.Contains(err.Error(), secret('a')[:16]) {
				t.Error("the error repeats the secret")
			}
		})
	}
}
