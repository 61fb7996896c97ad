package deflate

import (
	"bytes"
	"compress/flate"
	"compress/zlib"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"

	"osbuild.dev/osbuild/internal/tooltest"
)

// inputs are the shapes that exercise every block type and code path.
func inputs(t testing.TB) map[string][]byte {
	rnd := rand.New(rand.NewPCG(1, 2))
	random := make([]byte, 64<<10)
	for i := range random {
		random[i] = byte(rnd.Uint32())
	}
	text := bytes.Repeat([]byte("the quick brown fox jumps over the lazy dog; "), 2000)
	skewed := make([]byte, 100<<10)
	for i := range skewed {
		skewed[i] = byte(rnd.ExpFloat64() * 4)
	}
	far := make([]byte, 0, 200<<10)
	chunk := random[:1000]
	for len(far) < cap(far)-40000 {
		far = append(far, chunk...)
		far = append(far, random[5000:5000+rnd.IntN(35000)]...)
	}
	bin, err := os.ReadFile("/usr/bin/ls")
	if err != nil {
		t.Fatal(err)
	}
	return map[string][]byte{
		"empty":       {},
		"one byte":    {'x'},
		"two bytes":   {'x', 'y'},
		"three":       []byte("abc"),
		"run":         bytes.Repeat([]byte{'a'}, 1000),
		"zeros 64K":   make([]byte, 64<<10),
		"zeros 200K":  make([]byte, 200<<10),
		"random":      random,
		"random+tail": append(append([]byte{}, random...), make([]byte, 3000)...),
		"text":        text,
		"skewed":      skewed,
		"far matches": far,
		"binary":      bin,
	}
}

func inflate(t testing.TB, z []byte) []byte {
	t.Helper()
	out, err := io.ReadAll(flate.NewReader(bytes.NewReader(z)))
	if err != nil {
		t.Fatalf("inflate: %v", err)
	}
	return out
}

func TestRoundTrip(t *testing.T) {
	for name, in := range inputs(t) {
		for _, level := range []int{1, 6, 9} {
			e := NewEncoder(level)
			z := e.Encode(nil, in)
			if got := inflate(t, z); !bytes.Equal(got, in) {
				t.Fatalf("%s level %d: round trip differs (%d bytes in, %d out)", name, level, len(in), len(got))
			}
			// Reuse and appending to existing bytes give the same stream.
			z2 := e.Encode([]byte("prefix"), in)
			if !bytes.Equal(z2[6:], z) {
				t.Fatalf("%s level %d: second encode differs", name, level)
			}
			zl := e.EncodeZlib(nil, in)
			r, err := zlib.NewReader(bytes.NewReader(zl))
			if err != nil {
				t.Fatalf("%s: zlib header: %v", name, err)
			}
			if got, err := io.ReadAll(r); err != nil || !bytes.Equal(got, in) {
				t.Fatalf("%s: zlib round trip: %v", name, err)
			}
		}
	}
}

// TestSmallerThanZlib compares with C zlib at its default level (what qemu-img uses for VMDK grains and
// qcow2 clusters), through Python's zlib module, on real files cut in 64 KiB grains.
func TestSmallerThanZlib(t *testing.T) {
	tooltest.Need(t, "python3", "python3") // its zlib module is C zlib
	var files []string
	filepath.WalkDir("/usr/bin", func(p string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			files = append(files, p)
		}
		return nil
	})
	sort.Strings(files)
	var data []byte
	for _, f := range files {
		b, _ := os.ReadFile(f)
		data = append(data, b...)
		if len(data) >= 8<<20 {
			break
		}
	}
	data = data[:len(data)/65536*65536]
	in := filepath.Join(t.TempDir(), "grains")
	if err := os.WriteFile(in, data, 0o644); err != nil {
		t.Fatal(err)
	}
	// zlib.compress adds a 2-byte header and a 4-byte checksum per grain: count its deflate bytes only.
	out, err := exec.Command("python3", "-c", `import sys, zlib
d = open(sys.argv[1], "rb").read()
print(sum(len(zlib.compress(d[i:i+65536], 6)) - 6 for i in range(0, len(d), 65536)))`, in).Output()
	if err != nil {
		t.Fatalf("python3 zlib: %v", err)
	}
	zlibSize, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil {
		t.Fatal(err)
	}
	e := NewEncoder(6)
	ours := 0
	var z []byte
	for i := 0; i < len(data); i += 65536 {
		g := data[i : i+65536]
		z = e.Encode(z[:0], g)
		ours += len(z)
		if !bytes.Equal(inflate(t, z), g) {
			t.Fatalf("grain at %d does not round trip", i)
		}
	}
	t.Logf("%d grains: ours %d bytes, C zlib level 6 %d (%.3f)", len(data)/65536, ours, zlibSize, float64(ours)/float64(zlibSize))
	if ours >= zlibSize {
		t.Fatalf("ours %d bytes >= zlib's %d", ours, zlibSize)
	}
}

func FuzzEncode(f *testing.F) {
	for _, in := range inputs(f) {
		if len(in) < 4096 {
			f.Add(in, 6)
		}
	}
	f.Add([]byte("abcabcabcabcxyzxyzabc"), 1)
	f.Fuzz(func(t *testing.T, in []byte, level int) {
		z := NewEncoder(level%10).Encode(nil, in)
		if got := inflate(t, z); !bytes.Equal(got, in) {
			t.Fatalf("round trip differs")
		}
	})
}

func BenchmarkEncode(b *testing.B) {
	bin, err := os.ReadFile("/usr/bin/bash")
	if err != nil {
		b.Fatal(err)
	}
	bin = bin[:len(bin)/65536*65536]
	e := NewEncoder(6)
	b.SetBytes(int64(len(bin)))
	var dst []byte
	for b.Loop() {
		for i := 0; i < len(bin); i += 65536 {
			dst = e.Encode(dst[:0], bin[i:i+65536])
		}
	}
}
