package zstd

const (
	optNum   = 1 << 12 // longest stretch priced in one pass
	bitCost  = 1 << costShift
	infPrice = 1 << 30
)

// optNode is the cheapest known way to reach one position of the current stretch.
type optNode struct {
	price  int32
	mlen   uint32 // length of the match ending here, 0 when reached by a literal
	off    uint32 // distance of that match
	litlen uint32 // literals pending since the last match
	reps   [3]uint32
}

// parser chooses sequences for a block by pricing every path through the candidate matches with
// the symbol statistics gathered so far (zstd's "optimal" parsing). Statistics start from the
// block's byte histogram and are refreshed after each stretch as sequences get emitted.
type parser struct {
	mf         matchFinder
	sufficient int  // a match at least this long is taken without pricing alternatives
	fullLens   bool // price every length of every match instead of stopping early

	opt      []optNode
	rev      []match
	litFreq  [256]uint32
	llFreq   [36]uint32
	mlFreq   [53]uint32
	ofFreq   [32]uint32
	litSum   uint32
	llSum    uint32
	mlSum    uint32
	ofSum    uint32
	litTab   [256]int32
	llTab    [36]int32
	llSmall  [64]int32
	mlTab    [53]int32
	ofTab    [32]int32
	pending  uint32 // sequences learnt since the tables were computed
	tablesOK bool
	first    bool
}

func (p *parser) init(level int) {
	// Measured on system binaries and libraries: beyond 32 tree nodes and 48-byte matches the
	// ratio barely improves while the time keeps growing.
	// maxLevel, tree nodes searched, length taken without pricing alternatives, price every length.
	grades := [...]struct {
		maxLevel, depth, suff int
		fullLens              bool
	}{
		{3, 4, 16, false}, {6, 8, 24, false}, {9, 16, 32, false}, {12, 24, 40, false},
		{15, 32, 48, false}, {18, 64, 96, true}, {1 << 30, 128, 256, true},
	}
	g := grades[len(grades)-1]
	for _, c := range grades {
		if level <= c.maxLevel {
			g = c
			break
		}
	}
	depth, suff := g.depth, g.suff
	p.fullLens = g.fullLens
	p.sufficient = suff
	p.mf.init(depth)
	p.opt = make([]optNode, optNum+suff+2)
}

func (p *parser) reset(src []byte) {
	p.mf.reset(src)
	p.first = true
}

// skip indexes a block that is not parsed (an RLE block) so that later blocks can refer to it.
func (p *parser) skip(bs, be int) {
	p.mf.update(be)
}

// skipLong leaves most positions inside a long match just taken out of the trees: they are
// expensive to insert (every one matches its predecessor for a long way) and rarely give better
// matches than the positions near the end, which are kept.
func (p *parser) skipLong(end int) {
	if t := end - 8; t > p.mf.next {
		p.mf.next = t
	}
}

var baseLLFreq = [36]uint32{4, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}
var baseOFFreq = [32]uint32{6, 2, 1, 1, 2, 3, 4, 4, 4, 3, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}

func sumOf(f []uint32) uint32 {
	s := uint32(0)
	for _, v := range f {
		s += v
	}
	return s
}

// initStats seeds the statistics for a block: from scratch for the first block of a frame (the
// literal histogram of the block itself is a good guess of literal costs), otherwise by scaling
// down what the previous block learnt so that it adapts quickly.
func (p *parser) initStats(b []byte) {
	if p.first {
		p.first = false
		var cnt [256]uint32
		for _, c := range b {
			cnt[c]++
		}
		shift := uint(0)
		for len(b)>>shift > 1024 {
			shift++
		}
		for i := range p.litFreq {
			p.litFreq[i] = 1 + cnt[i]>>shift
		}
		p.llFreq = baseLLFreq
		for i := range p.mlFreq {
			p.mlFreq[i] = 1
		}
		p.ofFreq = baseOFFreq
	} else {
		for _, f := range [][]uint32{p.litFreq[:], p.llFreq[:], p.mlFreq[:], p.ofFreq[:]} {
			for i := range f {
				f[i] = 1 + f[i]>>4
			}
		}
	}
	p.litSum, p.llSum, p.mlSum, p.ofSum = sumOf(p.litFreq[:]), sumOf(p.llFreq[:]), sumOf(p.mlFreq[:]), sumOf(p.ofFreq[:])
	p.tablesOK = false
	p.setBase()
}

