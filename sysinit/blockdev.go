//go:build linux

package sysinit

import (
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"unicode/utf16"
)

// partition is a GPT partition the kernel has a block device for.
type partition struct {
	Name     string // kernel name, e.g. vda2; the node is /dev/<Name>
	Disk     string // kernel name of the whole disk
	Dev      string // "major:minor"
	Number   int
	UUID     string // unique partition GUID, lower case
	PartName string // GPT partition name
}

// scanPartitions reads the GPT of every disk the kernel knows and returns their partitions. It reads the
// GPT itself rather than trusting uevent variables: the kernel puts PARTNAME there but not PARTUUID.
func scanPartitions() ([]partition, error) {
	disks, err := os.ReadDir("/sys/block")
	if err != nil {
		return nil, err
	}
	var out []partition
	for _, d := range disks {
		disk := d.Name()
		if strings.HasPrefix(disk, "loop") || strings.HasPrefix(disk, "ram") || strings.HasPrefix(disk, "dm-") {
			continue
		}
		entries, err := readGPT(disk)
		if err != nil || len(entries) == 0 {
			continue
		}
		subs, _ := os.ReadDir(filepath.Join("/sys/block", disk))
		for _, s := range subs {
			b, err := os.ReadFile(filepath.Join("/sys/block", disk, s.Name(), "partition"))
			if err != nil {
				continue
			}
			n, err := strconv.Atoi(strings.TrimSpace(string(b)))
			if err != nil {
				continue
			}
			e, ok := entries[n]
			if !ok {
				continue
			}
			dev, _ := os.ReadFile(filepath.Join("/sys/block", disk, s.Name(), "dev"))
			e.Name, e.Disk, e.Number, e.Dev = s.Name(), disk, n, strings.TrimSpace(string(dev))
			out = append(out, e)
		}
	}
	return out, nil
}

// readGPT returns the used entries of a disk's primary GPT, keyed by partition number.
func readGPT(disk string) (map[int]partition, error) {
	lbs := 512
	if b, err := os.ReadFile(filepath.Join("/sys/block", disk, "queue/logical_block_size")); err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && n >= 512 {
			lbs = n
		}
	}
	f, err := os.Open("/dev/" + disk)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	hdr := make([]byte, 92)
	if _, err := f.ReadAt(hdr, int64(lbs)); err != nil {
		return nil, err
	}
	if string(hdr[:8]) != "EFI PART" {
		return nil, fmt.Errorf("%s: no GPT", disk)
	}
	le := binary.LittleEndian
	start := int64(le.Uint64(hdr[72:])) * int64(lbs)
	count := le.Uint32(hdr[80:])
	size := le.Uint32(hdr[84:])
	if size < 128 || count > 1024 {
		return nil, fmt.Errorf("%s: implausible GPT (%d entries of %d bytes)", disk, count, size)
	}
	buf := make([]byte, int(count)*int(size))
	if _, err := f.ReadAt(buf, start); err != nil && err != io.EOF {
		return nil, err
	}
	out := map[int]partition{}
	for i := 0; i < int(count); i++ {
		e := buf[i*int(size) : (i+1)*int(size)]
		if allZero(e[:16]) {
			continue
		}
		u := make([]uint16, 36)
		for j := range u {
			u[j] = le.Uint16(e[56+2*j:])
		}
		name := string(utf16.Decode(u))
		if k := strings.IndexByte(name, 0); k >= 0 {
			name = name[:k]
		}
		out[i+1] = partition{UUID: guidString(e[16:32]), PartName: name}
	}
	return out, nil
}

// guidString formats a GUID stored mixed-endian (the first three fields little-endian) as text.
func guidString(b []byte) string {
	le := binary.LittleEndian
	return fmt.Sprintf("%08x-%04x-%04x-%x-%x", le.Uint32(b[0:]), le.Uint16(b[4:]), le.Uint16(b[6:]), b[8:10], b[10:16])
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
