package partitions

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"osbuild.dev/osbuild/internal/tooltest"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"

	"osbuild.dev/osbuild/verity"
)

func needTool(t *testing.T, name string) {
	tooltest.Need(t, name, "gdisk dosfstools mtools cryptsetup-bin")
}

func run(t *testing.T, name string, args ...string) string { return tooltest.Run(t, name, args...) }

func randomBytes(n int, seed byte) []byte {
	b := make([]byte, n)
	rand.NewChaCha8([32]byte{seed}).Read(b)
	return b
}

// testEntry is a loader entry pointing at slot A, as the boot package writes them.
func testEntry(l *Layout, root, salt string, blocks uint64) []byte {
	ra, _ := l.Partition(LabelRootA)
	va, _ := l.Partition(LabelVerityA)
	return []byte(fmt.Sprintf("title Debian (slot a)\nversion 1.0.0\nsort-key osbuild\nlinux /a/vmlinuz\ninitrd /a/initrd.img\n"+
		"options dm-mod.create=\"root,,,ro,0 %d verity 1 PARTUUID=%s PARTUUID=%s 4096 4096 %d 1 sha256 %s %s 1 restart_on_corruption\" root=/dev/dm-0 panic=10\n",
		blocks*8, ra.UUID, va.UUID, blocks, root, salt))
}

type testDisk struct {
	path    string
	layout  *Layout
	root    []byte
	kernel  []byte
	written *Written
}

// buildTestDisk writes a 4 GiB disk with a 3 MB root image (not block-aligned) and an ESP like the
// builder's.
func buildTestDisk(t *testing.T, dir string) *testDisk {
	t.Helper()
	l, err := NewLayout(Spec{Arch: "amd64", DiskSize: 4 << 30, SlotSize: 1 << 30, Seed: "debian-minimal"})
	if err != nil {
		t.Fatal(err)
	}
	td := &testDisk{path: filepath.Join(dir, "disk.raw"), layout: l, root: randomBytes(3<<20+123, 1), kernel: randomBytes(9<<20+7, 2)}
	kpath := filepath.Join(dir, "vmlinuz")
	if err := os.WriteFile(kpath, td.kernel, 0o644); err != nil {
		t.Fatal(err)
	}
	// The entry needs the root hash, which needs the tree: format first, as the builder does.
	res, err := verity.Format(bytes.NewReader(td.root), int64(len(td.root)), io.Discard, verity.Options{Seed: []byte("v1")})
	if err != nil {
		t.Fatal(err)
	}
	td.written, err = WriteFile(td.path, l, Contents{
		ESP: []File{
			{Path: "EFI/BOOT/BOOTX64.EFI", Data: randomBytes(100_000, 3)},
			{Path: "loader/loader.conf", Data: []byte("timeout 3\n")},
			{Path: "loader/entries/a+3.conf", Data: testEntry(l, res.RootHashHex(), res.SaltHex(), res.DataBlocks)},
			HostFile("a/vmlinuz", kpath),
			{Path: "a/initrd.img", Data: randomBytes(1_200_000, 4)},
		},
		Root: bytes.NewReader(td.root), RootSize: int64(len(td.root)),
		VerityOptions: verity.Options{Seed: []byte("v1")},
	})
	if err != nil {
		t.Fatal(err)
	}
	if td.written.Verity.RootHashHex() != res.RootHashHex() {
		t.Fatalf("root hash of the disk %s differs from Format's %s", td.written.Verity.RootHashHex(), res.RootHashHex())
	}
	return td
}

// extractESP copies the ESP out of a disk, for tools that want a file system image.
func extractESP(t *testing.T, td *testDisk, dir string) string {
	t.Helper()
	d, err := Open(td.path, false)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	r, err := d.Reader(LabelESP)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "esp.img")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := io.Copy(f, r); err != nil {
		t.Fatal(err)
	}
	return p
}

