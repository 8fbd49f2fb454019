package httpapi

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"unicode/utf8"

	"github.com/coder/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	speechv1 "github.com/speechgate/speechgate/gen/speech/v1"
	"github.com/speechgate/speechgate/internal/rpcerror"
)

// The WebSocket bridge carries the bidirectional RPCs, which browsers
// cannot call over HTTP: each WebSocket is one call, made in process so
// that it passes the gRPC port's validation, limits, drain and errors.
//
// Framing (the README documents it):
//   - client to gateway: each text frame is one request message in the
//     .proto's JSON ({"config": {…}}, {"text": {…}}, {"finalize": {}});
//     a binary frame is an audio message's bytes (TranscribeLive,
//     Converse); the text frame "end" half-closes.
//   - gateway to client: each response message as a JSON text frame; with
//     ?binary_audio=true, an audio message goes as a binary frame of its
//     bytes alone.
//   - the end: close 1000 when the call ended OK; otherwise a last text
//     frame {"error": <google.rpc.Status>} and close 4000 + the gRPC code
//     (4003 INVALID_ARGUMENT, 4016 UNAUTHENTICATED, 4014 UNAVAILABLE, …).
type bridgeMethod struct {
	fullName string
	newReq   func() proto.Message
	newResp  func() proto.Message
}

var bridged = map[string]bridgeMethod{
	"synthesize-stream": {"/speech.v1.SynthesisService/SynthesizeStream",
		func() proto.Message { return new(speechv1.SynthesizeStreamRequest) },
		func() proto.Message { return new(speechv1.SynthesizeStreamResponse) }},
	"transcribe-live": {"/speech.v1.TranscriptionService/TranscribeLive",
		func() proto.Message { return new(speechv1.TranscribeLiveRequest) },
		func() proto.Message { return new(speechv1.TranscribeLiveResponse) }},
	"converse": {"/speech.v1.ConversationService/Converse",
		func() proto.Message { return new(speechv1.ConverseRequest) },
		func() proto.Message { return new(speechv1.ConverseResponse) }},
}

// maxBridgeMessage bounds one frame from the client: an audio message is
// at most 1 MiB on Converse, and far less in practice.
const maxBridgeMessage = 2 << 20

// maxCloseReason is what fits a close frame's reason (125 bytes less the code).
const maxCloseReason = 123

// closeBase plus a gRPC code is the close code of a call that failed.
const closeBase = 4000

type bridge struct {
	conn   grpc.ClientConnInterface
	accept *websocket.AcceptOptions
}

// newBridge returns the bridge; origins are the CORS origins a browser may
// open a socket from (none: the gateway's own origin only, as browsers
// enforce nothing for WebSockets and the gateway must).
func newBridge(conn grpc.ClientConnInterface, origins []string) *bridge {
	opts := &websocket.AcceptOptions{}
	for _, o := range origins {
		if o == "*" {
			opts.InsecureSkipVerify = true // any origin, as configured
			continue
		}
		if u, err := url.Parse(o); err == nil && u.Host != "" {
			opts.OriginPatterns = append(opts.OriginPatterns, u.Host)
		}
	}
	return &bridge{conn: conn, accept: opts}
}

func (b *bridge) serve(w http.ResponseWriter, r *http.Request) {
	m, ok := bridged[r.PathValue("method")]
	if !ok {
		http.Error(w, "no such bidirectional method: want synthesize-stream, transcribe-live or converse", http.StatusNotFound)
		return
	}
	q := r.URL.Query()
	binaryAudio := q.Get("binary_audio") == "true"
	// Browsers cannot set headers on a WebSocket: a token may come in the
	// URL instead (and the gateway logs no URL).
	if t := q.Get("access_token"); t != "" && r.Header.Get("Authorization") == "" {
		r.Header.Set("Authorization", "Bearer "+t)
	}
	ws, err := websocket.Accept(w, r, b.accept)
	if err != nil {
		return // Accept answered (403 for a foreign origin)
	}
	defer ws.CloseNow()
	ws.SetReadLimit(maxBridgeMessage)
	ctx, cancel := context.WithCancel(outgoing(r))
	defer cancel()
	stream, err := b.conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}, m.fullName)
	if err != nil {
		closeWith(ws, err)
		return
	}
	// The client's frames go up on their own goroutine; a frame that is
	// not a valid message ends the call with its reason.
	upErr := make(chan error, 1)
	go func() {
		if err := uplink(ctx, ws, stream, m); err != nil {
			upErr <- err
			cancel() // the call cannot go on: RecvMsg returns, and the handler answers with err
		}
	}()
	for {
		resp := m.newResp()
		err := stream.RecvMsg(resp)
		if errors.Is(err, io.EOF) {
			ws.Close(websocket.StatusNormalClosure, "OK")
			return
		}
		if err != nil {
			select {
			case uerr := <-upErr:
				if uerr != nil {
					err = uerr
				}
			default:
			}
			closeWith(ws, err)
			return
		}
		if err := writeMessage(ctx, ws, resp, binaryAudio); err != nil {
			return // the client left; the context ends the call
		}
	}
}

