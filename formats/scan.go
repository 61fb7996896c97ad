package formats

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

var (
	errNoSpace  = syscall.ENOSPC
	errReadOnly = syscall.EROFS
)

// output writes the body of an image mostly in order and patches headers in place at the end. Small
// writes (markers, tables, compressed records) are gathered in a buffer; long runs of data go straight to
// the file from the source buffer, without another copy. Every error it returns is an *OutputError.
type output struct {
	f      *os.File
	buf    []byte
	bufOff int64 // file offset of buf[0]
	pos    int64 // offset of the next sequential byte
}

const directWrite = 128 << 10 // runs at least this long bypass the buffer

// start positions the sequential writer at off.
func (o *output) start(off int64) error {
	if err := o.flush(); err != nil {
		return err
	}
	if o.buf == nil {
		o.buf = make([]byte, 0, 4<<20)
	}
	o.pos, o.bufOff = off, off
	return nil
}

func (o *output) Write(p []byte) (int, error) {
	if len(p) >= directWrite {
		if err := o.flush(); err != nil {
			return 0, err
		}
		n, err := o.f.WriteAt(p, o.pos)
		o.pos += int64(n)
		o.bufOff = o.pos
		if err != nil {
			return n, &OutputError{Path: o.f.Name(), Err: err}
		}
		return n, nil
	}
	if len(o.buf)+len(p) > cap(o.buf) {
		if err := o.flush(); err != nil {
			return 0, err
		}
	}
	o.buf = append(o.buf, p...)
	o.pos += int64(len(p))
	return len(p), nil
}

var zeros = make([]byte, 2<<20)

// pad writes n zero bytes.
func (o *output) pad(n int64) error {
	for n > 0 {
		k := min(n, int64(len(zeros)))
		if _, err := o.Write(zeros[:k]); err != nil {
			return err
		}
		n -= k
	}
	return nil
}

// skip moves the sequential position to off without writing, leaving a hole.
func (o *output) skip(off int64) error { return o.start(off) }

// writeSparse writes p at the current position but leaves a hole for every aligned 4 KiB page of zeros in
// it (the file reads the same; qemu-img convert leaves the same holes), then moves past p.
func (o *output) writeSparse(p []byte) error {
	const page = 4096
	base := o.pos
	for i := 0; i < len(p); {
		if bytes.Equal(p[i:min(i+page, len(p))], zeros[:min(page, len(p)-i)]) {
			i += page
			continue
		}
		j := i + page
		for j < len(p) && !bytes.Equal(p[j:min(j+page, len(p))], zeros[:min(page, len(p)-j)]) {
			j += page
		}
		j = min(j, len(p))
		if err := o.skip(base + int64(i)); err != nil {
			return err
		}
		if _, err := o.Write(p[i:j]); err != nil {
			return err
		}
		i = j
	}
	return o.skip(base + int64(len(p)))
}

func (o *output) flush() error {
	if len(o.buf) > 0 {
		if _, err := o.f.WriteAt(o.buf, o.bufOff); err != nil {
			return &OutputError{Path: o.f.Name(), Err: err}
		}
	}
	o.buf = o.buf[:0]
	o.bufOff = o.pos
	return nil
}

// writeAtSparse writes p at off, skipping its aligned 4 KiB pages of zeros: metadata tables are mostly
// empty, and a hole reads the same while taking no space.
func (o *output) writeAtSparse(p []byte, off int64) error {
	const page = 4096
	for i := 0; i < len(p); i += page {
		q := p[i:min(i+page, len(p))]
		if !bytes.Equal(q, zeros[:len(q)]) {
			if err := o.writeAt(q, off+int64(i)); err != nil {
				return err
			}
		}
	}
	return nil
}

func (o *output) writeAt(p []byte, off int64) error {
	if _, err := o.f.WriteAt(p, off); err != nil {
		return &OutputError{Path: o.f.Name(), Err: err}
	}
	return nil
}

func (o *output) truncate(size int64) error {
	if err := o.f.Truncate(size); err != nil {
		return &OutputError{Path: o.f.Name(), Err: err}
	}
	return nil
}

// chunk is one batch of whole units read from the source, in flight between the reader, a worker and the
// writer.
type chunk struct {
	off  int64  // source offset of data[0], a multiple of the unit
	data []byte // len is a multiple of the unit; bytes past the end of the source read as zeros
	zero []bool // per unit: all bytes zero, so the unit is left out of the output
	crc  []uint32
	out  [][]byte // per unit, what the format's worker made of it (compressed record), if anything
	buf  []byte   // backing store for out, reused between batches
	err  error
	done chan struct{}
}

