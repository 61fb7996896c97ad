// Package formats converts a raw disk image into the formats that hypervisors and clouds take: qcow2 (QEMU,
// OpenStack), streamOptimized VMDK (VMware, OVA, AWS import) and VHD, fixed (Azure) or dynamic (Hyper-V).
//
// Every writer streams the source once, in order: holes are skipped with SEEK_DATA/SEEK_HOLE, and clusters
// that read as zeros are left out of the output too, so a mostly empty disk converts in the time it takes to
// read its data. Compression runs on every core with bounded memory, and results are written in source
// order, so the output does not depend on scheduling. Headers carry no wall-clock time and no random bytes:
// UUIDs come from a hash of the content and timestamps from SOURCE_DATE_EPOCH, so the same input gives the
// same bytes.
package formats

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
)

// Format names, as the CLI and variant `outputs:` spell them.
const (
	Raw      = "raw"       // sparse copy
	QCOW2    = "qcow2"     // qcow2 v3, 64 KiB clusters; deflate-compressed clusters with Options.Compress
	VMDK     = "vmdk"      // VMDK streamOptimized (monolithic, deflate-compressed grains)
	VHD      = "vhd"       // VHD dynamic, 2 MiB blocks
	VHDFixed = "vhd-fixed" // VHD fixed, size rounded up to a whole MiB as Azure requires
)

// Names lists the formats Convert writes.
var Names = []string{Raw, QCOW2, VMDK, VHD, VHDFixed}

// Options tune a conversion. The zero value is valid: no compression for qcow2, one worker per CPU,
// timestamps at the VHD epoch (2000-01-01).
type Options struct {
	// SourceDateEpoch is the time written into headers that have one (VHD), in seconds since 1970, as the
	// SOURCE_DATE_EPOCH environment variable gives it (see EpochFromEnv). Zero or earlier than 2000 writes
	// the format's zero time; the wall clock is never read.
	SourceDateEpoch int64
	// Compress stores qcow2 clusters deflate-compressed where that saves space (like qemu-img convert -c).
	// VMDK streamOptimized is always compressed; raw and VHD never are.
	Compress bool
	// Level is the deflate level, 1 (fast) to 9 (small); 0 means 6. The encoder (internal/deflate) picks
	// its parse by bit prices: at 6, on a disk of /usr files, VMDK grains come out about 2% smaller than
	// zlib's at its default level, at about half zlib's speed per core (so a machine with two cores
	// already converts faster than single-threaded qemu-img).
	Level int
	// Workers is how many goroutines compress and scan in parallel; 0 means GOMAXPROCS.
	Workers int
	// Name is the extent file name written in the VMDK descriptor; empty means "disk.vmdk".
	Name string
}

// EpochFromEnv returns SOURCE_DATE_EPOCH for Options.SourceDateEpoch: 0 when unset, an error when set but
// not a whole number of seconds.
func EpochFromEnv() (int64, error) {
	v := os.Getenv("SOURCE_DATE_EPOCH")
	if v == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("SOURCE_DATE_EPOCH=%q: want whole seconds since 1970: %w", v, err)
	}
	return n, nil
}

// ErrNotRawDisk is returned (wrapped in a *NotRawDiskError) when the source has neither a GPT nor an MBR
// signature: converting it would make an image no firmware can boot.
var ErrNotRawDisk = errors.New("not a raw disk image")

// NotRawDiskError says which file is not a raw disk and why.
type NotRawDiskError struct {
	Path   string
	Reason string
}

func (e *NotRawDiskError) Error() string {
	return fmt.Sprintf("%s is not a raw disk image (%s): convert takes the .raw file osbuild build writes", e.Path, e.Reason)
}

func (e *NotRawDiskError) Unwrap() error { return ErrNotRawDisk }

// UnknownFormatError is returned for a format name Convert does not write.
type UnknownFormatError struct{ Format string }

func (e *UnknownFormatError) Error() string {
	return fmt.Sprintf("unknown image format %q: use one of %s", e.Format, strings.Join(Names, ", "))
}

