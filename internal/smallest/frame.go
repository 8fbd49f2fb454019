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
// ok is false for anything else, which the full parser then reads.
func fastFrame(data []byte) (audio []byte, done, ok bool) {
	p := parser{b: data}
	if !p.byte('{') {
		return nil, false, false
	}
	var b64 []byte
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
	if len(b64) > 0 {
		enc := base64.StdEncoding
		if len(b64)%4 != 0 {
			enc = base64.RawStdEncoding
		}
		audio = make([]byte, enc.DecodedLen(len(b64)))
		n, err := enc.Decode(audio, b64)
		if err != nil {
			return nil, false, false // the full parser reports it
		}
		audio = audio[:n]
	}
	return audio, done, true
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
	for _, c := range s {
		if c < 0x20 {
			return nil, false // not valid JSON
		}
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
