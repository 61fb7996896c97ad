package partitions

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/diskfs/go-diskfs/partition/gpt"

	"osbuild.dev/osbuild/verity"
)

// Contents is what a new disk holds. Slot B and the data partition are left empty (holes): slot B is
// filled by the first update, the data partition is formatted on first boot.
type Contents struct {
	ESP        []File
	ESPOptions ESPOptions

	// Root is slot A's root image (squashfs) of RootSize bytes; required.
	Root     io.ReaderAt
	RootSize int64

	// Verity is slot A's hash device (superblock + tree) of VeritySize bytes, as made by verity.Format.
	// When nil, Write makes it from Root with VerityOptions straight into the verity-a partition.
	Verity        io.ReaderAt
	VeritySize    int64
	VerityOptions verity.Options
}

// Written reports what Write produced.
type Written struct {
	// Verity is set when Write formatted the hash tree itself.
	Verity *verity.Result
}

// Write builds the disk into f: it truncates f to the layout's size (sparse), writes the protective MBR
// and both GPTs, the ESP, and slot A's root and verity partitions at their offsets. It neither renames
// nor closes f (see WriteFile for a temp-and-rename wrapper); it syncs.
func Write(f *os.File, l *Layout, c Contents) (*Written, error) {
	rootP, err := l.Partition(LabelRootA)
	if err != nil {
		return nil, err
	}
	verP, err := l.Partition(LabelVerityA)
	if err != nil {
		return nil, err
	}
	espP, err := l.Partition(LabelESP)
	if err != nil {
		return nil, err
	}
	if c.Root == nil || c.RootSize <= 0 {
		return nil, errors.New("partitions: no root image for slot A")
	}
	// Checked before anything is written, so a too-small slot fails fast and says by how much.
	if padded := alignUp(c.RootSize, verity.BlockSize); padded > rootP.Size {
		return nil, &TooLargeError{Label: LabelRootA, Size: padded, PartitionSize: rootP.Size}
	}
	verSize := c.VeritySize
	if c.Verity == nil {
		if verSize, err = verity.HashSize(c.RootSize, c.VerityOptions); err != nil {
			return nil, err
		}
	}
	if verSize > verP.Size {
		return nil, &TooLargeError{Label: LabelVerityA, Size: verSize, PartitionSize: verP.Size}
	}

	// Truncating to 0 first drops any old blocks, so everything not written below is a hole.
	if err := f.Truncate(0); err != nil {
		return nil, fmt.Errorf("partitions: %w", err)
	}
	if err := f.Truncate(l.DiskSize); err != nil {
		return nil, fmt.Errorf("partitions: sizing the disk image: %w", err)
	}
	if err := writeGPT(f, l); err != nil {
		return nil, err
	}
	if err := WriteESP(f, espP.Start, espP.Size, c.ESP, c.ESPOptions); err != nil {
		return nil, err
	}
	if err := copySparse(f, rootP.Start, c.Root, c.RootSize); err != nil {
		return nil, fmt.Errorf("partitions: writing %s: %w", LabelRootA, err)
	}
	w := &Written{}
	if c.Verity != nil {
		if err := copySparse(f, verP.Start, c.Verity, c.VeritySize); err != nil {
			return nil, fmt.Errorf("partitions: writing %s: %w", LabelVerityA, err)
		}
	} else {
		res, err := verity.FormatAt(c.Root, c.RootSize, io.NewOffsetWriter(f, verP.Start), c.VerityOptions)
		if err != nil {
			return nil, fmt.Errorf("partitions: formatting %s: %w", LabelVerityA, err)
		}
		w.Verity = res
	}
	if err := f.Sync(); err != nil {
		return nil, fmt.Errorf("partitions: %w", err)
	}
	return w, nil
}

// WriteFile is Write to path through a temporary file in the same directory, renamed into place only
// when complete: an interrupted build never leaves a half-written image under the real name.
func WriteFile(path string, l *Layout, c Contents) (*Written, error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return nil, fmt.Errorf("partitions: %w", err)
	}
	defer os.Remove(tmp.Name()) // a no-op after the rename
	w, err := Write(tmp, l, c)
	if err == nil {
		err = tmp.Chmod(0o644)
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return nil, fmt.Errorf("partitions: %w", err)
	}
	return w, nil
}

func writeGPT(f *os.File, l *Layout) error {
	t := &gpt.Table{
		LogicalSectorSize:  sectorSize,
		PhysicalSectorSize: sectorSize,
		ProtectiveMBR:      true,
		GUID:               l.DiskGUID,
	}
	for _, p := range l.Partitions {
		t.Partitions = append(t.Partitions, &gpt.Partition{
			Index: p.Number,
			Start: uint64(p.Start / sectorSize),
			End:   uint64(p.End()/sectorSize - 1),
			Size:  uint64(p.Size),
			Type:  gpt.Type(strings.ToUpper(p.Type)),
			Name:  p.Label,
			GUID:  strings.ToUpper(p.UUID),
		})
	}
	if err := t.Write(f, l.DiskSize); err != nil {
		return fmt.Errorf("partitions: writing the GPT: %w", err)
	}
	return nil
}

