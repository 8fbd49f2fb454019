package audio_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/speechgate/speechgate/internal/audio"
)

func TestAppendWAVHeader(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name                     string
		rate, channels, bits     int
		dataSize                 uint32
		wantRIFF, wantByteRate   uint32
		wantBlockAlign, wantBits uint16
	}{
		{name: "24 kHz stream", rate: 24000, channels: 1, bits: 16, dataSize: audio.UnknownSize, wantRIFF: audio.UnknownSize, wantByteRate: 48000, wantBlockAlign: 2, wantBits: 16},
		{name: "44.1 kHz known size", rate: 44100, channels: 1, bits: 16, dataSize: 1000, wantRIFF: 1036, wantByteRate: 88200, wantBlockAlign: 2, wantBits: 16},
		{name: "8 kHz stereo", rate: 8000, channels: 2, bits: 16, dataSize: 4, wantRIFF: 40, wantByteRate: 32000, wantBlockAlign: 4, wantBits: 16},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			prefix := []byte("keep")
			h := audio.AppendWAVHeader(prefix, tt.rate, tt.channels, tt.bits, tt.dataSize)
			if !bytes.HasPrefix(h, []byte("keep")) {
				t.Fatal("AppendWAVHeader dropped the bytes it appends to")
			}
			h = h[4:]
			if len(h) != audio.WAVHeaderSize {
				t.Fatalf("header is %d bytes, want %d", len(h), audio.WAVHeaderSize)
			}
			le := binary.LittleEndian
			got := []any{string(h[0:4]), le.Uint32(h[4:]), string(h[8:16]), le.Uint32(h[16:]), le.Uint16(h[20:]),
				le.Uint16(h[22:]), le.Uint32(h[24:]), le.Uint32(h[28:]), le.Uint16(h[32:]), le.Uint16(h[34:]), string(h[36:40]), le.Uint32(h[40:])}
			want := []any{"RIFF", tt.wantRIFF, "WAVEfmt ", uint32(16), uint16(1),
				uint16(tt.channels), uint32(tt.rate), tt.wantByteRate, tt.wantBlockAlign, tt.wantBits, "data", tt.dataSize}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Fatalf("header fields differ (-want +got):\n%s", diff)
			}
		})
	}
}

func TestPatchWAVSizes(t *testing.T) {
	t.Parallel()
	h := audio.AppendWAVHeader(nil, 16000, 1, 16, audio.UnknownSize)
	audio.PatchWAVSizes(h, 44+3200)
	want := audio.AppendWAVHeader(nil, 16000, 1, 16, 3200)
	if !bytes.Equal(h, want) {
		t.Fatalf("patched header = %x, want %x", h, want)
	}
}

func TestTimelineTilesWithoutDrift(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name           string
		bytesPerSample int
		rate           int
		chunks         []int
		wantTotal      uint32
	}{
		// 960 bytes at 24 kHz PCM16 is exactly 20 ms.
		{name: "pcm 24k even", bytesPerSample: 2, rate: 24000, chunks: []int{960, 960, 960}, wantTotal: 60},
		// 44.1 kHz chunks are not whole milliseconds; the total must still be exact.
		{name: "pcm 44.1k ragged", bytesPerSample: 2, rate: 44100, chunks: repeat(960, 441), wantTotal: 4800},
		// A chunk may end inside a sample.
		{name: "odd split", bytesPerSample: 2, rate: 8000, chunks: []int{1, 15, 1, 15}, wantTotal: 2},
		{name: "mulaw 8k", bytesPerSample: 1, rate: 8000, chunks: []int{800, 800}, wantTotal: 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tl := audio.NewTimeline(tt.bytesPerSample, tt.rate)
			next := uint32(0)
			for i, n := range tt.chunks {
				off, dur := tl.Advance(n)
				if off != next {
					t.Fatalf("chunk %d: offset %d ms, want %d (the end of the previous chunk)", i, off, next)
				}
				next = off + dur
			}
			if next != tt.wantTotal || tl.Elapsed() != tt.wantTotal {
				t.Fatalf("total = %d ms (Elapsed %d), want %d", next, tl.Elapsed(), tt.wantTotal)
			}
		})
	}
}

func repeat(n, times int) []int {
	out := make([]int, times)
	for i := range out {
		out[i] = n
	}
	return out
}

