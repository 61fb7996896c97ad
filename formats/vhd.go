package formats

import (
	"context"
	"encoding/binary"
	"os"
)

// VHD (Microsoft Virtual Hard Disk Image Format Specification): a 512-byte footer at the end of the file,
// big-endian, with a one's-complement checksum. A fixed disk is the raw data followed by the footer; a
// dynamic disk is a footer copy, a dynamic header, a block allocation table (BAT) and 2 MiB blocks, each
// preceded by a sector bitmap.
const (
	vhdTypeFixed   = 2
	vhdTypeDynamic = 3
	vhdBlock       = 2 << 20
	vhdEpoch       = 946684800 // 2000-01-01T00:00:00Z, the zero of VHD timestamps
	flatUnit       = 64 << 10
)

// writeFlat writes raw (sparse copy) or, with vhd, a fixed VHD: data at the same offsets, zero clusters
// left as holes, the size rounded up to a whole MiB (Azure refuses anything else) and the footer after it.
func writeFlat(ctx context.Context, src *os.File, size int64, out *output, opts Options, vhd bool) error {
	if err := out.start(0); err != nil {
		return err
	}
	s := &scanner{unit: flatUnit, batch: 16 * flatUnit, workers: opts.Workers}
	id, err := s.run(ctx, src, size, func(c *chunk) error {
		// Zero pages inside the chunk stay holes: the layout is the source's.
		if err := out.skip(c.off); err != nil {
			return err
		}
		return out.writeSparse(c.data[:min(int64(len(c.data)), size-c.off)])
	})
	if err != nil {
		return err
	}
	if err := out.flush(); err != nil {
		return err
	}
	if !vhd {
		return out.truncate(size)
	}
	vsize := (size + 1<<20 - 1) &^ (1<<20 - 1)
	if err := out.truncate(vsize); err != nil {
		return err
	}
	return out.writeAt(vhdFooter(vsize, vhdTypeFixed, ^uint64(0), id, opts.SourceDateEpoch), vsize)
}

// writeVHDDynamic writes a dynamic VHD: footer copy, dynamic header and BAT at the front (patched at the
// end), then one 2 MiB block per non-zero block of the source, then the footer.
func writeVHDDynamic(ctx context.Context, src *os.File, size int64, out *output, opts Options) error {
	entries := (size + vhdBlock - 1) / vhdBlock
	batOff := int64(512 + 1024)
	batBytes := (entries*4 + 511) &^ 511
	bat := make([]byte, batBytes)
	for i := range bat {
		bat[i] = 0xff // unallocated
	}
	dataStart := batOff + batBytes
	if err := out.start(dataStart); err != nil {
		return err
	}
	// Every sector of a written block holds data (zeros included), so each bitmap is all ones.
	bitmap := make([]byte, 512)
	for i := range bitmap {
		bitmap[i] = 0xff
	}
	s := &scanner{unit: vhdBlock, batch: vhdBlock, workers: opts.Workers}
	id, err := s.run(ctx, src, size, func(c *chunk) error {
		for i, z := range c.zero {
			if z {
				continue
			}
			blk := c.off/vhdBlock + int64(i)
			binary.BigEndian.PutUint32(bat[blk*4:], uint32(out.pos/512))
			if _, err := out.Write(bitmap); err != nil {
				return err
			}
			// The block's zero pages stay holes in the file: they read as zeros all the same.
			if err := out.writeSparse(c.data[i*vhdBlock : (i+1)*vhdBlock]); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	footer := vhdFooter(size, vhdTypeDynamic, 512, id, opts.SourceDateEpoch)
	if _, err := out.Write(footer); err != nil {
		return err
	}
	if err := out.flush(); err != nil {
		return err
	}

	h := make([]byte, 1024)
	be := binary.BigEndian
	copy(h, "cxsparse")
	be.PutUint64(h[8:], ^uint64(0)) // no further structure
	be.PutUint64(h[16:], uint64(batOff))
	be.PutUint32(h[24:], 0x00010000)
	be.PutUint32(h[28:], uint32(entries))
	be.PutUint32(h[32:], vhdBlock)
	be.PutUint32(h[36:], vhdChecksum(h))
	front := append(append(append([]byte{}, footer...), h...), bat...)
	return out.writeAt(front, 0)
}

// vhdFooter builds the 512-byte footer. The creator application is "win " (Hyper-V's) on purpose: readers
// size a VHD either by its CHS geometry or by its current-size field, and pick by creator. Up to QEMU 9
// (Debian 12 has 7.2) only a short list of creators ("win ", "qem2", "d2v ", "CTXS", "tap") gets the
// current size; any other would be truncated to the geometry, which rarely matches the size exactly.
func vhdFooter(size int64, typ uint32, dataOffset uint64, id [32]byte, epoch int64) []byte {
	f := make([]byte, 512)
	be := binary.BigEndian
	copy(f, "conectix")
	be.PutUint32(f[8:], 2) // features: the reserved bit that must be set
	be.PutUint32(f[12:], 0x00010000)
	be.PutUint64(f[16:], dataOffset)
	if epoch > vhdEpoch {
		be.PutUint32(f[24:], uint32(min(epoch-vhdEpoch, 1<<32-1)))
	}
	copy(f[28:], "win ")
	be.PutUint32(f[32:], 0x00010000)
	copy(f[36:], "Wi2k") // the host OS most tools write; nothing reads it
	be.PutUint64(f[40:], uint64(size))
	be.PutUint64(f[48:], uint64(size))
	be.PutUint32(f[56:], chsGeometry(size))
	be.PutUint32(f[60:], typ)
	u := contentUUID(id, "vhd")
	copy(f[68:], u[:])
	be.PutUint32(f[64:], vhdChecksum(f))
	return f
}

// vhdChecksum is the one's complement of the byte sum, taken with the checksum field (at 64 in the footer,
// 36 in the dynamic header) still zero.
func vhdChecksum(b []byte) uint32 {
	var sum uint32
	for _, c := range b {
		sum += uint32(c)
	}
	return ^sum
}

// chsGeometry is the spec's CHS computation (cylinders<<16 | heads<<8 | sectors per track), capped at
// 65535×16×255 sectors.
func chsGeometry(size int64) uint32 {
	total := size / 512
	total = min(total, 65535*16*255)
	var spt, heads, cth int64
	if total >= 65535*16*63 {
		spt, heads = 255, 16
		cth = total / spt
	} else {
		spt = 17
		cth = total / spt
		heads = max((cth+1023)/1024, 4)
		if cth >= heads*1024 || heads > 16 {
			spt, heads = 31, 16
			cth = total / spt
		}
		if cth >= heads*1024 {
			spt, heads = 63, 16
			cth = total / spt
		}
	}
	return uint32(cth/heads)<<16 | uint32(heads)<<8 | uint32(spt)
}

// contentUUID turns the content identity into an RFC 9562 version 8 (custom) UUID, distinct per format.
func contentUUID(id [32]byte, format string) [16]byte {
	var u [16]byte
	for i := range u {
		u[i] = id[i] ^ id[16+i]
	}
	for i, c := range []byte(format) {
		u[i%16] ^= c
	}
	u[6] = u[6]&0x0f | 0x80
	u[8] = u[8]&0x3f | 0x80
	return u
}
