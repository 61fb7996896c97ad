package partitions

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"os"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/filesystem/fat32"
)

// File is one file for the ESP. Exactly one of Data and Open is set.
type File struct {
	Path string // slash-separated, relative to the ESP root, e.g. "EFI/BOOT/BOOTX64.EFI"
	Data []byte
	Open func() (io.ReadCloser, error) // for large files (kernels, initrds): read once, while writing
}

// HostFile is a File whose content is read from a host path when the ESP is written.
func HostFile(espPath, hostPath string) File {
	return File{Path: espPath, Open: func() (io.ReadCloser, error) { return os.Open(hostPath) }}
}

func (f File) reader() (io.ReadCloser, error) {
	if f.Open != nil {
		return f.Open()
	}
	return io.NopCloser(bytes.NewReader(f.Data)), nil
}

// ESPOptions tune a new ESP.
type ESPOptions struct {
	// Label is the FAT volume label (default "ESP").
	Label string
	// ModTime stamps every file and directory. Zero means SOURCE_DATE_EPOCH when set, else 1980-01-01:
	// never the clock, so that two builds give the same bytes.
	ModTime time.Time
}

func (o ESPOptions) modTime() time.Time {
	if !o.ModTime.IsZero() {
		return o.ModTime
	}
	if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
		if n, err := strconv.ParseInt(s, 10, 64); err == nil {
			return time.Unix(n, 0).UTC()
		}
	}
	return time.Date(1980, 1, 1, 0, 0, 0, 0, time.UTC)
}

// ESP is a FAT32 file system inside a file or device, open for reading and, if opened so, writing.
// Paths are slash-separated and relative to the root ("loader/entries/a+3.conf").
type ESP struct {
	f        *os.File
	offset   int64
	size     int64
	fs       *fat32.FileSystem
	writable bool
	mtime    *time.Time // when set (builds), every change restamps all entries with it
}

// WriteESP creates a FAT32 file system of size bytes at offset in f and writes files into it, sorted by
// path so that the layout on disk does not depend on the caller's order. The area is assumed to be
// zero (a fresh sparse file); directories are created as needed.
func WriteESP(f *os.File, offset, size int64, files []File, opts ESPOptions) error {
	label := opts.Label
	if label == "" {
		label = "ESP"
	}
	if len(label) > 11 {
		return fmt.Errorf("partitions: ESP label %q is longer than FAT's 11 characters", label)
	}
	mt := opts.modTime()
	st := file.New(f, false)
	fsSize := size / sectorSize * sectorSize
	var fs *fat32.FileSystem
	// go-diskfs sizes the FAT a few entries short for some sizes: shrink the file system (not the
	// partition) by a few clusters until the FAT covers every cluster.
	for try := 0; ; try++ {
		var err error
		fs, err = fat32.Create(st, fsSize, offset, sectorSize, label, true)
		if err != nil {
			return fmt.Errorf("partitions: creating the FAT32 ESP (%d bytes): %w", fsSize, err)
		}
		g, err := readFAT32Geometry(io.NewSectionReader(f, offset, fsSize))
		if err != nil {
			return fmt.Errorf("partitions: reading back the new ESP: %w", err)
		}
		if g.fatFits() {
			break
		}
		if try == 8 {
			return fmt.Errorf("partitions: go-diskfs makes a FAT too short for a %d-byte ESP: pick another ESP size", size)
		}
		if err := zeroRange(f, offset, g.dataOffset()+g.clusterBytes()); err != nil {
			return err
		}
		fsSize -= 4 * g.clusterBytes()
	}
	e := &ESP{f: f, offset: offset, size: fsSize, fs: fs, writable: true, mtime: &mt}

	sorted := append([]File{}, files...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Path < sorted[j].Path })
	for i, fl := range sorted {
		if i > 0 && sorted[i-1].Path == fl.Path {
			return fmt.Errorf("partitions: ESP file %q given twice", fl.Path)
		}
		r, err := fl.reader()
		if err != nil {
			return fmt.Errorf("partitions: ESP file %s: %w", fl.Path, err)
		}
		err = e.write(fl.Path, r)
		r.Close()
		if err != nil {
			return err
		}
	}
	return e.fix()
}

func zeroRange(w io.WriterAt, off, n int64) error {
	z := make([]byte, 1<<20)
	for n > 0 {
		k := min(n, int64(len(z)))
		if _, err := w.WriteAt(z[:k], off); err != nil {
			return err
		}
		off += k
		n -= k
	}
	return nil
}

// OpenESP opens the FAT32 file system at offset in f (a disk image or block device).
func OpenESP(f *os.File, offset, size int64, writable bool) (*ESP, error) {
	if writable {
		if _, err := syncFATs(f, offset, size); err != nil {
			return nil, fmt.Errorf("partitions: %w", err)
		}
	}
	fs, err := fat32.Read(file.New(f, !writable), size, offset, sectorSize)
	if err != nil {
		return nil, fmt.Errorf("partitions: reading the ESP's FAT32: %w", err)
	}
	return &ESP{f: f, offset: offset, size: size, fs: fs, writable: writable}, nil
}

func cleanESPPath(p string) (string, error) {
	// go-diskfs wants io/fs paths: relative, slash-separated, "." for the root.
	c := strings.TrimPrefix(path.Clean("/"+p), "/")
	if c == "" || strings.Contains(p, "\\") {
		return "", fmt.Errorf("partitions: %q is not a file path in the ESP (use slashes, e.g. loader/loader.conf)", p)
	}
	return c, nil
}

