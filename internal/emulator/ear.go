package emulator

import (
	"encoding/binary"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"
)

// ear listens to uploaded audio as it streams past, keeping none of it: it
// counts the bytes, reads a WAV header, and finds every text the emulator's
// synthesis embedded (one per synthesis, so audio made of several pieces,
// or of several calls, is heard whole).
type ear struct {
	n        int64
	header   []byte // the first 44 bytes, until known
	wav      bool
	byteRate float64
	scan     lsbScanner
}

// Write implements io.Writer.
func (e *ear) Write(p []byte) (int, error) {
	n := len(p)
	e.n += int64(n)
	if len(e.header) < 44 {
		take := min(44-len(e.header), len(p))
		e.header = append(e.header, p[:take]...)
		if len(e.header) < 44 {
			return n, nil
		}
		p = p[take:]
		if string(e.header[0:4]) == "RIFF" && string(e.header[8:12]) == "WAVE" {
			e.wav = true
			e.byteRate = float64(binary.LittleEndian.Uint32(e.header[28:32]))
		} else {
			e.scan.write(e.header) // headerless: the first bytes are audio too
		}
	}
	e.scan.write(p)
	return n, nil
}

// flush scans bytes held back while waiting for a possible header.
func (e *ear) flush() {
	if len(e.header) < 44 {
		e.scan.write(e.header)
	}
}

// transcript returns the audio's length and what the emulator "heard".
func (e *ear) transcript(q url.Values) (seconds float64, text string) {
	e.flush()
	size, byteRate := e.n, 32000.0 // unknown audio: assume 16 kHz PCM16
	switch {
	case e.wav && e.byteRate > 0:
		size, byteRate = e.n-44, e.byteRate
	case q != nil:
		if rate, err := strconv.Atoi(q.Get("sample_rate")); err == nil && rate > 0 {
			switch q.Get("encoding") {
			case "linear16":
				byteRate = float64(rate * 2)
			case "linear32":
				byteRate = float64(rate * 4)
			case "mulaw", "alaw":
				byteRate = float64(rate)
			}
		}
	}
	seconds = float64(size) / byteRate
	if texts := e.scan.texts(); len(texts) > 0 {
		var parts []string
		for _, t := range texts {
			parts = append(parts, t.text)
		}
		return seconds, strings.Join(parts, " ")
	}
	return seconds, fmt.Sprintf("This is the speechgate emulator. It heard %.2f seconds of audio.", seconds)
}

// hear listens to an upload of at most limit bytes (reading one more, so
// that the caller can tell it was too large).
func hear(r io.Reader, limit int64) (*ear, error) {
	e := &ear{}
	_, err := io.Copy(e, io.LimitReader(r, limit+1))
	return e, err
}

// embedded is a text found in audio, and the sample where it starts.
type embedded struct {
	text   string
	sample int64
}

// lsbScanner reads the least significant bit of each PCM16 sample and finds
// watermarks ("SGE1" <length> ":" <text>) wherever they start.
type lsbScanner struct {
	samples int64
	carry   []byte // half a sample from the last write
	reg     uint32 // the last 32 bits, for finding the magic
	state   int    // 0: searching; 1: reading the length; 2: reading the text
	bits    int
	cur     byte
	length  []byte
	text    []byte
	want    int
	start   int64
	found   []embedded
}

var magic = binary.BigEndian.Uint32([]byte(watermarkMagic))

func (s *lsbScanner) write(p []byte) {
	if len(s.carry) > 0 && len(p) > 0 {
		s.bit(s.carry[0] & 1) // a sample split across writes: its low byte came first
		s.carry, p = nil, p[1:]
	}
	for len(p) >= 2 {
		s.bit(p[0] & 1) // little-endian: the low byte holds the bit
		p = p[2:]
	}
	if len(p) == 1 {
		s.carry = []byte{p[0]}
	}
}

func (s *lsbScanner) bit(b byte) {
	s.samples++
	if s.state == 0 { // looking for the magic
		s.reg = s.reg<<1 | uint32(b)
		if s.reg == magic {
			s.state, s.bits, s.cur, s.length, s.start = 1, 0, 0, nil, s.samples-32
		}
		return
	}
	s.cur = s.cur<<1 | b
	s.bits++
	if s.bits < 8 {
		return
	}
	c := s.cur
	s.bits, s.cur = 0, 0
	switch s.state {
	case 1:
		switch {
		case c == ':' && len(s.length) > 0:
			s.want, _ = strconv.Atoi(string(s.length))
			s.state, s.text = 2, s.text[:0]
			if s.want == 0 {
				s.state, s.reg = 0, 0
			}
		case c >= '0' && c <= '9' && len(s.length) < 8:
			s.length = append(s.length, c)
		default:
			s.state, s.reg = 0, 0 // not a watermark after all
		}
	case 2:
		s.text = append(s.text, c)
		if len(s.text) == s.want {
			s.found = append(s.found, embedded{string(s.text), s.start})
			s.state, s.reg = 0, 0
		}
	}
}

func (s *lsbScanner) texts() []embedded { return s.found }
