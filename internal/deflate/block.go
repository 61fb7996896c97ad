package deflate

import (
	"encoding/binary"
	"math"

	"osbuild.dev/osbuild/internal/huffman"
)

// hist counts the symbols of a run of tokens: literal/length symbols 0..285 then distance codes.
type hist [286 + 30]uint32

func (h *hist) add(t match) {
	if t.length == 0 {
		h[t.dist]++
		return
	}
	h[lengthCode[t.length]]++
	h[286+distCode(int(t.dist))]++
}

// blockPlan is one block: grid points [a, b) of the splitter.
type blockPlan struct{ a, b int }

// splitter holds prefix histograms at fixed token steps so that the cost of any grid-aligned run of
// tokens is a subtraction plus a Huffman build.
type splitter struct {
	step   int
	prefix []hist
	bytes  []int // source offset at each grid point
	h      huffman.Builder
	ll     [286]uint8
	dl     [30]uint8
	cl     clEncoding
}

// writeBlocks writes e.toks as one or more blocks, the last one final. Blocks are split where separate
// Huffman tables pay for their headers, searching split points on a grid of token counts.
func (e *Encoder) writeBlocks(src []byte) {
	sp := &e.split
	n := len(e.toks)
	sp.step = max(2048, n/8)
	points := (n + sp.step - 1) / sp.step
	sp.prefix = grow(sp.prefix, points+1)
	sp.bytes = grow(sp.bytes, points+1)
	var h hist
	pos := 0
	for i, t := range e.toks {
		if i%sp.step == 0 {
			sp.prefix[i/sp.step] = h
			sp.bytes[i/sp.step] = pos
		}
		h.add(t)
		if t.length == 0 {
			pos++
		} else {
			pos += int(t.length)
		}
	}
	sp.prefix[points] = h
	sp.bytes[points] = pos

	e.blocks = e.blocks[:0]
	e.splitRange(0, points)
	for i, b := range e.blocks {
		bh := sp.rangeHist(b.a, b.b)
		e.writeBlock(src, b, &bh, i == len(e.blocks)-1)
	}
}

// splitRange appends the blocks for grid points [a, b).
func (e *Encoder) splitRange(a, b int) {
	sp := &e.split
	whole := sp.cost(a, b)
	best, at := whole, -1
	for k := a + 1; k < b; k++ {
		if c := sp.cost(a, k) + sp.cost(k, b); c < best {
			best, at = c, k
		}
	}
	if at < 0 {
		e.blocks = append(e.blocks, blockPlan{a, b})
		return
	}
	e.splitRange(a, at)
	e.splitRange(at, b)
}

// cost estimates the size in bits of grid points [a, b) as their best block. Dynamic blocks are
// estimated by entropy plus a header allowance: building the real codes for every candidate split
// cost a fifth of the encoder's time, and the estimate picks nearly the same splits.
func (sp *splitter) cost(a, b int) int {
	h := sp.rangeHist(a, b)
	return min(entropyCost(&h), fixedCost(&h), storedCost(sp.bytes[b]-sp.bytes[a]))
}

// rangeHist is the histogram of the tokens between grid points a and b.
func (sp *splitter) rangeHist(a, b int) hist {
	var h hist
	for s := range h {
		h[s] = sp.prefix[b][s] - sp.prefix[a][s]
	}
	return h
}

func entropyCost(h *hist) int {
	bitsN := 0.0
	used := 0
	for _, part := range [2][]uint32{h[:286], h[286:]} {
		total := 1 // the end-of-block code, or a distance code always sent
		sum := 0.0
		for _, f := range part {
			if f > 0 {
				total += int(f)
				sum += float64(f) * math.Log2(float64(f))
				used++
			}
		}
		bitsN += float64(total)*math.Log2(float64(total)) - sum
	}
	for s, f := range h[257:286] {
		bitsN += float64(int(f) * int(lengthExtra[s]))
	}
	for s, f := range h[286:] {
		bitsN += float64(int(f) * int(distExtra[s]))
	}
	// Header: counts and code-length code (~70 bits) and about 4 bits per coded symbol.
	return int(bitsN) + 70 + 4*used
}