// fsckClean runs fsck.fat -n and insists on no message at all beyond the version and summary lines.
func fsckClean(t *testing.T, img string) {
	t.Helper()
	out, err := exec.Command("fsck.fat", "-n", img).CombinedOutput()
	if err != nil {
		t.Fatalf("fsck.fat -n: %v\n%s", err, out)
	}
	summary := regexp.MustCompile(`^(fsck\.fat [0-9.]+ \(.*\)|.*: \d+ files, \d+/\d+ clusters)$`)
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if !summary.MatchString(line) {
			t.Fatalf("fsck.fat -n warns: %q\n%s", line, out)
		}
	}
}

func TestWriteDisk(t *testing.T) {
	if testing.Short() {
		t.Skip("checks the disk with sgdisk, fsck.fat and mtools; run without -short")
	}
	for _, tool := range []string{"sgdisk", "fsck.fat", "mdir", "mtype"} {
		needTool(t, tool)
	}
	dir := t.TempDir()
	td := buildTestDisk(t, dir)

	t.Run("sgdisk", func(t *testing.T) {
		out := run(t, "sgdisk", "-v", td.path)
		if !strings.Contains(out, "No problems found") {
			t.Fatalf("sgdisk -v:\n%s", out)
		}
		for _, p := range td.layout.Partitions {
			info := strings.ToLower(run(t, "sgdisk", "-i", fmt.Sprint(p.Number), td.path))
			for _, want := range []string{
				"partition guid code: " + p.Type,
				"partition unique guid: " + p.UUID,
				fmt.Sprintf("first sector: %d ", p.Start/512),
				fmt.Sprintf("partition size: %d sectors", p.Size/512),
				"partition name: '" + p.Label + "'",
			} {
				if !strings.Contains(info, want) {
					t.Errorf("sgdisk -i %d lacks %q:\n%s", p.Number, want, info)
				}
			}
		}
		if out := strings.ToLower(run(t, "sgdisk", "-p", td.path)); !strings.Contains(out, "disk identifier (guid): "+td.layout.DiskGUID) {
			t.Errorf("disk GUID %s not in:\n%s", td.layout.DiskGUID, out)
		}
	})

	t.Run("ESP", func(t *testing.T) {
		img := extractESP(t, td, t.TempDir())
		fsckClean(t, img)
		listing := run(t, "mdir", "-/", "-b", "-i", img, "::")
		for _, want := range []string{"::/EFI/BOOT/BOOTX64.EFI", "::/loader/loader.conf", "::/loader/entries/a+3.conf", "::/a/vmlinuz", "::/a/initrd.img"} {
			if !strings.Contains(listing, want) {
				t.Errorf("mdir lacks %s:\n%s", want, listing)
			}
		}
		if got := run(t, "mtype", "-i", img, "::/a/vmlinuz"); got != string(td.kernel) {
			t.Errorf("mtype a/vmlinuz: %d bytes differ from the %d-byte kernel", len(got), len(td.kernel))
		}
		// mtools also reads the ESP in place inside the disk.
		p, _ := td.layout.Partition(LabelESP)
		if got := run(t, "mtype", "-i", fmt.Sprintf("%s@@%d", td.path, p.Start), "::/loader/loader.conf"); got != "timeout 3\n" {
			t.Errorf("mtype loader.conf in place = %q", got)
		}
	})

	t.Run("sparse", func(t *testing.T) {
		st, err := os.Stat(td.path)
		if err != nil {
			t.Fatal(err)
		}
		allocated := st.Sys().(*syscall.Stat_t).Blocks * 512
		if st.Size() != 4<<30 || allocated > 32<<20 {
			t.Fatalf("disk is %d bytes with %d allocated, want 4 GiB with under 32 MiB", st.Size(), allocated)
		}
		t.Logf("4 GiB disk, %.1f MiB allocated", float64(allocated)/(1<<20))
	})

	t.Run("slot A verifies", func(t *testing.T) {
		d, err := Open(td.path, false)
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		root, _ := d.Reader(LabelRootA)
		hash, _ := d.Reader(LabelVerityA)
		if err := verity.Verify(root, hash, td.written.Verity.RootHash); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(td.root))
		if _, err := root.ReadAt(got, 0); err != nil || !bytes.Equal(got, td.root) {
			t.Fatalf("root-a does not hold the root image: %v", err)
		}
	})

	t.Run("reproducible", func(t *testing.T) {
		again := buildTestDisk(t, t.TempDir())
		if out, err := exec.Command("cmp", td.path, again.path).CombinedOutput(); err != nil {
			t.Fatalf("two builds differ: %s", out)
		}
	})

	t.Run("read layout back", func(t *testing.T) {
		f, err := os.Open(td.path)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		l, err := ReadLayout(f)
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(*l) != fmt.Sprint(*td.layout) {
			t.Fatalf("ReadLayout = %+v\nwant %+v", l, td.layout)
		}
	})
}

