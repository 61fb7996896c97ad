package squashfs

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"sync"

	"osbuild.dev/osbuild/tree"
)

// fileLayout is where a regular file's content landed. Duplicates share one.
type fileLayout struct {
	start   uint64   // offset of the first data block
	sizes   []uint32 // one word per full block: compressed size, dataUncompressed flag, 0 for a hole
	frag    uint32   // fragment block index, or invalidFragment
	fragOff uint32   // offset of the tail inside the uncompressed fragment block
	sparse  uint64   // bytes stored as holes
}

// fileJob is one regular-file inode on its way through the pipeline, in data order.
type fileJob struct {
	path   string
	node   *tree.Node
	size   int64
	small  bool // read whole by a prefetcher; large files are streamed by the sequencer
	dedup  bool // another file has the same size, so the content hash decides
	budget int64

	ready chan struct{}
	data  []byte
	sum   [sha256.Size]byte
	err   error

	layout *fileLayout
}

const (
	kindData = iota
	kindFrag
)

// block is one unit of compression: a full data block of a file or a packed fragment block.
type block struct {
	seq    uint64
	kind   int
	in     *[]byte // pooled, len = content
	out    []byte  // what goes to disk
	word   uint32  // size word for the block list or fragment table
	hole   bool
	layout *fileLayout
	idx    int
	done   int64 // bytes of file content this block completes, for progress
	err    error
}

// pipeline moves file content through prefetch → sequence → compress → ordered write. Memory is
// bounded by the prefetch budget plus a fixed number of blocks in flight, whatever the file sizes.
type pipeline struct {
	o     Options
	codec codec
	out   *outWriter
	files []*fileJob
	stats *Stats
	total int64

	pool      sync.Pool
	slots     chan struct{} // one token per block in flight
	frags     []fragEntry   // appended by the ordered writer, in index order
	fragCount uint32        // fragment blocks handed out by the sequencer
	fragCur   *[]byte       // fragment block being packed
	fragDone  int64
	seqTotal  chan uint64 // the number of blocks, once the sequencer is done
	spare     chan compressor
	arena     dataArena
	outPool   sync.Pool
}

type fragEntry struct {
	start uint64
	word  uint32
}

func (p *pipeline) getBuf() *[]byte {
	if b, ok := p.pool.Get().(*[]byte); ok {
		*b = (*b)[:0]
		return b
	}
	b := make([]byte, 0, p.o.BlockSize)
	return &b
}

// Compressed output buffers are pooled apart from input buffers: compressors may grow them.
func (p *pipeline) getOut() []byte {
	if b, ok := p.outPool.Get().(*[]byte); ok {
		return (*b)[:0]
	}
	return make([]byte, 0, p.o.BlockSize+p.o.BlockSize/16+64)
}

func (p *pipeline) putOut(b []byte) {
	if cap(b) >= int(p.o.BlockSize) && cap(b) <= 2*int(p.o.BlockSize)+4096 {
		b = b[:0]
		p.outPool.Put(&b)
	}
}

func (p *pipeline) putBuf(b *[]byte) {
	if b != nil && cap(*b) == int(p.o.BlockSize) {
		p.pool.Put(b)
	}
}

