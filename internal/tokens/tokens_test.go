package tokens_test

import (
	"context"
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	speechv1 "github.com/speechgate/speechgate/gen/speech/v1"
	"github.com/speechgate/speechgate/internal/auth"
	"github.com/speechgate/speechgate/internal/emulator"
	"github.com/speechgate/speechgate/internal/gatewaytest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const clientKey = "web-backend-key-0123456789"

func signer(t *testing.T, spec string) *auth.Signer {
	t.Helper()
	s, err := auth.ParseSigningKeys(spec)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

var signingKeys = "k1=" + base64.StdEncoding.EncodeToString([]byte(strings.Repeat("s", 32)))

func keysGateway(t *testing.T, s *auth.Signer) *gatewaytest.Gateway {
	return gatewaytest.Start(t, emulator.New(emulator.Options{}), gatewaytest.Options{Auth: auth.ModeKeys, Tokens: s,
		Keys: []auth.ClientKey{{Name: "web", Key: clientKey}}})
}

func listVoices(ctx context.Context, g *gatewaytest.Gateway, bearer string) error {
	_, err := g.Synth.ListVoices(gatewaytest.WithKey(ctx, bearer), &speechv1.ListVoicesRequest{})
	return err
}

func TestMintedTokens(t *testing.T) {
	t.Parallel()
	s := signer(t, signingKeys)
	g := keysGateway(t, s)
	ctx := t.Context()
	mint := func(req *speechv1.MintTokenRequest, bearer string) (*speechv1.MintTokenResponse, error) {
		return g.Tokens.MintToken(gatewaytest.WithKey(ctx, bearer), req)
	}
	any, err := mint(&speechv1.MintTokenRequest{TtlSeconds: 60}, clientKey)
	if err != nil {
		t.Fatal(err)
	}
	if left := time.Until(any.GetExpireTime().AsTime()); any.GetClient() != "web" || left < 55*time.Second || left > 61*time.Second {
		t.Errorf("minted %v, want the web client's, expiring in 60 s", any)
	}
	live, err := mint(&speechv1.MintTokenRequest{Methods: []string{"/speech.v1.TranscriptionService/TranscribeLive"}}, clientKey)
	if err != nil {
		t.Fatal(err)
	}
	expired := s.Mint(auth.Claims{Client: "web", Expires: time.Now().Add(-time.Second).Unix()})
	parts := strings.Split(any.GetToken(), ".")
	parts[2] = base64.RawURLEncoding.EncodeToString([]byte(`{"c":"web","e":4102444800}`)) // a longer life, unsigned
	forged := strings.Join(parts, ".")
	restarted := keysGateway(t, signer(t, "k2="+base64.StdEncoding.EncodeToString([]byte(strings.Repeat("n", 32)))+","+signingKeys))

	tests := []struct {
		name       string
		call       func() error
		wantCode   codes.Code
		wantReason string
	}{
		{name: "a token acts as its client", call: func() error { return listVoices(ctx, g, any.GetToken()) }},
		{name: "and keeps working after a restart with a rotated key set", call: func() error { return listVoices(ctx, restarted, any.GetToken()) }},
		{name: "a method the token does not allow", call: func() error { return listVoices(ctx, g, live.GetToken()) },
			wantCode: codes.PermissionDenied, wantReason: "TOKEN_SCOPE"},
		{name: "an expired token", call: func() error { return listVoices(ctx, g, expired) },
			wantCode: codes.Unauthenticated, wantReason: "TOKEN_EXPIRED"},
		{name: "a forged token", call: func() error { return listVoices(ctx, g, forged) },
			wantCode: codes.Unauthenticated, wantReason: "INVALID_CREDENTIALS"},
		{name: "a token cannot mint", call: func() error { _, err := mint(&speechv1.MintTokenRequest{}, any.GetToken()); return err },
			wantCode: codes.PermissionDenied, wantReason: "TOKEN_SCOPE"},
		{name: "a life over 15 minutes", call: func() error { _, err := mint(&speechv1.MintTokenRequest{TtlSeconds: 901}, clientKey); return err },
			wantCode: codes.InvalidArgument, wantReason: "INVALID_REQUEST"},
		{name: "a method the gateway does not serve", call: func() error {
			_, err := mint(&speechv1.MintTokenRequest{Methods: []string{"speech.v1.SynthesisService/ListVoices"}}, clientKey)
			return err
		}, wantCode: codes.InvalidArgument, wantReason: "INVALID_REQUEST"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			if status.Code(err) != tt.wantCode || (err != nil && gatewaytest.ErrorInfo(err).GetReason() != tt.wantReason) {
				t.Fatalf("err = %v (reason %s), want %v %s", err, gatewaytest.ErrorInfo(err).GetReason(), tt.wantCode, tt.wantReason)
			}
		})
	}
	if strings.Contains(g.Logs.String(), any.GetToken()) || strings.Contains(g.Logs.String(), parts[3]) {
		t.Error("a token reached the logs")
	}
}

func TestTokensOff(t *testing.T) {
	t.Parallel()
	g := keysGateway(t, nil)
	_, err := g.Tokens.MintToken(gatewaytest.WithKey(t.Context(), clientKey), &speechv1.MintTokenRequest{})
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("err = %v, want FAILED_PRECONDITION", err)
	}
	token := signer(t, signingKeys).Mint(auth.Claims{Client: "web", Expires: time.Now().Add(time.Minute).Unix()})
	if err := listVoices(t.Context(), g, token); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("a token where tokens are off: %v, want UNAUTHENTICATED", err)
	}
}
