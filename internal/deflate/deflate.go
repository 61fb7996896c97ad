// Package deflate holds a DEFLATE (RFC 1951) encoder for whole buffers of up to a few hundred KiB, such as
// the 64 KiB grains of a VMDK and the clusters of a qcow2. From level 4 on it trades speed for size: it
// finds matches at every position (three-byte ones included, which zlib's default misses often) and picks
// the parse by the shortest path over bit prices instead of zlib's lazy rule, then splits blocks where new
// Huffman tables pay for themselves. That beats zlib's default level by 1.5-3 % while a machine with two
// or more cores still converts faster than single-threaded qemu-img. Levels 1-3 use the lazy rule.
package deflate

import (
	"encoding/binary"
	"hash/adler32"
	"math"
	"math/bits"
)

const (
	minMatch = 3
	maxMatch = 258
	maxDist  = 32768
	hashBits = 13 // for three-byte matches within near3
	// 16384 buckets of 16: few collisions for a 64 KiB input, and the table still fits in L2.
	bucketBits = 14
	bucketWays = 16
	costScale  = 16 // prices are in 1/16 bit
	costInf    = math.MaxUint32
	// A three-byte match farther than this costs about as much as three literals.
	near3 = 4096
)

// Encoder compresses buffers. It keeps its tables between calls: reuse one per goroutine; it is not safe
// for concurrent use. The output is a pure function of the input and the level.
type Encoder struct {
	chain, nice, good, passes int

	bucket [1 << bucketBits][bucketWays]int32
	fill   [1 << bucketBits]uint32
	head3  [1 << hashBits]int32

	// Candidate matches of every position, found once and priced in each pass: position i's are
	// cand[candAt[i]:candAt[i+1]], in increasing length; the nearest distance wins for each length.
	candAt []int32
	cand   []match
	forced []bool // i sits inside a match too long to be worth searching around (≥ nice)

	price []uint32
	step  []match // the step that reaches position i at price[i]; length 0 is a literal
	toks  []match
	costs prices

	split  splitter
	blocks []blockPlan
	bw     bitWriter
}

// match is a token: a literal (length 0, dist holds the byte) or a back-reference.
type match struct{ length, dist uint16 }

// NewEncoder returns an encoder for level 1 (fastest) to 9 (smallest); other values mean 6.
func NewEncoder(level int) *Encoder {
	if level < 1 || level > 9 {
		level = 6
	}
	// chain: bucket entries tried per position (at most bucketWays); nice: a match this long is taken
	// without searching inside it; good: past this length, look at a quarter as many; passes: priced
	// parses after the greedy one, 0 for the lazy parse. On 64 KiB grains of /usr files, level 3 is about
	// zlib -6's size at 1.5x its speed, level 6 1.5 % smaller at half its speed per core.
	p := [...]struct{ chain, nice, good, passes int }{
		{4, 16, 8, 0}, {8, 32, 8, 0}, {16, 128, 32, 0}, {8, 16, 8, 1}, {12, 16, 8, 1},
		{16, 16, 8, 1}, {16, 64, 16, 2}, {16, 128, 32, 2}, {16, 258, 64, 3},
	}[level-1]
	return &Encoder{chain: p.chain, nice: p.nice, good: p.good, passes: p.passes}
}

// Encode appends src as one complete raw DEFLATE stream (its last block final) to dst.
func (e *Encoder) Encode(dst, src []byte) []byte {
	e.bw = bitWriter{out: dst}
	if len(src) == 0 {
		// A final fixed-Huffman block holding only the end-of-block code (seven zero bits).
		e.bw.write(1|1<<1, 3)
		e.bw.write(0, 7)
		return e.bw.flush()
	}
	if e.passes == 0 {
		e.lazyParse(src)
	} else {
		e.findMatches(src)
		e.parse(src)
	}
	e.writeBlocks(src)
	return e.bw.flush()
}

// EncodeZlib appends src as a zlib (RFC 1950) stream, as VMDK grains hold them.
func (e *Encoder) EncodeZlib(dst, src []byte) []byte {
	dst = append(dst, 0x78, 0xda) // 32 KiB window, "maximum compression" level hint; check bits valid
	dst = e.Encode(dst, src)
	return binary.BigEndian.AppendUint32(dst, adler32.Checksum(src))
}

func hash4(b []byte) uint32 {
	return binary.LittleEndian.Uint32(b) * 0x9E3779B1 >> (32 - bucketBits)
}

func hash3(b []byte) uint32 {
	return (uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16) * 0x9E3779B1 >> (32 - hashBits)
}