// TestAgentOperations: what the update agent does to an installed disk, in place.
func TestAgentOperations(t *testing.T) {
	if !testing.Short() {
		needTool(t, "fsck.fat")
		needTool(t, "mdir")
	}
	dir := t.TempDir()
	td := buildTestDisk(t, dir)
	d, err := Open(td.path, true)
	if err != nil {
		t.Fatal(err)
	}

	// Mark the trial boot good: loader/entries/a+3.conf → a.conf.
	esp, err := d.ESP()
	if err != nil {
		t.Fatal(err)
	}
	if err := esp.Rename("loader/entries/a+3.conf", "loader/entries/a.conf"); err != nil {
		t.Fatal(err)
	}
	if err := esp.Rename("loader/entries/missing.conf", "loader/entries/x.conf"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("renaming a missing file: %v, want ErrNotExist", err)
	}

	// Stream slot B (size not block-aligned) and its tree, then check what is on disk.
	rootB := randomBytes(2<<20+5, 9)
	n, err := d.WritePartition(LabelRootB, bytes.NewReader(rootB))
	if err != nil || n != int64(len(rootB)) {
		t.Fatalf("WritePartition = %d, %v", n, err)
	}
	vw, err := d.WriterAt(LabelVerityB)
	if err != nil {
		t.Fatal(err)
	}
	res, err := verity.FormatAt(bytes.NewReader(rootB), int64(len(rootB)), vw, verity.Options{})
	if err != nil {
		t.Fatal(err)
	}
	rb, _ := d.Reader(LabelRootB)
	hb, _ := d.Reader(LabelVerityB)
	if err := verity.Verify(rb, hb, res.RootHash); err != nil {
		t.Fatalf("slot B on disk: %v", err)
	}
	if err := esp.WriteFile("b/vmlinuz", []byte("kernel b")); err != nil {
		t.Fatal(err)
	}
	// An empty file, then more changes in the same session: the repair must survive them.
	if err := esp.WriteFile("b/empty", nil); err != nil {
		t.Fatal(err)
	}
	if err := esp.WriteFile("b/initrd.img", randomBytes(70_000, 7)); err != nil {
		t.Fatal(err)
	}
	if err := esp.Remove("a/initrd.img"); err != nil {
		t.Fatal(err)
	}
	if err := esp.WriteFile("loader/entries/b+3.conf.tmp", []byte("title B\n")); err != nil {
		t.Fatal(err)
	}
	if err := esp.Rename("loader/entries/b+3.conf.tmp", "loader/entries/b+3.conf"); err != nil {
		t.Fatal(err)
	}

	// A root larger than its slot is refused with both sizes.
	big := io.LimitReader(zeroReader{}, (1<<30)+4096)
	_, err = d.WritePartition(LabelRootB, big)
	var tl *TooLargeError
	if !errors.As(err, &tl) || tl.PartitionSize != 1<<30 || tl.Label != LabelRootB {
		t.Fatalf("oversized root: %v, want a TooLargeError for root-b", err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}

	d, err = Open(td.path, false)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	esp, _ = d.ESP()
	entries, err := esp.Entries()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.FileName+":"+e.State())
	}
	if got := strings.Join(names, " "); got != "a.conf:good b+3.conf:trial" {
		t.Errorf("entries = %s", got)
	}
	if b, err := esp.ReadFile("b/vmlinuz"); err != nil || string(b) != "kernel b" {
		t.Errorf("b/vmlinuz = %q, %v", b, err)
	}
	if _, err := esp.ReadFile("loader/entries/a+3.conf"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("old entry name still readable: %v", err)
	}
	if err := esp.WriteFile("x", nil); err == nil {
		t.Error("writing to a read-only ESP succeeded")
	}
	if !testing.Short() {
		fsckClean(t, extractESP(t, td, t.TempDir()))
	}
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) { clear(p); return len(p), nil }

