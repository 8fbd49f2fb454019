// Package tokens is the speech.v1 TokenService: short-lived tokens minted
// by a client with its key, for callers that must not hold the key (a web
// page). Signing and checking tokens is package auth's.
package tokens

import (
	"context"
	"fmt"
	"slices"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/timestamppb"

	speechv1 "github.com/speechgate/speechgate/gen/speech/v1"
	"github.com/speechgate/speechgate/internal/auth"
	"github.com/speechgate/speechgate/internal/rpcerror"
)

// Limits of a request, documented in the .proto.
const (
	defaultTTL = 5 * time.Minute
	maxMethods = 16
)

// Service is the TokenService.
type Service struct {
	speechv1.UnimplementedTokenServiceServer
	signer  *auth.Signer // nil: tokens are off
	methods []string     // the methods a token may name
	now     func() time.Time
}

// New returns the service, minting with signer (nil: every call is
// FAILED_PRECONDITION).
func New(signer *auth.Signer) *Service {
	return &Service{signer: signer, now: time.Now}
}

// Register registers the service on gs, and learns the methods gs serves.
func (s *Service) Register(gs *grpc.Server) {
	speechv1.RegisterTokenServiceServer(gs, s)
	for name, info := range gs.GetServiceInfo() {
		for _, m := range info.Methods {
			s.methods = append(s.methods, "/"+name+"/"+m.Name)
		}
	}
}

// MintToken returns a token acting as the calling client.
func (s *Service) MintToken(ctx context.Context, req *speechv1.MintTokenRequest) (*speechv1.MintTokenResponse, error) {
	if s.signer == nil {
		return nil, rpcerror.New(codes.FailedPrecondition, "tokens are not enabled: run the gateway with --auth=keys and --token-signing-keys",
			rpcerror.ReasonInvalidRequest, nil)
	}
	var v rpcerror.Violations
	ttl := defaultTTL
	switch n := req.GetTtlSeconds(); {
	case n == 0:
	case time.Duration(n)*time.Second > auth.MaxTokenTTL:
		v.Add("ttl_seconds", rpcerror.RuleOutOfRange, "must be from 1 to %d, got %d", int(auth.MaxTokenTTL.Seconds()), n)
	default:
		ttl = time.Duration(n) * time.Second
	}
	if n := len(req.GetMethods()); n > maxMethods {
		v.Add("methods", rpcerror.RuleTooMany, "must hold at most %d methods, got %d", maxMethods, n)
	}
	for i, m := range req.GetMethods() {
		switch {
		case m == auth.MintMethod:
			v.Add(fmt.Sprintf("methods[%d]", i), rpcerror.RuleNotAllowed, "a token cannot mint tokens")
		case !slices.Contains(s.methods, m):
			v.Add(fmt.Sprintf("methods[%d]", i), rpcerror.RuleNotAllowed, "must be a full method name this gateway serves, such as "+
				"/speech.v1.TranscriptionService/TranscribeLive; got %s", rpcerror.Quote(m))
		}
	}
	if err := v.Err(); err != nil {
		return nil, err
	}
	exp := s.now().Add(ttl).Truncate(time.Second)
	c := auth.Claims{Client: auth.Caller(ctx), Methods: req.GetMethods(), Expires: exp.Unix()}
	return &speechv1.MintTokenResponse{Token: s.signer.Mint(c), ExpireTime: timestamppb.New(exp), Client: c.Client,
		Methods: req.GetMethods()}, nil
}
