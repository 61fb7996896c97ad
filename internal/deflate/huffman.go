package deflate

import "math/bits"

// RFC 1951 3.2.5: length symbols 257..285 and distance codes 0..29, their bases and extra bits.
var (
	lengthCode  [maxMatch + 1]uint16
	lengthBase  [29]uint16
	lengthExtra = [29]uint8{0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0}
	distBase    [30]uint16
	distExtra   = [30]uint8{0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13}
	// The order in which code-length code lengths are sent.
	clOrder = [19]uint8{16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15}
)

func init() {
	l := minMatch
	for c := range 28 {
		lengthBase[c] = uint16(l)
		for range 1 << lengthExtra[c] {
			lengthCode[l] = uint16(257 + c)
			l++
		}
	}
	lengthBase[28] = maxMatch
	lengthCode[maxMatch] = 285 // 258 has its own code: 284 with all extra bits set would also say 258
	d := 1
	for c := range 30 {
		distBase[c] = uint16(d)
		d += 1 << distExtra[c]
	}
}

func distCode(d int) int {
	x := d - 1
	if x < 4 {
		return x
	}
	nb := bits.Len(uint(x)) - 1
	return 2*nb + (x>>(nb-1))&1
}

// code is one Huffman code: its bit-reversed canonical code (deflate sends codes starting with the most
// significant bit into an LSB-first stream) and its length.
type code struct {
	bits uint16
	len  uint8
}

// canonical fills codes from lengths (RFC 1951 3.2.2), bit-reversed for the LSB-first stream.
func canonical(lens []uint8, codes []code) {
	var count [16]uint16
	for _, l := range lens {
		count[l]++
	}
	count[0] = 0
	var next [16]uint16
	c := uint16(0)
	for b := 1; b < 16; b++ {
		c = (c + count[b-1]) << 1
		next[b] = c
	}
	for s, l := range lens {
		if l == 0 {
			codes[s] = code{}
			continue
		}
		codes[s] = code{bits.Reverse16(next[l]) >> (16 - l), l}
		next[l]++
	}
}
