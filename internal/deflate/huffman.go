package deflate

import (
	"math/bits"
	"slices"
)

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

// huffman builds length-limited codes. Its scratch is reused between calls.
type huffman struct {
	leaves []uint64
	weight []int64
	parent []int32
	depth  []uint8
}

// lengths sets lens[i] to the code length of symbol i for frequencies freq (zero: not coded), no code
// longer than maxBits. At least two symbols always get a code, so every code is complete, which strict
// inflaters require. The result depends only on freq.
func (h *huffman) lengths(freq []int32, maxBits int, lens []uint8) {
	clear(lens)
	// Sorted by frequency then symbol, packed in one integer so that the sort is a plain one.
	h.leaves = h.leaves[:0]
	for s, f := range freq {
		if f > 0 {
			h.leaves = append(h.leaves, uint64(f)<<16|uint64(s))
		}
	}
	for s := 0; len(h.leaves) < 2; s++ {
		if freq[s] == 0 {
			h.leaves = append(h.leaves, uint64(s))
		}
	}
	slices.Sort(h.leaves)
	m := len(h.leaves)
	// Two-queue Huffman: leaves in order, internal nodes are made in non-decreasing weight.
	nodes := 2*m - 1
	h.weight = grow(h.weight, nodes)
	h.parent = grow(h.parent, nodes)
	h.depth = grow(h.depth, nodes)
	for i, l := range h.leaves {
		h.weight[i] = int64(l >> 16)
	}
	li, ni := 0, m // next unused leaf, next unused internal node
	pick := func(next int) int {
		if li < m && (ni >= next || h.weight[li] <= h.weight[ni]) {
			li++
			return li - 1
		}
		ni++
		return ni - 1
	}
	for next := m; next < nodes; next++ {
		a := pick(next)
		b := pick(next)
		h.weight[next] = h.weight[a] + h.weight[b]
		h.parent[a], h.parent[b] = int32(next), int32(next)
	}
	h.depth[nodes-1] = 0
	var count [64]int
	maxDepth := 0
	for i := nodes - 2; i >= 0; i-- {
		h.depth[i] = h.depth[h.parent[i]] + 1
		if i < m {
			count[h.depth[i]]++
			maxDepth = max(maxDepth, int(h.depth[i]))
		}
	}
	// Too deep: move pairs of the deepest leaves up, keeping the tree full (the JPEG adjustment).
	for d := maxDepth; d > maxBits; d-- {
		for count[d] > 0 {
			j := d - 2
			for count[j] == 0 {
				j--
			}
			count[d] -= 2
			count[d-1]++
			count[j+1] += 2
			count[j]--
		}
	}
	// The rarest symbols get the longest codes.
	i := 0
	for d := min(maxDepth, maxBits); d >= 1; d-- {
		for range count[d] {
			lens[uint16(h.leaves[i])] = uint8(d)
			i++
		}
	}
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
