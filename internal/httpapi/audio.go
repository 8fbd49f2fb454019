package httpapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"unicode/utf8"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	speechv1 "github.com/speechgate/speechgate/gen/speech/v1"
	"github.com/speechgate/speechgate/internal/rpcerror"
)

// The limits of the audio endpoints' own input, before the services'.
const (
	maxJSONBody = 1 << 20 // a synthesis request: text is bounded far below this
	maxGETText  = 2000    // characters: longer text belongs in a POST
	uploadPiece = 256 << 10
)

type audioAPI struct {
	synth speechv1.SynthesisServiceClient
	trans speechv1.TranscriptionServiceClient
	log   *slog.Logger
}

// outgoing carries the caller's credentials and request id to the
// in-process gRPC call, where the interceptor chain authenticates them as
// it would on the gRPC port.
func outgoing(r *http.Request) context.Context {
	md := metadata.MD{}
	if v := r.Header.Get("Authorization"); v != "" {
		md.Set("authorization", v)
	}
	if v := r.Header.Get("X-Request-Id"); v != "" {
		md.Set("x-request-id", v)
	}
	return metadata.NewOutgoingContext(r.Context(), md)
}

// synthesize answers with the audio itself, written as it is made: a POST
// takes a SynthesizeRequest as JSON, a GET the same fields as query
// parameters (for an <audio> element). The default encoding is WAV.
func (a *audioAPI) synthesize(w http.ResponseWriter, r *http.Request) {
	req := &speechv1.SynthesizeRequest{}
	var err error
	if r.Method == http.MethodGet {
		err = fromQuery(r.URL.Query(), req)
		if err == nil && utf8.RuneCountInString(req.GetText()) > maxGETText {
			err = invalid("text", rpcerror.RuleTooLong, fmt.Sprintf("must be at most %d characters in a GET; POST longer text as JSON", maxGETText))
		}
	} else {
		err = fromJSONBody(r, req)
	}
	if err != nil {
		writeError(w, err)
		return
	}
	if req.GetEncoding() == speechv1.AudioEncoding_AUDIO_ENCODING_UNSPECIFIED {
		req.Encoding = speechv1.AudioEncoding_AUDIO_ENCODING_WAV
	}
	ctx, cancel := context.WithCancel(outgoing(r))
	defer cancel()
	stream, err := a.synth.Synthesize(ctx, req)
	if err != nil {
		writeError(w, err)
		return
	}
	var started bool
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			if !started {
				writeError(w, err)
				return
			}
			// The status line has gone: abort, so that the response can
			// never look complete (HTTP/1.1 drops the connection before the
			// last chunk, HTTP/2 resets the stream).
			a.log.WarnContext(r.Context(), "synthesis failed after its first byte; aborting the HTTP response", "err", err)
			panic(http.ErrAbortHandler)
		}
		switch ev := msg.GetEvent().(type) {
		case *speechv1.SynthesizeResponse_Format:
			h := w.Header()
			h.Set("Content-Type", contentType(ev.Format))
			h.Set("X-Speechgate-Sample-Rate-Hz", strconv.Itoa(int(ev.Format.GetSampleRateHz())))
			h.Set("X-Speechgate-Encoding", ev.Format.GetEncoding().String())
			if id := ev.Format.GetUpstreamRequestId(); id != "" {
				h.Set("X-Speechgate-Upstream-Request-Id", id)
			}
			h.Set("Cache-Control", "no-store")
		case *speechv1.SynthesizeResponse_Audio:
			started = true
			if _, err := w.Write(ev.Audio.GetData()); err != nil {
				return // the caller left; the context ends the call
			}
			http.NewResponseController(w).Flush() //nolint:errcheck // a writer that cannot flush still delivers at the end
		}
	}
}

