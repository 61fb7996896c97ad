package zstd

import "slices"

const huffMaxBits = 11

// huffEnc builds and applies the literals' prefix code (RFC 8878 section 4.2).
type huffEnc struct {
	freq    [256]uint32
	nbits   [256]uint8
	code    [256]uint16
	syms    []huffNode
	nodes   []huffNode
	weights [256]uint8
	depth   [512]uint8
	wfse    fseTable
	bw      bitWriter
}

type huffNode struct {
	freq   uint32
	sym    int16 // leaf symbol, or -1
	parent int32
}

// buildLengths computes code lengths for the symbols of h.freq, at most huffMaxBits long, forming a
// complete prefix code (zstd derives the last weight, so the Kraft sum must be exactly one). It
// returns the longest length, or 0 when fewer than two symbols occur.
func (h *huffEnc) buildLengths() int {
	h.syms = h.syms[:0]
	for s := range h.freq {
		h.nbits[s] = 0
		if h.freq[s] > 0 {
			h.syms = append(h.syms, huffNode{freq: h.freq[s], sym: int16(s)})
		}
	}
	n := len(h.syms)
	if n < 2 {
		return 0
	}
	slices.SortFunc(h.syms, func(a, b huffNode) int {
		if a.freq != b.freq {
			return int(a.freq) - int(b.freq)
		}
		return int(a.sym) - int(b.sym)
	})
	// Two-queue Huffman: leaves sorted by frequency, internal nodes are created in nondecreasing
	// order, so the two smallest are always at the heads of the two queues.
	h.nodes = append(h.nodes[:0], h.syms...)
	li, ni := 0, n
	pick := func() int {
		if li < n && (ni >= len(h.nodes) || h.nodes[li].freq <= h.nodes[ni].freq) {
			li++
			return li - 1
		}
		ni++
		return ni - 1
	}
	for k := 0; k < n-1; k++ {
		a := pick()
		b := pick()
		h.nodes = append(h.nodes, huffNode{freq: h.nodes[a].freq + h.nodes[b].freq, sym: -1, parent: -1})
		p := int32(len(h.nodes) - 1)
		h.nodes[a].parent = p
		h.nodes[b].parent = p
	}
	// Depths: parents come after children, so walk from the root down.
	depth := h.depth[:len(h.nodes)]
	depth[len(depth)-1] = 0
	for i := len(h.nodes) - 2; i >= 0; i-- {
		depth[i] = depth[h.nodes[i].parent] + 1
	}
	maxLen := 0
	for i := 0; i < n; i++ {
		d := int(depth[i])
		if d > maxLen {
			maxLen = d
		}
	}
	if maxLen > huffMaxBits {
		h.limit(depth[:n])
		maxLen = huffMaxBits
	}
	for i := 0; i < n; i++ {
		h.nbits[h.syms[i].sym] = depth[i]
	}
	return maxLen
}

// limit shortens lengths to huffMaxBits and restores a Kraft sum of exactly one, lengthening the
// rarest symbols first and then shortening the most frequent ones that fit the remaining slack.
// d holds the lengths of h.syms, in increasing frequency order.
func (h *huffEnc) limit(d []uint8) {
	const full = 1 << huffMaxBits
	kraft := 0
	for i := range d {
		if d[i] > huffMaxBits {
			d[i] = huffMaxBits
		}
		kraft += full >> d[i]
	}
	for kraft > full {
		// Lengthen the rarest symbol among those with the longest length below the limit.
		best := -1
		for i := range d {
			if d[i] < huffMaxBits && (best < 0 || d[i] > d[best]) {
				best = i
			}
		}
		kraft -= full >> (d[best] + 1)
		d[best]++
	}
	for i := len(d) - 1; i >= 0 && kraft < full; i-- {
		for d[i] > 1 && kraft+full>>d[i] <= full {
			kraft += full >> d[i]
			d[i]--
		}
	}
}

// assignCodes gives canonical codes: by increasing weight (decreasing length), then symbol order,
// the first codes being the smallest values.
func (h *huffEnc) assignCodes(maxLen int) {
	var count [huffMaxBits + 2]uint32
	for s := 0; s < 256; s++ {
		count[h.nbits[s]]++
	}
	var next [huffMaxBits + 2]uint32
	pos := uint32(0)
	for l := maxLen; l >= 1; l-- {
		next[l] = pos >> uint(maxLen-l)
		pos += count[l] << uint(maxLen-l)
	}
	for s := 0; s < 256; s++ {
		if l := h.nbits[s]; l > 0 {
			h.code[s] = uint16(next[l])
			next[l]++
		}
	}
}

// writeTree appends the Huffman tree description; ok is false when it cannot be represented.
func (h *huffEnc) writeTree(out []byte, maxLen int) ([]byte, bool) {
	last := 255
	for h.nbits[last] == 0 {
		last--
	}
	var wfreq [16]uint32
	for s := 0; s < last; s++ {
		w := uint8(0)
		if h.nbits[s] > 0 {
			w = uint8(maxLen + 1 - int(h.nbits[s]))
		}
		h.weights[s] = w
		wfreq[w]++
	}
	n := last // weights written
	directSize := 1 + (n+1)/2
	start := len(out)
	fseOK := false
	distinct := 0
	for _, f := range wfreq {
		if f > 0 {
			distinct++
		}
	}
	if n >= 2 && distinct >= 2 {
		// FSE-compressed weights, accuracy 5 or 6, whichever is smaller.
		bestLen := -1
		var bestLog uint8
		for log := uint8(5); log <= 6; log++ {
			out = h.writeFSEWeights(out[:start], n, wfreq[:], log)
			if l := len(out) - start; l <= 128 && (bestLen < 0 || l < bestLen) {
				bestLen, bestLog = l, log
			}
		}
		if bestLen > 0 && (n > 128 || bestLen < directSize) {
			out = h.writeFSEWeights(out[:start], n, wfreq[:], bestLog)
			fseOK = true
		}
		if !fseOK {
			out = out[:start]
		}
	}
	if fseOK {
		return out, true
	}
	if n > 128 {
		return out, false
	}
	out = append(out, byte(127+n))
	for i := 0; i < n; i += 2 {
		b := h.weights[i] << 4
		if i+1 < n {
			b |= h.weights[i+1]
		}
		out = append(out, b)
	}
	return out, true
}

