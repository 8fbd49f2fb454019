package audio

import "math"

// Decimator lowers the sample rate of PCM16 mono audio by a whole factor
// (48 kHz to 24, 16 or 8 kHz), as a stream: pieces of any length go in,
// and the output is the same however the input was cut. It low-passes
// before it drops samples, so that what lies above the new rate's Nyquist
// frequency does not fold back as audible noise.
type Decimator struct {
	factor int
	taps   []float32
	buf    []float32 // the last len(taps)-1 samples, then the new ones
	next   int       // index in buf of the newest sample of the next output
	carry  byte      // the first byte of a sample split between pieces
	held   bool
}

// tapsPerFactor sets the filter's length: 16 taps per unit of the factor
// give a transition band about a tenth of the output rate wide and more
// than 50 dB of stopband with a Blackman window, at a group delay of under
// a millisecond at 48 kHz.
const tapsPerFactor = 16

// NewDecimator returns a decimator by factor (1: a copy).
func NewDecimator(factor int) *Decimator {
	d := &Decimator{factor: max(factor, 1)}
	if d.factor == 1 {
		return d
	}
	n := tapsPerFactor*d.factor + 1
	cutoff := 0.45 / float64(d.factor) // of the input rate: just under the new Nyquist
	d.taps = make([]float32, n)
	var sum float64
	taps := make([]float64, n)
	for i := range taps {
		x := float64(i) - float64(n-1)/2
		sinc := 2 * cutoff
		if x != 0 {
			sinc = math.Sin(2*math.Pi*cutoff*x) / (math.Pi * x)
		}
		window := 0.42 - 0.5*math.Cos(2*math.Pi*float64(i)/float64(n-1)) + 0.08*math.Cos(4*math.Pi*float64(i)/float64(n-1))
		taps[i] = sinc * window
		sum += taps[i]
	}
	for i := range taps {
		d.taps[i] = float32(taps[i] / sum) // unity gain at DC
	}
	d.buf = make([]float32, n-1)
	d.next = n - 1
	return d
}

// Process appends to dst the decimated audio of pcm and returns it. A
// sample split between two pieces is joined.
func (d *Decimator) Process(dst, pcm []byte) []byte {
	if d.factor == 1 {
		return append(dst, pcm...)
	}
	if d.held && len(pcm) > 0 {
		d.buf = append(d.buf, float32(int16(uint16(d.carry)|uint16(pcm[0])<<8)))
		pcm, d.held = pcm[1:], false
	}
	for len(pcm) >= 2 {
		d.buf = append(d.buf, float32(int16(uint16(pcm[0])|uint16(pcm[1])<<8)))
		pcm = pcm[2:]
	}
	if len(pcm) == 1 {
		d.carry, d.held = pcm[0], true
	}
	n := len(d.taps)
	for ; d.next < len(d.buf); d.next += d.factor {
		var y float32
		window := d.buf[d.next-n+1 : d.next+1]
		for k, h := range d.taps {
			y += h * window[n-1-k]
		}
		s := int16(max(math.MinInt16, min(math.MaxInt16, math.Round(float64(y)))))
		dst = append(dst, byte(s), byte(uint16(s)>>8))
	}
	// Keep the history the next outputs need.
	drop := len(d.buf) - (n - 1)
	copy(d.buf, d.buf[drop:])
	d.buf = d.buf[:n-1]
	d.next -= drop
	return dst
}
