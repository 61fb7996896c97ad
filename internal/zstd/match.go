package zstd

import (
	"encoding/binary"
	"math/bits"
)

const (
	windowLog  = 17
	windowSize = 1 << windowLog
	hashLog    = 15
	hash3Log   = 14
	minMatch   = 3
	// Matches longer than this end the search: they are taken anyway, and extending every
	// candidate over a long run would make the search quadratic.
	longMatch = 4096
)

// match is a candidate found at some position: its length and distance, plus the offset value
// it would be coded with (repeat codes 1..3 or distance+3).
type match struct {
	len, off, ofv uint32
}

// matchFinder indexes every position of the current frame in binary trees, one per hash of the
// next four bytes, ordered by the suffixes starting there. Walking a tree from its root visits
// longer and longer common prefixes, which yields the longest match of each length for little
// work. Positions are stored offset by base so that entries from earlier frames (below base) read
// as empty without clearing the tables on every call.
type matchFinder struct {
	src     []byte
	base    uint32
	depth   int
	ht      []uint32
	ht3     []uint32
	bt      []uint32
	next    int // first position not yet inserted in the trees
	next3   int // first position not yet inserted in ht3
	matches []match
}

func (m *matchFinder) init(depth int) {
	m.depth = depth
	m.ht = make([]uint32, 1<<hashLog)
	m.ht3 = make([]uint32, 1<<hash3Log)
	m.bt = make([]uint32, 2*windowSize)
	m.base = 1
	m.matches = make([]match, 0, 64)
}

func (m *matchFinder) reset(src []byte) {
	if m.src != nil {
		m.base += uint32(len(m.src)) + 1
	}
	if uint64(m.base)+uint64(len(src))+1 >= 1<<31 {
		clear(m.ht)
		clear(m.ht3)
		clear(m.bt)
		m.base = 1
	}
	m.src = src
	m.next, m.next3 = 0, 0
}

func hash4(v uint32) uint32 { return v * 2654435761 >> (32 - hashLog) }
func hash3(v uint32) uint32 { return (v << 8) * 2654435761 >> (32 - hash3Log) }

// commonLen returns the length of the common prefix of src[a:] and src[b:], a < b, at most
// limit bytes.
func commonLen(src []byte, a, b, limit int) int {
	n := 0
	for n+8 <= limit {
		x := binary.LittleEndian.Uint64(src[a+n:]) ^ binary.LittleEndian.Uint64(src[b+n:])
		if x != 0 {
			return n + bits.TrailingZeros64(x)>>3
		}
		n += 8
	}
	for n < limit && src[a+n] == src[b+n] {
		n++
	}
	return n
}

// btInsert inserts pos into its tree. When collect is set it appends to m.matches every candidate
// longer than best, with lengths capped at lim. It returns how many positions the caller may
// skip inserting: inside a long repeat the following positions would only add degenerate nodes.

func (m *matchFinder) btInsert(pos, lim, best int, collect bool) int {
	src := m.src
	h := hash4(binary.LittleEndian.Uint32(src[pos:]))
	cur := uint32(pos) + m.base
	stored := m.ht[h]
	m.ht[h] = cur
	low := m.base
	if cur >= windowSize && cur-windowSize+1 > low {
		low = cur - windowSize + 1
	}
	const mask = windowSize - 1
	smaller := 2 * (pos & mask)
	larger := smaller + 1
	commonS, commonL := 0, 0
	maxCmp := len(src) - pos
	longest := 0
	for nb := m.depth; stored >= low && nb > 0; nb-- {
		cand := int(stored - m.base)
		ml := min(commonS, commonL)
		ml += commonLen(src, cand+ml, pos+ml, maxCmp-ml)
		if ml > longest {
			longest = ml
		}
		if collect {
			if rl := min(ml, lim); rl > best && rl >= minMatch {
				d := uint32(pos - cand)
				m.matches = append(m.matches, match{len: uint32(rl), off: d, ofv: d + 3})
				best = rl
			}
		}
		if ml == maxCmp || ml > longMatch {
			// Order unknown (end of input) or not worth more effort: drop the rest of the tree
			// below this point.
			break
		}
		cslot := 2 * (cand & mask)
		if src[cand+ml] < src[pos+ml] {
			m.bt[smaller] = stored
			commonS = ml
			smaller = cslot + 1
			stored = m.bt[cslot+1]
		} else {
			m.bt[larger] = stored
			commonL = ml
			larger = cslot
			stored = m.bt[cslot]
		}
	}
	m.bt[smaller] = 0
	m.bt[larger] = 0
	if longest > 384 {
		return min(192, longest-384)
	}
	return 1
}

// update inserts all positions before target not yet in the trees.
func (m *matchFinder) update(target int) {
	end := len(m.src) - 4
	for i := m.next; i < target; {
		if i > end {
			i = target
			break
		}
		i += m.btInsert(i, 0, 0, false)
	}
	if target > m.next {
		m.next = target
	}
}

func (m *matchFinder) update3(target int) {
	end := len(m.src) - 4
	for i := m.next3; i < target && i <= end; i++ {
		m.ht3[hash3(binary.LittleEndian.Uint32(m.src[i:]))] = uint32(i) + m.base
	}
	if target > m.next3 {
		m.next3 = target
	}
}

// find collects in m.matches the matches at pos ending before be, in strictly increasing length:
// repeat offsets first (they are the cheapest to code), then a recent 3-byte match, then the tree.
// reps is the repeat history at pos and ll0 tells whether no literal precedes the match, which
// shifts the meaning of the repeat codes.
func (m *matchFinder) find(pos, be int, reps *[3]uint32, ll0 bool) []match {
	m.matches = m.matches[:0]
	src := m.src
	lim := be - pos
	if lim < minMatch || pos+4 > len(src) {
		return m.matches
	}
	best := minMatch - 1
	for i := 0; i < 3; i++ {
		var r uint32
		switch {
		case !ll0:
			r = reps[i]
		case i < 2:
			r = reps[i+1]
		default:
			r = reps[0] - 1
		}
		if r == 0 || int(r) > pos {
			continue
		}
		cand := pos - int(r)
		if src[cand] != src[pos] || src[cand+1] != src[pos+1] {
			continue
		}
		l := commonLen(src, cand, pos, lim)
		if l > best {
			m.matches = append(m.matches, match{len: uint32(l), off: r, ofv: uint32(i + 1)})
			best = l
			if l == lim || l > longMatch {
				m.update(pos) // keep the trees complete before the caller jumps ahead
				return m.matches
			}
		}
	}
	m.update3(pos)
	h3 := hash3(binary.LittleEndian.Uint32(src[pos:]))
	c3 := m.ht3[h3]
	m.ht3[h3] = uint32(pos) + m.base
	m.next3 = pos + 1
	if best < minMatch && c3 >= m.base {
		cand := int(c3 - m.base)
		if pos-cand < 1<<16 {
			if l := commonLen(src, cand, pos, lim); l >= minMatch {
				d := uint32(pos - cand)
				m.matches = append(m.matches, match{len: uint32(l), off: d, ofv: d + 3})
				best = l
			}
		}
	}
	m.update(pos)
	skip := m.btInsert(pos, lim, best, true)
	m.next = pos + skip
	return m.matches
}
