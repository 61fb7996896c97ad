package partitions

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"
)

// go-diskfs v1.9.4 writes FAT32 that fsck.fat flags and that a strict firmware may misread:
//   - the ".." entry of a directory in the root points at cluster 2 (the root's cluster); the FAT spec
//     says a ".." that means the root must hold cluster 0;
//   - the FSInfo free-cluster count and next-free hint are left "unknown" (0xffffffff);
//   - for some sizes the FAT is a few entries too short for the cluster count;
//   - timestamps come from SOURCE_DATE_EPOCH or the clock, so output differs between runs.
// fat32Geometry and fixFAT32 read the boot sector and directory tree directly and repair all of it.

type fat32Geometry struct {
	bps, spc        int64 // bytes per sector, sectors per cluster
	reserved, nfats int64
	spf             int64 // sectors per FAT
	totalSectors    int64
	rootCluster     uint32
	fsInfoSector    int64
	backupBoot      int64
	clusters        int64 // data clusters
}

func (g *fat32Geometry) clusterBytes() int64 { return g.bps * g.spc }
func (g *fat32Geometry) fatOffset() int64    { return g.reserved * g.bps }
func (g *fat32Geometry) dataOffset() int64   { return (g.reserved + g.nfats*g.spf) * g.bps }
func (g *fat32Geometry) clusterOffset(c uint32) int64 {
	return g.dataOffset() + int64(c-2)*g.clusterBytes()
}

func readFAT32Geometry(r io.ReaderAt) (*fat32Geometry, error) {
	b := make([]byte, 512)
	if _, err := r.ReadAt(b, 0); err != nil {
		return nil, fmt.Errorf("reading the FAT boot sector: %w", err)
	}
	le := binary.LittleEndian
	if b[510] != 0x55 || b[511] != 0xaa {
		return nil, errors.New("no FAT boot sector signature: is this the ESP?")
	}
	g := &fat32Geometry{
		bps:          int64(le.Uint16(b[11:])),
		spc:          int64(b[13]),
		reserved:     int64(le.Uint16(b[14:])),
		nfats:        int64(b[16]),
		totalSectors: int64(le.Uint32(b[32:])),
		spf:          int64(le.Uint32(b[36:])),
		rootCluster:  le.Uint32(b[44:]),
		fsInfoSector: int64(le.Uint16(b[48:])),
		backupBoot:   int64(le.Uint16(b[50:])),
	}
	if le.Uint16(b[22:]) != 0 || g.bps == 0 || g.spc == 0 || g.nfats == 0 {
		return nil, errors.New("not a FAT32 file system")
	}
	g.clusters = (g.totalSectors - g.reserved - g.nfats*g.spf) / g.spc
	return g, nil
}

// fatFits reports whether the FAT has an entry for every cluster (plus the two reserved entries).
func (g *fat32Geometry) fatFits() bool { return g.spf*g.bps/4 >= g.clusters+2 }

