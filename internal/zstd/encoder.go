// Package zstd is a Zstandard (RFC 8878) compressor tuned for small independent frames such as
// squashfs blocks. It trades speed for ratio with an optimal parser in the spirit of zstd's btopt
// strategy; decoding is left to other packages.
package zstd

const (
	maxBlockSize = 128 << 10
)

// Encoder compresses independent frames. It keeps its tables between calls so that encoding many
// small inputs does not allocate; it is not safe for concurrent use.
type Encoder struct {
	level int
	p     parser
	lits  []byte
	seqs  []seq
	huff  huffEnc
	se    seqEnc
	block []byte

	seqHook func([]seq) // tests inspect the parser's choices through it
}

// NewEncoder returns an Encoder for a zstd compression level; levels of 13 and above use the
// optimal parser with deep match search, lower levels search less.
func NewEncoder(level int) *Encoder {
	e := &Encoder{level: level}
	e.p.init(level)
	return e
}

// Encode appends to dst one single-segment zstd frame holding src, with its content size and no
// checksum, and returns the extended slice.
func (e *Encoder) Encode(dst, src []byte) []byte {
	n := len(src)
	dst = append(dst, 0x28, 0xB5, 0x2F, 0xFD) // magic number, little-endian
	// Single_Segment_flag: the window is the content size, so no window descriptor is needed.
	switch {
	case n < 256:
		dst = append(dst, 1<<5, byte(n))
	case n < 65536+256:
		dst = append(dst, 1<<6|1<<5, byte(n-256), byte((n-256)>>8))
	default:
		dst = append(dst, 2<<6|1<<5, byte(n), byte(n>>8), byte(n>>16), byte(n>>24))
	}
	if n == 0 {
		return append(dst, 1, 0, 0) // one empty raw block
	}
	e.p.reset(src)
	reps := [3]uint32{1, 4, 8}
	for bs := 0; bs < n; bs += maxBlockSize {
		be := min(bs+maxBlockSize, n)
		dst = e.encodeBlock(dst, src, bs, be, be == n, &reps)
	}
	return dst
}

func blockHeader(dst []byte, last bool, typ int, size int) []byte {
	v := uint32(size)<<3 | uint32(typ)<<1
	if last {
		v |= 1
	}
	return append(dst, byte(v), byte(v>>8), byte(v>>16))
}

func (e *Encoder) encodeBlock(dst, src []byte, bs, be int, last bool, reps *[3]uint32) []byte {
	b := src[bs:be]
	same := true
	for _, c := range b[1:] {
		if c != b[0] {
			same = false
			break
		}
	}
	if same && len(b) > 1 {
		// The parser still has to see the block so later blocks can match into it.
		e.p.skip(bs, be)
		return append(blockHeader(dst, last, 1, len(b)), b[0])
	}
	saved := *reps
	e.seqs, e.lits = e.p.parse(src, bs, be, reps, e.seqs[:0], e.lits[:0])
	if e.seqHook != nil {
		e.seqHook(e.seqs)
	}
	out := e.huff.encodeLiterals(e.block[:0], e.lits)
	out = e.se.encode(out, e.seqs)
	e.block = out
	if len(out) >= len(b) {
		// A raw block does not touch the decoder's repeat offsets.
		*reps = saved
		return append(blockHeader(dst, last, 0, len(b)), b...)
	}
	return append(blockHeader(dst, last, 2, len(out)), out...)
}
