// Package huffman holds length-limited Huffman code construction, shared by the deflate and zstd
// encoders (each assigns the codes itself: the two formats order canonical codes differently).
package huffman

import "slices"

// Builder computes code lengths. Its scratch is reused between calls; it is not safe for concurrent use.
type Builder struct {
	leaves []uint64
	weight []uint64
	parent []int32
	depth  []uint8
}

// Lengths sets lens[s] to the code length of symbol s for frequencies freq (0: no code), none longer
// than maxBits, and returns the longest. The code is complete (Kraft sum exactly one), as zstd requires
// and strict inflaters check: when fewer than two symbols occur, the first unused ones get a code too.
// The result depends only on freq. len(freq) must be at most 2^maxBits and 2^16.
func (b *Builder) Lengths(freq []uint32, maxBits int, lens []uint8) int {
	clear(lens)
	// Sorted by frequency then symbol, packed in one integer so that the sort is a plain one.
	b.leaves = b.leaves[:0]
	for s, f := range freq {
		if f > 0 {
			b.leaves = append(b.leaves, uint64(f)<<16|uint64(s))
		}
	}
	for s := 0; len(b.leaves) < 2; s++ {
		if freq[s] == 0 {
			b.leaves = append(b.leaves, uint64(s))
		}
	}
	slices.Sort(b.leaves)
	m := len(b.leaves)
	// Two-queue Huffman: leaves in order, internal nodes are made in non-decreasing weight.
	nodes := 2*m - 1
	b.weight = grow(b.weight, nodes)
	b.parent = grow(b.parent, nodes)
	b.depth = grow(b.depth, nodes)
	for i, l := range b.leaves {
		b.weight[i] = l >> 16
	}
	li, ni := 0, m // next unused leaf, next unused internal node
	pick := func(next int) int {
		if li < m && (ni >= next || b.weight[li] <= b.weight[ni]) {
			li++
			return li - 1
		}
		ni++
		return ni - 1
	}
	for next := m; next < nodes; next++ {
		x := pick(next)
		y := pick(next)
		b.weight[next] = b.weight[x] + b.weight[y]
		b.parent[x], b.parent[y] = int32(next), int32(next)
	}
	b.depth[nodes-1] = 0
	var count [64]int
	maxDepth := 0
	for i := nodes - 2; i >= 0; i-- {
		b.depth[i] = b.depth[b.parent[i]] + 1
		if i < m {
			count[b.depth[i]]++
			maxDepth = max(maxDepth, int(b.depth[i]))
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
	longest := min(maxDepth, maxBits)
	i := 0
	for d := longest; d >= 1; d-- {
		for range count[d] {
			lens[uint16(b.leaves[i])] = uint8(d)
			i++
		}
	}
	return longest
}

func grow[T any](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, n)
	}
	return s[:n]
}