// contentType names a synthesis's audio as HTTP does.
func contentType(f *speechv1.SynthesisFormat) string {
	rate := strconv.Itoa(int(f.GetSampleRateHz()))
	switch f.GetEncoding() {
	case speechv1.AudioEncoding_AUDIO_ENCODING_WAV:
		return "audio/wav"
	case speechv1.AudioEncoding_AUDIO_ENCODING_MP3:
		return "audio/mpeg"
	case speechv1.AudioEncoding_AUDIO_ENCODING_MULAW:
		return "audio/PCMU;rate=" + rate // RFC 3551
	case speechv1.AudioEncoding_AUDIO_ENCODING_ALAW:
		return "audio/PCMA;rate=" + rate
	}
	return "audio/L16;rate=" + rate + ";channels=1" // RFC 2586: big-endian by that RFC; the X-Speechgate-Encoding header says little-endian
}

// transcribe transcribes the request's body, streamed to TranscribeUpload
// in pieces as it arrives; the TranscriptionConfig's fields come as query
// parameters. It answers with the TranscribeUploadResponse as JSON.
func (a *audioAPI) transcribe(w http.ResponseWriter, r *http.Request) {
	cfg := &speechv1.TranscriptionConfig{}
	if err := fromQuery(r.URL.Query(), cfg); err != nil {
		writeError(w, err)
		return
	}
	ctx, cancel := context.WithCancel(outgoing(r))
	defer cancel()
	stream, err := a.trans.TranscribeUpload(ctx)
	if err != nil {
		writeError(w, err)
		return
	}
	send := func(m *speechv1.TranscribeUploadRequest) bool { return stream.Send(m) == nil }
	if send(&speechv1.TranscribeUploadRequest{Part: &speechv1.TranscribeUploadRequest_Config{Config: cfg}}) {
		// The upload's limit is the service's: it refuses the call as the
		// body crosses it, the next send fails, and CloseAndRecv says why.
		body := r.Body
		piece := make([]byte, uploadPiece)
		for {
			n, err := io.ReadFull(body, piece)
			if n > 0 && !send(&speechv1.TranscribeUploadRequest{Part: &speechv1.TranscribeUploadRequest_Audio{Audio: piece[:n]}}) {
				break // the call ended: CloseAndRecv says why
			}
			if err != nil {
				if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
					cancel() // the caller's body broke off: do not transcribe a part of it
					writeError(w, status.Error(codes.Canceled, "the request body broke off: "+err.Error()))
					return
				}
				break
			}
		}
	}
	resp, err := stream.CloseAndRecv()
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

// fromJSONBody reads a JSON request body into m, whatever its
// Content-Type says: `curl -d` labels JSON as a form. Unknown fields are
// refused: a misspelt field must not be silently dropped.
func fromJSONBody(r *http.Request, m proto.Message) error {
	b, err := io.ReadAll(io.LimitReader(r.Body, maxJSONBody+1))
	switch {
	case err != nil:
		return status.Error(codes.Canceled, "the request body broke off: "+err.Error())
	case len(b) > maxJSONBody:
		return invalid("body", rpcerror.RuleTooLong, fmt.Sprintf("must be at most %d bytes", maxJSONBody))
	}
	if err := protojson.Unmarshal(b, m); err != nil {
		return invalid("body", rpcerror.RuleBadFormat, "is not a valid "+string(m.ProtoReflect().Descriptor().Name())+" in JSON: "+
			rpcerror.Quote(err.Error()))
	}
	return nil
}

// fromQuery sets m's fields from query parameters, named as in the .proto
// or in JSON (voice_id or voiceId); enums take their value names. Only
// top-level scalar fields can be set so; an unknown name is refused.
func fromQuery(q url.Values, m proto.Message) error {
	fields := m.ProtoReflect().Descriptor().Fields()
	for name, values := range q {
		fd := fields.ByName(protoreflect.Name(name))
		if fd == nil {
			fd = fields.ByJSONName(name)
		}
		if fd == nil || fd.Message() != nil || fd.IsMap() {
			return invalid(name, rpcerror.RuleNotAllowed, "is not a parameter of "+string(m.ProtoReflect().Descriptor().Name())+
				" that a query can set")
		}
		if !fd.IsList() && len(values) > 1 {
			return invalid(name, rpcerror.RuleConflict, "may be given once")
		}
		for _, s := range values {
			v, err := scalar(fd, s)
			if err != nil {
				return invalid(name, rpcerror.RuleBadFormat, err.Error())
			}
			if fd.IsList() {
				m.ProtoReflect().Mutable(fd).List().Append(v)
			} else {
				m.ProtoReflect().Set(fd, v)
			}
		}
	}
	return nil
}

