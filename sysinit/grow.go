//go:build linux

package sysinit

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// growAlign is where a grown partition ends: a MiB boundary, as partitioning tools align.
const growAlign = 1 << 20

// growLastPartition extends partition number n of disk (its /dev and /sys under root) to the end of the disk when it is the last one,
// rewriting both GPT copies (the backup moves to the new end: images are built small and written to
// bigger disks) and telling the kernel with BLKPG. It returns whether anything changed. It runs only
// before the data partition is first formatted, so no filesystem needs resizing.
func growLastPartition(root, disk string, n int) (bool, error) {
	lbs := 512
	if b, err := os.ReadFile(filepath.Join(root, "/sys/block", disk, "queue/logical_block_size")); err == nil {
		if v, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && v >= 512 {
			lbs = v
		}
	}
	b, err := os.ReadFile(filepath.Join(root, "/sys/block", disk, "size"))
	if err != nil {
		return false, err
	}
	sectors512, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return false, err
	}
	diskLBAs := sectors512 * 512 / int64(lbs)

	f, err := os.OpenFile(filepath.Join(root, "/dev", disk), os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return false, err
	}
	defer f.Close()
	le := binary.LittleEndian

	hdr := make([]byte, lbs)
	if _, err := f.ReadAt(hdr, int64(lbs)); err != nil {
		return false, err
	}
	if string(hdr[:8]) != "EFI PART" {
		return false, errors.New("no GPT")
	}
	hsize := le.Uint32(hdr[12:])
	if hsize < 92 || int(hsize) > lbs {
		return false, fmt.Errorf("GPT header size %d", hsize)
	}
	if gptCRC(hdr[:hsize]) != le.Uint32(hdr[16:]) {
		return false, errors.New("the primary GPT header's checksum is wrong; not touching it")
	}
	entLBA := int64(le.Uint64(hdr[72:]))
	count := le.Uint32(hdr[80:])
	esize := le.Uint32(hdr[84:])
	if esize < 128 || count == 0 || count > 1024 || n < 1 || n > int(count) {
		return false, fmt.Errorf("GPT has %d entries of %d bytes", count, esize)
	}
	ents := make([]byte, int(count)*int(esize))
	if _, err := f.ReadAt(ents, entLBA*int64(lbs)); err != nil {
		return false, err
	}
	if crc32.ChecksumIEEE(ents) != le.Uint32(hdr[88:]) {
		return false, errors.New("the GPT entries' checksum is wrong; not touching them")
	}
	entLBAs := (int64(len(ents)) + int64(lbs) - 1) / int64(lbs)
	lastLBA := diskLBAs - 1
	newLastUsable := lastLBA - entLBAs - 1

	e := ents[(n-1)*int(esize) : n*int(esize)]
	start, end := int64(le.Uint64(e[32:])), int64(le.Uint64(e[40:]))
	for i := 0; i < int(count); i++ {
		o := ents[i*int(esize) : (i+1)*int(esize)]
		if i != n-1 && !allZero(o[:16]) && int64(le.Uint64(o[40:])) > end {
			return false, nil // not the last partition: leave the layout alone
		}
	}
	perAlign := int64(growAlign / lbs)
	newEnd := (newLastUsable+1)/perAlign*perAlign - 1
	if newEnd <= end || newEnd <= start {
		return false, nil
	}

	le.PutUint64(e[40:], uint64(newEnd))
	entCRC := crc32.ChecksumIEEE(ents)
	backupEntLBA := lastLBA - entLBAs

	primary := append([]byte(nil), hdr[:hsize]...)
	le.PutUint64(primary[32:], uint64(lastLBA))       // alternate (backup) header
	le.PutUint64(primary[48:], uint64(newLastUsable)) // last usable LBA
	le.PutUint32(primary[88:], entCRC)
	backup := append([]byte(nil), primary...)
	le.PutUint64(backup[24:], uint64(lastLBA))
	le.PutUint64(backup[32:], 1)
	le.PutUint64(backup[72:], uint64(backupEntLBA))
	for _, h := range [][]byte{primary, backup} {
		le.PutUint32(h[16:], 0)
		le.PutUint32(h[16:], crc32.ChecksumIEEE(h))
	}
	pad := func(h []byte) []byte { return append(h, make([]byte, lbs-len(h))...) }

	// Backup first: until the primary is rewritten, the old layout stays valid and consistent.
	writes := []struct {
		off  int64
		data []byte
	}{
		{backupEntLBA * int64(lbs), ents},
		{lastLBA * int64(lbs), pad(backup)},
		{entLBA * int64(lbs), ents},
		{int64(lbs), pad(primary)},
	}
	for _, w := range writes {
		if _, err := f.WriteAt(w.data, w.off); err != nil {
			return false, fmt.Errorf("write GPT: %w", err)
		}
		if err := f.Sync(); err != nil {
			return false, err
		}
	}
	// The protective MBR's partition should cover the disk too (fdisk and some firmware check it).
	mbr := make([]byte, 512)
	if _, err := f.ReadAt(mbr, 0); err == nil && mbr[510] == 0x55 && mbr[511] == 0xaa && mbr[446+4] == 0xee {
		size := uint64(diskLBAs - 1)
		if size > 0xffffffff {
			size = 0xffffffff
		}
		le.PutUint32(mbr[446+12:], uint32(size))
		_, _ = f.WriteAt(mbr[:512], 0)
		_ = f.Sync()
	}
	if err := blkpgResize(f, n, start*int64(lbs), (newEnd-start+1)*int64(lbs)); err != nil {
		return true, fmt.Errorf("the GPT now gives partition %d the rest of the disk, but the kernel did not take the new size: %w", n, err)
	}
	return true, nil
}

// gptCRC is the header checksum: CRC32 over the header with its own checksum field zeroed.
func gptCRC(h []byte) uint32 {
	c := append([]byte(nil), h...)
	binary.LittleEndian.PutUint32(c[16:], 0)
	return crc32.ChecksumIEEE(c)
}

// blkpgResize is ioctl(BLKPG, BLKPG_RESIZE_PARTITION): unlike re-reading the whole table (BLKRRPART) it
// works while other partitions of the disk are in use, as the root is.
func blkpgResize(f *os.File, n int, start, length int64) error {
	const (
		blkpg                = 0x1269
		blkpgResizePartition = 3
	)
	// struct blkpg_partition { long long start, length; int pno; char devname[64], volname[64]; }
	part := make([]byte, 152)
	binary.LittleEndian.PutUint64(part[0:], uint64(start))
	binary.LittleEndian.PutUint64(part[8:], uint64(length))
	binary.LittleEndian.PutUint32(part[16:], uint32(n))
	// struct blkpg_ioctl_arg { int op, flags, datalen; void *data; }
	type blkpgArg struct {
		op, flags, datalen int32
		data               unsafe.Pointer
	}
	arg := blkpgArg{op: blkpgResizePartition, datalen: int32(len(part)), data: unsafe.Pointer(&part[0])}
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), blkpg, uintptr(unsafe.Pointer(&arg)))
	runtime.KeepAlive(part)
	if errno != 0 {
		return errno
	}
	return nil
}
