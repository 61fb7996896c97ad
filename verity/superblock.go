// Package verity builds and checks dm-verity hash trees in the on-disk format of veritysetup (cryptsetup),
// format version 1: a 512-byte superblock at the start of the hash device, padded to one hash block, then
// the hash tree with its levels stored from the top down. The kernel reads the tree with
// hash_start_block 1, so a tree made here activates exactly like one made by `veritysetup format`, and
// `veritysetup verify` accepts it.
//
// Hashes in format 1 are H(salt || block); each digest is zero-padded to a power of two and each hash block
// is zero-padded at its end. The root hash is the hash of the single top-level block (or of the only data
// block, when there is one).
package verity

import (
	"bytes"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"strings"
)

const (
	// BlockSize is the data and hash block size osbuild uses: the page size, which is what the kernel
	// handles fastest and what the kernel command line in DESIGN.md hard-codes.
	BlockSize = 4096

	// SuperblockSize is the size of the veritysetup superblock; it is padded to a whole hash block on disk.
	SuperblockSize = 512

	maxSaltSize = 256
	signature   = "verity\x00\x00"
)

// Superblock is the veritysetup superblock. Integers are little-endian on disk.
type Superblock struct {
	Version       uint32 // always 1
	HashType      uint32 // 1: salt first, digests padded to a power of two (0 is Chrome OS, unsupported)
	UUID          [16]byte
	Algorithm     string // "sha256" or "sha512"
	DataBlockSize uint32
	HashBlockSize uint32
	DataBlocks    uint64
	Salt          []byte
}

// MarshalBinary encodes the 512-byte on-disk superblock.
func (s *Superblock) MarshalBinary() ([]byte, error) {
	if len(s.Salt) > maxSaltSize {
		return nil, fmt.Errorf("verity: salt is %d bytes, at most %d fit the superblock", len(s.Salt), maxSaltSize)
	}
	if len(s.Algorithm) >= 32 {
		return nil, fmt.Errorf("verity: algorithm name %q is too long for the superblock", s.Algorithm)
	}
	b := make([]byte, SuperblockSize)
	copy(b[0:8], signature)
	le := binary.LittleEndian
	le.PutUint32(b[8:], s.Version)
	le.PutUint32(b[12:], s.HashType)
	copy(b[16:32], s.UUID[:])
	copy(b[32:64], s.Algorithm)
	le.PutUint32(b[64:], s.DataBlockSize)
	le.PutUint32(b[68:], s.HashBlockSize)
	le.PutUint64(b[72:], s.DataBlocks)
	le.PutUint16(b[80:], uint16(len(s.Salt)))
	copy(b[88:88+maxSaltSize], s.Salt)
	return b, nil
}

// ParseSuperblock decodes and checks a superblock.
func ParseSuperblock(b []byte) (*Superblock, error) {
	if len(b) < SuperblockSize {
		return nil, fmt.Errorf("verity: superblock is %d bytes, want %d", len(b), SuperblockSize)
	}
	if string(b[0:8]) != signature {
		return nil, errors.New("verity: no verity superblock (signature \"verity\" missing): is this the hash device, formatted with a superblock?")
	}
	le := binary.LittleEndian
	s := &Superblock{
		Version:       le.Uint32(b[8:]),
		HashType:      le.Uint32(b[12:]),
		Algorithm:     string(bytes.TrimRight(b[32:64], "\x00")),
		DataBlockSize: le.Uint32(b[64:]),
		HashBlockSize: le.Uint32(b[68:]),
		DataBlocks:    le.Uint64(b[72:]),
	}
	copy(s.UUID[:], b[16:32])
	saltSize := int(le.Uint16(b[80:]))
	if saltSize > maxSaltSize {
		return nil, fmt.Errorf("verity: superblock salt size %d exceeds %d", saltSize, maxSaltSize)
	}
	s.Salt = append([]byte{}, b[88:88+saltSize]...)
	if s.Version != 1 {
		return nil, fmt.Errorf("verity: superblock version %d is not supported (want 1)", s.Version)
	}
	if s.HashType != 1 {
		return nil, fmt.Errorf("verity: hash type %d is not supported (want 1; 0 is the Chrome OS format)", s.HashType)
	}
	if _, err := newAlgorithm(s.Algorithm); err != nil {
		return nil, err
	}
	if err := checkBlockSize("data", s.DataBlockSize); err != nil {
		return nil, err
	}
	if err := checkBlockSize("hash", s.HashBlockSize); err != nil {
		return nil, err
	}
	if s.DataBlocks == 0 {
		return nil, errors.New("verity: superblock says zero data blocks")
	}
	return s, nil
}

// ReadSuperblock reads the superblock at the start of a hash device.
func ReadSuperblock(hashDev io.ReaderAt) (*Superblock, error) {
	b := make([]byte, SuperblockSize)
	if _, err := hashDev.ReadAt(b, 0); err != nil {
		return nil, fmt.Errorf("verity: reading the superblock: %w", err)
	}
	return ParseSuperblock(b)
}

// UUIDString formats the UUID the way veritysetup prints and parses it.
func (s *Superblock) UUIDString() string { return FormatUUID(s.UUID) }

// FormatUUID formats 16 bytes as a canonical lower-case UUID string.
func FormatUUID(u [16]byte) string {
	h := hex.EncodeToString(u[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// ParseUUID parses a canonical UUID string (with or without dashes).
func ParseUUID(s string) ([16]byte, error) {
	var u [16]byte
	b, err := hex.DecodeString(strings.ReplaceAll(s, "-", ""))
	if err != nil || len(b) != 16 {
		return u, fmt.Errorf("verity: %q is not a UUID (want 32 hex digits, e.g. 12345678-1234-1234-1234-123456789abc)", s)
	}
	copy(u[:], b)
	return u, nil
}

type algorithm struct {
	name      string
	new       func() hash.Hash
	size      int // digest size
	paddedLen int // digest size rounded up to a power of two: the stride of entries in a hash block
}

func newAlgorithm(name string) (algorithm, error) {
	switch name {
	case "", "sha256":
		return algorithm{"sha256", sha256.New, sha256.Size, 32}, nil
	case "sha512":
		return algorithm{"sha512", sha512.New, sha512.Size, 64}, nil
	}
	return algorithm{}, fmt.Errorf("verity: hash algorithm %q is not supported: use sha256 or sha512", name)
}

func checkBlockSize(what string, n uint32) error {
	if n < 512 || n > 1<<20 || n&(n-1) != 0 {
		return fmt.Errorf("verity: %s block size %d is not a power of two between 512 and 1 MiB", what, n)
	}
	return nil
}