func TestWriteErrors(t *testing.T) {
	l, err := NewLayout(Spec{Arch: "amd64", SlotSize: 8 << 20, ESPSize: 40 << 20, Seed: "x"})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		c         Contents
		wantLabel string
		wantErr   string
	}{
		{name: "root larger than slot", c: Contents{Root: bytes.NewReader(nil), RootSize: 8<<20 + 1}, wantLabel: LabelRootA},
		{name: "verity larger than partition", c: Contents{Root: bytes.NewReader(make([]byte, 4096)), RootSize: 4096, Verity: bytes.NewReader(nil), VeritySize: 2 << 20}, wantLabel: LabelVerityA},
		{name: "no root", c: Contents{}, wantErr: "no root image"},
		{name: "ESP path twice", c: Contents{Root: bytes.NewReader(make([]byte, 4096)), RootSize: 4096,
			ESP: []File{{Path: "a", Data: []byte("1")}, {Path: "a", Data: []byte("2")}}}, wantErr: "given twice"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "disk.raw")
			_, err := WriteFile(p, l, tc.c)
			var tl *TooLargeError
			switch {
			case tc.wantLabel != "":
				if !errors.As(err, &tl) || tl.Label != tc.wantLabel || tl.Size <= tl.PartitionSize {
					t.Fatalf("got %v, want a TooLargeError for %s", err, tc.wantLabel)
				}
			case err == nil || !strings.Contains(err.Error(), tc.wantErr):
				t.Fatalf("got %v, want an error containing %q", err, tc.wantErr)
			}
			if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("a failed build left %s behind", p)
			}
		})
	}
}

// TestESPSizes: go-diskfs sizes the FAT wrong for some sizes (64 MiB among them); every size must come
// out clean, with nested directories and files of all sizes.
func TestESPSizes(t *testing.T) {
	if testing.Short() {
		t.Skip("needs fsck.fat; run without -short")
	}
	needTool(t, "fsck.fat")
	needTool(t, "mtype")
	files := []File{
		{Path: "EFI/BOOT/BOOTX64.EFI", Data: randomBytes(150_000, 1)},
		{Path: "EFI/systemd/systemd-bootx64.efi", Data: randomBytes(150_000, 1)},
		{Path: "loader/loader.conf", Data: []byte("timeout 0\n")},
		{Path: "loader/entries/debian-1.2.3+3.conf", Data: []byte("title x\n")},
		{Path: "deep/er/and/deeper/file.txt", Data: []byte("deep")},
		{Path: "empty", Data: nil},
		{Path: "LongFileNameWithMixedCase.Extension", Data: randomBytes(513, 5)},
	}
	for _, mib := range []int64{34, 64, 100, 256, 300} {
		t.Run(fmt.Sprintf("%d MiB", mib), func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "esp.img")
			f, err := os.Create(p)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if err := f.Truncate(mib << 20); err != nil {
				t.Fatal(err)
			}
			if err := WriteESP(f, 0, mib<<20, files, ESPOptions{Label: "OSBUILD"}); err != nil {
				t.Fatal(err)
			}
			fsckClean(t, p)
			for _, fl := range files {
				if got := run(t, "mtype", "-i", p, "::/"+fl.Path); got != string(fl.Data) {
					t.Errorf("mtype %s: %d bytes, want %d", fl.Path, len(got), len(fl.Data))
				}
			}
		})
	}
}