// uplink forwards the client's frames as request messages until "end"
// (then it half-closes) or the socket ends.
func uplink(ctx context.Context, ws *websocket.Conn, stream grpc.ClientStream, m bridgeMethod) error {
	for {
		typ, data, err := ws.Read(ctx)
		if err != nil {
			return nil //nolint:nilerr // the client left or the call ended: the context says which
		}
		req := m.newReq()
		switch {
		case typ == websocket.MessageText && strings.TrimSpace(string(data)) == "end":
			return stream.CloseSend()
		case typ == websocket.MessageText:
			if err := protojson.Unmarshal(data, req); err != nil {
				return invalid("frame", rpcerror.RuleBadFormat, "a text frame must be a "+string(req.ProtoReflect().Descriptor().Name())+
					" in JSON, or \"end\": "+rpcerror.Quote(err.Error()))
			}
		default:
			fd := req.ProtoReflect().Descriptor().Fields().ByName("audio")
			if fd == nil || fd.Kind() != protoreflect.BytesKind {
				return invalid("frame", rpcerror.RuleNotAllowed, "binary frames are audio, which this method does not take; send JSON text frames")
			}
			req.ProtoReflect().Set(fd, protoreflect.ValueOfBytes(data))
		}
		if err := stream.SendMsg(req); err != nil {
			return nil //nolint:nilerr // the call ended: RecvMsg has its status
		}
	}
}

// writeMessage sends one response message: JSON, or with binaryAudio an
// audio message's bytes alone.
func writeMessage(ctx context.Context, ws *websocket.Conn, m proto.Message, binaryAudio bool) error {
	if binaryAudio {
		if data, ok := audioData(m); ok {
			return ws.Write(ctx, websocket.MessageBinary, data)
		}
	}
	b, err := protojson.Marshal(m)
	if err != nil {
		return err
	}
	return ws.Write(ctx, websocket.MessageText, b)
}

// audioData returns the bytes of a response's audio message, if it is one.
func audioData(m proto.Message) ([]byte, bool) {
	r := m.ProtoReflect()
	fd := r.Descriptor().Fields().ByName("audio")
	if fd == nil || fd.Message() == nil || !r.Has(fd) {
		return nil, false
	}
	audio := r.Get(fd).Message()
	data := audio.Descriptor().Fields().ByName("data")
	if data == nil {
		return nil, false
	}
	return audio.Get(data).Bytes(), true
}

// closeWith ends the socket with a call's error: its google.rpc.Status as
// a last frame, then close 4000 + its code, with its message as the
// reason as far as a close frame holds it.
func closeWith(ws *websocket.Conn, err error) {
	st := status.Convert(err)
	if b, err := protojson.Marshal(st.Proto()); err == nil {
		ws.Write(context.Background(), websocket.MessageText, append(append([]byte(`{"error":`), b...), '}')) //nolint:errcheck // the close follows
	}
	reason := st.Message()
	if len(reason) > maxCloseReason {
		reason = reason[:maxCloseReason]
		for !utf8.ValidString(reason) {
			reason = reason[:len(reason)-1]
		}
	}
	ws.Close(websocket.StatusCode(closeBase+int(st.Code())), reason) //nolint:errcheck // the peer may be gone
}
