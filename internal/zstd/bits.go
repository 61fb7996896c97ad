package zstd

import "math/bits"

// bitWriter produces zstd's backward bitstreams: bits are packed little-endian, LSB first, and the
// decoder reads them starting from the end, so whatever is written last is read first.
type bitWriter struct {
	out  []byte
	acc  uint64
	nacc uint
}

func (w *bitWriter) reset(out []byte) {
	w.out = out
	w.acc = 0
	w.nacc = 0
}

// add appends the low nb bits of v; nb must be at most 32. Flushing whenever 32 bits are pending
// keeps the accumulator from overflowing without a branch per byte.
func (w *bitWriter) add(v uint32, nb uint) {
	w.acc |= (uint64(v) & (1<<nb - 1)) << w.nacc
	w.nacc += nb
	if w.nacc >= 32 {
		w.out = append(w.out, byte(w.acc), byte(w.acc>>8), byte(w.acc>>16), byte(w.acc>>24))
		w.acc >>= 32
		w.nacc -= 32
	}
}

// close writes the end marker (a single 1 bit that tells the decoder where the stream starts) and
// pads to a byte boundary.
func (w *bitWriter) close() []byte {
	w.add(1, 1)
	for w.nacc > 0 {
		w.out = append(w.out, byte(w.acc))
		w.acc >>= 8
		if w.nacc < 8 {
			w.nacc = 0
		} else {
			w.nacc -= 8
		}
	}
	return w.out
}

// highBit returns the index of the highest set bit; v must not be zero.
func highBit(v uint32) uint32 { return uint32(bits.Len32(v)) - 1 }

// Costs are fixed-point bit counts with costShift fraction bits. They are computed with integer
// arithmetic only, so every decision that depends on them is the same on every platform (floating
// point results may differ when a compiler fuses multiply-adds).
const costShift = 8

const log2TabBits = 10

var log2Tab [1<<log2TabBits + 1]uint32 // log2(1+i/1024) in Q16

func init() {
	for i := range log2Tab {
		// Integer log2 of a mantissa in [1,2] by repeated squaring, 16 fraction bits, Q30 mantissa.
		m := uint64(1<<30) + uint64(i)<<(30-log2TabBits)
		var r uint32
		for b := 15; b >= 0; b-- {
			m = m * m >> 30
			if m >= 2<<30 {
				m >>= 1
				r |= 1 << uint(b)
			}
		}
		if i == 1<<log2TabBits {
			r = 1 << 16
		}
		log2Tab[i] = r
	}
}

// log2Q16 approximates log2(v) in Q16 for v >= 1 by table lookup of the top mantissa bits.
func log2Q16(v uint32) uint32 {
	if v == 0 {
		return 0
	}
	hb := highBit(v)
	var frac uint32
	if hb >= log2TabBits {
		frac = (v >> (hb - log2TabBits)) & (1<<log2TabBits - 1)
	} else {
		frac = (v << (log2TabBits - hb)) & (1<<log2TabBits - 1)
	}
	return hb<<16 + log2Tab[frac]
}

// log2Cost returns log2(v) in cost units.
func log2Cost(v uint32) uint32 { return log2Q16(v) >> (16 - costShift) }
