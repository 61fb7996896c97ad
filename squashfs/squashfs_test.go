package squashfs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"osbuild.dev/osbuild/tree"
)

func TestOptions(t *testing.T) {
	for _, tc := range []struct {
		name string
		o    Options
		want error
	}{
		{"defaults", Options{}, nil},
		{"gzip", Options{Compression: "gzip", Level: 6}, nil},
		{"xz", Options{Compression: "xz"}, nil},
		{"lz4 hc", Options{Compression: "lz4", Level: 9}, nil},
		{"4k", Options{BlockSize: 4096}, nil},
		{"1m", Options{BlockSize: 1 << 20}, nil},
		{"unknown compression", Options{Compression: "lzo"}, ErrCompression},
		{"zstd level", Options{Level: 23}, ErrLevel},
		{"gzip level", Options{Compression: "gzip", Level: 10}, ErrLevel},
		{"xz level", Options{Compression: "xz", Level: 3}, ErrLevel},
		{"block too small", Options{BlockSize: 2048}, ErrBlockSize},
		{"block too big", Options{BlockSize: 2 << 20}, ErrBlockSize},
		{"block not power of two", Options{BlockSize: 100000}, ErrBlockSize},
		{"workers", Options{Workers: -1}, ErrWorkers},
		{"mod time", Options{ModTime: time.Unix(-5, 0)}, ErrModTime},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Write(context.Background(), discardAt{}, tree.New(), tc.o)
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			var oe *OptionError
			if tc.want != nil && !errors.As(err, &oe) {
				t.Fatalf("%T is not an *OptionError", err)
			}
		})
	}
}

type discardAt struct{}

func (discardAt) WriteAt(p []byte, _ int64) (int, error) { return len(p), nil }

// smallTree has every kind of entry and every layout case at a size that the compressor x
// block-size matrix can afford.
func smallTree() *tree.Tree {
	tr := tree.New()
	r := tr.Root
	r.ModTime = 1700000000
	etc := mkdirs(r, "etc")
	etc.SetChild("hostname", reg(0o644, []byte("osbuild\\n")))
	etc.SetChild("empty", reg(0o600, nil))
	etc.SetChild("one", reg(0o644, []byte{'x'}))
	etc.SetChild("shadow", &tree.Node{Type: tree.TypeRegular, Mode: 0o640, GID: 42, Size: 5, Content: tree.BytesContent("root:"), ModTime: 1})
	for i, size := range []int{4095, 4096, 4097, 8192, 131071, 131072, 131073, 1 << 20, 3<<20 + 17} {
		etc.SetChild(fmt.Sprintf("sized-%d", size), reg(0o644, textish(i, size)))
	}
	etc.SetChild("dup-of-131073", reg(0o644, textish(6, 131073)))
	etc.SetChild("dup-of-hostname", reg(0o644, []byte("osbuild\\n")))
	r.SetChild("holes", &tree.Node{Type: tree.TypeRegular, Mode: 0o644, Size: 12<<20 + 5, Content: zeroRuns{size: 12<<20 + 5, seed: 3}})
	bin := mkdirs(r, "usr/bin")
	bin.SetChild("su", &tree.Node{Type: tree.TypeRegular, Mode: 0o4755, Size: 300, Content: tree.BytesContent(textish(99, 300)),
		Xattrs: map[string]string{"security.capability": capV2(), "security.selinux": "system_u:object_r:su_exec_t:s0\x00"}})
	hl := reg(0o755, textish(7, 9000))
	hl.Xattrs = map[string]string{"user.origin": "layer 1", "trusted.overlay": "y"}
	bin.SetChild("busybox", hl)
	bin.SetChild("sh", hl)
	etc.SetChild("sh-link", hl)
	bin.SetChild("env-abs", &tree.Node{Type: tree.TypeSymlink, Mode: 0o777, Target: "/usr/bin/env"})
	bin.SetChild("dangling", &tree.Node{Type: tree.TypeSymlink, Mode: 0o777, Target: "../../nowhere/at/all",
		Xattrs: map[string]string{"security.selinux": "system_u:object_r:bin_t:s0"}})
	dev := mkdirs(r, "dev")
	dev.SetChild("null", &tree.Node{Type: tree.TypeChar, Mode: 0o666, DevMajor: 1, DevMinor: 3})
	dev.SetChild("sda", &tree.Node{Type: tree.TypeBlock, Mode: 0o660, GID: 6, DevMajor: 8, DevMinor: 0})
	dev.SetChild("big", &tree.Node{Type: tree.TypeBlock, Mode: 0o660, DevMajor: 259, DevMinor: 300000})
	dev.SetChild("initctl", &tree.Node{Type: tree.TypeFIFO, Mode: 0o600})
	tmp := tree.NewDir(0o1777, 0, 0, 1600000000)
	r.SetChild("tmp", tmp)
	shared := tree.NewDir(0o2775, 1000, 100, 1600000000)
	shared.Xattrs = map[string]string{"user.dir": "yes"}
	r.SetChild("shared", shared)
	shared.SetChild("naïve-ファイル", reg(0o644, []byte("unicode\\n")))
	shared.SetChild(strings.Repeat("n", 255), reg(0o644, []byte("long name\\n")))
	many := mkdirs(r, "usr/share/many")
	for i := range 700 {
		name := fmt.Sprintf("entry-%04d-%s", i, strings.Repeat("x", i%40))
		switch i % 7 {
		case 0:
			many.SetChild(name, tree.NewDir(0o755, uint32(i%3), 0, int64(i)))
		case 1:
			many.SetChild(name, &tree.Node{Type: tree.TypeSymlink, Mode: 0o777, Target: name + ".target"})
		default:
			many.SetChild(name, reg(0o644, textish(i, i*3)))
		}
	}
	return tr
}