func TestG711(t *testing.T) {
	t.Parallel()
	// Reference values computed with Python's audioop (lin2ulaw, lin2alaw and back).
	tests := []struct {
		name   string
		encode func(int16) byte
		decode func(byte) int16
		in     int16
		code   byte
		back   int16
	}{
		{name: "mulaw zero", encode: audio.MulawEncode, decode: audio.MulawDecode, in: 0, code: 0xFF, back: 0},
		{name: "mulaw max", encode: audio.MulawEncode, decode: audio.MulawDecode, in: 32767, code: 0x80, back: 32124},
		{name: "mulaw min", encode: audio.MulawEncode, decode: audio.MulawDecode, in: -32768, code: 0x00, back: -32124},
		{name: "mulaw 1000", encode: audio.MulawEncode, decode: audio.MulawDecode, in: 1000, code: 0xCE, back: 988},
		{name: "mulaw -1000", encode: audio.MulawEncode, decode: audio.MulawDecode, in: -1000, code: 0x4E, back: -988},
		{name: "mulaw 12345", encode: audio.MulawEncode, decode: audio.MulawDecode, in: 12345, code: 0x97, back: 12412},
		{name: "alaw zero", encode: audio.AlawEncode, decode: audio.AlawDecode, in: 0, code: 0xD5, back: 8},
		{name: "alaw max", encode: audio.AlawEncode, decode: audio.AlawDecode, in: 32767, code: 0xAA, back: 32256},
		{name: "alaw min", encode: audio.AlawEncode, decode: audio.AlawDecode, in: -32768, code: 0x2A, back: -32256},
		{name: "alaw 1000", encode: audio.AlawEncode, decode: audio.AlawDecode, in: 1000, code: 0xFA, back: 1008},
		{name: "alaw -1000", encode: audio.AlawEncode, decode: audio.AlawDecode, in: -1000, code: 0x7A, back: -1008},
		{name: "alaw 12345", encode: audio.AlawEncode, decode: audio.AlawDecode, in: 12345, code: 0xBD, back: 12544},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := tt.encode(tt.in); got != tt.code {
				t.Fatalf("encode(%d) = %#x, want %#x", tt.in, got, tt.code)
			}
			if got := tt.decode(tt.code); got != tt.back {
				t.Fatalf("decode(%#x) = %d, want %d", tt.code, got, tt.back)
			}
		})
	}
}

func TestG711RoundTrip(t *testing.T) {
	t.Parallel()
	for b := range 256 {
		if got := audio.AlawEncode(audio.AlawDecode(byte(b))); got != byte(b) {
			t.Errorf("alaw: encode(decode(%#x)) = %#x", b, got)
		}
		if b == 0x7F { // μ-law has two codes for zero; 0xFF is the canonical one
			continue
		}
		if got := audio.MulawEncode(audio.MulawDecode(byte(b))); got != byte(b) {
			t.Errorf("mulaw: encode(decode(%#x)) = %#x", b, got)
		}
	}
}

// TestG711SplitsSamplesAcrossPieces: however the PCM is cut, even inside a
// sample, the encoding is that of the whole.
func TestG711SplitsSamplesAcrossPieces(t *testing.T) {
	t.Parallel()
	pcm := make([]byte, 2000)
	for i := range pcm {
		pcm[i] = byte(i * 37)
	}
	for _, law := range []audio.Law{audio.MuLaw, audio.ALaw} {
		whole := audio.NewG711(law).Encode(nil, pcm)
		for _, cut := range []int{1, 3, 7, 960} {
			e := audio.NewG711(law)
			var got []byte
			for i := 0; i < len(pcm); i += cut {
				got = e.Encode(got, pcm[i:min(i+cut, len(pcm))])
			}
			if !bytes.Equal(got, whole) {
				t.Errorf("law %d, pieces of %d bytes: the encoding differs from the whole's", law, cut)
			}
		}
		if len(whole) != 1000 || whole[0] != map[audio.Law]func(int16) byte{audio.MuLaw: audio.MulawEncode, audio.ALaw: audio.AlawEncode}[law](int16(uint16(pcm[0])|uint16(pcm[1])<<8)) {
			t.Errorf("law %d: %d bytes, first %d", law, len(whole), whole[0])
		}
	}
}

func TestReadWAVHeader(t *testing.T) {
	t.Parallel()
	header := audio.AppendWAVHeader(nil, 16000, 1, 16, 32000)
	// A LIST chunk before the data, as many tools write.
	withList := append(append(append([]byte{}, header[:36]...), "LIST\x04\x00\x00\x00abcd"...), header[36:]...)
	for name, in := range map[string][]byte{"canonical": header, "with a LIST chunk": withList} {
		r := bytes.NewReader(append(in, 1, 2, 3))
		f, err := audio.ReadWAVHeader(r)
		if err != nil || f.Tag != 1 || f.Channels != 1 || f.SampleRate != 16000 || f.BitsPerSample != 16 || f.DataSize != 32000 || f.BytesPerSecond() != 32000 {
			t.Errorf("%s: %+v, %v", name, f, err)
		}
		if rest, _ := io.ReadAll(r); !bytes.Equal(rest, []byte{1, 2, 3}) {
			t.Errorf("%s: the reader is not at the data: %v", name, rest)
		}
	}
	for name, in := range map[string][]byte{"MP3": {0xFF, 0xFB, 0x90, 0x00}, "text": []byte("# speechgate README")} {
		if _, err := audio.ReadWAVHeader(bytes.NewReader(in)); !errors.Is(err, audio.ErrNotWAV) {
			t.Errorf("%s: err = %v, want ErrNotWAV", name, err)
		}
	}
	if _, err := audio.ReadWAVHeader(bytes.NewReader(header[:30])); err == nil || errors.Is(err, audio.ErrNotWAV) {
		t.Errorf("a cut header: err = %v", err)
	}
}
