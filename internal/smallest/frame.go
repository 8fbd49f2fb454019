package smallest

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"strconv"
)

// frame is one of Lightning's messages, over SSE or the WebSocket.
type frame struct {
	// audio is the decoded audio, appended to the buffer readFrame was given.
	audio []byte
	// done marks SSE's final frame ({"done": true}, or the older envelope's
	// {"status": "complete"}).
	done bool
	// status is the message's status: "chunk", "word_timestamp" and
	// "complete" over the WebSocket, "206" and the like over SSE.
	status    string
	requestID string
	word      *WordTiming
}

// lightningFrame is the union of the frame shapes Smallest has documented
// (docs/upstream.md): over SSE the current {"audio","done","status"}
// frames and their {"done":true} terminator, and the older envelope
// {"status":"chunk","data":{"audio"}} ended by {"status":"complete"}; over
// the WebSocket, the same envelope with request ids, word timings in data,
// and complete after each flush; and error frames of every shape.
type lightningFrame struct {
	Audio     string          `json:"audio"`
	Data      json.RawMessage `json:"data"`
	Done      json.RawMessage `json:"done"`
	Status    json.RawMessage `json:"status"`
	Error     json.RawMessage `json:"error"`
	Errors    json.RawMessage `json:"errors"`
	RequestID string          `json:"request_id"`
}

// readFrame reads one of Lightning's messages: its audio appended to dst
// (with room for spare more bytes if dst must grow), by the fast path when
// it can, with encoding/json otherwise. An error frame is an *Error of kind
// KindStreamError; requestID is the request's id for errors that name none.
func (cl call) readFrame(data, dst []byte, spare int, requestID string) (frame, error) {
	if f, ok := readFast(data); ok {
		if out, ok := appendBase64(dst, f.b64, spare); ok {
			fr := frame{audio: out, done: f.done, requestID: string(f.requestID), status: "206"}
			if f.chunk {
				fr.status = "chunk"
			}
			return fr, nil
		}
	}
	return cl.readFull(data, dst, spare, requestID)
}

// readFull reads any frame, with encoding/json.
func (cl call) readFull(data, dst []byte, spare int, requestID string) (frame, error) {
	var f lightningFrame
	if err := json.Unmarshal(data, &f); err != nil {
		return frame{}, cl.malformed(requestID, "a frame was not JSON")
	}
	status, _ := jsonScalar(f.Status)
	code, _ := strconv.Atoi(status)
	if f.RequestID != "" {
		requestID = f.RequestID
	}
	if status == "error" || code >= 400 || len(f.Error) > 0 || len(f.Errors) > 0 {
		e := &Error{Kind: KindStreamError, Endpoint: cl.endpoint, FrameStatus: code}
		e.parseBody(data, cl.secret)
		if e.RequestID == "" {
			e.RequestID = requestID
		}
		return frame{}, e
	}
	out := frame{audio: dst, status: status, requestID: f.RequestID, done: jsonTrue(f.Done) || status == "complete"}
	b64 := f.Audio
	if len(f.Data) > 0 && f.Data[0] == '{' {
		var d struct {
			Audio string  `json:"audio"`
			Word  *string `json:"word"`
			Start float64 `json:"start"`
			End   float64 `json:"end"`
		}
		if json.Unmarshal(f.Data, &d) != nil {
			return frame{}, cl.malformed(requestID, "a frame's data was not an object")
		}
		if b64 == "" {
			b64 = d.Audio
		}
		if status == "word_timestamp" && d.Word != nil {
			out.word = &WordTiming{Word: *d.Word, Start: d.Start, End: d.End}
		}
	} else if status == "chunk" || status == "word_timestamp" {
		return frame{}, cl.malformed(requestID, "a "+status+" frame's data was not an object")
	}
	if b64 != "" {
		var ok bool
		if out.audio, ok = appendBase64(dst, []byte(b64), spare); !ok {
			return frame{}, cl.malformed(requestID, "a frame's audio was not base64")
		}
	}
	return out, nil
}

func (cl call) malformed(requestID, msg string) *Error {
	return &Error{Kind: KindMalformed, Endpoint: cl.endpoint, RequestID: requestID, Message: msg}
}

// fastFrame is what the fast path read of a frame.
type fastFrame struct {
	b64       []byte // the audio, still in base64
	done      bool   // SSE: the final frame
	chunk     bool   // WebSocket: a chunk message
	requestID []byte
}