func TestMatrix(t *testing.T) {
	for _, tool := range []string{"unsquashfs", "sqfs2tar", "mount"} {
		needTool(t, tool)
	}
	tr := smallTree()
	comps := []string{"zstd", "gzip", "xz", "lz4"}
	sizes := []uint32{4 << 10, 128 << 10, 1 << 20}
	if testing.Short() {
		comps, sizes = comps[:1], sizes[1:2]
	}
	dir := t.TempDir()
	for _, comp := range comps {
		for _, bs := range sizes {
			t.Run(fmt.Sprintf("%s-%dk", comp, bs>>10), func(t *testing.T) {
				img, st := writeImage(t, dir, tr, Options{Compression: comp, BlockSize: bs})
				defer os.Remove(img)
				if st.Duplicates != 2 || st.SparseBlocks == 0 {
					t.Errorf("stats %+v: want 2 duplicates and some holes", st)
				}
				checkListing(t, tr, img)
				checkTar(t, tr, img)
				if !testing.Short() {
					checkMount(t, tr, img)
				}
			})
		}
	}
	t.Run("lz4-hc", func(t *testing.T) {
		img, _ := writeImage(t, dir, tr, Options{Compression: "lz4", Level: 9})
		checkTar(t, tr, img)
	})
}

// tortureTree is the worst case: 20,000 small files, a directory of 50,000 entries, a
// 300 MB file of long zero runs generated on the fly, and every odd corner of the format.
func tortureTree() *tree.Tree {
	tr := smallTree()
	r := tr.Root
	for i := range 20000 {
		d := mkdirs(r, fmt.Sprintf("small/d%03d", i/200))
		var data []byte
		if i%50 == 49 {
			data = textish(i-25, (i-25)*37%6000) // a duplicate of an earlier file
		} else {
			data = textish(i, i*37%6000)
		}
		n := reg(0o644, data)
		n.UID, n.GID = uint32(i%5)*1000, uint32(i%3)
		n.ModTime = int64(1500000000 + i)
		d.SetChild(fmt.Sprintf("file-%05d.txt", i), n)
	}
	big := mkdirs(r, "big")
	for i := range 50000 {
		name := fmt.Sprintf("%x-%d", i*2654435761%1000003, i)
		switch {
		case i%1000 == 0:
			big.SetChild(name, tree.NewDir(0o755, 0, 0, 0))
		case i%97 == 0:
			big.SetChild(name, &tree.Node{Type: tree.TypeSymlink, Mode: 0o777, Target: "/" + name})
		default:
			big.SetChild(name, reg(0o644, textish(i, i%64)))
		}
	}
	r.SetChild("zero-runs-300m", &tree.Node{Type: tree.TypeRegular, Mode: 0o644, Size: 300_000_000, Content: zeroRuns{size: 300_000_000, seed: 1}})
	r.SetChild("zero-runs-3m", &tree.Node{Type: tree.TypeRegular, Mode: 0o644, Size: 3_000_001, Content: zeroRuns{size: 3_000_001, seed: 9}})
	r.SetChild("zero-runs-3m-dup", &tree.Node{Type: tree.TypeRegular, Mode: 0o644, Size: 3_000_001, Content: zeroRuns{size: 3_000_001, seed: 9}})
	odd := mkdirs(r, "odd")
	odd.SetChild(strings.Repeat("é", 127)+"x", reg(0o644, []byte("255 bytes of UTF-8")))
	odd.SetChild("Ünïcödé ✓", reg(0o644, []byte("spaces too")))
	odd.SetChild("setgid", &tree.Node{Type: tree.TypeRegular, Mode: 0o2711, Size: 1, Content: tree.BytesContent("g")})
	odd.SetChild("setuid-noexec", &tree.Node{Type: tree.TypeRegular, Mode: 0o4644, Size: 1, Content: tree.BytesContent("u")})
	odd.SetChild("sock", &tree.Node{Type: tree.TypeSocket, Mode: 0o755, ModTime: 4000000000})
	// Last in walk order: see the sqfs2tar note in fuzz_test.go.
	mkdirs(r, "zzz-sockets").SetChild("with-xattr", &tree.Node{Type: tree.TypeSocket, Mode: 0o600,
		Xattrs: map[string]string{"security.selinux": "system_u:object_r:syslogd_var_run_t:s0"}})
	odd.SetChild("ancient", &tree.Node{Type: tree.TypeRegular, Mode: 0o644, ModTime: -5})
	odd.SetChild("nobody", &tree.Node{Type: tree.TypeRegular, Mode: 0o644, UID: 65534, GID: 100000})
	null := &tree.Node{Type: tree.TypeChar, Mode: 0o666, DevMajor: 1, DevMinor: 3, Xattrs: map[string]string{"security.selinux": "system_u:object_r:null_device_t:s0"}}
	odd.SetChild("null", null)
	odd.SetChild("null-hardlink", null)
	mkdirs(r, "odd/empty/deeper/still")
	return tr
}

