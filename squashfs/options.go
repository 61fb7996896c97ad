package squashfs

import (
	"errors"
	"fmt"
	"runtime"
	"time"
)

// Options control how an image is written. The zero value is valid: zstd at level 15, 128 KiB blocks,
// one worker per CPU, the newest mtime of the tree as the image time.
type Options struct {
	// Compression is "zstd" (default), "gzip", "xz" or "lz4".
	Compression string
	// Level is the compressor level; 0 picks the default. zstd 1–22 (default 15, the mksquashfs
	// default; 13 and above use osbuild's optimal-parsing encoder, internal/zstd; below, klauspost's
	// faster one with four speed classes, see zstd.EncoderLevelFromZstd), gzip 1–9
	// (default 9), lz4 0 (fast, default) or 1–9 (high compression). xz has no level.
	Level int
	// BlockSize is the data block size: a power of two from 4 KiB to 1 MiB (default 128 KiB).
	BlockSize uint32
	// Workers is the number of compressing goroutines (default runtime.NumCPU()). The output does
	// not depend on it.
	Workers int
	// ModTime is the superblock time. The zero value means the newest mtime in the tree, so that
	// an image is a function of its tree alone; callers honouring SOURCE_DATE_EPOCH set it here.
	ModTime time.Time
	// Progress, when set, is called from a single goroutine with the bytes of file content
	// consumed so far and the total.
	Progress func(done, total int64)
}

// Option errors are *OptionError values wrapping one of these, so callers can test with errors.Is.
var (
	ErrCompression = errors.New("unknown compression")
	ErrLevel       = errors.New("compression level out of range")
	ErrBlockSize   = errors.New("block size must be a power of two between 4 KiB and 1 MiB")
	ErrWorkers     = errors.New("workers must not be negative")
	ErrModTime     = errors.New("modification time outside the squashfs range (1970–2106)")
)

// OptionError names the option that is invalid.
type OptionError struct {
	Option string
	Value  any
	Err    error
}

func (e *OptionError) Error() string {
	return fmt.Sprintf("squashfs: option %s=%v: %v", e.Option, e.Value, e.Err)
}

func (e *OptionError) Unwrap() error { return e.Err }

const (
	DefaultBlockSize = 128 << 10
	minBlockSize     = 4 << 10
	maxBlockSize     = 1 << 20
)

// normalize validates o and fills in defaults.
func (o Options) normalize() (Options, error) {
	if o.Compression == "" {
		o.Compression = "zstd"
	}
	switch o.Compression {
	case "zstd":
		if o.Level == 0 {
			o.Level = 15
		}
		if o.Level < 1 || o.Level > 22 {
			return o, &OptionError{"level", o.Level, ErrLevel}
		}
	case "gzip":
		if o.Level == 0 {
			o.Level = 9
		}
		if o.Level < 1 || o.Level > 9 {
			return o, &OptionError{"level", o.Level, ErrLevel}
		}
	case "xz":
		if o.Level != 0 {
			return o, &OptionError{"level", o.Level, ErrLevel}
		}
	case "lz4":
		if o.Level < 0 || o.Level > 9 {
			return o, &OptionError{"level", o.Level, ErrLevel}
		}
	default:
		return o, &OptionError{"compression", o.Compression, ErrCompression}
	}
	if o.BlockSize == 0 {
		o.BlockSize = DefaultBlockSize
	}
	if o.BlockSize < minBlockSize || o.BlockSize > maxBlockSize || o.BlockSize&(o.BlockSize-1) != 0 {
		return o, &OptionError{"block-size", o.BlockSize, ErrBlockSize}
	}
	if o.Workers < 0 {
		return o, &OptionError{"workers", o.Workers, ErrWorkers}
	}
	if o.Workers == 0 {
		o.Workers = runtime.NumCPU()
	}
	if !o.ModTime.IsZero() && (o.ModTime.Unix() < 0 || o.ModTime.Unix() > 0xFFFFFFFF) {
		return o, &OptionError{"mod-time", o.ModTime, ErrModTime}
	}
	return o, nil
}

// Stats describes a written image.
type Stats struct {
	Bytes         int64 // image size including the padding to 4 KiB
	Inodes        int
	Files         int   // regular-file inodes
	DataBytes     int64 // file content read
	Duplicates    int   // files stored as references to an earlier identical file
	SparseBlocks  int   // all-zero blocks stored as holes
	Fragments     int   // fragment blocks
	XattrsSkipped int   // xattrs outside the user., trusted. and security. namespaces, which squashfs cannot hold
	Uncompressed  int   // data and fragment blocks stored as is because compression did not shrink them
}
