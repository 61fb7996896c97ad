package squashfs

import "io"

// outWriter appends to an io.WriterAt in large sequential writes. Only the superblock is written
// out of order, at the very end.
type outWriter struct {
	w    io.WriterAt
	off  int64 // logical end, buffered bytes included
	base int64 // file offset of buf[0]
	buf  []byte
}

func newOutWriter(w io.WriterAt, off int64) *outWriter {
	return &outWriter{w: w, off: off, base: off, buf: make([]byte, 0, 1<<20)}
}

func (o *outWriter) write(p []byte) error {
	o.off += int64(len(p))
	if len(o.buf)+len(p) > cap(o.buf) {
		if err := o.flush(); err != nil {
			return err
		}
		if len(p) >= cap(o.buf) {
			_, err := o.w.WriteAt(p, o.base)
			o.base += int64(len(p))
			return err
		}
	}
	o.buf = append(o.buf, p...)
	return nil
}

func (o *outWriter) flush() error {
	if len(o.buf) == 0 {
		return nil
	}
	_, err := o.w.WriteAt(o.buf, o.base)
	o.base += int64(len(o.buf))
	o.buf = o.buf[:0]
	return err
}