// OutputError is a failure to write the output. Err keeps the system error, so errors.Is(err,
// syscall.ENOSPC) and errors.Is(err, fs.ErrPermission) work.
type OutputError struct {
	Path string
	Err  error
}

func (e *OutputError) Error() string {
	hint := "check the output folder"
	switch {
	case errors.Is(e.Err, errNoSpace):
		hint = "free some space or write to another folder with -o"
	case errors.Is(e.Err, os.ErrPermission), errors.Is(e.Err, errReadOnly):
		hint = "the folder is not writable: choose another with -o or fix its permissions"
	}
	return fmt.Sprintf("write %s: %v; %s", e.Path, e.Err, hint)
}

func (e *OutputError) Unwrap() error { return e.Err }

// Ext returns the file name suffix for a format: .qcow2, .vmdk, .vhd; "-fixed.vhd" for vhd-fixed, so that
// both VHD flavours can sit in one folder.
func Ext(format string) string {
	if format == VHDFixed {
		return "-fixed.vhd"
	}
	return "." + format
}

// OutputPaths decides where each format of the image src goes. With one format, out is the output file;
// an existing folder, or "", means a file named after src (its extension replaced) in that folder, or beside
// src. With several formats, out is a folder (created if missing; "" means src's folder). An output that
// would overwrite src is an error.
func OutputPaths(src string, list []string, out string) ([]string, error) {
	base := strings.TrimSuffix(filepath.Base(src), filepath.Ext(src))
	name := func(dir, f string) string { return filepath.Join(dir, base+Ext(f)) }
	var paths []string
	if len(list) == 1 {
		fi, err := os.Stat(out)
		switch {
		case out == "":
			paths = []string{name(filepath.Dir(src), list[0])}
		case err == nil && fi.IsDir():
			paths = []string{name(out, list[0])}
		default:
			paths = []string{out}
		}
	} else {
		dir := out
		if dir == "" {
			dir = filepath.Dir(src)
		} else if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, &OutputError{Path: dir, Err: fmt.Errorf("several formats need an output folder: %w", err)}
		}
		for _, f := range list {
			paths = append(paths, name(dir, f))
		}
	}
	a, err := os.Stat(src)
	if err != nil {
		return nil, fmt.Errorf("source image: %w", err)
	}
	for _, p := range paths {
		if b, err := os.Stat(p); err == nil && os.SameFile(a, b) {
			return nil, fmt.Errorf("output %s is the input image: choose another with -o", p)
		}
	}
	return paths, nil
}

// Convert writes the raw disk image src to dst in format. dst must be a regular file opened for reading and
// writing; it is truncated first and written mostly in order, with a few headers patched in place at the
// end (they hold values only known then: table offsets, a content-derived UUID).
func Convert(ctx context.Context, src *os.File, format string, dst *os.File, opts Options) error {
	if !slices.Contains(Names, format) {
		return &UnknownFormatError{Format: format}
	}
	fi, err := src.Stat()
	if err != nil {
		return fmt.Errorf("read source: %w", err)
	}
	size := fi.Size()
	if err := checkRawDisk(src, size); err != nil {
		return err
	}
	if opts.Workers <= 0 {
		opts.Workers = runtime.GOMAXPROCS(0)
	}
	if opts.Level == 0 {
		opts.Level = 6
	}
	if opts.Level < 1 || opts.Level > 9 {
		return fmt.Errorf("compression level %d: want 1 to 9", opts.Level)
	}
	if opts.Name == "" {
		opts.Name = "disk.vmdk"
	}
	if err := dst.Truncate(0); err != nil {
		return &OutputError{Path: dst.Name(), Err: err}
	}
	out := &output{f: dst}
	switch format {
	case Raw:
		err = writeFlat(ctx, src, size, out, opts, false)
	case VHDFixed:
		err = writeFlat(ctx, src, size, out, opts, true)
	case QCOW2:
		err = writeQCOW2(ctx, src, size, out, opts)
	case VMDK:
		err = writeVMDK(ctx, src, size, out, opts)
	case VHD:
		err = writeVHDDynamic(ctx, src, size, out, opts)
	}
	return err
}

