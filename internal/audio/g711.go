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
