package partitions

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
)

// syncFATs makes the ESP's second FAT a copy of the first when the two differ, before the ESP is opened.
// A write to the ESP cut short (power loss, SIGKILL) can leave them different; the firmware and fsck.fat
// then go by the first FAT, but the FAT32 library refuses to open the file system at all, which would
// leave the device unable to ever update or mark a boot good again. Going by the first FAT, like
// the firmware, keeps the agent's view and the boot loader's the same; the ESP's own repair (lost
// clusters) runs when it is opened.
func syncFATs(f *os.File, start, size int64) (bool, error) {
	bs := make([]byte, 512)
	if _, err := f.ReadAt(bs, start); err != nil {
		return false, fmt.Errorf("ESP boot sector: %w", err)
	}
	bps := int64(binary.LittleEndian.Uint16(bs[11:]))
	reserved := int64(binary.LittleEndian.Uint16(bs[14:]))
	nfats := int64(bs[16])
	fatSectors := int64(binary.LittleEndian.Uint32(bs[36:]))
	if bs[510] != 0x55 || bs[511] != 0xaa || bps < 512 || nfats < 2 || fatSectors == 0 || binary.LittleEndian.Uint16(bs[22:]) != 0 {
		return false, nil // not FAT32 as we know it: leave it to the ESP code to report
	}
	fatBytes := fatSectors * bps
	if (reserved+nfats*fatSectors)*bps > size {
		return false, nil
	}
	// Compare and copy in chunks: a 256 MiB ESP has a 2 MiB FAT, and memory stays flat anyway.
	const chunk = 1 << 20
	a, b := make([]byte, chunk), make([]byte, chunk)
	first := start + reserved*bps
	fixed := false
	for n := int64(1); n < nfats; n++ {
		other := first + n*fatBytes
		for off := int64(0); off < fatBytes; off += chunk {
			l := min(chunk, fatBytes-off)
			if _, err := f.ReadAt(a[:l], first+off); err != nil {
				return fixed, err
			}
			if _, err := f.ReadAt(b[:l], other+off); err != nil {
				return fixed, err
			}
			if !bytes.Equal(a[:l], b[:l]) {
				if _, err := f.WriteAt(a[:l], other+off); err != nil {
					return fixed, fmt.Errorf("repair the ESP's FAT %d: %w", n+1, err)
				}
				fixed = true
			}
		}
	}
	if fixed {
		return true, f.Sync()
	}
	return false, nil
}