// ConvertFile converts the raw image at srcPath into dstPath. The output is written under a temporary name
// in dstPath's folder, synced and renamed at the end: on any error nothing is left under dstPath, and a
// file already there is untouched.
func ConvertFile(ctx context.Context, srcPath, format, dstPath string, opts Options) (err error) {
	src, err := os.Open(srcPath)
	if err != nil {
		return fmt.Errorf("open source image: %w", err)
	}
	defer src.Close()
	dir := filepath.Dir(dstPath)
	f, err := os.CreateTemp(dir, "."+filepath.Base(dstPath)+".tmp-*")
	if err != nil {
		return &OutputError{Path: dstPath, Err: err}
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if err = Convert(ctx, src, format, f, opts); err != nil {
		var oe *OutputError
		if errors.As(err, &oe) {
			oe.Path = dstPath
		}
		return err
	}
	if err = f.Chmod(0o644); err != nil {
		return &OutputError{Path: dstPath, Err: err}
	}
	if err = f.Sync(); err != nil {
		return &OutputError{Path: dstPath, Err: err}
	}
	if err = f.Close(); err != nil {
		return &OutputError{Path: dstPath, Err: err}
	}
	if err = os.Rename(f.Name(), dstPath); err != nil {
		return &OutputError{Path: dstPath, Err: err}
	}
	return nil
}

// checkRawDisk accepts a source with a GPT header at LBA 1 or an MBR boot signature: anything else (a
// qcow2, a squashfs, a tar) is refused before a byte is written.
func checkRawDisk(src *os.File, size int64) error {
	name := src.Name()
	if size < 1024 {
		return &NotRawDiskError{Path: name, Reason: fmt.Sprintf("%d bytes, smaller than an MBR and a GPT header", size)}
	}
	if size%512 != 0 {
		return &NotRawDiskError{Path: name, Reason: fmt.Sprintf("%d bytes is not a whole number of 512-byte sectors", size)}
	}
	if f, err := Detect(src); err == nil && f != Raw {
		return &NotRawDiskError{Path: name, Reason: "it is already a " + f + " image"}
	} else if err != nil {
		if errors.Is(err, ErrNotRawDisk) {
			return &NotRawDiskError{Path: name, Reason: "no GPT header and no MBR signature"}
		}
		return fmt.Errorf("read %s: %w", name, err)
	}
	return nil
}

// Detect names the format of an image from its headers: qcow2, vmdk, vhd (dynamic), vhd-fixed (footer
// only, found at the end when r has a Size or Stat method), or raw for a disk with a GPT or MBR. Anything
// else is ErrNotRawDisk.
func Detect(r io.ReaderAt) (string, error) {
	var b [1024]byte
	n, err := r.ReadAt(b[:], 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return "", err
	}
	h := b[:n]
	switch {
	case len(h) >= 4 && string(h[:4]) == "QFI\xfb":
		return QCOW2, nil
	case len(h) >= 4 && binary.LittleEndian.Uint32(h) == vmdkMagic,
		strings.HasPrefix(string(h), "# Disk DescriptorFile"):
		return VMDK, nil
	case len(h) >= 8 && string(h[:8]) == "conectix":
		return VHD, nil
	}
	if size := sizeOf(r); size >= 512 {
		var f [512]byte
		if _, err := r.ReadAt(f[:], size-512); err == nil && string(f[:8]) == "conectix" &&
			binary.BigEndian.Uint32(f[60:]) == vhdTypeFixed {
			return VHDFixed, nil
		}
	}
	if len(h) >= 520 && string(h[512:520]) == "EFI PART" {
		return Raw, nil
	}
	if len(h) >= 512 && h[510] == 0x55 && h[511] == 0xaa {
		return Raw, nil
	}
	return "", ErrNotRawDisk
}

func sizeOf(r io.ReaderAt) int64 {
	switch v := r.(type) {
	case interface{ Size() int64 }:
		return v.Size()
	case interface{ Stat() (os.FileInfo, error) }:
		if fi, err := v.Stat(); err == nil {
			return fi.Size()
		}
	}
	return -1
}
