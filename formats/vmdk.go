package formats

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"strings"

	"osbuild.dev/osbuild/internal/deflate"
)

// VMDK streamOptimized (VMware Virtual Disk Format 1.1, "Stream-Optimized Compressed Sparse Extents"):
//
//	sector 0                 sparse extent header, gdOffset = GD_AT_END
//	sectors 1..20            the text descriptor
//	sector 128..             grains: a marker (LBA, compressed size) followed by zlib data, sector-padded;
//	                         after the grains of each 32 MiB span, a GT marker and its grain table
//	end                      GD marker + grain directory, footer marker + header copy with the real
//	                         gdOffset, end-of-stream marker
//
// Readers (QEMU, VMware, AWS import) find the directory through the footer at EOF-1024. Grain tables with no
// grains are left out (directory entry 0 = unallocated).
const (
	vmdkMagic       = 0x564d444b // "KDMV" on disk
	vmdkGrain       = 64 << 10
	vmdkGrainSecs   = vmdkGrain / 512
	vmdkGTEntries   = 512
	vmdkDescOff     = 1
	vmdkDescSecs    = 20
	vmdkOverhead    = 128 // sectors before the first grain
	vmdkMarkerEOS   = 0
	vmdkMarkerGT    = 1
	vmdkMarkerGD    = 2
	vmdkMarkerFoot  = 3
	vmdkGDAtEnd     = ^uint64(0)
	vmdkFlagNL      = 1 << 0
	vmdkFlagComp    = 1 << 16
	vmdkFlagMarkers = 1 << 17
)

