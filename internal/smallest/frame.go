package smallest

import (
	"bytes"
	"encoding/base64"
)

// fastFrame reads the frame Smallest sends thousands of times per stream,
// {"audio": "<base64>", "done": false, "status": "206"}, without
// encoding/json: that spends most of its time validating and unquoting the
// long base64 string, and was most of the gateway's CPU. It accepts only
// objects whose keys are among "audio", "done" and "status", with a string
// audio free of escapes, a boolean done, and a status that is not an error;
// ok is false for anything else, which the full parser then reads. The
// audio is returned still in base64, for appendBase64 to decode.
func fastFrame(data []byte) (b64 []byte, done, ok bool) {
	p := parser{b: data}
	if !p.byte('{') {
		return nil, false, false
	}
	for first := true; ; first = false {
		p.space()
		if p.byte('}') {
			break
		}
		if !first && !p.byte(',') {
			return nil, false, false
		}
		key, okKey := p.str()
		if !okKey || !p.byte(':') {
			return nil, false, false
		}
		p.space()
		switch string(key) {
		case "audio":
			if b64, ok = p.str(); !ok {
				return nil, false, false
			}
		case "done":
			if done, ok = p.boolean(); !ok {
				return nil, false, false
			}
		case "status":
			status, okStatus := p.scalar()
			if !okStatus || !successStatus(status) {
				return nil, false, false
			}
		default:
			return nil, false, false
		}
	}
	p.space()
	if p.i != len(p.b) {
		return nil, false, false
	}
	return b64, done, true
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