func TestTorture(t *testing.T) {
	if testing.Short() {
		t.Skip("writes a 300 MB tree")
	}
	for _, tool := range []string{"unsquashfs", "sqfs2tar", "mount"} {
		needTool(t, tool)
	}
	tr := tortureTree()
	dir := t.TempDir()
	start := time.Now()
	img, st := writeImage(t, dir, tr, Options{})
	t.Logf("wrote %d bytes in %v: %+v", st.Bytes, time.Since(start), st)
	if st.Duplicates < 400 || st.SparseBlocks < 2000 {
		t.Errorf("stats %+v: want the duplicates and the holes found", st)
	}
	t.Run("unsquashfs", func(t *testing.T) { checkListing(t, tr, img) })
	t.Run("sqfs2tar", func(t *testing.T) { checkTar(t, tr, img) })
	t.Run("kernel", func(t *testing.T) { checkMount(t, tr, img) })
	t.Run("reproducible", func(t *testing.T) {
		h := fileHash(t, img)
		one, _ := writeImage(t, dir, tr, Options{Workers: 1})
		if fileHash(t, one) != h {
			t.Fatal("one worker and all cores give different images")
		}
	})
}

// Same input, same bytes: with one worker, with all cores, and twice in a row.
func TestReproducible(t *testing.T) {
	tr := smallTree()
	for _, comp := range []string{"zstd", "gzip", "xz", "lz4"} {
		t.Run(comp, func(t *testing.T) {
			var images [][]byte
			for _, workers := range []int{1, runtime.NumCPU(), runtime.NumCPU() + 3, 1} {
				var b bufferAt
				_, err := Write(context.Background(), &b, tr, Options{Compression: comp, BlockSize: 64 << 10, Workers: workers, Level: map[string]int{"gzip": 6}[comp]})
				must(t, err)
				images = append(images, b.b)
			}
			for i := 1; i < len(images); i++ {
				if !bytes.Equal(images[0], images[i]) {
					t.Fatalf("run %d differs from run 0", i)
				}
			}
		})
	}
}

type bufferAt struct{ b []byte }

func (w *bufferAt) WriteAt(p []byte, off int64) (int, error) {
	if end := off + int64(len(p)); end > int64(len(w.b)) {
		w.b = append(w.b, make([]byte, end-int64(len(w.b)))...)
	}
	copy(w.b[off:], p)
	return len(p), nil
}