// scalar parses a query parameter's value as fd's kind. Its error names the
// kind and echoes the value bounded (strconv's would repeat it whole).
func scalar(fd protoreflect.FieldDescriptor, s string) (protoreflect.Value, error) {
	var v protoreflect.Value
	var err error
	switch fd.Kind() {
	case protoreflect.StringKind:
		return protoreflect.ValueOfString(s), nil
	case protoreflect.BoolKind:
		var b bool
		b, err = strconv.ParseBool(s)
		v = protoreflect.ValueOfBool(b)
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		var n uint64
		n, err = strconv.ParseUint(s, 10, 32)
		v = protoreflect.ValueOfUint32(uint32(n))
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		var n int64
		n, err = strconv.ParseInt(s, 10, 32)
		v = protoreflect.ValueOfInt32(int32(n))
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		var n uint64
		n, err = strconv.ParseUint(s, 10, 64)
		v = protoreflect.ValueOfUint64(n)
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		var n int64
		n, err = strconv.ParseInt(s, 10, 64)
		v = protoreflect.ValueOfInt64(n)
	case protoreflect.FloatKind:
		var f float64
		f, err = strconv.ParseFloat(s, 32)
		v = protoreflect.ValueOfFloat32(float32(f))
	case protoreflect.DoubleKind:
		var f float64
		f, err = strconv.ParseFloat(s, 64)
		v = protoreflect.ValueOfFloat64(f)
	case protoreflect.EnumKind:
		if ev := fd.Enum().Values().ByName(protoreflect.Name(strings.ToUpper(s))); ev != nil {
			return protoreflect.ValueOfEnum(ev.Number()), nil
		}
		return protoreflect.Value{}, fmt.Errorf("must be one of the %s values, got %s", fd.Enum().Name(), rpcerror.Quote(s))
	default:
		return protoreflect.Value{}, fmt.Errorf("cannot be set from a query")
	}
	if err != nil {
		return protoreflect.Value{}, fmt.Errorf("must be a %s, got %s", fd.Kind(), rpcerror.Quote(s))
	}
	return v, nil
}

func invalid(field, rule, description string) error {
	var v rpcerror.Violations
	v.Add(field, rule, "%s", description)
	return v.Err()
}

// httpStatus is the HTTP status for a gRPC code, as Google's APIs map them
// (google/rpc/code.proto).
func httpStatus(c codes.Code) int {
	switch c {
	case codes.OK:
		return http.StatusOK
	case codes.Canceled:
		return 499 // client closed request
	case codes.InvalidArgument, codes.FailedPrecondition, codes.OutOfRange:
		return http.StatusBadRequest
	case codes.DeadlineExceeded:
		return http.StatusGatewayTimeout
	case codes.NotFound:
		return http.StatusNotFound
	case codes.AlreadyExists, codes.Aborted:
		return http.StatusConflict
	case codes.PermissionDenied:
		return http.StatusForbidden
	case codes.Unauthenticated:
		return http.StatusUnauthorized
	case codes.ResourceExhausted:
		return http.StatusTooManyRequests
	case codes.Unimplemented:
		return http.StatusNotImplemented
	case codes.Unavailable:
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// writeError answers with err as a google.rpc.Status in JSON, its details
// included, under the matching HTTP status, and Retry-After when its
// RetryInfo says when to retry.
func writeError(w http.ResponseWriter, err error) {
	st := status.Convert(err)
	for _, d := range st.Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok {
			secs := max(1, int(ri.GetRetryDelay().AsDuration().Seconds()+0.999))
			w.Header().Set("Retry-After", strconv.Itoa(secs))
		}
	}
	writeJSON(w, httpStatus(st.Code()), st.Proto())
}

func writeJSON(w http.ResponseWriter, code int, m proto.Message) {
	b, err := protojson.Marshal(m)
	if err != nil {
		code, b = http.StatusInternalServerError, []byte(`{"code":13,"message":"the answer could not be encoded"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	w.Write(append(b, '\n')) //nolint:errcheck // the caller left
}