// dynamicCost builds the block's code lengths into sp.ll/sp.dl and its header into sp.cl and returns the
// block's size in bits.
func (sp *splitter) dynamicCost(h *hist) int {
	var lf [286]uint32
	copy(lf[:], h[:286])
	lf[256] = 1
	sp.h.Lengths(lf[:], 15, sp.ll[:])
	sp.h.Lengths(h[286:], 15, sp.dl[:])
	bitsN := 3 + sp.cl.build(&sp.h, sp.ll[:], sp.dl[:])
	for s, f := range lf {
		bitsN += int(f) * int(sp.ll[s])
		if s > 256 {
			bitsN += int(f) * int(lengthExtra[s-257])
		}
	}
	for s, f := range h[286:] {
		bitsN += int(f) * (int(sp.dl[s]) + int(distExtra[s]))
	}
	return bitsN
}

func fixedLen(s int) int {
	switch {
	case s < 144:
		return 8
	case s < 256:
		return 9
	case s < 280:
		return 7
	}
	return 8
}

func fixedCost(h *hist) int {
	n := 3 + 7 // header and end of block
	for s, f := range h[:286] {
		if f != 0 {
			n += int(f) * fixedLen(s)
			if s > 256 {
				n += int(f) * int(lengthExtra[s-257])
			}
		}
	}
	for s, f := range h[286:] {
		n += int(f) * (5 + int(distExtra[s]))
	}
	return n
}

func storedCost(nbytes int) int {
	blocks := max(1, (nbytes+65534)/65535)
	return blocks*(3+7+32) + nbytes*8 // header, worst-case alignment, LEN and NLEN, the bytes
}

func (e *Encoder) writeBlock(src []byte, b blockPlan, h *hist, final bool) {
	sp := &e.split
	w := &e.bw
	fin := uint64(0)
	if final {
		fin = 1
	}
	dyn := sp.dynamicCost(h) // leaves the tables in sp
	fix := fixedCost(h)
	byteA, byteB := sp.bytes[b.a], sp.bytes[b.b]
	if st := storedCost(byteB - byteA); st < dyn && st < fix {
		data := src[byteA:byteB]
		for {
			chunk := data[:min(len(data), 65535)]
			data = data[len(chunk):]
			last := uint64(0)
			if len(data) == 0 {
				last = fin
			}
			w.write(last, 3) // BTYPE 00
			w.alignByte()
			w.out = binary.LittleEndian.AppendUint16(w.out, uint16(len(chunk)))
			w.out = binary.LittleEndian.AppendUint16(w.out, ^uint16(len(chunk)))
			w.out = append(w.out, chunk...)
			if len(data) == 0 {
				return
			}
		}
	}
	var ll [288]code // fixed codes are canonical over all 288 symbols
	var dl [30]code
	if fix <= dyn {
		w.write(fin|1<<1, 3)
		var lens [288]uint8
		for s := range lens {
			lens[s] = uint8(fixedLen(s))
		}
		canonical(lens[:], ll[:])
		for s := range dl {
			dl[s] = code{reverse(uint16(s), 5), 5}
		}
	} else {
		w.write(fin|2<<1, 3)
		sp.cl.write(w)
		canonical(sp.ll[:], ll[:286])
		canonical(sp.dl[:], dl[:])
	}
	for _, t := range e.toks[b.a*sp.step : min(b.b*sp.step, len(e.toks))] {
		if t.length == 0 {
			c := ll[t.dist]
			w.write(uint64(c.bits), uint(c.len))
			continue
		}
		lc := lengthCode[t.length] - 257
		c := ll[lc+257]
		w.write(uint64(c.bits), uint(c.len))
		w.write(uint64(t.length-lengthBase[lc]), uint(lengthExtra[lc]))
		dc := distCode(int(t.dist))
		c = dl[dc]
		w.write(uint64(c.bits), uint(c.len))
		w.write(uint64(t.dist-distBase[dc]), uint(distExtra[dc]))
	}
	c := ll[256]
	w.write(uint64(c.bits), uint(c.len))
}

