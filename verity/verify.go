package verity

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
)

// ErrRootHashMismatch means the hash tree is intact but was not made with the given root hash: a wrong
// root hash, or a hash device formatted for other data.
var ErrRootHashMismatch = errors.New("verity: root hash does not match the hash device (wrong root hash, or a hash device formatted for other data)")

// CorruptionError names the first block that fails verification.
type CorruptionError struct {
	// HashBlock is true when a block of the hash tree is bad, false for a data block.
	HashBlock bool
	// Level of the bad hash block (0 holds the digests of data blocks); unused for data blocks.
	Level int
	// Block is the data block number, or the hash block number counted from the start of the hash device
	// (block 0 is the superblock), the way the kernel reports them.
	Block uint64
}

func (e *CorruptionError) Error() string {
	if e.HashBlock {
		return fmt.Sprintf("verity: hash block %d (tree level %d) is corrupted", e.Block, e.Level)
	}
	return fmt.Sprintf("verity: data block %d is corrupted", e.Block)
}

// Verify checks data against the hash device (read from its superblock) and the trusted root hash. It
// first checks the tree against the root hash, so that a bad data block is told apart from a bad hash
// block, then hashes the data in parallel. It returns nil, ErrRootHashMismatch, a *CorruptionError naming
// the first bad block, or an I/O error. The data must hold DataBlocks blocks; a final partial block is
// read as zero-padded, matching Format.
func Verify(data, hashDev io.ReaderAt, rootHash []byte) error {
	return VerifyWorkers(data, hashDev, rootHash, 0)
}

// VerifyWorkers is Verify with a number of hashing goroutines (0 means GOMAXPROCS).
func VerifyWorkers(data, hashDev io.ReaderAt, rootHash []byte, workers int) error {
	sb, err := ReadSuperblock(hashDev)
	if err != nil {
		return err
	}
	alg, err := newAlgorithm(sb.Algorithm)
	if err != nil {
		return err
	}
	if len(rootHash) != alg.size {
		return fmt.Errorf("verity: root hash is %d bytes, %s needs %d", len(rootHash), alg.name, alg.size)
	}
	l, err := newLayout(alg, sb.DataBlockSize, sb.HashBlockSize, sb.DataBlocks)
	if err != nil {
		return err
	}
	if err := verifyTree(hashDev, l, sb.Salt, rootHash); err != nil {
		return err
	}
	dataSize := int64(sb.DataBlocks) * l.dbs
	if s, ok := sizeOf(data); ok && s < dataSize {
		if s <= dataSize-l.dbs {
			return fmt.Errorf("verity: data is %d bytes, the hash device covers %d blocks (%d bytes): wrong data device?", s, sb.DataBlocks, dataSize)
		}
		dataSize = s
	}
	if len(l.start) == 0 {
		// One data block, whose digest is the root.
		return hashData(data, dataSize, l, sb.Salt, workers, func(_ uint64, d []byte) error {
			if !bytes.Equal(d[:alg.size], rootHash) {
				return &CorruptionError{Block: 0}
			}
			return nil
		})
	}
	stored := make([]byte, 0, chunkBytes)
	base := int64(l.start[0]) * l.hbs
	stride := int64(alg.paddedLen)
	return hashData(data, dataSize, l, sb.Salt, workers, func(first uint64, d []byte) error {
		stored = stored[:len(d)]
		if err := readFull(hashDev, stored, base+int64(first)*stride); err != nil {
			return fmt.Errorf("verity: reading the hash device: %w", err)
		}
		if bytes.Equal(stored, d) {
			return nil
		}
		for i := int64(0); i < int64(len(d))/stride; i++ {
			if !bytes.Equal(stored[i*stride:(i+1)*stride], d[i*stride:(i+1)*stride]) {
				return &CorruptionError{Block: first + uint64(i)}
			}
		}
		return nil
	})
}

