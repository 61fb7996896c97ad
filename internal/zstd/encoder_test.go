package zstd

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"

	kzstd "github.com/klauspost/compress/zstd"

	"osbuild.dev/osbuild/internal/tooltest"
)

var (
	decOnce sync.Once
	dec     *kzstd.Decoder
)

func kDecode(frame []byte) ([]byte, error) {
	decOnce.Do(func() {
		var err error
		dec, err = kzstd.NewReader(nil, kzstd.WithDecoderConcurrency(1))
		if err != nil {
			panic(err)
		}
	})
	return dec.DecodeAll(frame, nil)
}

func zstdCLI(t testing.TB) string {
	t.Helper()
	tooltest.Need(t, "zstd", "zstd")
	p, _ := exec.LookPath("zstd") // a path: tests also read the binary as real input data
	return p
}

func cliDecode(t testing.TB, frame []byte) ([]byte, error) {
	cmd := exec.Command(zstdCLI(t), "-d", "-c", "-q")
	cmd.Stdin = bytes.NewReader(frame)
	var out, errb bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &errb
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("%v: %s", err, errb.String())
	}
	return out.Bytes(), nil
}

// checkFrame verifies the frame layout the kernel's squashfs decompressor needs and decodes it with
// both decoders.
func checkFrame(t *testing.T, name string, src, frame []byte, cli bool) {
	t.Helper()
	if len(frame) < 6 || frame[4]&(1<<5) == 0 || frame[4]&(1<<2) != 0 || frame[4]&3 != 0 {
		t.Fatalf("%s: bad frame header % x", name, frame[:min(len(frame), 6)])
	}
	got, err := kDecode(frame)
	if err != nil {
		t.Fatalf("%s: klauspost decoder: %v", name, err)
	}
	if !bytes.Equal(got, src) {
		t.Fatalf("%s: klauspost decoder: output differs (%d vs %d bytes)", name, len(got), len(src))
	}
	if cli {
		got, err := cliDecode(t, frame)
		if err != nil {
			t.Fatalf("%s: zstd -d: %v", name, err)
		}
		if !bytes.Equal(got, src) {
			t.Fatalf("%s: zstd -d: output differs (%d vs %d bytes)", name, len(got), len(src))
		}
	}
}

func testRand() *rand.Rand { return rand.New(rand.NewPCG(5, 6)) }

func randBytes(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

var words = strings.Fields(`the quick brown fox jumps over lazy dog squashfs block inode directory
	fragment table compression zstd kernel module package function return error value struct
	interface pointer slice channel goroutine encoder decoder frame literal sequence offset match`)

func textBytes(r *rand.Rand, n int) []byte {
	var b []byte
	for len(b) < n {
		b = append(b, words[r.IntN(len(words))]...)
		if r.IntN(12) == 0 {
			b = append(b, ".\n"...)
		} else {
			b = append(b, ' ')
		}
	}
	return b[:n]
}

// metadataBytes imitates squashfs inode tables: small records with slowly changing fields.
func metadataBytes(r *rand.Rand, n int) []byte {
	var b []byte
	ino := uint32(1000)
	for len(b) < n {
		ino++
		b = append(b, 2, 0, 0o755&0xff, 1, 0, 0, 0, 0)
		b = append(b, byte(ino), byte(ino>>8), byte(ino>>16), byte(ino>>24))
		sz := r.Uint32() % 100000
		b = append(b, byte(sz), byte(sz>>8), byte(sz>>16), 0, 0x60, 0x1a, 0x3f, 0x65)
	}
	return b[:n]
}

// offsetBytes has copies at distances of every power of two the window holds, so every offset
// code appears, with literal runs of random lengths (many beyond 1023) in between.
func offsetBytes(r *rand.Rand, n int) []byte {
	b := randBytes(r, n)
	pos := 1
	for k := 0; pos < n; k = (k + 1) % 18 {
		d := 1<<k + r.IntN(1<<k)
		l := 3 + r.IntN(40)
		if k%5 == 0 {
			l += r.IntN(3000)
		}
		if d <= pos && pos+l <= n {
			copy(b[pos:pos+l], b[pos-d:pos-d+l])
		}
		pos += l + r.IntN(2000)
	}
	return b
}

func readPrefix(t testing.TB, path string, n int) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("reading %s: %v", path, err)
	}
	return b[:min(n, len(b))]
}

type testCase struct {
	name string
	data []byte
}

func testCases(t testing.TB) []testCase {
	r := rand.New(rand.NewPCG(1, 2))
	bin := readPrefix(t, zstdCLI(t), 1<<20)
	pattern := randBytes(r, 1000)
	var longRun []byte
	for len(longRun) < 300<<10 {
		longRun = append(longRun, pattern...)
	}
	mixed := append(append(append([]byte{}, textBytes(r, 200<<10)...), bin...), randBytes(r, 100<<10)...)
	oneMiB := mixed[:1<<20]
	twoRuns := append(bytes.Repeat([]byte{'a'}, 70000), bytes.Repeat([]byte{'b'}, 70000)...)
	return []testCase{
		{"empty", nil},
		{"1byte", []byte{42}},
		{"3bytes", []byte("abc")},
		{"4same", []byte("aaaa")},
		{"zeros128k", make([]byte, 128<<10)},
		{"repeated100000", bytes.Repeat([]byte{0xab}, 100000)},
		{"twoRuns", twoRuns},
		{"random128k", randBytes(r, 128<<10)},
		{"random300", randBytes(r, 300)},
		{"text128k", textBytes(r, 128<<10)},
		{"text5000", textBytes(r, 5000)},
		{"text700", textBytes(r, 700)},
		{"binary128k", bin[:128<<10]},
		{"binaryTail", bin[len(bin)-100000:]},
		{"oneMiB", oneMiB},
		{"oneMiBplus1", mixed[:1<<20+1]},
		{"metadata8k", metadataBytes(r, 8<<10)},
		{"metadata3000", metadataBytes(r, 3000)},
		{"offsets", offsetBytes(r, 1<<20)},
		{"offsets128k", offsetBytes(r, 128<<10)},
		{"longRun", longRun},
		{"periodic", bytes.Repeat([]byte("abcdefgh12345"), 20000)},
		{"size256", textBytes(r, 256)},
		{"size65791", textBytes(r, 65791)},
		{"size65792", textBytes(r, 65792)},
	}
}

