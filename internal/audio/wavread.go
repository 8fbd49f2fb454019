package audio

import (
	"encoding/binary"
	"errors"
	"io"
)

// WAVFormat is what a WAV file's header says of its audio.
type WAVFormat struct {
	// Tag is the format tag: 1 for PCM.
	Tag           uint16
	Channels      uint16
	SampleRate    uint32
	BitsPerSample uint16
	// DataSize is what the data chunk's header claims: UnknownSize for a
	// stream, and possibly more than the file holds.
	DataSize uint32
}

// MonoPCM16 reports whether the audio is mono 16-bit integer PCM.
func (f WAVFormat) MonoPCM16() bool { return f.Tag == 1 && f.Channels == 1 && f.BitsPerSample == 16 }

// BytesPerSecond is the audio's byte rate.
func (f WAVFormat) BytesPerSecond() int {
	return int(f.SampleRate) * int(f.Channels) * int(f.BitsPerSample) / 8
}

// ErrNotWAV says the input does not start with a RIFF/WAVE header.
var ErrNotWAV = errors.New("not a WAV file")

// ReadWAVHeader reads a RIFF/WAVE header from r up to the start of its
// data, which r is then positioned at. It returns ErrNotWAV, having read
// nothing useful, for input without a header.
func ReadWAVHeader(r io.Reader) (WAVFormat, error) {
	var riff [12]byte
	if _, err := io.ReadFull(r, riff[:]); err != nil || string(riff[0:4]) != "RIFF" || string(riff[8:12]) != "WAVE" {
		return WAVFormat{}, ErrNotWAV
	}
	var f WAVFormat
	for {
		var chunk [8]byte
		if _, err := io.ReadFull(r, chunk[:]); err != nil {
			return WAVFormat{}, errors.New("the WAV file ends before its data")
		}
		size := binary.LittleEndian.Uint32(chunk[4:])
		switch string(chunk[:4]) {
		case "fmt ":
			if size < 16 || size > 1<<16 {
				return WAVFormat{}, errors.New("the WAV file's format chunk is malformed")
			}
			b := make([]byte, size+size%2)
			if _, err := io.ReadFull(r, b); err != nil {
				return WAVFormat{}, errors.New("the WAV file's format chunk is short")
			}
			f.Tag, f.Channels = binary.LittleEndian.Uint16(b[0:]), binary.LittleEndian.Uint16(b[2:])
			f.SampleRate, f.BitsPerSample = binary.LittleEndian.Uint32(b[4:]), binary.LittleEndian.Uint16(b[14:])
		case "data":
			if f.SampleRate == 0 || f.Channels == 0 || f.BitsPerSample == 0 {
				return WAVFormat{}, errors.New("the WAV file has no usable format chunk before its data")
			}
			f.DataSize = size
			return f, nil
		default:
			if _, err := io.CopyN(io.Discard, r, int64(size)+int64(size%2)); err != nil {
				return WAVFormat{}, errors.New("the WAV file ends before its data")
			}
		}
	}
}