func reverse(v uint16, n uint) uint16 {
	r := uint16(0)
	for range n {
		r = r<<1 | v&1
		v >>= 1
	}
	return r
}

// clEncoding is a dynamic block's header: HLIT, HDIST and the code lengths, run-length coded with the
// code-length alphabet (16: repeat the previous 3-6 times, 17: 3-10 zeros, 18: 11-138 zeros).
type clEncoding struct {
	hlit, hdist, hclen int
	syms               []clSym
	lens               [19]uint8
	codes              [19]code
}

type clSym struct{ sym, extra uint8 }

var clExtraBits = [19]uint8{16: 2, 17: 3, 18: 7}

// build prepares the header for the given code lengths and returns its size in bits.
func (c *clEncoding) build(h *huffman.Builder, ll, dl []uint8) int {
	c.hlit = 286
	for c.hlit > 257 && ll[c.hlit-1] == 0 {
		c.hlit--
	}
	c.hdist = 30
	for c.hdist > 1 && dl[c.hdist-1] == 0 {
		c.hdist--
	}
	var all [286 + 30]uint8
	n := copy(all[:], ll[:c.hlit])
	n += copy(all[n:], dl[:c.hdist])
	seq := all[:n]
	c.syms = c.syms[:0]
	for i := 0; i < len(seq); {
		v := seq[i]
		run := 1
		for i+run < len(seq) && seq[i+run] == v {
			run++
		}
		i += run
		if v == 0 {
			for run >= 11 {
				r := min(run, 138)
				c.syms = append(c.syms, clSym{18, uint8(r - 11)})
				run -= r
			}
			if run >= 3 {
				c.syms = append(c.syms, clSym{17, uint8(run - 3)})
				run = 0
			}
		} else {
			c.syms = append(c.syms, clSym{v, 0})
			run--
			for run >= 3 {
				r := min(run, 6)
				c.syms = append(c.syms, clSym{16, uint8(r - 3)})
				run -= r
			}
		}
		for range run {
			c.syms = append(c.syms, clSym{v, 0})
		}
	}
	var freq [19]uint32
	for _, s := range c.syms {
		freq[s.sym]++
	}
	h.Lengths(freq[:], 7, c.lens[:])
	c.hclen = 19
	for c.hclen > 4 && c.lens[clOrder[c.hclen-1]] == 0 {
		c.hclen--
	}
	bitsN := 5 + 5 + 4 + 3*c.hclen
	for _, s := range c.syms {
		bitsN += int(c.lens[s.sym]) + int(clExtraBits[s.sym])
	}
	return bitsN
}

func (c *clEncoding) write(w *bitWriter) {
	w.write(uint64(c.hlit-257), 5)
	w.write(uint64(c.hdist-1), 5)
	w.write(uint64(c.hclen-4), 4)
	for _, s := range clOrder[:c.hclen] {
		w.write(uint64(c.lens[s]), 3)
	}
	canonical(c.lens[:], c.codes[:])
	for _, s := range c.syms {
		k := c.codes[s.sym]
		w.write(uint64(k.bits), uint(k.len))
		w.write(uint64(s.extra), uint(clExtraBits[s.sym]))
	}
}

// bitWriter packs bits LSB-first, as deflate does.
type bitWriter struct {
	out []byte
	acc uint64
	n   uint
}

func (w *bitWriter) write(v uint64, nb uint) {
	w.acc |= v << w.n
	w.n += nb
	if w.n >= 32 {
		w.out = binary.LittleEndian.AppendUint32(w.out, uint32(w.acc))
		w.acc >>= 32
		w.n -= 32
	}
}

func (w *bitWriter) alignByte() {
	for w.n > 0 {
		w.out = append(w.out, byte(w.acc))
		w.acc >>= 8
		w.n -= min(w.n, 8)
	}
}

func (w *bitWriter) flush() []byte {
	w.alignByte()
	return w.out
}
