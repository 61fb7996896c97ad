package verity

import (
	"bytes"
	"encoding/hex"
	"errors"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

const (
	testSalt = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	testUUID = "11111111-2222-3333-4444-555555555555"
)

// testData is reproducible pseudo-random data, so failures can be replayed.
func testData(size int64, seed uint64) []byte {
	b := make([]byte, size)
	r := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)})
	r.Read(b)
	return b
}

func needTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s is needed for this test (apt-get install cryptsetup-bin), or run with -short: %v", name, err)
	}
	return p
}

func run(t *testing.T, name string, args ...string) (string, error) {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	return string(out), err
}

func writeFile(t *testing.T, dir, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// formatFile runs FormatAt into a fresh file, the way the CLI and the partition writer use it.
func formatFile(t *testing.T, data []byte, path string, opts Options) *Result {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	res, err := FormatAt(bytes.NewReader(data), int64(len(data)), f, opts)
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := f.Stat(); st.Size() != res.HashSize {
		t.Fatalf("hash file is %d bytes, Result.HashSize says %d", st.Size(), res.HashSize)
	}
	return res
}

// TestMatchesVeritysetup: with the same salt and UUID our hash device is byte-identical to veritysetup's,
// veritysetup verify accepts it, and one flipped data byte fails both verifiers at the same block.
func TestMatchesVeritysetup(t *testing.T) {
	if testing.Short() {
		t.Skip("compares with veritysetup; run without -short")
	}
	vs := needTool(t, "veritysetup")
	tests := []struct {
		name   string
		blocks int64
		hash   string
		flip   int64 // data block to corrupt
	}{
		{"one block", 1, "sha256", 0},
		{"two blocks", 2, "sha256", 1},
		{"one full hash block", 128, "sha256", 127},
		{"odd, two levels", 129, "sha256", 128},
		{"odd 1001", 1001, "sha256", 500},
		{"three levels", 16385, "sha256", 16384},
		{"130 MB", 130 << 20 / BlockSize, "sha256", 20000},
		{"sha512 one block", 1, "sha512", 0},
		{"sha512 odd", 65, "sha512", 64},
		{"sha512 three levels", 4097, "sha512", 7},
	}
	salt, _ := hex.DecodeString(testSalt)
	uuid, _ := ParseUUID(testUUID)
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			data := testData(tc.blocks*BlockSize, uint64(i))
			dataPath := writeFile(t, dir, "data", data)
			ours := filepath.Join(dir, "ours")
			theirs := filepath.Join(dir, "theirs")

			res := formatFile(t, data, ours, Options{Hash: tc.hash, Salt: salt, UUID: uuid})
			out, err := run(t, vs, "format", "--hash="+tc.hash, "--data-block-size=4096", "--hash-block-size=4096",
				"--salt="+testSalt, "--uuid="+testUUID, dataPath, theirs)
			if err != nil {
				t.Fatalf("veritysetup format: %v\n%s", err, out)
			}
			if !strings.Contains(out, res.RootHashHex()) {
				t.Errorf("root hash %s not in veritysetup's output:\n%s", res.RootHashHex(), out)
			}
			a, _ := os.ReadFile(ours)
			b, _ := os.ReadFile(theirs)
			if !bytes.Equal(a, b) {
				t.Fatalf("hash devices differ: ours %d bytes, veritysetup %d bytes", len(a), len(b))
			}
			if out, err := run(t, vs, "verify", dataPath, ours, res.RootHashHex()); err != nil {
				t.Fatalf("veritysetup verify rejects our tree: %v\n%s", err, out)
			}
			if err := verifyFiles(t, dataPath, ours, res.RootHash); err != nil {
				t.Fatalf("Verify: %v", err)
			}

			data[tc.flip*BlockSize+123] ^= 0x40
			writeFile(t, dir, "data", data)
			if out, err := run(t, vs, "verify", dataPath, ours, res.RootHashHex()); err == nil {
				t.Fatalf("veritysetup verify accepts corrupted data:\n%s", out)
			}
			err = verifyFiles(t, dataPath, ours, res.RootHash)
			var ce *CorruptionError
			if !errors.As(err, &ce) || ce.HashBlock || ce.Block != uint64(tc.flip) {
				t.Fatalf("Verify of corrupted data = %v, want data block %d is corrupted", err, tc.flip)
			}
		})
	}
}

func verifyFiles(t *testing.T, data, hash string, root []byte) error {
	t.Helper()
	d, err := os.Open(data)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	h, err := os.Open(hash)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	return Verify(d, h, root)
}