// verifyTree checks every hash block against its parent's entry, top down, and the top block against the
// root hash. It also insists on zero padding, as veritysetup does, so that the tree is canonical.
func verifyTree(hashDev io.ReaderAt, l *layout, salt, rootHash []byte) error {
	levels := len(l.start)
	if levels == 0 {
		return nil
	}
	h := l.alg.new()
	block := make([]byte, l.hbs)
	parent := make([]byte, l.hbs)
	parentIndex := ^uint64(0)
	digest := make([]byte, 0, l.alg.paddedLen)
	stride := l.alg.paddedLen
	for level := levels - 1; level >= 0; level-- {
		// Entries used in the last block of this level: those of the level below, or the data blocks.
		var entries uint64
		if level == 0 {
			entries = l.dataBlocks
		} else {
			entries = l.blocks[level-1]
		}
		for j := uint64(0); j < l.blocks[level]; j++ {
			blockNo := l.start[level] + j
			if err := readFull(hashDev, block, int64(blockNo)*l.hbs); err != nil {
				return fmt.Errorf("verity: reading hash block %d: %w (is the hash device truncated?)", blockNo, err)
			}
			h.Reset()
			h.Write(salt)
			h.Write(block)
			digest = h.Sum(digest[:0])
			var want []byte
			if level == levels-1 {
				want = rootHash
			} else {
				pj := j / uint64(l.perBlock)
				if pj != parentIndex {
					if err := readFull(hashDev, parent, int64(l.start[level+1]+pj)*l.hbs); err != nil {
						return fmt.Errorf("verity: reading hash block %d: %w", l.start[level+1]+pj, err)
					}
					parentIndex = pj
				}
				off := int(j%uint64(l.perBlock)) * stride
				want = parent[off : off+l.alg.size]
			}
			if !bytes.Equal(digest[:l.alg.size], want) {
				if level == levels-1 {
					return fmt.Errorf("%w (hash block %d, the top of the tree, hashes to %x)", ErrRootHashMismatch, blockNo, digest[:l.alg.size])
				}
				return &CorruptionError{HashBlock: true, Level: level, Block: blockNo}
			}
			// Entries beyond the last used one, and the padding of each digest, must be zero.
			used := uint64(l.perBlock)
			if j == l.blocks[level]-1 {
				used = entries - j*uint64(l.perBlock)
			}
			for e := uint64(0); e < uint64(l.perBlock); e++ {
				from := int(e) * stride
				if e < used {
					from += l.alg.size
				}
				if !isZero(block[from : int(e+1)*stride]) {
					return &CorruptionError{HashBlock: true, Level: level, Block: blockNo}
				}
			}
		}
		parentIndex = ^uint64(0)
	}
	return nil
}

func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// sizeOf returns the size of a ReaderAt when it can tell (a regular file, a section reader, a bytes.Reader).
func sizeOf(r io.ReaderAt) (int64, bool) {
	switch v := r.(type) {
	case interface{ Size() int64 }:
		return v.Size(), true
	case interface{ Stat() (fs.FileInfo, error) }:
		// Only regular files: a block device stats as size 0.
		st, err := v.Stat()
		if err == nil && st.Mode().IsRegular() {
			return st.Size(), true
		}
	}
	return 0, false
}

// CheckTree checks only the hash device against the root hash (every hash block against its parent, the
// top against the root), without reading the data: cheap (1/128 of the data for sha256), for tools that
// want to know whether a boot entry's root hash belongs to a slot's tree.
func CheckTree(hashDev io.ReaderAt, rootHash []byte) (*Superblock, error) {
	sb, err := ReadSuperblock(hashDev)
	if err != nil {
		return nil, err
	}
	alg, err := newAlgorithm(sb.Algorithm)
	if err != nil {
		return nil, err
	}
	if len(rootHash) != alg.size {
		return nil, fmt.Errorf("verity: root hash is %d bytes, %s needs %d", len(rootHash), alg.name, alg.size)
	}
	l, err := newLayout(alg, sb.DataBlockSize, sb.HashBlockSize, sb.DataBlocks)
	if err != nil {
		return nil, err
	}
	if len(l.start) == 0 {
		// One data block: the root is that block's digest, so only the data can tell.
		return sb, nil
	}
	return sb, verifyTree(hashDev, l, sb.Salt, rootHash)
}
