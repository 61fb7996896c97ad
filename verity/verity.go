package verity

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"runtime"
	"sync"
)

// Options select the parameters of a new hash tree. The zero value is sha256, 4096-byte blocks, a salt
// derived from the data and a UUID derived from the salt: two runs over the same data give identical bytes.
type Options struct {
	// Hash is "sha256" (default) or "sha512".
	Hash string

	// Salt, when not nil, is used as is (at most 256 bytes). A non-nil empty slice means no salt, like
	// `veritysetup --salt=-`.
	Salt []byte

	// Seed, when Salt is nil, derives the salt: SHA-256("osbuild.dev/verity/salt\x00" || Seed). Builders
	// pass something that names the build (variant, version), so that the salt is stable across rebuilds.
	// With neither Salt nor Seed the seed is the data's size and its first and last MiB: cheap, and
	// deterministic, but two images that agree there share a salt (harmless: the salt is public anyway).
	Seed []byte

	// UUID of the hash device; zero derives one from the algorithm, salt and data block count
	// (an RFC 9562 version 8 UUID).
	UUID [16]byte

	// DataBlockSize and HashBlockSize default to BlockSize.
	DataBlockSize, HashBlockSize uint32

	// Workers hashing data blocks in parallel; 0 means GOMAXPROCS.
	Workers int
}

// Result describes a formatted hash tree: everything a kernel table or an update manifest needs.
type Result struct {
	Algorithm     string
	RootHash      []byte
	Salt          []byte
	UUID          [16]byte
	DataBlocks    uint64 // the data is hashed as if zero-padded to a whole block
	DataBlockSize uint32
	HashBlockSize uint32
	HashSize      int64 // bytes of the hash device: superblock block plus tree
}

// RootHashHex is the root hash as veritysetup prints it.
func (r *Result) RootHashHex() string { return hex.EncodeToString(r.RootHash) }

// SaltHex is the salt as the kernel table wants it ("-" for none).
func (r *Result) SaltHex() string {
	if len(r.Salt) == 0 {
		return "-"
	}
	return hex.EncodeToString(r.Salt)
}

// TableParams returns the verity target's parameters for a device-mapper table (everything after
// "verity"), with hash_start_block 1 because the hash device starts with the superblock. dataDev and hashDev
// are what the kernel resolves, e.g. "PARTUUID=...". Deriving the block count here, not by hand, matters: a
// short count boots fine and silently leaves the tail unverified.
func (r *Result) TableParams(dataDev, hashDev string) string {
	return fmt.Sprintf("1 %s %s %d %d %d 1 %s %s %s", dataDev, hashDev, r.DataBlockSize, r.HashBlockSize,
		r.DataBlocks, r.Algorithm, r.RootHashHex(), r.SaltHex())
}

// Sectors is the length of the verity device in 512-byte sectors, the length field of a dm table line.
func (r *Result) Sectors() uint64 { return r.DataBlocks * uint64(r.DataBlockSize) / 512 }

// layout is the geometry of a hash tree, computed the way veritysetup computes it so that the bytes match.
type layout struct {
	alg        algorithm
	dbs, hbs   int64
	dataBlocks uint64
	perBlock   int      // digests per hash block
	start      []uint64 // per level (0 = hashes of data blocks): first hash block, counted from the device start
	blocks     []uint64 // per level: number of hash blocks
	total      uint64   // hash blocks in the device, superblock block included
}

func newLayout(alg algorithm, dbs, hbs uint32, dataBlocks uint64) (*layout, error) {
	if err := checkBlockSize("data", dbs); err != nil {
		return nil, err
	}
	if err := checkBlockSize("hash", hbs); err != nil {
		return nil, err
	}
	if dataBlocks == 0 {
		return nil, errors.New("verity: no data: the data must hold at least one block")
	}
	l := &layout{alg: alg, dbs: int64(dbs), hbs: int64(hbs), dataBlocks: dataBlocks, perBlock: int(hbs) / alg.paddedLen}
	if l.perBlock < 2 {
		return nil, fmt.Errorf("verity: hash block size %d holds fewer than two %s digests", hbs, alg.name)
	}
	bits := uint(0)
	for 1<<(bits+1) <= l.perBlock {
		bits++
	}
	levels := 0
	for bits*uint(levels) < 64 && (dataBlocks-1)>>(bits*uint(levels)) != 0 {
		levels++
	}
	l.start = make([]uint64, levels)
	l.blocks = make([]uint64, levels)
	// The superblock, padded to one hash block, comes first; then levels from the top down.
	pos := uint64(1)
	for i := levels - 1; i >= 0; i-- {
		shift := bits * uint(i+1)
		if shift > 63 {
			return nil, errors.New("verity: hash tree too deep")
		}
		n := (dataBlocks + (1 << shift) - 1) >> shift
		l.start[i], l.blocks[i] = pos, n
		pos += n
	}
	l.total = pos
	return l, nil
}

