package zstd

import "osbuild.dev/osbuild/internal/huffman"

const huffMaxBits = 11

// huffEnc builds and applies the literals' prefix code (RFC 8878 section 4.2).
type huffEnc struct {
	freq    [256]uint32
	nbits   [256]uint8
	code    [256]uint16
	lengths huffman.Builder
	weights [256]uint8
	wfse    fseTable
	bw      bitWriter
}

// buildLengths computes code lengths for the symbols of h.freq, at most huffMaxBits long, forming a
// complete prefix code (zstd derives the last weight, so the Kraft sum must be exactly one). It
// returns the longest length, or 0 when fewer than two symbols occur.
func (h *huffEnc) buildLengths() int {
	used := 0
	for _, f := range h.freq {
		if f > 0 {
			used++
		}
	}
	if used < 2 {
		clear(h.nbits[:])
		return 0
	}
	return h.lengths.Lengths(h.freq[:], huffMaxBits, h.nbits[:])
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
