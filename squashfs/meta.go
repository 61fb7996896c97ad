package squashfs

import (
	"encoding/binary"
)

const (
	metadataSize       = 8192
	metaUncompressed   = 0x8000  // in a metadata block header
	dataUncompressed   = 1 << 24 // in a data block size
	invalidFragment    = 0xFFFFFFFF
	invalidXattr       = 0xFFFFFFFF
	invalidTable       = ^uint64(0)
	superblockSize     = 96
	squashfsMagic      = 0x73717368
	flagDuplicates     = 0x0040
	flagNoXattrs       = 0x0200
	flagCompOptions    = 0x0400
	dirHeaderMaxCount  = 256
	lookupPerMetaBlock = metadataSize / 8
)

// metaWriter builds a metadata table (inodes, directories, lookup tables) in memory: 8 KiB
// uncompressed blocks, each stored compressed behind a 2-byte header, or raw when compression does
// not help. Positions inside it are (offset of the block in the table, offset inside the
// uncompressed block): the start of the current block is known because every earlier block is
// already compressed.
type metaWriter struct {
	c    compressor
	out  []byte // compressed blocks
	cur  []byte // the block being filled
	tmp  []byte
	err  error
	pos  []uint64 // table offset of each finished block, for lookup tables
	size int64    // uncompressed bytes written
}

func newMetaWriter(c compressor) *metaWriter {
	return &metaWriter{c: c, cur: make([]byte, 0, metadataSize)}
}

// ref is the position of the next byte: block start << 16 | offset.
func (m *metaWriter) ref() (block uint32, offset uint16) {
	return uint32(len(m.out)), uint16(len(m.cur))
}

func (m *metaWriter) Write(p []byte) (int, error) {
	n := len(p)
	m.size += int64(n)
	for len(p) > 0 {
		k := min(len(p), metadataSize-len(m.cur))
		m.cur = append(m.cur, p[:k]...)
		p = p[k:]
		if len(m.cur) == metadataSize {
			m.flush()
		}
	}
	return n, m.err
}

func (m *metaWriter) flush() {
	if len(m.cur) == 0 {
		return
	}
	m.pos = append(m.pos, uint64(len(m.out)))
	c, err := m.c.compress(m.tmp, m.cur)
	if err != nil && m.err == nil {
		m.err = err
	}
	if err == nil && len(c) < len(m.cur) {
		m.out = binary.LittleEndian.AppendUint16(m.out, uint16(len(c)))
		m.out = append(m.out, c...)
		m.tmp = c[:0]
	} else {
		m.out = binary.LittleEndian.AppendUint16(m.out, uint16(len(m.cur))|metaUncompressed)
		m.out = append(m.out, m.cur...)
	}
	m.cur = m.cur[:0]
}

// finish compresses the partial last block and returns the table.
func (m *metaWriter) finish() ([]byte, error) {
	m.flush()
	return m.out, m.err
}

// le is a little-endian encoder for fixed-layout records.
type le []byte

func (b le) u16(v uint16) le { return binary.LittleEndian.AppendUint16(b, v) }
func (b le) u32(v uint32) le { return binary.LittleEndian.AppendUint32(b, v) }
func (b le) u64(v uint64) le { return binary.LittleEndian.AppendUint64(b, v) }