func (l *layout) hashSize() int64 { return int64(l.total) * l.hbs }

// HashSize returns the size in bytes of the hash device (superblock included) for dataSize bytes of data:
// what a verity partition must at least hold.
func HashSize(dataSize int64, opts Options) (int64, error) {
	alg, err := newAlgorithm(opts.Hash)
	if err != nil {
		return 0, err
	}
	dbs, hbs := blockSizes(opts)
	if dataSize <= 0 {
		return 0, errors.New("verity: no data: the data must hold at least one block")
	}
	l, err := newLayout(alg, dbs, hbs, uint64((dataSize+int64(dbs)-1)/int64(dbs)))
	if err != nil {
		return 0, err
	}
	return l.hashSize(), nil
}

func blockSizes(opts Options) (uint32, uint32) {
	dbs, hbs := opts.DataBlockSize, opts.HashBlockSize
	if dbs == 0 {
		dbs = BlockSize
	}
	if hbs == 0 {
		hbs = BlockSize
	}
	return dbs, hbs
}

// DeriveSalt is the salt used for a seed when Options.Salt is nil.
func DeriveSalt(seed []byte) []byte {
	h := sha256.New()
	h.Write([]byte("osbuild.dev/verity/salt\x00"))
	h.Write(seed)
	return h.Sum(nil)
}

// sampleSeed reads the data's size and its first and last MiB: a seed for the salt that costs one small
// read instead of a pass over the data (the salt must be known before hashing starts).
func sampleSeed(data io.ReaderAt, size int64) ([]byte, error) {
	const n = 1 << 20
	seed := binary.LittleEndian.AppendUint64(nil, uint64(size))
	head := min(size, n)
	buf := make([]byte, head)
	if err := readFull(data, buf, 0); err != nil {
		return nil, fmt.Errorf("verity: reading the data: %w", err)
	}
	seed = append(seed, buf...)
	if size > n {
		if err := readFull(data, buf, size-head); err != nil {
			return nil, fmt.Errorf("verity: reading the data: %w", err)
		}
		seed = append(seed, buf...)
	}
	return seed, nil
}

func deriveUUID(alg string, salt []byte, dataBlocks uint64) [16]byte {
	h := sha256.New()
	h.Write([]byte("osbuild.dev/verity/uuid\x00"))
	h.Write([]byte(alg))
	h.Write([]byte{0})
	h.Write(salt)
	h.Write(binary.LittleEndian.AppendUint64(nil, dataBlocks))
	var u [16]byte
	copy(u[:], h.Sum(nil))
	u[6] = u[6]&0x0f | 0x80 // version 8: custom, name-based
	u[8] = u[8]&0x3f | 0x80 // RFC variant
	return u
}

// readFull is ReaderAt.ReadAt that accepts io.EOF together with a full buffer, as the interface allows.
func readFull(r io.ReaderAt, p []byte, off int64) error {
	n, err := r.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return err
}

// prepare validates the options and computes salt, UUID and layout.
func prepare(data io.ReaderAt, dataSize int64, opts Options) (*layout, *Result, error) {
	alg, err := newAlgorithm(opts.Hash)
	if err != nil {
		return nil, nil, err
	}
	dbs, hbs := blockSizes(opts)
	if dataSize <= 0 {
		return nil, nil, errors.New("verity: the data is empty: nothing to protect")
	}
	if err := checkBlockSize("data", dbs); err != nil {
		return nil, nil, err
	}
	l, err := newLayout(alg, dbs, hbs, uint64((dataSize+int64(dbs)-1)/int64(dbs)))
	if err != nil {
		return nil, nil, err
	}
	salt := opts.Salt
	switch {
	case salt != nil:
		if len(salt) > maxSaltSize {
			return nil, nil, fmt.Errorf("verity: salt is %d bytes, at most %d are allowed", len(salt), maxSaltSize)
		}
		salt = append([]byte{}, salt...)
	case opts.Seed != nil:
		salt = DeriveSalt(opts.Seed)
	default:
		seed, err := sampleSeed(data, dataSize)
		if err != nil {
			return nil, nil, err
		}
		salt = DeriveSalt(seed)
	}
	uuid := opts.UUID
	if uuid == ([16]byte{}) {
		uuid = deriveUUID(alg.name, salt, l.dataBlocks)
	}
	res := &Result{
		Algorithm:     alg.name,
		Salt:          salt,
		UUID:          uuid,
		DataBlocks:    l.dataBlocks,
		DataBlockSize: dbs,
		HashBlockSize: hbs,
		HashSize:      l.hashSize(),
	}
	return l, res, nil
}

