package audio_test

import (
	"encoding/binary"
	"math"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/speechgate/speechgate/internal/audio"
)

func tone(hz float64, rate, n int, amp float64) []byte {
	b := make([]byte, 2*n)
	for i := range n {
		binary.LittleEndian.PutUint16(b[2*i:], uint16(int16(amp*math.Sin(2*math.Pi*hz*float64(i)/float64(rate)))))
	}
	return b
}

// rms is the root mean square of PCM16, skipping the filter's settling.
func rms(b []byte, skip int) float64 {
	var sum float64
	n := 0
	for i := 2 * skip; i+1 < len(b); i += 2 {
		s := float64(int16(binary.LittleEndian.Uint16(b[i:])))
		sum += s * s
		n++
	}
	return math.Sqrt(sum / float64(n))
}

func TestDecimator(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		factor    int
		hz        float64
		wantRatio [2]float64 // output RMS over input RMS, low and high bounds
	}{
		{name: "speech band passes 48k to 16k", factor: 3, hz: 1000, wantRatio: [2]float64{0.97, 1.03}},
		{name: "speech band passes 48k to 8k", factor: 6, hz: 800, wantRatio: [2]float64{0.97, 1.03}},
		{name: "passes 48k to 24k", factor: 2, hz: 5000, wantRatio: [2]float64{0.97, 1.03}},
		{name: "above the new Nyquist is stopped, 48k to 16k", factor: 3, hz: 12000, wantRatio: [2]float64{0, 0.01}},
		{name: "above the new Nyquist is stopped, 48k to 8k", factor: 6, hz: 6000, wantRatio: [2]float64{0, 0.01}},
		{name: "a factor of 1 copies", factor: 1, hz: 20000, wantRatio: [2]float64{0.999, 1.001}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			in := tone(tt.hz, 48000, 48000, 10000)
			out := audio.NewDecimator(tt.factor).Process(nil, in)
			if got, want := len(out), len(in)/tt.factor; got != want {
				t.Fatalf("%d bytes out, want %d", got, want)
			}
			ratio := rms(out, 100) / rms(in, 100*tt.factor)
			if ratio < tt.wantRatio[0] || ratio > tt.wantRatio[1] {
				t.Errorf("RMS ratio %.4f, want from %v to %v", ratio, tt.wantRatio[0], tt.wantRatio[1])
			}
		})
	}
}

// TestDecimatorPieces checks that the output does not depend on how the
// input was cut, odd cuts through a sample included.
func TestDecimatorPieces(t *testing.T) {
	t.Parallel()
	in := tone(440, 48000, 4801, 12000)
	whole := audio.NewDecimator(6).Process(nil, in)
	for _, size := range []int{1, 3, 7, 960, 1921} {
		d := audio.NewDecimator(6)
		var got []byte
		for rest := in; len(rest) > 0; {
			n := min(size, len(rest))
			got = d.Process(got, rest[:n])
			rest = rest[n:]
		}
		if diff := cmp.Diff(whole, got); diff != "" {
			t.Errorf("pieces of %d bytes: output differs (-whole +pieces):\n%.400s", size, diff)
		}
	}
}
