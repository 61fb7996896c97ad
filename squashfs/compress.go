package squashfs

import (
	"bytes"
	"encoding/binary"
	"fmt"

	"github.com/klauspost/compress/zlib"
	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
	"github.com/ulikunitz/xz"

	zstdopt "osbuild.dev/osbuild/internal/zstd"
)

// Compressor ids of the superblock.
const (
	compGzip = 1
	compXZ   = 4
	compLZ4  = 5
	compZstd = 6
)

// compressor turns one block into its compressed form. Each worker owns one: they are not safe for
// concurrent use. The result must be a pure function of the input so that images are reproducible.
type compressor interface {
	// compress returns the compressed form of src, possibly reusing dst's storage. A result not
	// shorter than src means "store uncompressed"; the caller checks.
	compress(dst, src []byte) ([]byte, error)
}

type codec struct {
	id      uint16
	options []byte // compressor options metadata, nil when none is written
	new     func() (compressor, error)
}

func newCodec(o Options) (codec, error) {
	switch o.Compression {
	case "zstd":
		// The kernel sizes its zstd workspace for a window of max(block size, 8 KiB): a frame must
		// not declare more. Single-segment frames declare exactly their content size.
		window := int(max(o.BlockSize, metadataSize))
		opts := []zstd.EOption{
			zstd.WithEncoderLevel(zstd.EncoderLevelFromZstd(o.Level)),
			zstd.WithEncoderConcurrency(1),
			zstd.WithEncoderCRC(false),
			zstd.WithWindowSize(window),
			zstd.WithSingleSegment(true),
			zstd.WithZeroFrames(true),
		}
		return codec{id: compZstd, options: le32(uint32(o.Level)), new: func() (compressor, error) {
			if o.Level >= optimalZstdLevel {
				return optZstdComp{zstdopt.NewEncoder(o.Level)}, nil
			}
			e, err := zstd.NewWriter(nil, opts...)
			if err != nil {
				return nil, err
			}
			return zstdComp{e}, nil
		}}, nil
	case "gzip":
		// level, window bits 15, no strategy bits: what squashfs-tools writes.
		opt := binary.LittleEndian.AppendUint32(nil, uint32(o.Level))
		opt = binary.LittleEndian.AppendUint16(opt, 15)
		opt = binary.LittleEndian.AppendUint16(opt, 0)
		return codec{id: compGzip, options: opt, new: func() (compressor, error) {
			w, err := zlib.NewWriterLevel(nil, o.Level)
			if err != nil {
				return nil, err
			}
			return &gzipComp{w: w}, nil
		}}, nil
	case "xz":
		// No options block: readers then use a dictionary of the block size (the kernel at least
		// 8 KiB), which is what the encoder declares. CRC32 is the check the kernel decoder knows.
		cfg := xz.WriterConfig{DictCap: int(o.BlockSize), CheckSum: xz.CRC32}
		if err := cfg.Verify(); err != nil {
			return codec{}, err
		}
		return codec{id: compXZ, new: func() (compressor, error) { return &xzComp{cfg: cfg}, nil }}, nil
	case "lz4":
		// version 1 (legacy block format, the only one), flag 1 = high compression. squashfs-tools
		// refuses lz4 images without this block.
		flags := uint32(0)
		if o.Level > 0 {
			flags = 1
		}
		opt := binary.LittleEndian.AppendUint32(nil, 1)
		opt = binary.LittleEndian.AppendUint32(opt, flags)
		return codec{id: compLZ4, options: opt, new: func() (compressor, error) {
			if o.Level == 0 {
				return &lz4Comp{}, nil
			}
			return &lz4Comp{hc: &lz4.CompressorHC{Level: lz4.CompressionLevel(1 << (8 + o.Level))}}, nil
		}}, nil
	}
	return codec{}, &OptionError{"compression", o.Compression, ErrCompression}
}

func le32(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }

// optimalZstdLevel is where C zstd switches to its optimal parser (btopt) for blocks of 128 KiB; from
// there on our own encoder, which parses the same way, is used: klauspost's best mode compresses like C
// zstd level 6-9, about 8 % larger than level 15 on a tree of /usr files.
const optimalZstdLevel = 13

type optZstdComp struct{ e *zstdopt.Encoder }

func (c optZstdComp) compress(dst, src []byte) ([]byte, error) { return c.e.Encode(dst[:0], src), nil }

type zstdComp struct{ e *zstd.Encoder }

func (c zstdComp) compress(dst, src []byte) ([]byte, error) { return c.e.EncodeAll(src, dst[:0]), nil }

type gzipComp struct {
	w   *zlib.Writer
	buf bytes.Buffer
}

func (c *gzipComp) compress(dst, src []byte) ([]byte, error) {
	c.buf = *bytes.NewBuffer(dst[:0])
	c.w.Reset(&c.buf)
	if _, err := c.w.Write(src); err != nil {
		return nil, err
	}
	if err := c.w.Close(); err != nil {
		return nil, err
	}
	return c.buf.Bytes(), nil
}

type xzComp struct {
	cfg xz.WriterConfig
	buf bytes.Buffer
}

func (c *xzComp) compress(dst, src []byte) ([]byte, error) {
	c.buf = *bytes.NewBuffer(dst[:0])
	w, err := c.cfg.NewWriter(&c.buf)
	if err != nil {
		return nil, err
	}
	if _, err := w.Write(src); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	return c.buf.Bytes(), nil
}

type lz4Comp struct {
	fast lz4.Compressor
	hc   *lz4.CompressorHC
}

func (c *lz4Comp) compress(dst, src []byte) ([]byte, error) {
	n := lz4.CompressBlockBound(len(src))
	if cap(dst) < n {
		dst = make([]byte, n)
	}
	dst = dst[:n]
	var m int
	var err error
	if c.hc != nil {
		m, err = c.hc.CompressBlock(src, dst)
	} else {
		m, err = c.fast.CompressBlock(src, dst)
	}
	if err != nil {
		return nil, fmt.Errorf("lz4: %w", err)
	}
	if m == 0 { // incompressible: a result as long as the bound makes the caller store src
		return dst, nil
	}
	return dst[:m], nil
}