// fix repairs what go-diskfs leaves behind after a change (see fatfix.go).
func (e *ESP) fix() error {
	if err := fixFAT32(struct {
		io.ReaderAt
		io.WriterAt
	}{io.NewSectionReader(e.f, e.offset, e.size), io.NewOffsetWriter(e.f, e.offset)}, e.mtime); err != nil {
		return fmt.Errorf("partitions: repairing the ESP: %w", err)
	}
	// go-diskfs keeps the FAT in memory and rewrites all of it on the next change: reload it, or that
	// write would undo the repair.
	fs, err := fat32.Read(file.New(e.f, !e.writable), e.size, e.offset, sectorSize)
	if err != nil {
		return fmt.Errorf("partitions: rereading the ESP: %w", err)
	}
	e.fs = fs
	return nil
}

func (e *ESP) write(p string, r io.Reader) error {
	if !e.writable {
		return errors.New("partitions: the ESP is open read-only")
	}
	c, err := cleanESPPath(p)
	if err != nil {
		return err
	}
	if dir := path.Dir(c); dir != "." {
		if err := e.fs.Mkdir(dir); err != nil {
			return fmt.Errorf("partitions: creating ESP directory %s: %w", dir, err)
		}
	}
	w, err := e.fs.OpenFile(c, os.O_CREATE|os.O_RDWR|os.O_TRUNC)
	if err != nil {
		return fmt.Errorf("partitions: creating ESP file %s: %w", p, err)
	}
	// One large write lets go-diskfs allocate the whole cluster chain at once (contiguous, and fast).
	data, err := io.ReadAll(r)
	if err == nil {
		_, err = w.Write(data)
	}
	if cerr := w.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("partitions: writing ESP file %s: %w", p, err)
	}
	return nil
}

// WriteFile creates or replaces a file, creating its directories.
func (e *ESP) WriteFile(p string, data []byte) error {
	if err := e.write(p, bytes.NewReader(data)); err != nil {
		return err
	}
	return e.fix()
}

// WriteFileFrom is WriteFile with the content from a reader.
func (e *ESP) WriteFileFrom(p string, r io.Reader) error {
	if err := e.write(p, r); err != nil {
		return err
	}
	return e.fix()
}

// ReadFile returns a file's content.
func (e *ESP) ReadFile(p string) ([]byte, error) {
	c, err := cleanESPPath(p)
	if err != nil {
		return nil, err
	}
	if _, err := e.Stat(p); err != nil {
		return nil, err
	}
	b, err := e.fs.ReadFile(c)
	if err != nil {
		return nil, fmt.Errorf("partitions: reading ESP file %s: %w", p, err)
	}
	return b, nil
}

// Stat returns a file's information; the error wraps fs.ErrNotExist when it is missing.
func (e *ESP) Stat(p string) (iofs.FileInfo, error) {
	c, err := cleanESPPath(p)
	if err != nil {
		return nil, err
	}
	des, err := e.fs.ReadDir(path.Dir(c))
	if err != nil {
		return nil, &iofs.PathError{Op: "stat", Path: p, Err: iofs.ErrNotExist}
	}
	for _, de := range des {
		if strings.EqualFold(de.Name(), path.Base(c)) {
			return de.Info()
		}
	}
	return nil, &iofs.PathError{Op: "stat", Path: p, Err: iofs.ErrNotExist}
}

// ReadDir lists a directory ("" or "." for the root), sorted by name, without "." and "..".
func (e *ESP) ReadDir(p string) ([]iofs.DirEntry, error) {
	c := strings.TrimPrefix(path.Clean("/"+p), "/")
	if c == "" {
		c = "."
	}
	des, err := e.fs.ReadDir(c)
	if err != nil {
		return nil, &iofs.PathError{Op: "readdir", Path: p, Err: fmt.Errorf("%w: %v", iofs.ErrNotExist, err)}
	}
	var out []iofs.DirEntry
	for _, de := range des {
		if n := de.Name(); n != "." && n != ".." {
			out = append(out, de)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name() < out[j].Name() })
	return out, nil
}

// Rename renames a file within its directory, in place (one directory write): how boot counting marks an
// entry good, loader/entries/x+3.conf → x.conf. The target must not exist.
func (e *ESP) Rename(oldPath, newPath string) error {
	if !e.writable {
		return errors.New("partitions: the ESP is open read-only")
	}
	o, err := cleanESPPath(oldPath)
	if err != nil {
		return err
	}
	n, err := cleanESPPath(newPath)
	if err != nil {
		return err
	}
	if path.Dir(o) != path.Dir(n) {
		return fmt.Errorf("partitions: cannot rename %s to %s: FAT renames stay within one directory", oldPath, newPath)
	}
	if _, err := e.Stat(oldPath); err != nil {
		return err
	}
	if _, err := e.Stat(newPath); err == nil && !strings.EqualFold(o, n) {
		return fmt.Errorf("partitions: cannot rename %s to %s: %w", oldPath, newPath, iofs.ErrExist)
	}
	if err := e.fs.Rename(o, n); err != nil {
		return fmt.Errorf("partitions: renaming %s to %s: %w", oldPath, newPath, err)
	}
	return e.fix()
}

// Remove deletes a file.
func (e *ESP) Remove(p string) error {
	if !e.writable {
		return errors.New("partitions: the ESP is open read-only")
	}
	c, err := cleanESPPath(p)
	if err != nil {
		return err
	}
	if _, err := e.Stat(p); err != nil {
		return err
	}
	if err := e.fs.Remove(c); err != nil {
		return fmt.Errorf("partitions: removing ESP file %s: %w", p, err)
	}
	return e.fix()
}

// Sync flushes the disk.
func (e *ESP) Sync() error { return e.f.Sync() }
