package server

import (
	"context"
	"crypto/tls"
	"net"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"
)

// GRPCServer is the server's *grpc.Server, for a transcoder (Connect,
// gRPC-Web, REST) to call as an http.Handler: the same services,
// interceptor chain and drain as the gRPC port.
func (s *Server) GRPCServer() *grpc.Server { return s.grpc }

// InProcess serves the server on an in-memory listener and returns a client
// of it, for the gateway's own HTTP endpoints: their calls pass the same
// interceptor chain as any caller's. Close the client before Shutdown ends.
func (s *Server) InProcess(tlsConfig *tls.Config) (*grpc.ClientConn, error) {
	lis := bufconn.Listen(1 << 20)
	go s.Serve(lis) //nolint:errcheck // ends with the server, as the other listeners do
	creds := insecure.NewCredentials()
	if tlsConfig != nil {
		// The server speaks TLS on every listener; this one never leaves
		// the process, so there is no peer whose certificate to check.
		creds = credentials.NewTLS(&tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}) //nolint:gosec // in-memory
	}
	return grpc.NewClient("passthrough:///in-process", grpc.WithTransportCredentials(creds),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }))
}
