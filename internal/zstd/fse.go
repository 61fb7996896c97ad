package zstd

// fseTable is the encoder's view of one FSE distribution (RFC 8878 section 4.1).
type fseTable struct {
	log      uint8
	nsym     int // symbols 0..nsym-1 are described
	norm     [64]int16
	start    [64]uint16 // first index in states of each symbol's states
	maxBits  [64]uint8
	minPlus  [64]uint32
	states   [512]uint16 // per symbol, its decoder states in increasing order, plus the table size
	cost     [64]uint32  // approximate cost of each symbol in cost units
	spread   [512]uint8
	symCount [64]uint16
}

// build derives the encoding tables from norm[0:nsym] and log, following the decoder's symbol
// spreading so that both sides agree on which state decodes which symbol.
func (t *fseTable) build() {
	size := uint32(1) << t.log
	mask := size - 1
	high := size - 1
	for s := 0; s < t.nsym; s++ {
		if t.norm[s] == -1 {
			t.spread[high] = uint8(s)
			high--
		}
	}
	step := size>>1 + size>>3 + 3
	pos := uint32(0)
	for s := 0; s < t.nsym; s++ {
		for i := int16(0); i < t.norm[s]; i++ {
			t.spread[pos] = uint8(s)
			pos = (pos + step) & mask
			for pos > high {
				pos = (pos + step) & mask
			}
		}
	}
	total := uint16(0)
	for s := 0; s < t.nsym; s++ {
		c := uint32(t.norm[s])
		if t.norm[s] == -1 {
			c = 1
		}
		t.start[s] = total
		t.symCount[s] = 0
		total += uint16(c)
		switch {
		case c == 0:
			t.cost[s] = 1 << 30
		case c == 1:
			t.maxBits[s] = t.log
			t.minPlus[s] = size
			t.cost[s] = uint32(t.log) << costShift
		default:
			t.maxBits[s] = t.log - uint8(highBit(c-1))
			t.minPlus[s] = c << t.maxBits[s]
			t.cost[s] = uint32(t.log)<<costShift - log2Cost(c)
		}
	}
	for u := uint32(0); u < size; u++ {
		s := t.spread[u]
		t.states[uint32(t.start[s])+uint32(t.symCount[s])] = uint16(size + u)
		t.symCount[s]++
	}
}

func (t *fseTable) setPredef(norm []int16, log uint8) {
	t.log = log
	t.nsym = len(norm)
	copy(t.norm[:], norm)
	t.build()
}

// fseState is one encoder state: a value in [size, 2*size).
type fseState struct {
	t *fseTable
	v uint32
}

// init sets the state to one that decodes sym. The first of the symbol's states needs the most
// bits to leave, which the two-state Huffman weight stream relies on to signal its end.
func (s *fseState) init(t *fseTable, sym uint32) {
	s.t = t
	s.v = uint32(t.states[t.start[sym]])
}

func (s *fseState) encode(w *bitWriter, sym uint32) {
	t := s.t
	nb := uint(t.maxBits[sym])
	if s.v < t.minPlus[sym] {
		nb--
	}
	w.add(s.v, nb)
	s.v = uint32(t.states[uint32(t.start[sym])+s.v>>nb-uint32(t.symCount[sym])])
}

func (s *fseState) flush(w *bitWriter) {
	w.add(s.v, uint(s.t.log))
}

// normalize fills t.norm with counts summing to 1<<log that approximate freq, every present symbol
// getting at least 1, and builds the table. Rounding errors are repaired greedily where they cost
// the fewest bits. 1<<log must be at least the number of present symbols.
func (t *fseTable) normalize(freq []uint32, total uint32, log uint8) {
	t.log = log
	size := int32(1) << log
	n := len(freq)
	for n > 0 && freq[n-1] == 0 {
		n--
	}
	t.nsym = n
	sum := int32(0)
	for s := 0; s < n; s++ {
		if freq[s] == 0 {
			t.norm[s] = 0
			continue
		}
		c := int32((uint64(freq[s])<<log + uint64(total)/2) / uint64(total))
		if c < 1 {
			c = 1
		}
		t.norm[s] = int16(c)
		sum += c
	}
	for sum > size {
		best, bestLoss := -1, uint64(1<<63)
		for s := 0; s < n; s++ {
			c := uint32(t.norm[s])
			if t.norm[s] <= 1 {
				continue
			}
			loss := uint64(freq[s]) * uint64(log2Q16(c)-log2Q16(c-1))
			if loss < bestLoss {
				best, bestLoss = s, loss
			}
		}
		t.norm[best]--
		sum--
	}
	for sum < size {
		best, bestGain := -1, uint64(0)
		for s := 0; s < n; s++ {
			if t.norm[s] <= 0 {
				continue
			}
			c := uint32(t.norm[s])
			gain := uint64(freq[s]) * uint64(log2Q16(c+1)-log2Q16(c))
			if best < 0 || gain > bestGain {
				best, bestGain = s, gain
			}
		}
		t.norm[best]++
		sum++
	}
	t.build()
}

// estimate returns the approximate cost in cost units of coding freq with t; symbols t cannot code
// make it huge.
func (t *fseTable) estimate(freq []uint32) uint64 {
	var c uint64
	for s, f := range freq {
		if f == 0 {
			continue
		}
		if s >= t.nsym || t.norm[s] == 0 {
			return 1 << 60
		}
		c += uint64(f) * uint64(t.cost[s])
	}
	return c
}

// writeHeader appends the table description of RFC 8878 section 4.1.1.
func (t *fseTable) writeHeader(out []byte) []byte {
	var acc uint64
	var nacc uint
	put := func(v uint32, nb uint) {
		acc |= uint64(v) << nacc
		nacc += nb
		for nacc >= 8 {
			out = append(out, byte(acc))
			acc >>= 8
			nacc -= 8
		}
	}
	put(uint32(t.log)-5, 4)
	remaining := int32(1)<<t.log + 1
	threshold := int32(1) << t.log
	nbBits := uint(t.log) + 1
	s := 0
	for remaining > 1 {
		c := t.norm[s]
		v := int32(c) + 1
		max := 2*threshold - 1 - remaining
		if v < max {
			put(uint32(v), nbBits-1)
		} else {
			if v >= threshold {
				v += max
			}
			put(uint32(v), nbBits)
		}
		if c < 0 {
			remaining--
		} else {
			remaining -= int32(c)
		}
		for remaining < threshold {
			nbBits--
			threshold >>= 1
		}
		s++
		if c == 0 {
			run := 0
			for s < t.nsym && t.norm[s] == 0 {
				run++
				s++
			}
			for run >= 3 {
				put(3, 2)
				run -= 3
			}
			put(uint32(run), 2)
		}
	}
	if nacc > 0 {
		out = append(out, byte(acc))
	}
	return out
}
