// Package sse reads Server-Sent Events (the text/event-stream format of the
// WHATWG HTML standard) from a byte stream, one event at a time, without
// allocating per event once its buffers have grown to the stream's event size.
//
// It accepts every line ending the standard allows (LF, CRLF and a lone CR),
// events split anywhere across reads, comments, and a final event that the
// server did not terminate with a blank line before closing.
package sse

import (
	"bytes"
	"errors"
	"io"
)

// ErrEventTooLarge is returned when one line or one event's data exceeds the
// Reader's limit; it protects the gateway from an upstream that never sends a
// line break.
var ErrEventTooLarge = errors.New("sse: event exceeds the size limit")

// Event is one dispatched event. Its slices are valid until the next call to
// Next or Buffered.
type Event struct {
	// Type is the value of the event's "event" field; empty means "message".
	Type []byte
	// Data is the event's data lines joined by "\n".
	Data []byte
	// Unterminated is set on a last event that the input ended before its
	// closing blank line: it may be whole, or cut short.
	Unterminated bool
}

// Reader reads events from an io.Reader.
type Reader struct {
	src   io.Reader
	limit int

	buf        []byte // bytes read but not yet consumed: buf[start:end]
	start, end int
	skipLF     bool // the last line ended in CR: a following LF belongs to it
	srcErr     error

	typ []byte
	// data is the event's data. A one-line event's data is left where it
	// was read, in buf (aliased), rather than copied; it moves to own when a
	// second line follows or buf is about to be reused.
	data, own  []byte
	aliased    bool
	hasData    bool
	dispatched bool // typ and data are the last event's: clear them first
}

// The read buffer starts small, so that a stream read as fast as it
// arrives (real time: a frame per read) holds little, and doubles, up to
// maxReadBuffer, each time a read fills all the room it was given: input
// is then arriving faster than it is read, and bigger reads take it in
// fewer system calls.
const (
	initialReadBuffer = 4 << 10
	maxReadBuffer     = 32 << 10
)

// NewReader returns a Reader that refuses lines and events larger than limit bytes.
func NewReader(src io.Reader, limit int) *Reader {
	return &Reader{src: src, limit: limit, buf: make([]byte, min(limit, initialReadBuffer))}
}

// Next returns the next event. At the end of the input it returns io.EOF, after
// dispatching a last event that had data but no closing blank line. Other
// errors are those of the underlying reader, or ErrEventTooLarge.
func (r *Reader) Next() (Event, error) {
	ev, _, err := r.next(true)
	return ev, err
}

// Buffered returns the next event if the bytes already read hold the whole
// of it, without reading more; ok is false if they do not, and a later Next
// or Buffered carries on where it stopped. It lets a caller take everything
// that has already arrived without waiting for what has not.
func (r *Reader) Buffered() (ev Event, ok bool, err error) {
	return r.next(false)
}

// Pending returns the number of bytes read but not yet returned in events.
func (r *Reader) Pending() int { return r.end - r.start }

// errWouldBlock is next's answer, without read, when it needs more input.
var errWouldBlock = errors.New("sse: more input needed")

// next reads an event, reading more input only if read is set. The fields
// of an event being read survive an unfinished call, so that it can resume.
func (r *Reader) next(read bool) (Event, bool, error) {
	if r.dispatched {
		r.typ, r.data, r.aliased, r.hasData, r.dispatched = r.typ[:0], nil, false, false, false
	}
	for {
		line, err := r.line(read)
		if errors.Is(err, errWouldBlock) {
			return Event{}, false, nil
		}
		if err != nil {
			if errors.Is(err, io.EOF) && r.hasData {
				ev := r.event()
				ev.Unterminated = true
				return ev, true, nil
			}
			return Event{}, false, err
		}
		if len(line) == 0 {
			if r.hasData {
				return r.event(), true, nil
			}
			r.typ = r.typ[:0] // an event without data is not dispatched
			continue
		}
		if err := r.field(line); err != nil {
			return Event{}, false, err
		}
	}
}

func (r *Reader) event() Event {
	r.dispatched = true
	return Event{Type: r.typ, Data: r.data}
}

func (r *Reader) field(line []byte) error {
	if line[0] == ':' {
		return nil // comment
	}
	name, value := line, []byte(nil)
	if i := bytes.IndexByte(line, ':'); i >= 0 {
		name, value = line[:i], line[i+1:]
		if len(value) > 0 && value[0] == ' ' {
			value = value[1:]
		}
	}
	switch string(name) { // no allocation: the compiler recognises this conversion
	case "data":
		if !r.hasData {
			r.data, r.aliased, r.hasData = value, true, true
			return nil
		}
		if len(r.data)+1+len(value) > r.limit {
			return ErrEventTooLarge
		}
		r.detach()
		r.data = append(append(r.data, '\n'), value...)
		r.own = r.data
	case "event":
		r.typ = append(r.typ[:0], value...)
	}
	// "id", "retry" and unknown fields do not matter to a one-shot stream.
	return nil
}

// line returns the next line without its terminator. The slice is valid until
// the next call. At the end of input an unterminated last line is returned
// before io.EOF. Without read, it returns errWouldBlock rather than read.
func (r *Reader) line(read bool) ([]byte, error) {
	for {
		if r.skipLF && r.start < r.end {
			if r.buf[r.start] == '\n' {
				r.start++
			}
			r.skipLF = false
		}
		pending := r.buf[r.start:r.end]
		if i := lineEnd(pending); i >= 0 {
			r.skipLF = pending[i] == '\r'
			r.start += i + 1
			return pending[:i], nil
		}
		if r.srcErr != nil {
			if len(pending) > 0 {
				r.start = r.end
				return pending, nil
			}
			return nil, r.srcErr
		}
		if !read {
			return nil, errWouldBlock
		}
		if err := r.fill(); err != nil {
			return nil, err
		}
	}
}

// lineEnd returns the index of the first CR or LF in b, or -1.
func lineEnd(b []byte) int {
	lf := bytes.IndexByte(b, '\n')
	if lf < 0 {
		lf = len(b)
	}
	if cr := bytes.IndexByte(b[:lf], '\r'); cr >= 0 {
		return cr
	}
	if lf == len(b) {
		return -1
	}
	return lf
}

// detach copies data that still lies in buf to storage of its own.
func (r *Reader) detach() {
	if r.aliased {
		r.own = append(r.own[:0], r.data...)
		r.data, r.aliased = r.own, false
	}
}

// fill reads more input, first making room by moving pending bytes to the
// front of the buffer or, when a line fills the whole buffer, growing it.
func (r *Reader) fill() error {
	r.detach() // the data of an unfinished event may lie where bytes are about to move
	if r.start > 0 {
		r.end = copy(r.buf, r.buf[r.start:r.end])
		r.start = 0
	}
	if r.end == len(r.buf) {
		if len(r.buf) >= r.limit {
			return ErrEventTooLarge
		}
		grown := make([]byte, min(2*len(r.buf), r.limit))
		copy(grown, r.buf[:r.end])
		r.buf = grown
	}
	room := len(r.buf) - r.end
	n, err := r.src.Read(r.buf[r.end:])
	r.end += n
	if err != nil {
		r.srcErr = err
	}
	if n == room && len(r.buf) < min(maxReadBuffer, r.limit) {
		r.detach() // as above: an event's data may alias the old buffer
		grown := make([]byte, min(2*len(r.buf), maxReadBuffer, r.limit))
		r.end = copy(grown, r.buf[r.start:r.end])
		r.start, r.buf = 0, grown
	}
	return nil
}