// TestDeterministic: without a salt or UUID, two runs (and Format vs FormatAt, 1 vs many workers) give
// the same bytes.
func TestDeterministic(t *testing.T) {
	data := testData(3000*BlockSize+17, 7)
	var outs [][]byte
	var roots []string
	for _, opts := range []Options{{}, {Workers: 1}, {Workers: 5}} {
		var buf bytes.Buffer
		res, err := Format(bytes.NewReader(data), int64(len(data)), &buf, opts)
		if err != nil {
			t.Fatal(err)
		}
		outs = append(outs, buf.Bytes())
		roots = append(roots, res.RootHashHex())
	}
	p := filepath.Join(t.TempDir(), "h")
	res := formatFile(t, data, p, Options{})
	at, _ := os.ReadFile(p)
	outs = append(outs, at)
	roots = append(roots, res.RootHashHex())
	for i := range outs {
		if !bytes.Equal(outs[i], outs[0]) || roots[i] != roots[0] {
			t.Fatalf("run %d differs from run 0", i)
		}
	}
	if res.UUID[6]>>4 != 8 {
		t.Errorf("derived UUID %s is not version 8", FormatUUID(res.UUID))
	}
	// A seed changes the salt, and so the root.
	seeded, err := Format(bytes.NewReader(data), int64(len(data)), &bytes.Buffer{}, Options{Seed: []byte("debian-minimal 1.2")})
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(seeded.Salt, res.Salt) || !bytes.Equal(seeded.Salt, DeriveSalt([]byte("debian-minimal 1.2"))) {
		t.Errorf("seeded salt %x is not DeriveSalt(seed)", seeded.Salt)
	}
}

// TestVerifyErrors: each kind of damage is reported as what it is.
func TestVerifyErrors(t *testing.T) {
	data := testData(20000*BlockSize, 3)
	var hb bytes.Buffer
	res, err := Format(bytes.NewReader(data), int64(len(data)), &hb, Options{})
	if err != nil {
		t.Fatal(err)
	}
	l, _ := newLayout(algorithm{name: "sha256", size: 32, paddedLen: 32}, BlockSize, BlockSize, res.DataBlocks)
	otherRoot := bytes.Clone(res.RootHash)
	otherRoot[0] ^= 1
	tests := []struct {
		name      string
		data      func([]byte)
		hash      func([]byte)
		root      []byte
		wantRoot  bool
		wantBlock int64 // -1: none
		wantHash  bool
		wantLevel int
	}{
		{name: "intact", wantBlock: -1},
		{name: "first data block", data: func(b []byte) { b[0] ^= 1 }, wantBlock: 0},
		{name: "last data byte", data: func(b []byte) { b[len(b)-1] ^= 1 }, wantBlock: 19999},
		{name: "two bad blocks: first named", data: func(b []byte) { b[9000*BlockSize] ^= 1; b[8999*BlockSize+5] ^= 1 }, wantBlock: 8999},
		{name: "wrong root", root: otherRoot, wantRoot: true, wantBlock: -1},
		{name: "level 0 hash block", hash: func(b []byte) { b[int64(l.start[0]+3)*BlockSize+64] ^= 1 }, wantBlock: int64(l.start[0] + 3), wantHash: true, wantLevel: 0},
		{name: "level 1 hash block", hash: func(b []byte) { b[int64(l.start[1])*BlockSize+1] ^= 1 }, wantBlock: int64(l.start[1]), wantHash: true, wantLevel: 1},
		{name: "padding of last level-0 block", hash: func(b []byte) { b[len(b)-1] ^= 1 }, wantBlock: int64(l.total - 1), wantHash: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d, h := bytes.Clone(data), bytes.Clone(hb.Bytes())
			if tc.data != nil {
				tc.data(d)
			}
			if tc.hash != nil {
				tc.hash(h)
			}
			root := res.RootHash
			if tc.root != nil {
				root = tc.root
			}
			err := Verify(bytes.NewReader(d), bytes.NewReader(h), root)
			var ce *CorruptionError
			switch {
			case tc.wantRoot:
				if !errors.Is(err, ErrRootHashMismatch) {
					t.Fatalf("got %v, want ErrRootHashMismatch", err)
				}
			case tc.wantBlock < 0:
				if err != nil {
					t.Fatalf("got %v, want nil", err)
				}
			case !errors.As(err, &ce):
				t.Fatalf("got %v, want a CorruptionError", err)
			case ce.HashBlock != tc.wantHash || ce.Block != uint64(tc.wantBlock) || ce.Level != tc.wantLevel:
				t.Fatalf("got %+v (%v), want hash=%v block %d level %d", ce, err, tc.wantHash, tc.wantBlock, tc.wantLevel)
			}
		})
	}
}