// TestRenameEntries: the boot-counting renames, in both directions and with names whose long-name
// entries change length, done in place on a disk; fsck.fat must stay clean and mtools must see the result.
func TestRenameEntries(t *testing.T) {
	if !testing.Short() {
		needTool(t, "fsck.fat")
		needTool(t, "mdir")
	}
	td := buildTestDisk(t, t.TempDir())
	d, err := Open(td.path, true)
	if err != nil {
		t.Fatal(err)
	}
	esp, err := d.ESP()
	if err != nil {
		t.Fatal(err)
	}
	const dir = "loader/entries/"
	long := "debian-minimal-bookworm-1.2.3"
	if err := esp.WriteFile(dir+long+"+3.conf", []byte("title long\n")); err != nil {
		t.Fatal(err)
	}
	for i := range 20 { // enough entries to spill the directory over one cluster
		if err := esp.WriteFile(fmt.Sprintf("%sfiller-%02d+3.conf", dir, i), []byte("title filler\n")); err != nil {
			t.Fatal(err)
		}
	}
	steps := []struct{ from, to string }{
		{"a+3.conf", "a+2-1.conf"}, // systemd-boot's direction: the name grows
		{"a+2-1.conf", "a+1-2.conf"},
		{"a+1-2.conf", "a.conf"}, // marked good: the name shrinks to 8.3
		{long + "+3.conf", long + "+2-1.conf"},
		{long + "+2-1.conf", long + ".conf"},
		{"filler-07+3.conf", "filler-07+0-3.conf"},
	}
	for _, s := range steps {
		if err := esp.Rename(dir+s.from, dir+s.to); err != nil {
			t.Fatalf("rename %s → %s: %v", s.from, s.to, err)
		}
	}
	if err := esp.Rename(dir+"a.conf", dir+"filler-01+3.conf"); !errors.Is(err, os.ErrExist) {
		t.Errorf("rename onto an existing entry: %v, want ErrExist", err)
	}
	if err := esp.Rename(dir+"a.conf", "a.conf"); err == nil {
		t.Error("rename across directories succeeded")
	}
	d.Close()

	d, err = Open(td.path, false)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	esp, _ = d.ESP()
	entries, err := esp.Entries()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, e := range entries {
		got[e.FileName] = e.State()
	}
	for name, state := range map[string]string{"a.conf": "good", long + ".conf": "good", "filler-07+0-3.conf": "bad", "filler-08+3.conf": "trial"} {
		if got[name] != state {
			t.Errorf("%s: state %q, want %q (entries: %v)", name, got[name], state, got)
		}
	}
	if len(entries) != 22 {
		t.Errorf("%d entries, want 22", len(entries))
	}
	if testing.Short() {
		return
	}
	img := extractESP(t, td, t.TempDir())
	fsckClean(t, img)
	listing := run(t, "mdir", "-b", "-i", img, "::/loader/entries")
	for _, want := range []string{"::/loader/entries/a.conf", "::/loader/entries/" + long + ".conf", "::/loader/entries/filler-07+0-3.conf"} {
		if !strings.Contains(listing, want) {
			t.Errorf("mdir lacks %s:\n%s", want, listing)
		}
	}
	if strings.Contains(listing, "+2-1") || strings.Contains(listing, "a+3.conf") {
		t.Errorf("old names remain:\n%s", listing)
	}
}