// Match finding: buckets remember the last bucketWays positions of each four-byte hash, nearest first:
// one cache line per lookup instead of a hash chain's pointer chase. Three-byte matches, worth taking only
// when near, come from a table that remembers the last position of each three-byte hash.

func (e *Encoder) resetTables() {
	clear(e.fill[:])
	clear(e.head3[:])
	e.cand = e.cand[:0]
}

// probe records position i in the tables and, when search is set, appends the matches at i to e.cand in
// increasing length, each the nearest of its length, and returns the longest length (below minMatch:
// none). Positions must be probed in increasing order, each once.
func (e *Encoder) probe(src []byte, i int, search bool) int {
	if i+4 > len(src) {
		return 0
	}
	h3 := hash3(src[i:])
	near := int(e.head3[h3]) - 1
	e.head3[h3] = int32(i + 1)
	h := hash4(src[i:])
	row, fill := &e.bucket[h], e.fill[h]
	e.fill[h] = fill + 1
	if !search {
		row[fill%bucketWays] = int32(i)
		return 0
	}
	limit := min(maxMatch, len(src)-i)
	best := minMatch - 1
	if near >= 0 && i-near <= near3 {
		if l := matchLen(src[near:near+limit], src[i:i+limit]); l >= minMatch {
			best = l
			e.cand = append(e.cand, match{uint16(l), uint16(i - near)})
		}
	}
	tries := min(int(fill), e.chain)
	for k := uint32(1); k <= uint32(tries) && best < e.nice && best < limit; k++ {
		c := int(row[(fill-k)%bucketWays])
		d := i - c
		if d > maxDist {
			break
		}
		// Only a longer match is of use: check its last byte first.
		if src[c+best] != src[i+best] {
			continue
		}
		l := matchLen(src[c:c+limit], src[i:i+limit])
		if l <= best {
			continue
		}
		best = l
		e.cand = append(e.cand, match{uint16(l), uint16(d)})
		if l >= e.good {
			// Already long: a longer one would save little, so look less far (as zlib does).
			tries = min(tries, int(k)+e.chain>>2)
		}
	}
	// Recorded after the search: with all ways in use, this slot holds the oldest entry, still searched.
	row[fill%bucketWays] = int32(i)
	return best
}

// findMatches fills cand/candAt/forced for every position of src, for the priced parse.
func (e *Encoder) findMatches(src []byte) {
	n := len(src)
	e.resetTables()
	e.candAt = grow(e.candAt, n+1)
	e.forced = grow(e.forced, n+1)
	clear(e.forced)
	skipTo := 0
	for i := 0; i < n; i++ {
		e.candAt[i] = int32(len(e.cand))
		if i < skipTo {
			e.forced[i] = true
			e.probe(src, i, false)
			continue
		}
		if best := e.probe(src, i, true); best >= e.nice {
			skipTo = i + best
		}
	}
	e.candAt[n] = int32(len(e.cand))
}

// longest probes position i and returns its longest match (length 0: none).
func (e *Encoder) longest(src []byte, i int) match {
	e.cand = e.cand[:0]
	if e.probe(src, i, true) < minMatch {
		return match{}
	}
	return e.cand[len(e.cand)-1]
}

// lazyParse is the fast parse: zlib's lazy rule (take a match unless the next position starts a longer
// one), searching only where a token may start.
func (e *Encoder) lazyParse(src []byte) {
	n := len(src)
	e.resetTables()
	e.toks = e.toks[:0]
	cur, have := match{}, false
	for i := 0; i < n; {
		if !have {
			cur = e.longest(src, i)
		}
		have = false
		if cur.length == 0 {
			e.toks = append(e.toks, match{0, uint16(src[i])})
			i++
			continue
		}
		l := int(cur.length)
		from := i + 1 // the first position of the match not yet probed
		if l < e.nice && i+1 < n {
			next := e.longest(src, i+1)
			from++
			if next.length > cur.length {
				e.toks = append(e.toks, match{0, uint16(src[i])})
				i++
				cur, have = next, true
				continue
			}
		}
		e.toks = append(e.toks, cur)
		for j := from; j < i+l; j++ {
			e.probe(src, j, false)
		}
		i += l
	}
}

func matchLen(a, b []byte) int {
	n := 0
	for len(a)-n >= 8 {
		x := binary.LittleEndian.Uint64(a[n:]) ^ binary.LittleEndian.Uint64(b[n:])
		if x != 0 {
			return n + bits.TrailingZeros64(x)>>3
		}
		n += 8
	}
	for n < len(a) && a[n] == b[n] {
		n++
	}
	return n
}