// setBase refreshes the price tables from the statistics. Recomputing them after every stretch
// would cost more than the parsing itself on data with many short stretches, so it waits until
// enough new sequences have been learnt to move the prices noticeably.
func (p *parser) setBase() {
	if p.pending < 16 && p.pending*32 < p.llSum && p.tablesOK {
		return
	}
	p.pending = 0
	p.tablesOK = true
	litSumC := int32(log2Cost(p.litSum))
	for i, f := range p.litFreq {
		p.litTab[i] = litSumC - int32(log2Cost(f))
	}
	llSumC := int32(log2Cost(p.llSum))
	for c, f := range p.llFreq {
		p.llTab[c] = int32(llBits[c])*bitCost + llSumC - int32(log2Cost(f))
	}
	for ll := range p.llSmall {
		p.llSmall[ll] = p.llTab[llCodeTab[ll]]
	}
	mlSumC := int32(log2Cost(p.mlSum))
	for c, f := range p.mlFreq {
		p.mlTab[c] = int32(mlBits[c])*bitCost + mlSumC - int32(log2Cost(f))
	}
	ofSumC := int32(log2Cost(p.ofSum))
	for c, f := range p.ofFreq {
		p.ofTab[c] = int32(c)*bitCost + ofSumC - int32(log2Cost(f))
	}
}

func (p *parser) litPrice(c byte) int32 { return p.litTab[c] }

func (p *parser) llPrice(ll uint32) int32 {
	if ll < 64 {
		return p.llSmall[ll]
	}
	return p.llTab[highBit(ll)+19]
}

func (p *parser) matchPrice(ofv, ml uint32) int32 {
	return p.ofTab[highBit(ofv)] + p.mlTab[mlCode(ml)]
}

// emit appends one sequence, updates the repeat history and learns its statistics.
func (p *parser) emit(seqs []seq, lits []byte, src []byte, anchor, start int, mt match, reps *[3]uint32) ([]seq, []byte) {
	ll := uint32(start - anchor)
	lits = append(lits, src[anchor:start]...)
	for _, c := range src[anchor:start] {
		p.litFreq[c] += 2
	}
	p.litSum += 2 * ll
	ofv := repCode(reps, mt.off, ll == 0)
	seqs = append(seqs, seq{ll: ll, ml: mt.len, ofv: ofv})
	p.llFreq[llCode(ll)]++
	p.llSum++
	p.mlFreq[mlCode(mt.len)]++
	p.mlSum++
	p.ofFreq[highBit(ofv)]++
	p.ofSum++
	p.pending++
	return seqs, lits
}

