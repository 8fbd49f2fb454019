package audio_test

import (
	"testing"

	"github.com/speechgate/speechgate/internal/audio"
)

func BenchmarkAppendWAVHeader(b *testing.B) {
	b.ReportAllocs()
	buf := make([]byte, 0, audio.WAVHeaderSize)
	for b.Loop() {
		buf = audio.AppendWAVHeader(buf[:0], 24000, 1, 16, audio.UnknownSize)
	}
}

func BenchmarkTimeline(b *testing.B) {
	b.ReportAllocs()
	tl := audio.NewTimeline(2, 44100)
	for b.Loop() {
		tl.Advance(960)
	}
}

func BenchmarkMulawEncode(b *testing.B) {
	b.SetBytes(2)
	for i := 0; b.Loop(); i++ {
		audio.MulawEncode(int16(i))
	}
}