// fixFAT32 repairs the file system in rw (offset 0 = its boot sector). When mtime is non-nil, every
// directory entry gets that time, for reproducible images.
func fixFAT32(rw interface {
	io.ReaderAt
	io.WriterAt
}, mtime *time.Time) error {
	g, err := readFAT32Geometry(rw)
	if err != nil {
		return err
	}
	if !g.fatFits() {
		return fmt.Errorf("FAT holds %d entries for %d clusters", g.spf*g.bps/4, g.clusters+2)
	}
	fat := make([]byte, (g.clusters+2)*4)
	if _, err := rw.ReadAt(fat, g.fatOffset()); err != nil {
		return fmt.Errorf("reading the FAT: %w", err)
	}
	next := func(c uint32) uint32 { return binary.LittleEndian.Uint32(fat[c*4:]) & 0x0fffffff }
	dirtyFAT := map[uint32]bool{}
	setFAT := func(c, v uint32) {
		old := binary.LittleEndian.Uint32(fat[c*4:])
		binary.LittleEndian.PutUint32(fat[c*4:], old&0xf0000000|v&0x0fffffff)
		dirtyFAT[c] = true
	}
	reachable := make([]bool, g.clusters+2)
	chain := func(c uint32) ([]uint32, error) {
		var cs []uint32
		for c >= 2 && c < 0x0ffffff8 {
			if int64(c) >= g.clusters+2 || len(cs) > int(g.clusters) {
				return nil, fmt.Errorf("broken cluster chain at cluster %d", c)
			}
			cs = append(cs, c)
			c = next(c)
		}
		return cs, nil
	}

	var dosDate, dosTime uint16
	if mtime != nil {
		dosDate, dosTime = toDOSTime(*mtime)
	}
	// walk fixes one directory; parent is 0 for a child of the root, as the spec wants.
	var walk func(dir, parent uint32, depth int) error
	walk = func(dir, parent uint32, depth int) error {
		if depth > 64 {
			return errors.New("directories nested too deep (a loop?)")
		}
		cs, err := chain(dir)
		if err != nil {
			return err
		}
		for _, c := range cs {
			reachable[c] = true
		}
		buf := make([]byte, g.clusterBytes())
		for _, c := range cs {
			off := g.clusterOffset(c)
			if _, err := rw.ReadAt(buf, off); err != nil {
				return fmt.Errorf("reading directory cluster %d: %w", c, err)
			}
			changed := false
			for i := 0; i < len(buf); i += 32 {
				e := buf[i : i+32]
				if e[0] == 0 {
					break
				}
				attr := e[11]
				if e[0] == 0xe5 || attr&0x0f == 0x0f {
					continue
				}
				if mtime != nil {
					old := string(e[13:26])
					e[13] = 0
					binary.LittleEndian.PutUint16(e[14:], dosTime)
					binary.LittleEndian.PutUint16(e[16:], dosDate)
					binary.LittleEndian.PutUint16(e[18:], dosDate)
					binary.LittleEndian.PutUint16(e[22:], dosTime)
					binary.LittleEndian.PutUint16(e[24:], dosDate)
					changed = changed || old != string(e[13:26])
				}
				if attr&0x08 != 0 {
					continue
				}
				if attr&0x10 == 0 {
					// A file keeps only the clusters its size needs: go-diskfs gives even an empty
					// file a cluster, which fsck.fat reports.
					first := uint32(binary.LittleEndian.Uint16(e[20:]))<<16 | uint32(binary.LittleEndian.Uint16(e[26:]))
					size := int64(binary.LittleEndian.Uint32(e[28:]))
					cs, err := chain(first)
					if err != nil {
						return err
					}
					need := int((size + g.clusterBytes() - 1) / g.clusterBytes())
					for _, c := range cs[:min(need, len(cs))] {
						reachable[c] = true
					}
					if len(cs) > need {
						for _, c := range cs[need:] {
							setFAT(c, 0)
						}
						if need == 0 {
							binary.LittleEndian.PutUint16(e[20:], 0)
							binary.LittleEndian.PutUint16(e[26:], 0)
							changed = true
						} else {
							setFAT(cs[need-1], 0x0fffffff)
						}
					}
					continue
				}
				name := string(e[0:11])
				target := uint32(0)
				switch name {
				case ".          ":
					target = dir
				case "..         ":
					target = parent
				default:
					sub := uint32(binary.LittleEndian.Uint16(e[20:]))<<16 | uint32(binary.LittleEndian.Uint16(e[26:]))
					parentOfSub := dir
					if dir == g.rootCluster {
						parentOfSub = 0
					}
					if err := walk(sub, parentOfSub, depth+1); err != nil {
						return err
					}
					continue
				}
				if dir == g.rootCluster {
					continue // the root has no dot entries; be tolerant if it does
				}
				cur := uint32(binary.LittleEndian.Uint16(e[20:]))<<16 | uint32(binary.LittleEndian.Uint16(e[26:]))
				if cur != target {
					binary.LittleEndian.PutUint16(e[20:], uint16(target>>16))
					binary.LittleEndian.PutUint16(e[26:], uint16(target))
					changed = true
				}
			}
			if changed {
				if _, err := rw.WriteAt(buf, off); err != nil {
					return fmt.Errorf("writing directory cluster %d: %w", c, err)
				}
			}
		}
		return nil
	}
	if err := walk(g.rootCluster, 0, 0); err != nil {
		return err
	}

	// Clusters no file or directory uses are lost (go-diskfs' Remove leaves a file's chain allocated):
	// free them, as fsck.fat would.
	for c := uint32(2); int64(c) < g.clusters+2; c++ {
		if v := next(c); v != 0 && v != 0x0ffffff7 && !reachable[c] {
			setFAT(c, 0)
		}
	}
	for c := range dirtyFAT {
		for i := int64(0); i < g.nfats; i++ {
			off := g.fatOffset() + i*g.spf*g.bps + int64(c)*4
			if _, err := rw.WriteAt(fat[c*4:c*4+4], off); err != nil {
				return fmt.Errorf("writing the FAT: %w", err)
			}
		}
	}

	// FSInfo: the free count and next-free hint, so that fsck and firmware need not guess.
	free, firstFree := uint32(0), uint32(0xffffffff)
	for c := uint32(2); int64(c) < g.clusters+2; c++ {
		if next(c) == 0 {
			free++
			if firstFree == 0xffffffff {
				firstFree = c
			}
		}
	}
	for _, sec := range []int64{g.fsInfoSector, g.backupBoot + 1} {
		if sec == 0 || sec == 0xffff {
			continue
		}
		fsi := make([]byte, 512)
		if _, err := rw.ReadAt(fsi, sec*g.bps); err != nil {
			return fmt.Errorf("reading FSInfo: %w", err)
		}
		if string(fsi[0:4]) != "RRaA" || string(fsi[484:488]) != "rrAa" {
			continue
		}
		binary.LittleEndian.PutUint32(fsi[488:], free)
		binary.LittleEndian.PutUint32(fsi[492:], firstFree)
		if _, err := rw.WriteAt(fsi, sec*g.bps); err != nil {
			return fmt.Errorf("writing FSInfo: %w", err)
		}
	}
	return nil
}

// toDOSTime converts to FAT's local-time date and 2-second time fields, clamped to FAT's 1980–2107 range.
func toDOSTime(t time.Time) (date, tm uint16) {
	t = t.UTC()
	if t.Year() < 1980 {
		t = time.Date(1980, 1, 1, 0, 0, 0, 0, time.UTC)
	}
	if t.Year() > 2107 {
		t = time.Date(2107, 12, 31, 23, 59, 58, 0, time.UTC)
	}
	date = uint16(t.Year()-1980)<<9 | uint16(t.Month())<<5 | uint16(t.Day())
	tm = uint16(t.Hour())<<11 | uint16(t.Minute())<<5 | uint16(t.Second()/2)
	return date, tm
}