func (r *Result) superblock() *Superblock {
	return &Superblock{Version: 1, HashType: 1, UUID: r.UUID, Algorithm: r.Algorithm,
		DataBlockSize: r.DataBlockSize, HashBlockSize: r.HashBlockSize, DataBlocks: r.DataBlocks, Salt: r.Salt}
}

func (r *Result) superblockBlock() ([]byte, error) {
	sb, err := r.superblock().MarshalBinary()
	if err != nil {
		return nil, err
	}
	b := make([]byte, r.HashBlockSize)
	copy(b, sb)
	return b, nil
}

// Format hashes dataSize bytes of data and writes the hash device (superblock and tree) to hash
// sequentially. Because the top of the tree comes first on disk, the tree (1/128 of the data for sha256)
// is held in memory until the end; use FormatAt to write into a file or partition with constant memory.
// A dataSize that is not a multiple of the block size is hashed as if zero-padded: the device the kernel
// reads must then hold zeros after the data up to the block boundary.
func Format(data io.ReaderAt, dataSize int64, hash io.Writer, opts Options) (*Result, error) {
	l, res, err := prepare(data, dataSize, opts)
	if err != nil {
		return nil, err
	}
	tree := make([]byte, l.hashSize()-l.hbs)
	sink := func(level int, index uint64, block []byte) error {
		copy(tree[int64(l.start[level]-1+index)*l.hbs:], block)
		return nil
	}
	if err := build(data, dataSize, l, res, opts.Workers, sink); err != nil {
		return nil, err
	}
	sb, err := res.superblockBlock()
	if err != nil {
		return nil, err
	}
	if _, err := hash.Write(sb); err != nil {
		return nil, fmt.Errorf("verity: writing the superblock: %w", err)
	}
	if _, err := hash.Write(tree); err != nil {
		return nil, fmt.Errorf("verity: writing the hash tree: %w", err)
	}
	return res, nil
}

// FormatAt is Format for a destination that accepts positioned writes (a file, a partition through
// io.NewOffsetWriter): every hash block goes to its place as soon as it is complete, so memory stays a few
// MiB whatever the data size. It writes bytes [0, Result.HashSize) of hash, all of them.
func FormatAt(data io.ReaderAt, dataSize int64, hash io.WriterAt, opts Options) (*Result, error) {
	l, res, err := prepare(data, dataSize, opts)
	if err != nil {
		return nil, err
	}
	sb, err := res.superblockBlock()
	if err != nil {
		return nil, err
	}
	if _, err := hash.WriteAt(sb, 0); err != nil {
		return nil, fmt.Errorf("verity: writing the superblock: %w", err)
	}
	sink := func(level int, index uint64, block []byte) error {
		if _, err := hash.WriteAt(block, int64(l.start[level]+index)*l.hbs); err != nil {
			return fmt.Errorf("verity: writing hash block %d of level %d: %w", index, level, err)
		}
		return nil
	}
	if err := build(data, dataSize, l, res, opts.Workers, sink); err != nil {
		return nil, err
	}
	return res, nil
}

// build hashes the data and feeds the digests into the tree, setting res.RootHash.
func build(data io.ReaderAt, dataSize int64, l *layout, res *Result, workers int, sink func(int, uint64, []byte) error) error {
	t := newTree(l, res.Salt, sink)
	err := hashData(data, dataSize, l, res.Salt, workers, func(first uint64, digests []byte) error {
		if len(l.start) == 0 {
			// A single data block: its digest is the root, and there is no tree below the superblock.
			t.root = append([]byte{}, digests[:l.alg.size]...)
			return nil
		}
		return t.add(0, digests)
	})
	if err != nil {
		return err
	}
	if err := t.finish(); err != nil {
		return err
	}
	res.RootHash = t.root
	return nil
}

// tree assembles hash blocks level by level as digests arrive in order. Only one block per level is
// held, so it needs O(levels × block) memory.
type tree struct {
	l      *layout
	salt   []byte
	h      hash.Hash
	buf    [][]byte
	fill   []int
	count  []uint64
	sink   func(level int, index uint64, block []byte) error
	digest []byte
	root   []byte
}