// run writes all file content. On return every fileLayout and the fragment table are final.
func (p *pipeline) run(ctx context.Context) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	// More workers than blocks only costs compressor setup (34 MiB of tables each for zstd's
	// best mode); the output does not depend on the count.
	workers := max(1, min(p.o.Workers, int(p.total/int64(p.o.BlockSize))+1))
	nslots := 2*workers + 4
	p.spare = make(chan compressor, workers)
	p.slots = make(chan struct{}, nslots)
	jobs := make(chan *block, nslots)
	results := make(chan *block, nslots)

	var wg sync.WaitGroup
	fail := func(err error) { cancel(err) }

	// Prefetchers read small files whole (and hash large ones that may be duplicates) ahead of the
	// sequencer, several at a time: opening and reading many small files is latency-bound.
	prefetch := make(chan *fileJob, 64)
	const prefetchBudget = 16 << 20
	budget := make(chan struct{}, 1)
	var budgetMu sync.Mutex
	budgetFree := int64(prefetchBudget)
	release := func(n int64) {
		budgetMu.Lock()
		budgetFree += n
		budgetMu.Unlock()
		select {
		case budget <- struct{}{}:
		default:
		}
	}
	acquire := func(n int64) bool {
		for {
			budgetMu.Lock()
			if budgetFree >= n {
				budgetFree -= n
				budgetMu.Unlock()
				return true
			}
			budgetMu.Unlock()
			select {
			case <-budget:
			case <-ctx.Done():
				return false
			}
		}
	}
	// The dispatcher takes budget in file order, so the file the sequencer waits for always gets
	// read: no later file can hold the budget it needs.
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(prefetch)
		for _, f := range p.files {
			if !acquire(f.budget) {
				return
			}
			select {
			case prefetch <- f:
			case <-ctx.Done():
				return
			}
		}
	}()
	readers := max(4, 2*workers)
	for range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for f := range prefetch {
				f.err = p.prefetch(f)
				close(f.ready)
			}
		}()
	}

	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := p.codec.new()
			if err != nil {
				fail(err)
				return
			}
			// Hand the compressor on to the table pass: an encoder at the best zstd level holds
			// about 34 MiB of match tables, too much to allocate twice.
			defer func() { p.spare <- c }()
			for b := range jobs {
				p.compress(c, b)
				select {
				case results <- b:
				case <-ctx.Done():
					return
				}
			}
		}()
	}

	writerDone := make(chan error, 1)
	go func() { writerDone <- p.writeOrdered(ctx, results) }()

	if err := p.sequence(ctx, jobs, release); err != nil {
		fail(err)
	}
	close(jobs)
	if err := <-writerDone; err != nil {
		fail(err)
	}
	// The first failure, from whichever goroutine, or the caller's cancellation.
	cause := context.Cause(ctx)
	cancel(nil)
	wg.Wait()
	return cause
}

func (p *pipeline) prefetch(f *fileJob) error {
	if !f.small && !f.dedup {
		return nil
	}
	r, err := f.node.Open()
	if err != nil {
		return fmt.Errorf("%s: %w", f.path, err)
	}
	defer r.Close()
	if f.small {
		f.data = p.arena.get(int(f.size))
		if err := readExact(r, f.data, f.path, f.size); err != nil {
			return err
		}
		if err := checkEOF(r, f.path, f.size); err != nil {
			return err
		}
		if f.dedup {
			f.sum = sha256.Sum256(f.data)
		}
		return nil
	}
	h := sha256.New()
	n, err := io.Copy(h, r)
	if err != nil {
		return fmt.Errorf("%s: %w", f.path, err)
	}
	if n != f.size {
		return fmt.Errorf("%s: content is %d bytes, the tree says %d", f.path, n, f.size)
	}
	h.Sum(f.sum[:0])
	return nil
}