func TestRoundTrip(t *testing.T) {
	cases := testCases(t)
	levels := []int{1, 9, 15, 19}
	if testing.Short() {
		levels = []int{3, 15}
	}
	for _, level := range levels {
		e := NewEncoder(level)
		for _, tc := range cases {
			t.Run(fmt.Sprintf("%s/%d", tc.name, level), func(t *testing.T) {
				frame := e.Encode(nil, tc.data)
				checkFrame(t, tc.name, tc.data, frame, true)
				// Appending to existing content and reusing the encoder must give the same frame.
				prefix := []byte("prefix")
				again := e.Encode(prefix, tc.data)
				if !bytes.Equal(again[len(prefix):], frame) || string(again[:len(prefix)]) != "prefix" {
					t.Fatalf("second encoding differs")
				}
			})
		}
	}
}

// TestFreshEncoder checks that an encoder's history does not leak into later frames: output is a
// function of the input alone.
func TestFreshEncoder(t *testing.T) {
	cases := testCases(t)
	used := NewEncoder(15)
	for _, tc := range cases {
		used.Encode(nil, tc.data)
	}
	for _, tc := range cases {
		if testing.Short() && len(tc.data) > 256<<10 {
			continue // the large inputs are covered in full mode
		}
		a := used.Encode(nil, tc.data)
		b := NewEncoder(15).Encode(nil, tc.data)
		if !bytes.Equal(a, b) {
			t.Fatalf("%s: reused encoder gives a different frame", tc.name)
		}
	}
}

// TestSequenceCoverage checks that the special inputs really exercise what they are meant to:
// every offset code the window allows, repeat codes, matches longer than 65536 bytes and literal
// runs longer than 1023 bytes.
func TestSequenceCoverage(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	e := NewEncoder(15)
	var ofCodes [32]int
	maxML, maxLL, reps := uint32(0), uint32(0), 0
	e.seqHook = func(seqs []seq) {
		for _, s := range seqs {
			if s.ofv <= 3 {
				reps++
			} else {
				ofCodes[highBit(s.ofv)]++
			}
			maxML = max(maxML, s.ml)
			maxLL = max(maxLL, s.ll)
		}
	}
	src := offsetBytes(r, 1<<20)
	frame := e.Encode(nil, src)
	checkFrame(t, "offsets", src, frame, true)
	pattern := randBytes(r, 1000)
	long := append(randBytes(r, 5000), bytes.Repeat(pattern, 130)...)
	frame = e.Encode(nil, long)
	checkFrame(t, "long", long, frame, true)
	// Code 17 would need distances within 3 bytes of the window size.
	for c := 2; c < windowLog; c++ {
		if ofCodes[c] == 0 {
			t.Errorf("offset code %d never used (counts %v)", c, ofCodes)
		}
	}
	if reps == 0 || maxML <= 65536 || maxLL <= 1023 {
		t.Errorf("repeat codes %d, longest match %d, longest literal run %d", reps, maxML, maxLL)
	}
}

// TestCorpusFiles round-trips real binaries and libraries, cut into 128 KiB blocks like squashfs
// does, through both decoders.
func TestCorpusFiles(t *testing.T) {
	if testing.Short() {
		t.Log("short mode: only the built-in inputs are checked")
		return
	}
	var paths []string
	for _, dir := range []string{"/usr/bin", "/usr/lib/x86_64-linux-gnu"} {
		ents, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		for i, de := range ents {
			if i%97 == 0 && de.Type().IsRegular() {
				paths = append(paths, dir+"/"+de.Name())
			}
		}
	}
	e := NewEncoder(15)
	var all, frames []byte
	for _, p := range paths {
		data := readPrefix(t, p, 2<<20)
		for len(data) > 0 {
			blk := data[:min(len(data), 128<<10)]
			data = data[len(blk):]
			frame := e.Encode(nil, blk)
			checkFrame(t, p, blk, frame, false)
			frames = append(frames, frame...)
			all = append(all, blk...)
		}
	}
	// One run of the reference decoder over all frames concatenated.
	got, err := cliDecode(t, frames)
	if err != nil {
		t.Fatalf("zstd -d: %v", err)
	}
	if !bytes.Equal(got, all) {
		t.Fatalf("zstd -d output differs")
	}
	t.Logf("%d files, %d bytes -> %d", len(paths), len(all), len(frames))
}

// TestNoAllocs checks that a warmed-up encoder does not allocate per call.
func TestNoAllocs(t *testing.T) {
	bin := readPrefix(t, zstdCLI(t), 128<<10)
	meta := metadataBytes(testRand(), 8<<10)
	e := NewEncoder(15)
	out := e.Encode(nil, bin)
	out = e.Encode(out[:0], meta)
	n := testing.AllocsPerRun(5, func() {
		out = e.Encode(out[:0], bin)
		out = e.Encode(out[:0], meta)
	})
	if n != 0 {
		t.Fatalf("%v allocations per call", n)
	}
}
