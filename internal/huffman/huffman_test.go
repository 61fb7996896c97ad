package huffman

import (
	"math/rand/v2"
	"testing"
)

// TestLengths checks, for skewed and flat frequencies, that every code is complete (Kraft sum one), no
// longer than the limit, and that a more frequent symbol never gets a longer code.
func TestLengths(t *testing.T) {
	rnd := rand.New(rand.NewPCG(3, 4))
	fib := make([]uint32, 40) // Fibonacci frequencies make the deepest unlimited trees
	fib[0], fib[1] = 1, 1
	for i := 2; i < len(fib); i++ {
		fib[i] = fib[i-1] + fib[i-2]
	}
	random := make([]uint32, 256)
	for i := range random {
		random[i] = uint32(rnd.ExpFloat64() * 1000)
	}
	var b Builder
	for _, c := range []struct {
		name    string
		freq    []uint32
		maxBits int
	}{
		{"one symbol", []uint32{0, 0, 7, 0}, 15},
		{"none", []uint32{0, 0, 0}, 7},
		{"fibonacci limited to 11", fib, 11},
		{"fibonacci limited to 7", fib[:19], 7},
		{"random 256 to 11", random, 11},
		{"random 256 to 15", random, 15},
	} {
		lens := make([]uint8, len(c.freq))
		longest := b.Lengths(c.freq, c.maxBits, lens)
		kraft, top, coded := 0.0, 0, 0
		for s, l := range lens {
			if l == 0 {
				if c.freq[s] > 0 {
					t.Errorf("%s: symbol %d occurs but has no code", c.name, s)
				}
				continue
			}
			coded++
			kraft += 1 / float64(uint64(1)<<l)
			top = max(top, int(l))
			for s2, l2 := range lens {
				if l2 > 0 && c.freq[s2] > c.freq[s] && l2 > l {
					t.Errorf("%s: symbol %d (freq %d) has a longer code than %d (freq %d)", c.name, s2, c.freq[s2], s, c.freq[s])
				}
			}
		}
		if kraft != 1 || coded < 2 || top > c.maxBits || top != longest {
			t.Errorf("%s: Kraft sum %v, %d codes, longest %d (returned %d), limit %d", c.name, kraft, coded, top, longest, c.maxBits)
		}
	}
}