// TestUnalignedData: a size that is not a whole number of blocks is hashed as zero-padded, and a
// veritysetup verify over the padded data agrees.
func TestUnalignedData(t *testing.T) {
	data := testData(5*BlockSize+100, 9)
	dir := t.TempDir()
	res := formatFile(t, data, filepath.Join(dir, "h"), Options{})
	if res.DataBlocks != 6 {
		t.Fatalf("DataBlocks = %d, want 6", res.DataBlocks)
	}
	if err := verifyFiles(t, writeFile(t, dir, "d", data), filepath.Join(dir, "h"), res.RootHash); err != nil {
		t.Fatalf("Verify of the unpadded file: %v", err)
	}
	padded := append(bytes.Clone(data), make([]byte, 6*BlockSize-len(data))...)
	if err := verifyFiles(t, writeFile(t, dir, "p", padded), filepath.Join(dir, "h"), res.RootHash); err != nil {
		t.Fatalf("Verify of the padded file: %v", err)
	}
	if testing.Short() {
		return
	}
	vs := needTool(t, "veritysetup")
	if out, err := run(t, vs, "verify", filepath.Join(dir, "p"), filepath.Join(dir, "h"), res.RootHashHex()); err != nil {
		t.Fatalf("veritysetup verify of the padded data: %v\n%s", err, out)
	}
}

func TestOptionErrors(t *testing.T) {
	data := testData(BlockSize, 1)
	tests := []struct {
		name string
		size int64
		opts Options
		want string
	}{
		{"empty", 0, Options{}, "empty"},
		{"md5", BlockSize, Options{Hash: "md5"}, "sha256 or sha512"},
		{"long salt", BlockSize, Options{Salt: make([]byte, 257)}, "at most 256"},
		{"block size", BlockSize, Options{DataBlockSize: 1000}, "power of two"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Format(bytes.NewReader(data), tc.size, &bytes.Buffer{}, tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestHashSize(t *testing.T) {
	tests := []struct {
		size int64
		hash string
		want int64
	}{
		{BlockSize, "sha256", BlockSize},
		{128 * BlockSize, "sha256", 2 * BlockSize},
		{129 * BlockSize, "sha256", 4 * BlockSize},
		{16385 * BlockSize, "sha256", 544768},
		{16385 * BlockSize, "sha512", 1081344},
		{1 << 30, "sha256", (1 + 1 + 16 + 2048) * BlockSize},
	}
	for _, tc := range tests {
		got, err := HashSize(tc.size, Options{Hash: tc.hash})
		if err != nil || got != tc.want {
			t.Errorf("HashSize(%d, %s) = %d, %v; want %d", tc.size, tc.hash, got, err, tc.want)
		}
	}
}

func TestSuperblockRoundTrip(t *testing.T) {
	sb := &Superblock{Version: 1, HashType: 1, UUID: [16]byte{1, 2, 3}, Algorithm: "sha512",
		DataBlockSize: 4096, HashBlockSize: 4096, DataBlocks: 1 << 40, Salt: []byte{9, 8, 7}}
	b, err := sb.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseSuperblock(b)
	if err != nil {
		t.Fatal(err)
	}
	if got.UUID != sb.UUID || got.Algorithm != sb.Algorithm || got.DataBlocks != sb.DataBlocks || !bytes.Equal(got.Salt, sb.Salt) {
		t.Fatalf("round trip: got %+v, want %+v", got, sb)
	}
	b[0] = 'X'
	if _, err := ParseSuperblock(b); err == nil {
		t.Fatal("a bad signature parses")
	}
}

func TestTableParams(t *testing.T) {
	r := &Result{Algorithm: "sha256", RootHash: []byte{0xab}, DataBlocks: 10, DataBlockSize: 4096, HashBlockSize: 4096}
	if got, want := r.TableParams("PARTUUID=a", "PARTUUID=b"), "1 PARTUUID=a PARTUUID=b 4096 4096 10 1 sha256 ab -"; got != want {
		t.Errorf("TableParams = %q, want %q", got, want)
	}
	if r.Sectors() != 80 {
		t.Errorf("Sectors = %d, want 80", r.Sectors())
	}
}

// BenchmarkFormat measures hashing throughput from memory (go test -bench Format ./verity).
func BenchmarkFormat(b *testing.B) {
	data := testData(64<<20, 1)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := FormatAt(bytes.NewReader(data), int64(len(data)), discardAt{}, Options{}); err != nil {
			b.Fatal(err)
		}
	}
}

type discardAt struct{}

func (discardAt) WriteAt(p []byte, _ int64) (int, error) { return len(p), nil }