func writeVMDK(ctx context.Context, src *os.File, size int64, out *output, opts Options) error {
	capacity := uint64(size+511) / 512
	grains := int64(capacity+vmdkGrainSecs-1) / vmdkGrainSecs
	numGTs := (grains + vmdkGTEntries - 1) / vmdkGTEntries
	gd := make([]uint32, numGTs)
	gt := make([]uint32, vmdkGTEntries)
	curGT := int64(-1) // the table being filled; -1 before the first grain

	if err := out.start(vmdkOverhead * 512); err != nil {
		return err
	}
	flushGT := func() error {
		if curGT < 0 {
			return nil
		}
		if _, err := out.Write(vmdkMarker(vmdkGTEntries*4/512, vmdkMarkerGT)); err != nil {
			return err
		}
		gd[curGT] = uint32(out.pos / 512)
		b := make([]byte, vmdkGTEntries*4)
		for i, e := range gt {
			binary.LittleEndian.PutUint32(b[i*4:], e)
		}
		clear(gt)
		_, err := out.Write(b)
		return err
	}

	s := &scanner{unit: vmdkGrain, batch: 16 * vmdkGrain, workers: opts.Workers}
	s.newWorker = func() func(*chunk) error {
		enc := deflate.NewEncoder(opts.Level)
		return func(c *chunk) error {
			return eachNonZero(c, vmdkGrain, func(dst []byte, idx int64, u []byte) ([]byte, error) {
				// The grain's whole record: LBA and size, the zlib stream, zeros to the sector end.
				start := len(dst)
				dst = binary.LittleEndian.AppendUint64(dst, uint64(idx*vmdkGrainSecs))
				dst = append(dst, 0, 0, 0, 0)
				dst = enc.EncodeZlib(dst, u)
				n := len(dst) - start
				binary.LittleEndian.PutUint32(dst[start+8:], uint32(n-12))
				return append(dst, zeros[:(512-n%512)%512]...), nil
			})
		}
	}
	id, err := s.run(ctx, src, size, func(c *chunk) error {
		for i, z := range c.zero {
			if z {
				continue
			}
			g := c.off/vmdkGrain + int64(i)
			if g/vmdkGTEntries != curGT {
				if err := flushGT(); err != nil {
					return err
				}
				curGT = g / vmdkGTEntries
			}
			gt[g%vmdkGTEntries] = uint32(out.pos / 512)
			if _, err := out.Write(c.out[i]); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if err := flushGT(); err != nil {
		return err
	}

	gdSecs := (numGTs*4 + 511) / 512
	if _, err := out.Write(vmdkMarker(uint64(gdSecs), vmdkMarkerGD)); err != nil {
		return err
	}
	gdOff := out.pos / 512
	b := make([]byte, gdSecs*512)
	for i, e := range gd {
		binary.LittleEndian.PutUint32(b[i*4:], e)
	}
	if _, err := out.Write(b); err != nil {
		return err
	}
	if _, err := out.Write(vmdkMarker(1, vmdkMarkerFoot)); err != nil {
		return err
	}
	if _, err := out.Write(vmdkHeader(capacity, uint64(gdOff))); err != nil {
		return err
	}
	if _, err := out.Write(vmdkMarker(0, vmdkMarkerEOS)); err != nil {
		return err
	}
	if err := out.flush(); err != nil {
		return err
	}

	desc, err := vmdkDescriptor(capacity, id, opts.Name)
	if err != nil {
		return err
	}
	front := make([]byte, vmdkOverhead*512)
	copy(front, vmdkHeader(capacity, vmdkGDAtEnd))
	copy(front[vmdkDescOff*512:], desc)
	return out.writeAtSparse(front, 0)
}

// vmdkMarker is a metadata marker sector: the size in sectors of what follows, a zero data size (which is
// what tells it from a grain marker) and the type.
func vmdkMarker(sectors uint64, typ uint32) []byte {
	m := make([]byte, 512)
	binary.LittleEndian.PutUint64(m, sectors)
	binary.LittleEndian.PutUint32(m[12:], typ)
	return m
}

func vmdkHeader(capacity, gdOffset uint64) []byte {
	h := make([]byte, 512)
	le := binary.LittleEndian
	le.PutUint32(h[0:], vmdkMagic)
	le.PutUint32(h[4:], 3) // version 3: streamOptimized
	le.PutUint32(h[8:], vmdkFlagNL|vmdkFlagComp|vmdkFlagMarkers)
	le.PutUint64(h[12:], capacity)
	le.PutUint64(h[20:], vmdkGrainSecs)
	le.PutUint64(h[28:], vmdkDescOff)
	le.PutUint64(h[36:], vmdkDescSecs)
	le.PutUint32(h[44:], vmdkGTEntries)
	le.PutUint64(h[48:], 0) // no redundant grain directory
	le.PutUint64(h[56:], gdOffset)
	le.PutUint64(h[64:], vmdkOverhead)
	h[72] = 0 // cleanly closed
	// Newline detection bytes: a transfer that mangles line endings corrupts these too.
	h[73], h[74], h[75], h[76] = '\n', ' ', '\r', '\n'
	le.PutUint16(h[77:], 1) // deflate
	return h
}

// vmdkDescriptor is the embedded text descriptor. CID and UUID come from the content identity, and the
// geometry from the size, so that it is reproducible.
func vmdkDescriptor(capacity uint64, id [32]byte, name string) ([]byte, error) {
	if strings.ContainsAny(name, "\"\n\r") {
		return nil, fmt.Errorf("vmdk extent name %q: quotes and line breaks are not allowed", name)
	}
	cyl := min(capacity/(16*63), 16383)
	u := contentUUID(id, "vmdk")
	cid := binary.LittleEndian.Uint32(u[:4])
	if cid == 0xffffffff {
		cid = 0xfffffffe // ffffffff means "no parent"
	}
	d := fmt.Sprintf(`# Disk DescriptorFile
version=1
CID=%08x
parentCID=ffffffff
createType="streamOptimized"

# Extent description
RW %d SPARSE "%s"

# The Disk Data Base
#DDB

ddb.adapterType = "lsilogic"
ddb.geometry.cylinders = "%d"
ddb.geometry.heads = "16"
ddb.geometry.sectors = "63"
ddb.longContentID = "%x"
ddb.toolsInstallType = "4"
ddb.toolsVersion = "2147483647"
ddb.uuid = "%s"
ddb.virtualHWVersion = "4"
`, cid, capacity, name, cyl, id[:16], uuidBytes(u))
	if len(d) > vmdkDescSecs*512 {
		return nil, fmt.Errorf("vmdk descriptor is %d bytes, more than %d: shorten the extent name", len(d), vmdkDescSecs*512)
	}
	return []byte(d), nil
}

// uuidBytes formats a UUID the way VMware's ddb.uuid does: 16 hex bytes separated by spaces, with a dash
// in the middle.
func uuidBytes(u [16]byte) string {
	var sb strings.Builder
	for i, c := range u {
		switch {
		case i == 8:
			sb.WriteByte('-')
		case i > 0:
			sb.WriteByte(' ')
		}
		fmt.Fprintf(&sb, "%02x", c)
	}
	return sb.String()
}