// readExact fills buf and checks that the content ends right there.
func readExact(r io.Reader, buf []byte, path string, size int64) error {
	n, err := io.ReadFull(r, buf)
	if err == io.ErrUnexpectedEOF || err == io.EOF {
		return fmt.Errorf("%s: content is %d bytes, the tree says %d", path, n, size)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

func checkEOF(r io.Reader, path string, size int64) error {
	var one [1]byte
	n, err := io.ReadFull(r, one[:])
	if n > 0 {
		return fmt.Errorf("%s: content is longer than the %d bytes the tree says", path, size)
	}
	if err != nil && err != io.EOF {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// Whole-file buffers of small files are recycled by power-of-two size class. A fresh allocation per
// file would let the heap grow well past what is live between collections, and sync.Pool keeps
// what it holds alive across a collection: a small free list with a byte cap keeps the total at
// the prefetch budget plus that cap.
type dataArena struct {
	mu        sync.Mutex
	free      [21][][]byte
	freeBytes int64
}

const maxFreeData = 8 << 20

func sizeClass(n int) int {
	c := 12 // 4 KiB
	for 1<<c < n {
		c++
	}
	return c
}

func classBytes(n int64) int64 {
	if n == 0 {
		return 0
	}
	return 1 << sizeClass(int(n))
}

func (a *dataArena) get(n int) []byte {
	c := sizeClass(n)
	if n == 0 || c >= len(a.free) {
		return make([]byte, n)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if k := len(a.free[c]); k > 0 {
		b := a.free[c][k-1]
		a.free[c] = a.free[c][:k-1]
		a.freeBytes -= int64(cap(b))
		return b[:n]
	}
	return make([]byte, n, 1<<c)
}

func (a *dataArena) put(b []byte) {
	c := sizeClass(cap(b))
	if c >= len(a.free) || cap(b) != 1<<c {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.freeBytes+int64(cap(b)) > maxFreeData {
		return
	}
	a.free[c] = append(a.free[c], b)
	a.freeBytes += int64(cap(b))
}

type dedupKey struct {
	size int64
	sum  [sha256.Size]byte
}

// sequence walks the files in order, decides duplicates, cuts blocks and packs tails into fragment
// blocks, numbering every block so that the output order is fixed before any compression runs.
func (p *pipeline) sequence(ctx context.Context, jobs chan<- *block, release func(int64)) error {
	var seq uint64
	var pendingDone int64
	seen := map[dedupKey]*fileLayout{}
	bs := int64(p.o.BlockSize)

	emit := func(b *block) error {
		if ctx.Err() != nil {
			p.putBuf(b.in)
			return context.Cause(ctx)
		}
		select {
		case p.slots <- struct{}{}:
		case <-ctx.Done():
			p.putBuf(b.in)
			return context.Cause(ctx)
		}
		b.seq = seq
		seq++
		b.done += pendingDone
		pendingDone = 0
		select {
		case jobs <- b:
			return nil
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
	flushFrag := func() error {
		if p.fragCur == nil || len(*p.fragCur) == 0 {
			return nil
		}
		b := &block{kind: kindFrag, in: p.fragCur, done: p.fragDone}
		p.fragCur, p.fragDone = nil, 0
		p.fragCount++
		return emit(b)
	}
	addTail := func(l *fileLayout, tail []byte) error {
		if p.fragCur != nil && len(*p.fragCur)+len(tail) > int(bs) {
			if err := flushFrag(); err != nil {
				return err
			}
		}
		if p.fragCur == nil {
			p.fragCur = p.getBuf()
		}
		l.frag = p.fragCount
		l.fragOff = uint32(len(*p.fragCur))
		*p.fragCur = append(*p.fragCur, tail...)
		p.fragDone += int64(len(tail))
		return nil
	}

	for _, f := range p.files {
		// select picks at random among ready cases: check first so that a cancelled run stops
		// at the next file rather than eventually.
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		select {
		case <-f.ready:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
		if f.err != nil {
			return f.err
		}
		l := &fileLayout{frag: invalidFragment}
		f.layout = l
		if f.dedup {
			k := dedupKey{f.size, f.sum}
			if prev, ok := seen[k]; ok {
				f.layout = prev
				p.stats.Duplicates++
				pendingDone += f.size
				p.arena.put(f.data)
				f.data = nil
				release(f.budget)
				continue
			}
			seen[k] = l
		}
		nfull := f.size / bs
		l.sizes = make([]uint32, nfull)
		tailLen := f.size % bs
		if f.small {
			for i := range nfull {
				b := &block{kind: kindData, in: p.getBuf(), layout: l, idx: int(i), done: bs}
				*b.in = append(*b.in, f.data[i*bs:(i+1)*bs]...)
				if err := emit(b); err != nil {
					return err
				}
			}
			if tailLen > 0 {
				if err := addTail(l, f.data[nfull*bs:]); err != nil {
					return err
				}
			}
			p.arena.put(f.data)
			f.data = nil
			release(f.budget)
			continue
		}
		if err := p.streamFile(f, l, nfull, tailLen, emit, addTail); err != nil {
			return err
		}
	}
	if err := flushFrag(); err != nil {
		return err
	}
	if pendingDone > 0 {
		// Trailing duplicates: carry their progress on an empty marker the writer skips.
		if err := emit(&block{kind: -1}); err != nil {
			return err
		}
	}
	p.seqTotal <- seq
	return nil
}

func (p *pipeline) streamFile(f *fileJob, l *fileLayout, nfull, tailLen int64,
	emit func(*block) error, addTail func(*fileLayout, []byte) error) error {
	bs := int(p.o.BlockSize)
	r, err := f.node.Open()
	if err != nil {
		return fmt.Errorf("%s: %w", f.path, err)
	}
	defer r.Close()
	for i := range nfull {
		in := p.getBuf()
		*in = (*in)[:bs]
		if err := readExact(r, *in, f.path, f.size); err != nil {
			p.putBuf(in)
			return err
		}
		if err := emit(&block{kind: kindData, in: in, layout: l, idx: int(i), done: int64(bs)}); err != nil {
			return err
		}
	}
	if tailLen > 0 {
		tail := make([]byte, tailLen)
		if err := readExact(r, tail, f.path, f.size); err != nil {
			return err
		}
		if err := addTail(l, tail); err != nil {
			return err
		}
	}
	return checkEOF(r, f.path, f.size)
}

var zeroBlock = make([]byte, 64<<10)

func allZero(b []byte) bool {
	for len(b) > 0 {
		n := min(len(b), len(zeroBlock))
		if !bytes.Equal(b[:n], zeroBlock[:n]) {
			return false
		}
		b = b[n:]
	}
	return true
}

// compress fills b.out and b.word. A block that does not shrink is stored as is.
func (p *pipeline) compress(c compressor, b *block) {
	if b.kind < 0 {
		return
	}
	in := *b.in
	if b.kind == kindData && allZero(in) {
		b.hole = true
		return
	}
	out, err := c.compress(p.getOut(), in)
	if err != nil {
		b.err = err
		return
	}
	if len(out) >= len(in) {
		p.putOut(out)
		b.out = in
		b.word = uint32(len(in)) | dataUncompressed
		return
	}
	b.out = out
	b.word = uint32(len(out))
}

// writeOrdered writes blocks in sequence order, whatever order the workers finish in, and records
// where each landed.
func (p *pipeline) writeOrdered(ctx context.Context, results <-chan *block) error {
	pending := map[uint64]*block{}
	var next uint64
	var done int64
	total := ^uint64(0)
	totalCh := p.seqTotal
	for next != total {
		select {
		case b := <-results:
			pending[b.seq] = b
		case t := <-totalCh:
			total, totalCh = t, nil
			continue
		case <-ctx.Done():
			return context.Cause(ctx)
		}
		for {
			b, ok := pending[next]
			if !ok {
				break
			}
			delete(pending, next)
			next++
			if b.err != nil {
				return b.err
			}
			if err := p.place(b); err != nil {
				return err
			}
			done += b.done
			<-p.slots
			if p.o.Progress != nil {
				p.o.Progress(done, p.total)
			}
		}
	}
	return nil
}

// place appends a finished block to the image and records its position.
func (p *pipeline) place(b *block) error {
	// The output writer copies, so both buffers can go back to their pools afterwards.
	defer p.putBuf(b.in)
	switch b.kind {
	case kindData:
		l := b.layout
		if b.idx == 0 {
			l.start = uint64(p.out.off)
		}
		if b.hole {
			l.sizes[b.idx] = 0
			l.sparse += uint64(len(*b.in))
			p.stats.SparseBlocks++
			return nil
		}
		l.sizes[b.idx] = b.word
	case kindFrag:
		p.frags = append(p.frags, fragEntry{start: uint64(p.out.off), word: b.word})
		p.stats.Fragments++
	default:
		return nil
	}
	if b.word&dataUncompressed != 0 {
		p.stats.Uncompressed++
	}
	err := p.out.write(b.out)
	if b.word&dataUncompressed == 0 {
		p.putOut(b.out)
	}
	return err
}
