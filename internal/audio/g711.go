package audio

// MulawEncode compands one signed 16-bit sample to G.711 μ-law.
func MulawEncode(s int16) byte {
	const bias, clip = 0x84, 32635
	x := int32(s)
	sign := byte(0)
	if x < 0 {
		x = -x
		sign = 0x80
	}
	x = min(x, clip) + bias
	exp := byte(7)
	for mask := int32(0x4000); x&mask == 0 && exp > 0; mask >>= 1 {
		exp--
	}
	mantissa := byte(x>>(exp+3)) & 0x0F
	return ^(sign | exp<<4 | mantissa)
}

// MulawDecode expands one G.711 μ-law byte to a signed 16-bit sample.
func MulawDecode(b byte) int16 {
	b = ^b
	exp := (b >> 4) & 0x07
	x := (int32(b&0x0F)<<3 + 0x84) << exp
	x -= 0x84
	if b&0x80 != 0 {
		return int16(-x)
	}
	return int16(x)
}

// AlawEncode compands one signed 16-bit sample to G.711 A-law.
func AlawEncode(s int16) byte {
	x := int32(s) >> 3 // A-law works on 13-bit magnitudes
	sign := byte(0x80)
	if x < 0 {
		x = -x - 1
		sign = 0
	}
	var out byte
	if x < 32 {
		out = byte(x >> 1)
	} else {
		exp := byte(1)
		for v := x >> 6; v > 0 && exp < 7; v >>= 1 {
			exp++
		}
		out = exp<<4 | byte(x>>exp)&0x0F
	}
	return (out | sign) ^ 0x55
}

// AlawDecode expands one G.711 A-law byte to a signed 16-bit sample.
func AlawDecode(b byte) int16 {
	b ^= 0x55
	exp := (b >> 4) & 0x07
	x := int32(b&0x0F)<<4 + 8
	if exp != 0 {
		x = (x + 0x100) << (exp - 1)
	}
	if b&0x80 == 0 {
		return int16(-x)
	}
	return int16(x)
}

// Law is a G.711 companding law.
type Law int

// The two G.711 laws.
const (
	MuLaw Law = iota + 1
	ALaw
)

// G711 encodes a stream of PCM16 (little-endian) into G.711, piece by
// piece: a sample split between two pieces is carried to the next.
type G711 struct {
	compand func(int16) byte
	carry   byte
	held    bool
}

// NewG711 returns an encoder for law.
func NewG711(law Law) *G711 {
	if law == ALaw {
		return &G711{compand: AlawEncode}
	}
	return &G711{compand: MulawEncode}
}

// Encode appends the encoding of pcm to dst: one byte per whole sample,
// the sample begun by an odd last byte included with the next piece.
func (e *G711) Encode(dst, pcm []byte) []byte {
	if e.held && len(pcm) > 0 {
		dst = append(dst, e.compand(int16(uint16(e.carry)|uint16(pcm[0])<<8)))
		pcm, e.held = pcm[1:], false
	}
	for len(pcm) >= 2 {
		dst = append(dst, e.compand(int16(uint16(pcm[0])|uint16(pcm[1])<<8)))
		pcm = pcm[2:]
	}
	if len(pcm) == 1 {
		e.carry, e.held = pcm[0], true
	}
	return dst
}