func TestContentMismatch(t *testing.T) {
	for _, tc := range []struct {
		name string
		size int64
		data string
	}{
		{"short small", 10, "abc"},
		{"long small", 2, "abc"},
		{"short large", 2 << 20, "abc"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr := tree.New()
			tr.Root.SetChild("f", &tree.Node{Type: tree.TypeRegular, Mode: 0o644, Size: tc.size, Content: tree.BytesContent(tc.data)})
			_, err := Write(context.Background(), discardAt{}, tr, Options{})
			if err == nil || !strings.Contains(err.Error(), "f: content") {
				t.Fatalf("got %v, want a content size error naming the file", err)
			}
		})
	}
}

func TestCancel(t *testing.T) {
	tr := tree.New()
	tr.Root.SetChild("big", &tree.Node{Type: tree.TypeRegular, Mode: 0o644, Size: 1 << 30, Content: zeroRuns{size: 1 << 30}})
	ctx, cancel := context.WithCancel(context.Background())
	go func() { time.Sleep(50 * time.Millisecond); cancel() }()
	_, err := Write(ctx, discardAt{}, tr, Options{})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
}

// Trees that leave tables empty or data absent: the kernel bounds-checks every table against the
// next one, so these layouts must mount too.
func TestEdgeLayouts(t *testing.T) {
	for _, tool := range []string{"unsquashfs", "sqfs2tar", "mount"} {
		needTool(t, tool)
	}
	for _, tc := range []struct {
		name  string
		build func(r *tree.Node)
	}{
		{"empty root", func(r *tree.Node) {}},
		{"only empty files", func(r *tree.Node) {
			r.SetChild("a", reg(0o644, nil))
			r.SetChild("b", reg(0o600, nil))
		}},
		{"full blocks only, no fragments", func(r *tree.Node) {
			r.SetChild("two-blocks", reg(0o644, textish(1, 256<<10)))
		}},
		{"all holes", func(r *tree.Node) {
			r.SetChild("zeros", reg(0o644, make([]byte, 1<<20)))
		}},
		{"incompressible", func(r *tree.Node) {
			b := make([]byte, 300<<10)
			x := uint64(88172645463325252)
			for i := range b {
				x ^= x << 13
				x ^= x >> 7
				x ^= x << 17
				b[i] = byte(x)
			}
			r.SetChild("random", reg(0o644, b))
		}},
		{"root with xattrs and deep nesting", func(r *tree.Node) {
			r.Xattrs = map[string]string{"security.selinux": "system_u:object_r:root_t:s0"}
			mkdirs(r, strings.Repeat("d/", 100)).SetChild("leaf", reg(0o644, []byte("deep")))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr := tree.New()
			tc.build(tr.Root)
			img, _ := writeImage(t, t.TempDir(), tr, Options{})
			checkListing(t, tr, img)
			checkTar(t, tr, img)
			if !testing.Short() {
				checkMount(t, tr, img)
			}
		})
	}
}

// Memory must not follow file sizes: a 1 GB file goes through a fixed number of blocks in flight.
func TestBoundedMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("streams 1 GB")
	}
	tr := tree.New()
	const size = 1_000_000_000
	tr.Root.SetChild("huge", &tree.Node{Type: tree.TypeRegular, Mode: 0o644, Size: size, Content: zeroRuns{size: size, seed: 5}})
	for i := range 2000 {
		mkdirs(tr.Root, "many").SetChild(fmt.Sprintf("f%d", i), reg(0o644, textish(i, 100_000)))
	}
	runtime.GC()
	var base runtime.MemStats
	runtime.ReadMemStats(&base)
	stop := make(chan struct{})
	peak := make(chan uint64)
	go func() {
		var max uint64
		for {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > max {
				max = ms.HeapInuse
			}
			select {
			case <-stop:
				peak <- max
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	_, err := Write(context.Background(), discardAt{}, tr, Options{Compression: "lz4", BlockSize: 1 << 20, Workers: 4})
	close(stop)
	must(t, err)
	grew := (<-peak - base.HeapInuse) >> 20
	t.Logf("heap grew by at most %d MiB", grew)
	// 16 MiB prefetch + 8 MiB free list + 12 blocks of 2 MiB in flight, with room for garbage.
	if grew > 160 {
		t.Fatalf("heap grew by %d MiB writing a 1 GB file", grew)
	}
}