// scanner reads a source in units (a qcow2 cluster, a VMDK grain, a VHD block), drops the units that are
// holes or all zeros, runs a format-specific function on the others in parallel, and hands the batches to
// emit in source order. The identity it returns hashes every non-zero unit's index and CRC-32C: it is
// derived from the content only (not from which zeros are holes), cheap (hardware CRC, computed by the
// workers) and it names the image in UUIDs and CIDs.
type scanner struct {
	unit    int
	batch   int // bytes per chunk, a multiple of unit
	workers int
	// newWorker makes the per-goroutine state (a compressor) and returns the function that fills c.out for
	// the non-zero units of c. nil: no per-unit work.
	newWorker func() func(c *chunk) error
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// run scans size bytes of src and calls emit for each chunk that holds at least one data extent, in order.
// emit must not keep c.data or c.out after it returns.
func (s *scanner) run(ctx context.Context, src *os.File, size int64, emit func(c *chunk) error) (identity [32]byte, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	inflight := 2*s.workers + 2
	free := make(chan *chunk, inflight)
	for range inflight {
		free <- &chunk{data: make([]byte, s.batch)}
	}
	work := make(chan *chunk, inflight)
	ordered := make(chan *chunk, inflight)

	var readErr error
	go func() {
		defer close(work)
		defer close(ordered)
		readErr = forEachExtent(src, size, int64(s.unit), int64(s.batch), func(off, n int64) error {
			var c *chunk
			select {
			case c = <-free:
			case <-ctx.Done():
				return ctx.Err()
			}
			c.off, c.err, c.done = off, nil, make(chan struct{})
			c.data = c.data[:cap(c.data)]
			units := (n + int64(s.unit) - 1) / int64(s.unit)
			c.data = c.data[:units*int64(s.unit)]
			got, err := src.ReadAt(c.data[:n], off)
			if err != nil && !(errors.Is(err, io.EOF) && int64(got) == n) {
				return fmt.Errorf("read source at %d: %w", off, err)
			}
			clear(c.data[n:])
			work <- c
			ordered <- c
			return nil
		})
	}()

	var wg sync.WaitGroup
	for range s.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var fn func(*chunk) error
			if s.newWorker != nil {
				fn = s.newWorker()
			}
			for c := range work {
				n := len(c.data) / s.unit
				c.zero, c.crc, c.out = c.zero[:0], c.crc[:0], c.out[:0]
				for i := range n {
					u := c.data[i*s.unit : (i+1)*s.unit]
					z := bytes.Equal(u, zeros[:s.unit])
					c.zero = append(c.zero, z)
					var sum uint32
					if !z {
						sum = crc32.Checksum(u, castagnoli)
					}
					c.crc = append(c.crc, sum)
				}
				if fn != nil {
					c.err = fn(c)
				}
				close(c.done)
			}
		}()
	}
	defer wg.Wait()

	id := sha256.New()
	var b [16]byte
	binary.LittleEndian.PutUint64(b[:], uint64(size))
	id.Write(b[:8])
	for c := range ordered {
		select {
		case <-c.done:
		case <-ctx.Done():
			err = ctx.Err()
		}
		if err == nil && c.err != nil {
			err = c.err
		}
		if err == nil {
			for i, z := range c.zero {
				if !z {
					binary.LittleEndian.PutUint64(b[:], uint64(c.off)/uint64(s.unit)+uint64(i))
					binary.LittleEndian.PutUint32(b[8:], c.crc[i])
					id.Write(b[:12])
				}
			}
			err = emit(c)
		}
		if err != nil {
			cancel()
			// Drain so that the reader and the workers finish before returning.
			for c := range ordered {
				<-c.done
			}
			return identity, err
		}
		<-c.done
		free <- c
	}
	if readErr != nil {
		return identity, readErr
	}
	if err := ctx.Err(); err != nil {
		return identity, err
	}
	copy(identity[:], id.Sum(nil))
	return identity, nil
}

// forEachExtent calls fn for the source ranges that hold data, widened to whole units and cut into pieces of
// at most batch bytes that start on a unit boundary; the last piece may end at size, inside a unit.
// Holes are found with SEEK_DATA/SEEK_HOLE; a file system without them reads as all data.
func forEachExtent(src *os.File, size, unit, batch int64, fn func(off, n int64) error) error {
	fd := int(src.Fd())
	next := int64(0) // everything before next has been handed to fn
	for next < size {
		start, err := unix.Seek(fd, next, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			return nil // only a hole is left
		}
		var end int64
		if err != nil {
			// No SEEK_DATA support: treat the rest as data.
			start, end = next, size
		} else {
			end, err = unix.Seek(fd, start, unix.SEEK_HOLE)
			if err != nil {
				end = size
			}
		}
		start = max(start/unit*unit, next)
		end = min((end+unit-1)/unit*unit, size)
		for off := start; off < end; {
			n := min(batch-off%batch, end-off)
			if err := fn(off, n); err != nil {
				return err
			}
			off += n
		}
		next = max(end, next)
		if end <= start && next == start {
			next = start + unit
		}
	}
	return nil
}

// workerCompress is the per-chunk function for formats that store units compressed: it calls enc for each
// non-zero unit and keeps what enc appended in c.out.
func eachNonZero(c *chunk, unit int, enc func(dst []byte, idx int64, u []byte) ([]byte, error)) error {
	c.buf = c.buf[:0]
	ends := make([]int, 0, len(c.zero))
	for i, z := range c.zero {
		if !z {
			var err error
			c.buf, err = enc(c.buf, c.off/int64(unit)+int64(i), c.data[i*unit:(i+1)*unit])
			if err != nil {
				return err
			}
		}
		ends = append(ends, len(c.buf))
	}
	// Slice only after all appends: c.buf may have moved while growing.
	c.out = c.out[:0]
	prev := 0
	for _, e := range ends {
		c.out = append(c.out, c.buf[prev:e])
		prev = e
	}
	return nil
}