// writeFSEWeights writes header byte, table and the two-state weight stream.
func (h *huffEnc) writeFSEWeights(out []byte, n int, wfreq []uint32, log uint8) []byte {
	t := &h.wfse
	t.normalize(wfreq, uint32(n), log)
	hdr := len(out)
	out = append(out, 0)
	out = t.writeHeader(out)
	h.bw.reset(out)
	var st [2]fseState
	st[(n-1)&1].init(t, uint32(h.weights[n-1]))
	st[(n-2)&1].init(t, uint32(h.weights[n-2]))
	for j := n - 3; j >= 0; j-- {
		st[j&1].encode(&h.bw, uint32(h.weights[j]))
	}
	st[1].flush(&h.bw)
	st[0].flush(&h.bw)
	out = h.bw.close()
	out[hdr] = byte(len(out) - hdr - 1)
	return out
}

// encodeStream appends one Huffman bitstream of lits.
func (h *huffEnc) encodeStream(out []byte, lits []byte) []byte {
	h.bw.reset(out)
	for i := len(lits) - 1; i >= 0; i-- {
		c := lits[i]
		h.bw.add(uint32(h.code[c]), uint(h.nbits[c]))
	}
	return h.bw.close()
}

// encodeLiterals appends the literals section for lits, choosing the smallest of raw, RLE and
// Huffman-coded forms.
func (h *huffEnc) encodeLiterals(out []byte, lits []byte) []byte {
	n := len(lits)
	if n == 0 {
		return append(out, 0)
	}
	rle := true
	for _, b := range lits[1:] {
		if b != lits[0] {
			rle = false
			break
		}
	}
	if rle {
		return append(writeRawLitHeader(out, n, 1), lits[0])
	}
	if n >= 32 {
		start := len(out)
		if res, ok := h.huffLiterals(out, lits); ok {
			return res
		}
		out = out[:start]
	}
	out = writeRawLitHeader(out, n, 0)
	return append(out, lits...)
}

func rawHeaderLen(n int) int {
	switch {
	case n < 32:
		return 1
	case n < 4096:
		return 2
	}
	return 3
}

func writeRawLitHeader(out []byte, n int, typ byte) []byte {
	switch {
	case n < 32:
		return append(out, typ|byte(n)<<3)
	case n < 4096:
		return append(out, typ|1<<2|byte(n)<<4, byte(n>>4))
	default:
		return append(out, typ|3<<2|byte(n)<<4, byte(n>>4), byte(n>>12))
	}
}

func (h *huffEnc) huffLiterals(out []byte, lits []byte) ([]byte, bool) {
	n := len(lits)
	clear(h.freq[:])
	for _, b := range lits {
		h.freq[b]++
	}
	maxLen := h.buildLengths()
	if maxLen == 0 {
		return out, false
	}
	// Skip the work when even the ideal size does not beat raw literals.
	est := 0
	for s := range h.freq {
		est += int(h.freq[s]) * int(h.nbits[s])
	}
	if est/8+8 >= n {
		return out, false
	}
	h.assignCodes(maxLen)
	hdrSize := 5
	single := n <= 1023
	if single {
		hdrSize = 3
	}
	start := len(out)
	out = append(out, 0, 0, 0, 0, 0)[:start+hdrSize]
	out, ok := h.writeTree(out, maxLen)
	if !ok {
		return out, false
	}
	if single {
		out = h.encodeStream(out, lits)
	} else {
		seg := (n + 3) / 4
		jt := len(out)
		out = append(out, 0, 0, 0, 0, 0, 0)
		for i := 0; i < 4; i++ {
			s0 := len(out)
			out = h.encodeStream(out, lits[i*seg:min((i+1)*seg, n)])
			if i < 3 {
				sz := len(out) - s0
				if sz > 0xFFFF {
					return out, false
				}
				out[jt+2*i] = byte(sz)
				out[jt+2*i+1] = byte(sz >> 8)
			}
		}
	}
	csize := len(out) - start - hdrSize
	if len(out)-start >= rawHeaderLen(n)+n {
		return out, false
	}
	hd := out[start:]
	switch {
	case single:
		v := uint32(2) | uint32(n)<<4 | uint32(csize)<<14
		hd[0], hd[1], hd[2] = byte(v), byte(v>>8), byte(v>>16)
	case n < 16384 && csize < 16384:
		// The header is one byte smaller than reserved: shift the payload.
		copy(hd[4:], hd[5:])
		out = out[:len(out)-1]
		v := uint32(2) | 2<<2 | uint32(n)<<4 | uint32(csize)<<18
		hd[0], hd[1], hd[2], hd[3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24)
	default:
		v := uint64(2) | 3<<2 | uint64(n)<<4 | uint64(csize)<<22
		hd[0], hd[1], hd[2], hd[3], hd[4] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24), byte(v>>32)
	}
	return out, true
}