// copySparse copies size bytes from r to w at off, skipping all-zero 4 KiB blocks: on a fresh sparse
// file they are holes already, so the image stays small on disk. Only for fresh areas.
func copySparse(w io.WriterAt, off int64, r io.ReaderAt, size int64) error {
	const bs = 4096
	buf := make([]byte, 4<<20)
	for pos := int64(0); pos < size; {
		n := min(int64(len(buf)), size-pos)
		b := buf[:n]
		if err := readFullAt(r, b, pos); err != nil {
			return err
		}
		for i := int64(0); i < n; {
			j := min(i+bs, n)
			if isZero(b[i:j]) {
				i = j
				continue
			}
			// Extend over consecutive non-zero blocks so each write is large.
			k := j
			for k < n && !isZero(b[k:min(k+bs, n)]) {
				k = min(k+bs, n)
			}
			if _, err := w.WriteAt(b[i:k], off+pos+i); err != nil {
				return err
			}
			i = k
		}
		pos += n
	}
	return nil
}

func readFullAt(r io.ReaderAt, p []byte, off int64) error {
	n, err := r.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return err
}

func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// Disk is an existing osbuild disk (image file or block device), for inspection and for the update agent.
type Disk struct {
	f        *os.File
	writable bool
	Layout   *Layout
}

// Open opens a disk image or block device and reads its GPT.
func Open(path string, writable bool) (*Disk, error) {
	flag := os.O_RDONLY
	if writable {
		flag = os.O_RDWR
	}
	f, err := os.OpenFile(path, flag, 0)
	if err != nil {
		return nil, fmt.Errorf("partitions: %w", err)
	}
	d, err := NewDisk(f, writable)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return d, nil
}

// NewDisk reads the GPT of an open file. The Disk takes over f: Close closes it.
func NewDisk(f *os.File, writable bool) (*Disk, error) {
	l, err := ReadLayout(f)
	if err != nil {
		return nil, err
	}
	return &Disk{f: f, writable: writable, Layout: l}, nil
}

// ReadLayout reads the GPT of a disk (file or block device) into a Layout.
func ReadLayout(f *os.File) (*Layout, error) {
	// Seek, not Stat: it gives the size of block devices too.
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return nil, fmt.Errorf("partitions: finding the disk size: %w", err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, fmt.Errorf("partitions: %w", err)
	}
	t, err := gpt.Read(f, sectorSize, sectorSize)
	if err != nil {
		return nil, fmt.Errorf("partitions: no valid GPT (is this a disk image, not a partition?): %w", err)
	}
	l := &Layout{DiskSize: size, DiskGUID: normGUID(t.GUID)}
	for _, p := range t.Partitions {
		if p == nil || p.Type == gpt.Unused {
			continue
		}
		typ := normGUID(string(p.Type))
		l.Partitions = append(l.Partitions, Partition{
			Number: p.Index,
			Label:  p.Name,
			Type:   typ,
			UUID:   normGUID(p.GUID),
			Start:  int64(p.Start) * sectorSize,
			Size:   int64(p.End-p.Start+1) * sectorSize,
		})
		for arch, ts := range archTypes {
			if typ == ts[0] {
				l.Arch = arch
			}
		}
	}
	return l, nil
}

// Close closes the disk, syncing it first when it is writable.
func (d *Disk) Close() error {
	var err error
	if d.writable {
		err = d.f.Sync()
	}
	if cerr := d.f.Close(); err == nil {
		err = cerr
	}
	return err
}

// File is the underlying file, for callers that need positioned I/O beyond what Disk offers.
func (d *Disk) File() *os.File { return d.f }

// Partition returns a partition by label.
func (d *Disk) Partition(label string) (*Partition, error) { return d.Layout.Partition(label) }

// Reader reads a partition.
func (d *Disk) Reader(label string) (*io.SectionReader, error) {
	p, err := d.Partition(label)
	if err != nil {
		return nil, err
	}
	return io.NewSectionReader(d.f, p.Start, p.Size), nil
}

// WriterAt writes into a partition with offsets relative to its start; writes past its end fail.
func (d *Disk) WriterAt(label string) (io.WriterAt, error) {
	if !d.writable {
		return nil, errors.New("partitions: the disk is open read-only")
	}
	p, err := d.Partition(label)
	if err != nil {
		return nil, err
	}
	return &boundedWriter{f: d.f, p: p}, nil
}

type boundedWriter struct {
	f *os.File
	p *Partition
}

func (w *boundedWriter) WriteAt(b []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(b)) > w.p.Size {
		return 0, &TooLargeError{Label: w.p.Label, Size: off + int64(len(b)), PartitionSize: w.p.Size}
	}
	return w.f.WriteAt(b, w.p.Start+off)
}

// WritePartition streams r into a partition from its start and zero-fills up to the next 4 KiB
// boundary, so that a verity tree over the image (hashed as zero-padded) matches what is on disk. It
// returns the bytes taken from r. Stale bytes of an older, longer image stay beyond that point; verity
// never reads them.
func (d *Disk) WritePartition(label string, r io.Reader) (int64, error) {
	w, err := d.WriterAt(label)
	if err != nil {
		return 0, err
	}
	ow := io.NewOffsetWriter(w, 0)
	n, err := io.CopyBuffer(ow, r, make([]byte, 4<<20))
	if err != nil {
		return n, fmt.Errorf("partitions: writing %s: %w", label, err)
	}
	if pad := alignUp(n, verity.BlockSize) - n; pad > 0 {
		if _, err := w.WriteAt(make([]byte, pad), n); err != nil {
			return n, fmt.Errorf("partitions: padding %s: %w", label, err)
		}
	}
	return n, nil
}

// ESP opens the ESP file system, writable if the disk is.
func (d *Disk) ESP() (*ESP, error) {
	p, err := d.Partition(LabelESP)
	if err != nil {
		return nil, err
	}
	return OpenESP(d.f, p.Start, p.Size, d.writable)
}