// parse chooses the sequences of block src[bs:be], the earlier part of src being history. reps is
// the repeat history, updated as the decoder will.
func (p *parser) parse(src []byte, bs, be int, reps *[3]uint32, seqs []seq, lits []byte) ([]seq, []byte) {
	p.initStats(src[bs:be])
	mf := &p.mf
	anchor := bs
	ip := bs
	opt := p.opt
	for ip < be {
		litlen := uint32(ip - anchor)
		ms := mf.find(ip, be, reps, litlen == 0)
		if len(ms) == 0 {
			ip++
			continue
		}
		if lm := ms[len(ms)-1]; int(lm.len) >= p.sufficient {
			seqs, lits = p.emit(seqs, lits, src, anchor, ip, lm, reps)
			ip += int(lm.len)
			anchor = ip
			p.skipLong(ip)
			p.setBase()
			continue
		}
		// Price the stretch starting at ip.
		opt[0] = optNode{price: p.llPrice(litlen), litlen: litlen, reps: *reps}
		last := p.addMatches(0, ms, 0)
		var stretch match // a match that ends the stretch early, taken from position stretchAt
		stretchAt := -1
		cur := 1
		for ; cur <= last; cur++ {
			prev := &opt[cur-1]
			lp := prev.price + p.litPrice(src[ip+cur-1]) + p.llPrice(prev.litlen+1) - p.llPrice(prev.litlen)
			n := &opt[cur]
			if lp <= n.price {
				*n = optNode{price: lp, litlen: prev.litlen + 1, reps: prev.reps}
			} else {
				from := &opt[cur-int(n.mlen)]
				n.reps = from.reps
				repCode(&n.reps, n.off, from.litlen == 0)
			}
			if cur == last {
				break
			}
			if !p.fullLens && opt[cur+1].price <= n.price+2*bitCost && cur < optNum/2 {
				// Unpromising: the next position is already reached about as cheaply. Skipping
				// the search here saves a seventh of the time for 0.2 % of size.
				continue
			}
			ms = mf.find(ip+cur, be, &n.reps, n.litlen == 0)
			if len(ms) == 0 {
				continue
			}
			if lm := ms[len(ms)-1]; int(lm.len) >= p.sufficient || cur+int(lm.len) >= optNum {
				stretch, stretchAt = lm, cur
				break
			}
			if l := p.addMatches(cur, ms, last); l > last {
				last = l
			}
		}
		// Walk back the chosen path, then emit it forwards.
		p.rev = p.rev[:0]
		end := cur
		if stretchAt >= 0 {
			p.rev = append(p.rev, match{len: stretch.len, off: stretch.off, ofv: uint32(stretchAt)})
			end = stretchAt + int(stretch.len)
		}
		for c := cur; c > 0; {
			if opt[c].mlen == 0 {
				c--
				continue
			}
			n := &opt[c]
			c -= int(n.mlen)
			p.rev = append(p.rev, match{len: n.mlen, off: n.off, ofv: uint32(c)})
		}
		for i := len(p.rev) - 1; i >= 0; i-- {
			mt := p.rev[i]
			start := ip + int(mt.ofv)
			seqs, lits = p.emit(seqs, lits, src, anchor, start, mt, reps)
			anchor = start + int(mt.len)
		}
		ip += end
		if stretchAt >= 0 {
			p.skipLong(ip)
		}
		p.setBase()
	}
	lits = append(lits, src[anchor:be]...)
	return seqs, lits
}

// addMatches prices the matches ms found at stretch position cur and returns the furthest
// position reached. Positions beyond last are first marked unreachable.
func (p *parser) addMatches(cur int, ms []match, last int) int {
	opt := p.opt
	from := &opt[cur]
	base := from.price + p.llPrice(0)
	maxEnd := cur + int(ms[len(ms)-1].len)
	for i := last + 1; i <= maxEnd; i++ {
		opt[i].price = infPrice
	}
	prevLen := uint32(minMatch - 1)
	for _, m := range ms {
		for l := m.len; l > prevLen; l-- {
			pos := cur + int(l)
			pr := base + p.matchPrice(m.ofv, l)
			if pr < opt[pos].price {
				opt[pos] = optNode{price: pr, mlen: l, off: m.off}
			} else if !p.fullLens {
				break // shorter lengths of this match are unlikely to win either
			}
		}
		prevLen = m.len
	}
	if maxEnd > last {
		return maxEnd
	}
	return last
}

// repCode returns the offset value coding a match at distance off and updates the repeat history
// the way the decoder will (RFC 8878 section 3.1.2.5).
func repCode(reps *[3]uint32, off uint32, ll0 bool) uint32 {
	if !ll0 {
		switch off {
		case reps[0]:
			return 1
		case reps[1]:
			reps[0], reps[1] = reps[1], reps[0]
			return 2
		case reps[2]:
			reps[0], reps[1], reps[2] = reps[2], reps[0], reps[1]
			return 3
		}
	} else {
		switch off {
		case reps[1]:
			reps[0], reps[1] = reps[1], reps[0]
			return 1
		case reps[2]:
			reps[0], reps[1], reps[2] = reps[2], reps[0], reps[1]
			return 2
		case reps[0] - 1:
			reps[0], reps[1], reps[2] = reps[0]-1, reps[0], reps[1]
			return 3
		}
	}
	reps[0], reps[1], reps[2] = off, reps[0], reps[1]
	return off + 3
}