// parse chooses the tokens: a shortest path over positions where each step is a literal or one of the
// candidate matches, priced in bits by the statistics of the parse before. The first prices come from a
// greedy parse (the longest candidate wherever there is one): far cheaper than a priced pass and nearly
// as good a model.
func (e *Encoder) parse(src []byte) {
	n := len(src)
	e.price = grow(e.price, n+1)
	e.step = grow(e.step, n+1)
	if e.greedy(src) < n/32 {
		return // next to nothing repeats (compressed data): pricing cannot find what is not there
	}
	for range e.passes {
		e.costs.fromTokens(e.toks)
		e.shortestPath(src)
	}
}

// greedy parses into e.toks and returns how many bytes it covered with matches.
func (e *Encoder) greedy(src []byte) int {
	e.toks = e.toks[:0]
	matched := 0
	for i := 0; i < len(src); {
		a, b := e.candAt[i], e.candAt[i+1]
		if a == b {
			e.toks = append(e.toks, match{0, uint16(src[i])})
			i++
			continue
		}
		m := e.cand[b-1]
		e.toks = append(e.toks, m)
		i += int(m.length)
		matched += int(m.length)
	}
	return matched
}

func (e *Encoder) shortestPath(src []byte) {
	n := len(src)
	price, step, c := e.price, e.step, &e.costs
	for i := range price[:n+1] {
		price[i] = costInf
	}
	price[0] = 0
	for i := 0; i < n; i++ {
		p := price[i]
		if p == costInf || e.forced[i] {
			continue
		}
		if q := p + c.lit[src[i]]; q < price[i+1] {
			price[i+1] = q
			step[i+1] = match{0, uint16(src[i])}
		}
		cs := e.cand[e.candAt[i]:e.candAt[i+1]]
		if len(cs) == 0 {
			continue
		}
		if last := cs[len(cs)-1]; int(last.length) >= e.nice {
			// Everything inside this match is skipped, so only its full length can lead anywhere.
			l := int(last.length)
			if q := p + c.length[l] + c.distPrice(int(last.dist)); q < price[i+l] {
				price[i+l] = q
				step[i+l] = last
			}
			continue
		}
		l := minMatch
		for _, m := range cs {
			dp := p + c.distPrice(int(m.dist))
			for ; l <= int(m.length); l++ {
				if q := dp + c.length[l]; q < price[i+l] {
					price[i+l] = q
					step[i+l] = match{uint16(l), m.dist}
				}
			}
		}
	}
	// Walk back from the end, then reverse into e.toks.
	e.toks = e.toks[:0]
	for i := n; i > 0; {
		s := step[i]
		e.toks = append(e.toks, s)
		if s.length == 0 {
			i--
		} else {
			i -= int(s.length)
		}
	}
	for a, b := 0, len(e.toks)-1; a < b; a, b = a+1, b-1 {
		e.toks[a], e.toks[b] = e.toks[b], e.toks[a]
	}
}

// prices are bit costs (×costScale) of literals, whole match lengths (code + extra bits) and distance
// codes (code + extra bits).
type prices struct {
	lit    [256]uint32
	length [maxMatch + 1]uint32
	dist   [30]uint32
}

func (c *prices) distPrice(d int) uint32 { return c.dist[distCode(d)] }

func log2Price(total, count float64) uint32 {
	if count <= 0 {
		count = 0.5
	}
	v := math.Log2(total/count) * costScale
	if v < costScale {
		v = costScale // no symbol costs less than a bit in a Huffman code
	}
	return uint32(v)
}

func (c *prices) fromTokens(toks []match) {
	var h hist
	for _, t := range toks {
		h.add(t)
	}
	h[256] = 1 // the end of block
	lt, dt := uint32(0), uint32(0)
	for _, v := range h[:286] {
		lt += v
	}
	for _, v := range h[286:] {
		dt += v
	}
	for i := range c.lit {
		c.lit[i] = log2Price(float64(lt), float64(h[i]))
	}
	for l := minMatch; l <= maxMatch; l++ {
		code := lengthCode[l]
		c.length[l] = log2Price(float64(lt), float64(h[code])) + uint32(lengthExtra[code-257])*costScale
	}
	for d := range c.dist {
		c.dist[d] = log2Price(float64(max(dt, 1)), float64(h[286+d])) + uint32(distExtra[d])*costScale
	}
}

func grow[T any](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, n)
	}
	return s[:n]
}
