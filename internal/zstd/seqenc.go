package zstd

// seq is one sequence: ll literals, then a match of ml bytes at offset value ofv (1..3 are the
// repeat codes, larger values are the offset plus 3).
type seq struct {
	ll, ml, ofv uint32
}

var predefLL, predefML, predefOF fseTable

func init() {
	predefLL.setPredef(llPredef, llPredefLog)
	predefML.setPredef(mlPredef, mlPredefLog)
	predefOF.setPredef(ofPredef, ofPredefLog)
}

// seqEnc writes the sequences section (RFC 8878 section 3.1.1.3.2).
type seqEnc struct {
	llc, mlc, ofc []uint8
	llF, mlF, ofF [64]uint32
	llT, mlT, ofT fseTable
	trial         fseTable
	scratch       []byte
	bw            bitWriter
}

const (
	modePredef = 0
	modeRLE    = 1
	modeFSE    = 2
)

// chooseTable picks the cheapest of predefined, RLE and a freshly normalized table for the symbol
// frequencies freq of n symbols; it fills own when that is the choice and returns the mode, the
// table to encode with and the RLE symbol.
func (e *seqEnc) chooseTable(freq []uint32, n int, predef *fseTable, own *fseTable, maxLog uint8) (int, *fseTable, uint8) {
	distinct, last := 0, 0
	for s, f := range freq {
		if f > 0 {
			distinct++
			last = s
		}
	}
	if distinct == 1 {
		// RLE costs one byte and no bits per symbol; nothing is cheaper.
		own.log = 0
		own.nsym = last + 1
		clear(own.norm[:own.nsym])
		own.norm[last] = 1
		// No state change and no bits: the decoder never reads any for RLE.
		own.symCount[last] = 0
		own.start[last] = 0
		own.maxBits[last] = 0
		own.minPlus[last] = 0
		own.states[0] = 0
		return modeRLE, own, uint8(last)
	}
	best := predef.estimate(freq)
	mode := modePredef
	bestLog := uint8(0)
	for log := uint8(5); log <= maxLog; log++ {
		if 1<<log < distinct {
			continue
		}
		if log > 5 && 1<<(log-2) > n {
			break
		}
		e.trial.normalize(freq, uint32(n), log)
		e.scratch = e.trial.writeHeader(e.scratch[:0])
		c := e.trial.estimate(freq) + uint64(len(e.scratch))*8<<costShift
		if c < best {
			best, mode, bestLog = c, modeFSE, log
		}
	}
	if mode == modePredef {
		return modePredef, predef, 0
	}
	own.normalize(freq, uint32(n), bestLog)
	return modeFSE, own, 0
}

func (e *seqEnc) encode(out []byte, seqs []seq) []byte {
	n := len(seqs)
	switch {
	case n < 128:
		out = append(out, byte(n))
	case n < 0x7F00:
		out = append(out, byte(n>>8)+128, byte(n))
	default:
		out = append(out, 255, byte(n-0x7F00), byte((n-0x7F00)>>8))
	}
	if n == 0 {
		return out
	}
	if cap(e.llc) < n {
		e.llc = make([]uint8, n, n+n/4)
		e.mlc = make([]uint8, n, n+n/4)
		e.ofc = make([]uint8, n, n+n/4)
	}
	e.llc, e.mlc, e.ofc = e.llc[:n], e.mlc[:n], e.ofc[:n]
	clear(e.llF[:])
	clear(e.mlF[:])
	clear(e.ofF[:])
	for i, s := range seqs {
		l, m, o := llCode(s.ll), mlCode(s.ml), highBit(s.ofv)
		e.llc[i], e.mlc[i], e.ofc[i] = uint8(l), uint8(m), uint8(o)
		e.llF[l]++
		e.mlF[m]++
		e.ofF[o]++
	}
	llMode, llT, llSym := e.chooseTable(e.llF[:maxLLCode+1], n, &predefLL, &e.llT, llMaxLog)
	ofMode, ofT, ofSym := e.chooseTable(e.ofF[:maxOFCode+1], n, &predefOF, &e.ofT, ofMaxLog)
	mlMode, mlT, mlSym := e.chooseTable(e.mlF[:maxMLCode+1], n, &predefML, &e.mlT, mlMaxLog)
	out = append(out, byte(llMode<<6|ofMode<<4|mlMode<<2))
	for _, x := range []struct {
		mode int
		t    *fseTable
		sym  uint8
	}{{llMode, llT, llSym}, {ofMode, ofT, ofSym}, {mlMode, mlT, mlSym}} {
		switch x.mode {
		case modeRLE:
			out = append(out, x.sym)
		case modeFSE:
			out = x.t.writeHeader(out)
		}
	}
	w := &e.bw
	w.reset(out)
	var llS, mlS, ofS fseState
	last := n - 1
	mlS.init(mlT, uint32(e.mlc[last]))
	ofS.init(ofT, uint32(e.ofc[last]))
	llS.init(llT, uint32(e.llc[last]))
	e.extra(w, seqs[last], last)
	for i := n - 2; i >= 0; i-- {
		ofS.encode(w, uint32(e.ofc[i]))
		mlS.encode(w, uint32(e.mlc[i]))
		llS.encode(w, uint32(e.llc[i]))
		e.extra(w, seqs[i], i)
	}
	mlS.flush(w)
	ofS.flush(w)
	llS.flush(w)
	return w.close()
}

// extra writes the extra bits of a sequence in the reverse of the order the decoder reads them.
func (e *seqEnc) extra(w *bitWriter, s seq, i int) {
	l, m, o := e.llc[i], e.mlc[i], e.ofc[i]
	w.add(s.ll-llBase[l], uint(llBits[l]))
	w.add(s.ml-mlBase[m], uint(mlBits[m]))
	w.add(s.ofv, uint(o))
}
