package boot

import (
	"fmt"
	"io"
	"sort"
	"strings"
)

// cpioEntry is one member of a newc archive. The writer fills in inode numbers itself, in order, so that
// the same entries always give the same bytes.
type cpioEntry struct {
	Name     string // no leading slash
	Mode     uint32 // type and permission bits, as in stat(2)
	Size     int64
	RdevMaj  uint32
	RdevMin  uint32
	Open     func() (io.ReadCloser, error) // regular files
	Contents []byte                        // regular files, when Open is nil
}

const (
	sIFDIR  = 0o040000
	sIFREG  = 0o100000
	sIFCHR  = 0o020000
	sIFLNK  = 0o120000
	newcHdr = 110
)

// writeCPIO writes entries as a newc ("070701") archive, the only format the kernel unpacks. Entries are
// sorted by name, so parents come before children; owners are root and every mtime is mtime.
func writeCPIO(w io.Writer, entries []cpioEntry, mtime int64) error {
	sort.Slice(entries, func(i, j int) bool { return entries[i].Name < entries[j].Name })
	cw := &countWriter{w: w}
	for i, e := range entries {
		if i > 0 && entries[i-1].Name == e.Name {
			return fmt.Errorf("initramfs: %s added twice", e.Name)
		}
		nlink := uint32(1)
		if e.Mode&0o170000 == sIFDIR {
			nlink = 2
		}
		size := e.Size
		if e.Open == nil && e.Mode&0o170000 == sIFREG {
			size = int64(len(e.Contents))
		}
		if err := writeHeader(cw, uint32(i+1), e.Mode, nlink, mtime, size, e.RdevMaj, e.RdevMin, e.Name); err != nil {
			return err
		}
		if e.Mode&0o170000 == sIFREG && size > 0 {
			var n int64
			var err error
			if e.Open != nil {
				var rc io.ReadCloser
				if rc, err = e.Open(); err != nil {
					return fmt.Errorf("initramfs: %s: %w", e.Name, err)
				}
				n, err = io.Copy(cw, io.LimitReader(rc, size))
				rc.Close()
			} else {
				var k int
				k, err = cw.Write(e.Contents)
				n = int64(k)
			}
			if err != nil {
				return fmt.Errorf("initramfs: %s: %w", e.Name, err)
			}
			if n != size {
				return fmt.Errorf("initramfs: %s: size changed while writing (%d of %d bytes)", e.Name, n, size)
			}
		}
		if err := cw.pad(); err != nil {
			return err
		}
	}
	if err := writeHeader(cw, 0, 0, 1, 0, 0, 0, 0, "TRAILER!!!"); err != nil {
		return err
	}
	// The kernel reads initramfs segments in multiples of 512 bytes best; cpio(1) pads the same way.
	if r := cw.n % 512; r != 0 {
		if _, err := cw.Write(make([]byte, 512-r)); err != nil {
			return err
		}
	}
	return nil
}

func writeHeader(cw *countWriter, ino, mode, nlink uint32, mtime, size int64, rmaj, rmin uint32, name string) error {
	if strings.IndexByte(name, 0) >= 0 {
		return fmt.Errorf("initramfs: name %q contains NUL", name)
	}
	if size > 0xffffffff {
		return fmt.Errorf("initramfs: %s is %d bytes; newc cpio holds at most 4 GiB per file", name, size)
	}
	hdr := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		ino, mode, 0, 0, nlink, uint32(mtime), uint32(size), 0, 0, rmaj, rmin, len(name)+1, 0)
	if _, err := io.WriteString(cw, hdr+name+"\x00"); err != nil {
		return err
	}
	return cw.pad()
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// pad aligns to the 4 bytes newc requires after every header+name and every file body.
func (c *countWriter) pad() error {
	if r := c.n % 4; r != 0 {
		_, err := c.Write(make([]byte, 4-r))
		return err
	}
	return nil
}
