// Package httpapi is the gateway's HTTP access to the speech services, for
// callers that do not speak gRPC: the Connect protocol and gRPC-Web (for
// browsers and `buf curl`) and REST/JSON for the unary RPCs, transcoded by
// vanguard onto the same gRPC server, so that auth, limits, metrics and the
// error model are the gRPC port's; and audio as plain HTTP bodies, for
// `curl … -o hello.wav`, an <audio> element, or `curl --data-binary
// @call.wav`, made by calling the gRPC services in process; and a WebSocket
// bridge for the bidirectional RPCs, which browsers cannot call otherwise;
// and a playground page that uses all of it.
package httpapi

import (
	"errors"
	"log/slog"
	"net/http"
	"slices"
	"strings"

	"connectrpc.com/vanguard/vanguardgrpc"
	"google.golang.org/grpc"

	speechv1 "github.com/speechgate/speechgate/gen/speech/v1"
)

// Config is what the HTTP access needs.
type Config struct {
	// Server is the gateway's gRPC server, which the transcoder calls.
	Server *grpc.Server
	// Conn is a client connection to Server, in process, for the audio
	// endpoints.
	Conn grpc.ClientConnInterface
	// CORSOrigins are the origins browsers may call from ("*": any); none:
	// no cross-origin calls.
	CORSOrigins []string
	Logger      *slog.Logger
}

// New returns the HTTP handler.
func New(cfg Config) (http.Handler, error) {
	if cfg.Server == nil || cfg.Conn == nil || cfg.Logger == nil {
		return nil, errors.New("httpapi: Config.Server, Conn and Logger are required")
	}
	// REST routes come from the .proto's google.api.http annotations.
	transcoder, err := vanguardgrpc.NewTranscoder(cfg.Server)
	if err != nil {
		return nil, err
	}
	a := &audioAPI{synth: speechv1.NewSynthesisServiceClient(cfg.Conn), trans: speechv1.NewTranscriptionServiceClient(cfg.Conn),
		log: cfg.Logger}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/speech:synthesize", a.synthesize)
	mux.HandleFunc("GET /v1/speech:synthesize", a.synthesize)
	mux.HandleFunc("POST /v1/speech:transcribe", a.transcribe)
	mux.HandleFunc("GET /v1/ws/{method}", newBridge(cfg.Conn, cfg.CORSOrigins).serve)
	mux.Handle("GET /playground/", playground())
	mux.Handle("GET /playground", http.RedirectHandler("/playground/", http.StatusMovedPermanently))
	mux.Handle("/", transcoder)
	return cors(cfg.CORSOrigins, mux), nil
}

// The headers a browser may send and read, beyond the safelisted ones.
var (
	corsAllowHeaders = "Authorization, Content-Type, Connect-Protocol-Version, Connect-Timeout-Ms, Grpc-Timeout, " +
		"X-Grpc-Web, X-User-Agent, X-Request-Id"
	corsExposeHeaders = "Grpc-Status, Grpc-Message, Grpc-Status-Details-Bin, X-Request-Id, Retry-After, " +
		"X-Speechgate-Sample-Rate-Hz, X-Speechgate-Encoding, X-Speechgate-Upstream-Request-Id"
)

// cors answers cross-origin requests from the allowed origins, and only
// from them: a preflight from another origin is refused with 403, and its
// other requests carry no CORS headers, so that the browser withholds the
// answer.
func cors(origins []string, next http.Handler) http.Handler {
	if len(origins) == 0 {
		return next
	}
	anyOrigin := slices.Contains(origins, "*")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		origin := r.Header.Get("Origin")
		if origin == "" {
			next.ServeHTTP(w, r)
			return
		}
		allowed := anyOrigin || slices.ContainsFunc(origins, func(o string) bool { return strings.EqualFold(o, origin) })
		preflight := r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != ""
		w.Header().Add("Vary", "Origin")
		if !allowed {
			if preflight {
				http.Error(w, "origin not allowed", http.StatusForbidden)
				return
			}
			next.ServeHTTP(w, r)
			return
		}
		h := w.Header()
		h.Set("Access-Control-Allow-Origin", origin)
		h.Set("Access-Control-Expose-Headers", corsExposeHeaders)
		if preflight {
			h.Set("Access-Control-Allow-Methods", "GET, POST, PUT, DELETE")
			h.Set("Access-Control-Allow-Headers", corsAllowHeaders)
			h.Set("Access-Control-Max-Age", "600")
			w.WriteHeader(http.StatusNoContent)
			return
		}
		next.ServeHTTP(w, r)
	})
}