func newTree(l *layout, salt []byte, sink func(int, uint64, []byte) error) *tree {
	t := &tree{l: l, salt: salt, h: l.alg.new(), sink: sink, digest: make([]byte, l.alg.paddedLen)}
	for range l.start {
		t.buf = append(t.buf, make([]byte, l.hbs))
	}
	t.fill = make([]int, len(l.start))
	t.count = make([]uint64, len(l.start))
	return t
}

// add appends padded digest entries to a level, completing blocks as they fill up.
func (t *tree) add(level int, entries []byte) error {
	for len(entries) > 0 {
		n := copy(t.buf[level][t.fill[level]:], entries)
		t.fill[level] += n
		entries = entries[n:]
		if t.fill[level] == len(t.buf[level]) {
			if err := t.flush(level); err != nil {
				return err
			}
		}
	}
	return nil
}

func (t *tree) flush(level int) error {
	b := t.buf[level]
	clear(b[t.fill[level]:])
	if err := t.sink(level, t.count[level], b); err != nil {
		return err
	}
	t.count[level]++
	t.h.Reset()
	t.h.Write(t.salt)
	t.h.Write(b)
	d := t.h.Sum(t.digest[:0])
	t.fill[level] = 0
	if level == len(t.buf)-1 {
		t.root = append([]byte{}, d...)
		return nil
	}
	return t.add(level+1, t.digest)
}

func (t *tree) finish() error {
	for level := range t.buf {
		if t.fill[level] > 0 {
			if err := t.flush(level); err != nil {
				return err
			}
		}
		if t.count[level] != t.l.blocks[level] {
			return fmt.Errorf("verity: internal error: level %d has %d blocks, want %d", level, t.count[level], t.l.blocks[level])
		}
	}
	if t.root == nil {
		return errors.New("verity: internal error: no root hash")
	}
	return nil
}

// chunkBytes is how much data one worker hashes per task: large enough to
// amortise the hand-off, small enough that workers × window chunks stay a few MiB.
const chunkBytes = 2 << 20

// hashData hashes every data block in parallel and calls consume in block order with each chunk's padded
// digests (first is the chunk's first block number). A consume error stops the pass and is returned.
func hashData(data io.ReaderAt, dataSize int64, l *layout, salt []byte, workers int, consume func(first uint64, digests []byte) error) error {
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	per := uint64(max(chunkBytes/l.dbs, 1))
	chunks := (l.dataBlocks + per - 1) / per
	window := 2*workers + 2
	stride := l.alg.paddedLen

	type result struct {
		digests []byte
		n       int
		err     error
	}
	slots := make([]chan result, window)
	digestBufs := make([][]byte, window)
	for i := range slots {
		slots[i] = make(chan result, 1)
		digestBufs[i] = make([]byte, int(per)*stride)
	}
	free := make(chan struct{}, window)
	for range window {
		free <- struct{}{}
	}
	jobs := make(chan uint64)
	done := make(chan struct{})
	var wg sync.WaitGroup
	// Deferred in this order so that an early return first stops the dispatcher, then waits for workers.
	defer wg.Wait()
	defer close(done)

	go func() {
		defer close(jobs)
		for c := uint64(0); c < chunks; c++ {
			select {
			case <-free:
			case <-done:
				return
			}
			select {
			case jobs <- c:
			case <-done:
				return
			}
		}
	}()

	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, per*uint64(l.dbs))
			h := l.alg.new()
			for c := range jobs {
				first := c * per
				n := min(per, l.dataBlocks-first)
				off := int64(first) * l.dbs
				want := min(int64(n)*l.dbs, dataSize-off)
				b := buf[:int64(n)*l.dbs]
				err := readFull(data, b[:want], off)
				if err != nil {
					err = fmt.Errorf("verity: reading data block %d: %w", first, err)
				}
				clear(b[want:])
				out := digestBufs[c%uint64(window)]
				if err == nil {
					clear(out)
					for i := uint64(0); i < n; i++ {
						h.Reset()
						h.Write(salt)
						h.Write(b[int64(i)*l.dbs : int64(i+1)*l.dbs])
						h.Sum(out[int(i)*stride : int(i)*stride])
					}
				}
				slots[c%uint64(window)] <- result{digests: out[:int(n)*stride], n: int(n), err: err}
			}
		}()
	}

	for c := uint64(0); c < chunks; c++ {
		r := <-slots[c%uint64(window)]
		if r.err != nil {
			return r.err
		}
		if err := consume(c*per, r.digests); err != nil {
			return err
		}
		free <- struct{}{}
	}
	return nil
}
