// Package audio holds the small pieces of audio arithmetic the gateway needs on
// its streaming path: a streaming WAV header, a timeline that turns byte counts
// into millisecond offsets without drift, G.711 companding, and lowering a
// sample rate by a whole factor.
package audio

import "encoding/binary"

// WAVHeaderSize is the size of the canonical PCM WAV header that AppendWAVHeader writes.
const WAVHeaderSize = 44

// UnknownSize is the RIFF and data chunk size written when the length of a
// stream is not known in advance. Readers that meet it read to the end of the
// data, which is what every common player does for streamed WAV.
const UnknownSize = 0xFFFFFFFF

// AppendWAVHeader appends a 44-byte PCM WAV header to dst. dataSize is the
// length of the sample data in bytes, or UnknownSize for a stream.
func AppendWAVHeader(dst []byte, sampleRate, channels, bitsPerSample int, dataSize uint32) []byte {
	blockAlign := channels * bitsPerSample / 8
	riffSize := uint32(UnknownSize)
	if dataSize != UnknownSize {
		riffSize = dataSize + WAVHeaderSize - 8
	}
	dst = append(dst, "RIFF"...)
	dst = binary.LittleEndian.AppendUint32(dst, riffSize)
	dst = append(dst, "WAVEfmt "...)
	dst = binary.LittleEndian.AppendUint32(dst, 16) // fmt chunk size for PCM
	dst = binary.LittleEndian.AppendUint16(dst, 1)  // format tag: PCM
	dst = binary.LittleEndian.AppendUint16(dst, uint16(channels))
	dst = binary.LittleEndian.AppendUint32(dst, uint32(sampleRate))
	dst = binary.LittleEndian.AppendUint32(dst, uint32(sampleRate*blockAlign))
	dst = binary.LittleEndian.AppendUint16(dst, uint16(blockAlign))
	dst = binary.LittleEndian.AppendUint16(dst, uint16(bitsPerSample))
	dst = append(dst, "data"...)
	dst = binary.LittleEndian.AppendUint32(dst, dataSize)
	return dst
}

// PatchWAVSizes rewrites the RIFF and data sizes of a header written by
// AppendWAVHeader once the total file size is known, for callers that write the
// stream to a seekable file.
func PatchWAVSizes(header []byte, fileSize uint64) {
	if len(header) < WAVHeaderSize || fileSize < WAVHeaderSize {
		return
	}
	data := min(fileSize-WAVHeaderSize, UnknownSize-WAVHeaderSize)
	binary.LittleEndian.PutUint32(header[4:8], uint32(data+WAVHeaderSize-8))
	binary.LittleEndian.PutUint32(header[40:44], uint32(data))
}

// Timeline converts a running count of audio bytes into millisecond offsets.
// Offsets come from the running sample count, so the durations of consecutive
// chunks add up exactly to the offset of the next one, however the bytes are
// split.
type Timeline struct {
	bytesPerSample uint64
	sampleRate     uint64
	bytes          uint64
}

// NewTimeline returns a Timeline for mono audio of the given sample size and rate.
func NewTimeline(bytesPerSample, sampleRate int) Timeline {
	return Timeline{bytesPerSample: uint64(bytesPerSample), sampleRate: uint64(sampleRate)}
}

// Advance records n more bytes and returns the chunk's offset and duration in milliseconds.
func (t *Timeline) Advance(n int) (offsetMS, durationMS uint32) {
	start := t.ms()
	t.bytes += uint64(n)
	end := t.ms()
	return start, end - start
}

// Elapsed returns the length in milliseconds of all audio recorded so far.
func (t *Timeline) Elapsed() uint32 { return t.ms() }

func (t *Timeline) ms() uint32 {
	samples := t.bytes / t.bytesPerSample
	return uint32(samples * 1000 / t.sampleRate)
}