// readFast reads the audio frame Smallest sends thousands of times per
// stream, over SSE {"audio": "<base64>", "done": false, "status": "206"}
// and over the WebSocket {"request_id": "…", "status": "chunk", "data":
// {"audio": "<base64>"}}, without encoding/json: that spends most of its
// time validating and unquoting the long base64 string, and was most of the
// gateway's CPU. It accepts only objects of those keys (and the WebSocket's
// session ids), with strings free of escapes, a boolean done, and a status
// that is not an error; ok is false for anything else, which the full
// parser then reads. The audio is returned still in base64, for
// appendBase64 to decode.
func readFast(data []byte) (f fastFrame, ok bool) {
	p := parser{b: data}
	if !p.object(func(key []byte) bool {
		switch string(key) {
		case "audio":
			f.b64, ok = p.str()
		case "done":
			f.done, ok = p.boolean()
		case "status":
			status, okStatus := p.scalar()
			f.chunk = string(status) == "chunk"
			ok = okStatus && (f.chunk || successStatus(status))
		case "request_id":
			f.requestID, ok = p.str()
		case "session_id", "external_session_id", "external_request_id":
			_, ok = p.str()
		case "data":
			ok = p.object(func(key []byte) bool {
				if string(key) != "audio" {
					return false
				}
				var okAudio bool
				f.b64, okAudio = p.str()
				return okAudio
			})
		default:
			return false
		}
		return ok
	}) {
		return fastFrame{}, false
	}
	p.space()
	if p.i != len(p.b) {
		return fastFrame{}, false
	}
	return f, true
}

// object reads an object, handing each key to value, which reads the value
// and reports whether it could.
func (p *parser) object(value func(key []byte) bool) bool {
	if !p.byte('{') {
		return false
	}
	for first := true; ; first = false {
		p.space()
		if p.byte('}') {
			return true
		}
		if !first && !p.byte(',') {
			return false
		}
		key, ok := p.str()
		if !ok || !p.byte(':') {
			return false
		}
		p.space()
		if !value(key) {
			return false
		}
	}
}

// appendBase64 decodes padded or unpadded standard base64 onto dst. When dst
// must grow, it makes room for spare more bytes as well, so that the frames
// already received can join it without another copy. ok is false, and dst
// unchanged, if b64 is not base64.
func appendBase64(dst, b64 []byte, spare int) (_ []byte, ok bool) {
	enc := base64.StdEncoding
	if len(b64)%4 != 0 {
		enc = base64.RawStdEncoding
	}
	n := enc.DecodedLen(len(b64))
	if cap(dst)-len(dst) < n {
		grown := make([]byte, len(dst), len(dst)+n+spare)
		copy(grown, dst)
		dst = grown
	}
	got, err := enc.Decode(dst[len(dst):len(dst)+n], b64)
	if err != nil {
		return dst, false
	}
	return dst[:len(dst)+got], true
}

// successStatus reports whether a frame's status is one the fast path may
// pass: "206", "200" and the like. Errors, and words such as "complete",
// go to the full parser.
func successStatus(s []byte) bool {
	if len(s) != 3 || s[0] != '2' {
		return false
	}
	return s[1] >= '0' && s[1] <= '9' && s[2] >= '0' && s[2] <= '9'
}

// parser is a cursor over a frame.
type parser struct {
	b []byte
	i int
}

func (p *parser) space() {
	for p.i < len(p.b) && (p.b[p.i] == ' ' || p.b[p.i] == '\t' || p.b[p.i] == '\n' || p.b[p.i] == '\r') {
		p.i++
	}
}

func (p *parser) byte(c byte) bool {
	p.space()
	if p.i < len(p.b) && p.b[p.i] == c {
		p.i++
		return true
	}
	return false
}

// str reads a string without escapes and returns its contents.
func (p *parser) str() ([]byte, bool) {
	if !p.byte('"') {
		return nil, false
	}
	end := bytes.IndexByte(p.b[p.i:], '"')
	if end < 0 {
		return nil, false
	}
	s := p.b[p.i : p.i+end]
	if bytes.IndexByte(s, '\\') >= 0 {
		return nil, false // escapes: the full parser unquotes them
	}
	// A raw control character makes the frame invalid JSON. Only CR and LF
	// need looking for: base64 decoding skips those two and refuses every
	// other one, and the keys and statuses this reads must match exactly.
	// Two vectorized scans, not a loop over the audio's every byte.
	if bytes.IndexByte(s, '\n') >= 0 || bytes.IndexByte(s, '\r') >= 0 {
		return nil, false
	}
	p.i += end + 1
	return s, true
}

func (p *parser) boolean() (bool, bool) {
	switch {
	case bytes.HasPrefix(p.b[p.i:], []byte("true")):
		p.i += 4
		return true, true
	case bytes.HasPrefix(p.b[p.i:], []byte("false")):
		p.i += 5
		return false, true
	}
	return false, false
}

// scalar reads a string or a whole number.
func (p *parser) scalar() ([]byte, bool) {
	if p.i < len(p.b) && p.b[p.i] == '"' {
		return p.str()
	}
	start := p.i
	for p.i < len(p.b) && p.b[p.i] >= '0' && p.b[p.i] <= '9' {
		p.i++
	}
	return p.b[start:p.i], p.i > start
}
