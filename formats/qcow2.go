package formats

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"

	"osbuild.dev/osbuild/internal/deflate"
)

// qcow2 v3 (QEMU docs/interop/qcow2.txt), laid out for a single forward pass:
//
//	cluster 0            header (104 bytes, then the end-of-extensions marker)
//	clusters 1..         L1 table, its size known from the virtual size alone
//	...                  data clusters in guest order (compressed ones packed byte-wise)
//	...                  L2 tables, refcount blocks, refcount table
//
// Only the L1 table and the header are written out of order, at the end, once the offsets are known.
const (
	qcowClusterBits = 16
	qcowCluster     = 1 << qcowClusterBits
	qcowL2Entries   = qcowCluster / 8
	qcowRefBits     = 16 // refcount_order 4
	qcowRefsPerBlk  = qcowCluster * 8 / qcowRefBits
	qcowCopied      = uint64(1) << 63 // refcount is exactly 1: may be written in place
	qcowCompressed  = uint64(1) << 62
	// With 64 KiB clusters a compressed descriptor holds the host offset in bits 0..53 and the number of
	// 512-byte sectors after the first one in bits 54..61.
	qcowCSizeShift = 62 - (qcowClusterBits - 8)
)

func writeQCOW2(ctx context.Context, src *os.File, size int64, out *output, opts Options) error {
	clusters := (size + qcowCluster - 1) / qcowCluster
	l1Size := (clusters + qcowL2Entries - 1) / qcowL2Entries
	l1Clusters := (l1Size*8 + qcowCluster - 1) / qcowCluster
	dataStart := int64(1+l1Clusters) * qcowCluster
	if l1Size > 1<<25 { // QEMU's limit on the L1 table (32 MiB of entries)
		return fmt.Errorf("image of %d bytes is too large for qcow2 with 64 KiB clusters", size)
	}

	l2 := make(map[int64][]uint64) // L1 index → L2 table, allocated on first use
	// Host refcounts, one per host cluster; compressed clusters may share a host cluster.
	refs := make([]uint16, dataStart/qcowCluster)
	for i := range refs {
		refs[i] = 1
	}
	setL2 := func(guest int64, entry uint64) {
		t := l2[guest/qcowL2Entries]
		if t == nil {
			t = make([]uint64, qcowL2Entries)
			l2[guest/qcowL2Entries] = t
		}
		t[guest%qcowL2Entries] = entry
	}
	addRef := func(from, to int64) { // host bytes [from, to)
		for c := from / qcowCluster; c <= (to-1)/qcowCluster; c++ {
			for int64(len(refs)) <= c {
				refs = append(refs, 0)
			}
			refs[c]++
		}
	}

	if err := out.start(dataStart); err != nil {
		return err
	}
	s := &scanner{unit: qcowCluster, batch: 16 * qcowCluster, workers: opts.Workers}
	if opts.Compress {
		s.newWorker = func() func(*chunk) error {
			enc := deflate.NewEncoder(opts.Level)
			return func(c *chunk) error {
				return eachNonZero(c, qcowCluster, func(dst []byte, _ int64, u []byte) ([]byte, error) {
					// qcow2 compressed clusters are raw deflate (no zlib header). QEMU inflates a whole
					// cluster in one call into a cluster-sized buffer, so back-references across the
					// whole 64 KiB are fine.
					start := len(dst)
					dst = enc.Encode(dst, u)
					if len(dst)-start >= qcowCluster-512 {
						return dst[:start], nil // not worth it: stored as a plain cluster (empty out)
					}
					return dst, nil
				})
			}
		}
	}
	_, err := s.run(ctx, src, size, func(c *chunk) error {
		// Runs of consecutive plain clusters are written with one call, straight from the source buffer.
		run := -1
		endRun := func(i int) error {
			if run < 0 {
				return nil
			}
			_, err := out.Write(c.data[run*qcowCluster : i*qcowCluster])
			run = -1
			return err
		}
		for i, z := range c.zero {
			if z {
				if err := endRun(i); err != nil {
					return err
				}
				continue
			}
			guest := c.off/qcowCluster + int64(i)
			if opts.Compress && len(c.out[i]) > 0 {
				if err := endRun(i); err != nil {
					return err
				}
				cd := c.out[i]
				off := out.pos
				sectors := (off+int64(len(cd))-1)/512 - off/512
				setL2(guest, qcowCompressed|uint64(sectors)<<qcowCSizeShift|uint64(off))
				addRef(off, off+int64(len(cd)))
				if _, err := out.Write(cd); err != nil {
					return err
				}
				continue
			}
			if run < 0 {
				if r := out.pos % qcowCluster; r != 0 {
					if err := out.pad(qcowCluster - r); err != nil {
						return err
					}
				}
				run = i
			}
			off := out.pos + int64(i-run)*qcowCluster
			setL2(guest, qcowCopied|uint64(off))
			addRef(off, off+qcowCluster)
		}
		return endRun(len(c.zero))
	})
	if err != nil {
		return err
	}

	// QEMU reads whole sectors of compressed data, and every table below starts on a cluster boundary.
	if r := out.pos % qcowCluster; r != 0 {
		if err := out.pad(qcowCluster - r); err != nil {
			return err
		}
	}
	l1 := make([]byte, l1Clusters*qcowCluster)
	for idx := range l1Size {
		t := l2[idx]
		if t == nil {
			continue
		}
		off := out.pos
		binary.BigEndian.PutUint64(l1[idx*8:], qcowCopied|uint64(off))
		addRef(off, off+qcowCluster)
		var b [qcowCluster]byte
		for i, e := range t {
			binary.BigEndian.PutUint64(b[i*8:], e)
		}
		if err := out.writeSparse(b[:]); err != nil {
			return err
		}
	}

	// The refcount blocks and table cover themselves: grow both until they do.
	first := out.pos / qcowCluster
	var blocks, tableClusters int64
	for {
		total := first + blocks + tableClusters
		nb := (total + qcowRefsPerBlk - 1) / qcowRefsPerBlk
		nt := (nb*8 + qcowCluster - 1) / qcowCluster
		if nb == blocks && nt == tableClusters {
			break
		}
		blocks, tableClusters = nb, nt
	}
	addRef(out.pos, out.pos+(blocks+tableClusters)*qcowCluster)
	table := make([]byte, tableClusters*qcowCluster)
	for b := range blocks {
		binary.BigEndian.PutUint64(table[b*8:], uint64((first+b)*qcowCluster))
		var blk [qcowCluster]byte
		for i := range int64(qcowRefsPerBlk) {
			if h := b*qcowRefsPerBlk + i; h < int64(len(refs)) {
				binary.BigEndian.PutUint16(blk[i*2:], refs[h])
			}
		}
		if err := out.writeSparse(blk[:]); err != nil {
			return err
		}
	}
	tableOff := out.pos
	if err := out.writeSparse(table); err != nil {
		return err
	}
	if err := out.flush(); err != nil {
		return err
	}
	// The tables' zero tails are holes: set the length so that the last cluster is whole.
	if err := out.truncate(out.pos); err != nil {
		return err
	}

	h := make([]byte, qcowCluster)
	be := binary.BigEndian
	copy(h, "QFI\xfb")
	be.PutUint32(h[4:], 3)
	be.PutUint32(h[20:], qcowClusterBits)
	be.PutUint64(h[24:], uint64(size))
	be.PutUint32(h[36:], uint32(l1Size))
	be.PutUint64(h[40:], qcowCluster) // L1 table offset
	be.PutUint64(h[48:], uint64(tableOff))
	be.PutUint32(h[56:], uint32(tableClusters))
	be.PutUint32(h[96:], 4) // refcount_order: 16-bit refcounts
	be.PutUint32(h[100:], 104)
	// Bytes 104..111 stay zero: the end of the (empty) header extension list.
	if err := out.writeAtSparse(l1, qcowCluster); err != nil {
		return err
	}
	if err := out.writeAtSparse(h, 0); err != nil {
		return err
	}
	return nil
}
