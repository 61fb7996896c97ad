package boot

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"osbuild.dev/osbuild/boot/boottest"
	"osbuild.dev/osbuild/tree"
)

func file(content string) *tree.Node {
	return &tree.Node{Type: tree.TypeRegular, Mode: 0o644, Size: int64(len(content)), Content: tree.BytesContent(content)}
}

// mkTree builds a tree from path → node; parent directories are created.
func mkTree(files map[string]*tree.Node) *tree.Tree {
	t := tree.New()
	for p, n := range files {
		parts := tree.Split(p)
		d := t.Root
		for _, part := range parts[:len(parts)-1] {
			c := d.Child(part)
			if c == nil {
				c = tree.NewDir(0o755, 0, 0, 0)
				d.SetChild(part, c)
			}
			d = c
		}
		d.SetChild(parts[len(parts)-1], n)
	}
	return t
}

func TestFindKernel(t *testing.T) {
	link := func(target string) *tree.Node { return &tree.Node{Type: tree.TypeSymlink, Target: target} }
	for _, tc := range []struct {
		name     string
		files    map[string]*tree.Node
		explicit string
		path     string
		version  string
		err      string
	}{
		{name: "boot", files: map[string]*tree.Node{"boot/vmlinuz-6.1.0-1-cloud-amd64": file("k")},
			path: "boot/vmlinuz-6.1.0-1-cloud-amd64", version: "6.1.0-1-cloud-amd64"},
		{name: "newest of several", files: map[string]*tree.Node{
			"boot/vmlinuz-6.1.0-9-amd64": file("a"), "boot/vmlinuz-6.1.0-10-amd64": file("b"), "boot/vmlinuz-5.10.0-30-amd64": file("c")},
			path: "boot/vmlinuz-6.1.0-10-amd64", version: "6.1.0-10-amd64"},
		{name: "usr/lib/modules", files: map[string]*tree.Node{"usr/lib/modules/6.8.0/vmlinuz": file("k")},
			path: "usr/lib/modules/6.8.0/vmlinuz", version: "6.8.0"},
		{name: "merged-usr symlink", files: map[string]*tree.Node{"lib": link("usr/lib"), "usr/lib/modules/6.8.0/vmlinuz": file("k")},
			explicit: "/lib/modules/6.8.0/vmlinuz", path: "usr/lib/modules/6.8.0/vmlinuz", version: "6.8.0"},
		{name: "explicit with version from modules dir", files: map[string]*tree.Node{"boot/bzImage": file("k"), "lib/modules/6.9.1/modules.builtin": file("")},
			explicit: "/boot/bzImage", path: "boot/bzImage", version: "6.9.1"},
		{name: "explicit symlink", files: map[string]*tree.Node{"vmlinuz": link("boot/vmlinuz-6.1.0-1-amd64"), "boot/vmlinuz-6.1.0-1-amd64": file("k")},
			explicit: "vmlinuz", path: "boot/vmlinuz-6.1.0-1-amd64", version: "6.1.0-1-amd64"},
		{name: "none", files: map[string]*tree.Node{"etc/hostname": file("x")},
			err: "looked for /boot/vmlinuz-* and /usr/lib/modules/*/vmlinuz"},
		{name: "explicit missing", files: map[string]*tree.Node{"etc/hostname": file("x")}, explicit: "/boot/nope",
			err: "no such file"},
		{name: "symlink escaping root stays inside", files: map[string]*tree.Node{"boot/vmlinuz-1": link("../../../../boot/real"), "boot/real": file("k")},
			explicit: "boot/vmlinuz-1", path: "boot/real", version: "1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k, err := FindKernel(mkTree(tc.files), tc.explicit)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if k.Path != tc.path || k.Version != tc.version {
				t.Fatalf("got %s %s, want %s %s", k.Path, k.Version, tc.path, tc.version)
			}
		})
	}
}

func TestVersionLess(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want bool
	}{
		{"6.1.0-9", "6.1.0-10", true},
		{"6.1.0-10", "6.1.0-9", false},
		{"5.10", "6.1", true},
		{"6.1", "6.1.0", true},
		{"6.1.0", "6.1.0", false},
	} {
		if got := versionLess(tc.a, tc.b); got != tc.want {
			t.Errorf("versionLess(%s, %s) = %v", tc.a, tc.b, got)
		}
	}
}

func TestCmdlineAndEntry(t *testing.T) {
	v := Verity{
		DataPartUUID: "AAAAAAAA-0000-4000-8000-000000000002", HashPartUUID: "aaaaaaaa-0000-4000-8000-000000000003",
		DataBlocks: 1000, RootHash: "ab01", Salt: "cd02",
	}
	want := `dm-mod.create="root,,,ro,0 8000 verity 1 PARTUUID=aaaaaaaa-0000-4000-8000-000000000002 ` +
		`PARTUUID=aaaaaaaa-0000-4000-8000-000000000003 4096 4096 1000 1 sha256 ab01 cd02 1 restart_on_corruption" ` +
		`root=/dev/dm-0 ro panic=10 console=ttyS0`
	got, err := Cmdline(CmdlineOptions{Verity: v})
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Fatalf("cmdline\n got %s\nwant %s", got, want)
	}
	// What the init reads back must be what was written.
	p := ParseCmdline(got + " osbuild.data=/srv")
	devs, err := ParseDMCreate(p["dm-mod.create"])
	if err != nil {
		t.Fatal(err)
	}
	if len(devs) != 1 || devs[0].Name != "root" || !devs[0].ReadOnly || len(devs[0].Tables) != 1 {
		t.Fatalf("parsed %+v", devs)
	}
	tb := devs[0].Tables[0]
	if tb.Start != 0 || tb.Length != 8000 || tb.Type != "verity" || !strings.HasSuffix(tb.Params, "cd02 1 restart_on_corruption") {
		t.Fatalf("table %+v", tb)
	}
	if p["osbuild.data"] != "/srv" || p["panic"] != "10" {
		t.Fatalf("params %v", p)
	}

	for _, bad := range []Verity{
		{DataPartUUID: "a", HashPartUUID: "b", RootHash: "ab"},                            // no blocks
		{DataPartUUID: "a", HashPartUUID: "b", RootHash: "xyz", DataBlocks: 1},            // not hex
		{DataPartUUID: "a b", HashPartUUID: "b", RootHash: "ab", DataBlocks: 1},           // space
		{HashPartUUID: "b", RootHash: "ab", DataBlocks: 1},                                // no data uuid
		{DataPartUUID: "a", HashPartUUID: "b", RootHash: "ab", Salt: "zz", DataBlocks: 1}, // salt
	} {
		if _, err := bad.DMCreate(); err == nil {
			t.Errorf("DMCreate(%+v) succeeded", bad)
		}
	}

	e := Entry{ID: "osbuild-a", Title: "Demo (A)", Version: "1.2.3", SortKey: "osbuild", Linux: "/osbuild/a/vmlinuz",
		Initrd: "/osbuild/a/initrd", Options: got, Tries: DefaultTries}
	if e.FileName() != "loader/entries/osbuild-a+3.conf" {
		t.Fatalf("file name %s", e.FileName())
	}
	b, err := e.Render()
	if err != nil {
		t.Fatal(err)
	}
	wantEntry := "title Demo (A)\nversion 1.2.3\nsort-key osbuild\nlinux /osbuild/a/vmlinuz\ninitrd /osbuild/a/initrd\noptions " + got + "\n"
	if string(b) != wantEntry {
		t.Fatalf("entry\n%s\nwant\n%s", b, wantEntry)
	}
	if _, err := (Entry{ID: "a+1", Linux: "x", Options: "y"}).Render(); err == nil {
		t.Fatal("an id with + was accepted")
	}
	if strings.Contains(string(LoaderConf()), "default") {
		t.Fatal("loader.conf must not set default")
	}
}

func TestParseCmdline(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want map[string]string
	}{
		{`a=1 b="x y" c`, map[string]string{"a": "1", "b": "x y", "c": ""}},
		{`  dm-mod.create="r,,,ro,0 8 zero"  quiet `, map[string]string{"dm-mod.create": "r,,,ro,0 8 zero", "quiet": ""}},
		{"a=1 a=2\n", map[string]string{"a": "2"}},
	} {
		got := ParseCmdline(tc.in)
		if len(got) != len(tc.want) {
			t.Errorf("%q: %v", tc.in, got)
		}
		for k, v := range tc.want {
			if got[k] != v {
				t.Errorf("%q: %s = %q, want %q", tc.in, k, got[k], v)
			}
		}
	}
	for _, bad := range []string{"root", "root,,,xx,0 8 zero", "root,,,ro,0 x zero", "root,,,ro,0 8"} {
		if _, err := ParseDMCreate(bad); err == nil {
			t.Errorf("ParseDMCreate(%q) succeeded", bad)
		}
	}
	devs, err := ParseDMCreate("a,,,ro,0 8 zero,8 8 zero;b,u,,rw,0 1 error")
	if err != nil || len(devs) != 2 || len(devs[0].Tables) != 2 || devs[1].UUID != "u" || devs[1].ReadOnly {
		t.Fatalf("%+v %v", devs, err)
	}
}

// staticBinary builds a tiny static ELF to stand in for osbuild as /init.
func staticBinary(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	src := filepath.Join(dir, "main.go")
	os.WriteFile(src, []byte("package main\nfunc main() {}\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module x\n"), 0o644)
	bin := filepath.Join(dir, "init")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func fakeModuleTree() *tree.Tree {
	return mkTree(map[string]*tree.Node{
		"lib/modules/6.1.0-test/kernel/drivers/md/dm-mod.ko":    file("dm-mod module"),
		"lib/modules/6.1.0-test/kernel/drivers/md/dm-verity.ko": file("dm-verity module"),
		"lib/modules/6.1.0-test/kernel/fs/squashfs/squashfs.ko": file("squashfs module"),
		"lib/modules/6.1.0-test/kernel/lib/reed_solomon.ko":     file("rs"),
		"lib/modules/6.1.0-test/kernel/drivers/md/dm-bufio.ko":  file("bufio"),
		"lib/modules/6.1.0-test/modules.dep": file("kernel/drivers/md/dm-mod.ko:\n" +
			"kernel/drivers/md/dm-verity.ko: kernel/lib/reed_solomon.ko kernel/drivers/md/dm-bufio.ko kernel/drivers/md/dm-mod.ko\n" +
			"kernel/drivers/md/dm-bufio.ko: kernel/drivers/md/dm-mod.ko\nkernel/fs/squashfs/squashfs.ko:\nkernel/lib/reed_solomon.ko:\n"),
		"lib/modules/6.1.0-test/modules.builtin": file("kernel/fs/ext4/ext4.ko\n"),
	})
}

func TestModulesDep(t *testing.T) {
	set, err := ResolveModules(fakeModuleTree(), "6.1.0-test", []string{"dm-verity", "squashfs", "ext4", "nvme"})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, m := range set.Modules {
		names = append(names, m.Name)
	}
	if got, want := strings.Join(names, " "), "dm_bufio dm_mod reed_solomon dm_verity squashfs"; got != want {
		// dm_bufio needs dm_mod: sorted deps visit dm_bufio first, which pulls dm_mod ahead of itself.
		if got != "dm_mod dm_bufio reed_solomon dm_verity squashfs" {
			t.Fatalf("order %q", got)
		}
	}
	if strings.Join(set.Builtin, " ") != "ext4" || strings.Join(set.Missing, " ") != "nvme" {
		t.Fatalf("builtin %v missing %v", set.Builtin, set.Missing)
	}
	if _, err := ResolveModules(fakeModuleTree(), "6.2", nil); err == nil || !strings.Contains(err.Error(), "/usr/lib/modules/6.2") {
		t.Fatalf("missing modules dir: %v", err)
	}
}

// TestInitramfs reads the archive back with cpio(1) and checks that two builds are byte-identical.
func TestInitramfs(t *testing.T) {
	if _, err := exec.LookPath("cpio"); err != nil {
		t.Fatal("cpio is needed: apt-get install cpio")
	}
	init := staticBinary(t)
	set, err := ResolveModules(fakeModuleTree(), "6.1.0-test", []string{"dm-verity", "squashfs"})
	if err != nil {
		t.Fatal(err)
	}
	for _, comp := range []Compression{None, Gzip, Zstd} {
		t.Run(string(comp), func(t *testing.T) {
			a, err := BuildInitramfs(set, InitramfsOptions{Init: init, Compression: comp, ModTime: 1700000000})
			if err != nil {
				t.Fatal(err)
			}
			b, err := BuildInitramfs(set, InitramfsOptions{Init: init, Compression: comp, ModTime: 1700000000})
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(a, b) {
				t.Fatal("two builds differ")
			}
			raw := a
			switch comp {
			case Gzip:
				raw = run(t, a, "gzip", "-dc")
			case Zstd:
				raw = run(t, a, "zstd", "-dc")
			}
			list := string(run(t, raw, "cpio", "-t", "--quiet"))
			for _, want := range []string{"init", "dev/console", "newroot", "etc/osbuild/modules",
				"lib/modules/6.1.0-test/kernel/drivers/md/dm-verity.ko"} {
				if !strings.Contains("\n"+list, "\n"+want+"\n") {
					t.Errorf("%s missing from\n%s", want, list)
				}
			}
			dir := t.TempDir()
			cmd := exec.Command("cpio", "-i", "-d", "--quiet", "--no-absolute-filenames")
			cmd.Dir = dir
			cmd.Stdin = bytes.NewReader(raw)
			// dev/console cannot be created without privileges everywhere; the rest must extract.
			out, _ := cmd.CombinedOutput()
			got, err := os.ReadFile(filepath.Join(dir, "init"))
			want, _ := os.ReadFile(init)
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("init does not round-trip (%v): %s", err, out)
			}
			lst, _ := os.ReadFile(filepath.Join(dir, "etc/osbuild/modules"))
			wantList := "/lib/modules/6.1.0-test/kernel/drivers/md/dm-mod.ko\n"
			if !strings.HasPrefix(string(lst), wantList) || !strings.HasSuffix(string(lst), "squashfs.ko\n") {
				t.Fatalf("module list:\n%s", lst)
			}
			ko, _ := os.ReadFile(filepath.Join(dir, "lib/modules/6.1.0-test/kernel/drivers/md/dm-verity.ko"))
			if string(ko) != "dm-verity module" {
				t.Fatalf("module content %q", ko)
			}
			fi, err := os.Stat(filepath.Join(dir, "init"))
			if err != nil || fi.Mode().Perm() != 0o755 {
				t.Fatalf("init mode: %v %v", fi.Mode(), err)
			}
		})
	}
}

func TestInitramfsRejectsDynamicInit(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	real, _ := filepath.EvalSymlinks(sh)
	if _, err := BuildInitramfs(nil, InitramfsOptions{Init: real}); err == nil || !strings.Contains(err.Error(), "CGO_ENABLED=0") {
		t.Fatalf("err = %v", err)
	}
}

func run(t *testing.T, in []byte, name string, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Stdin = bytes.NewReader(in)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s: %v: %s", name, err, stderr.String())
	}
	return out
}

// TestDebianCloudKernel resolves the default module set against the real Debian 12 cloud kernel, which
// ships no modules.dep: the closure comes from .modinfo.
func TestDebianCloudKernel(t *testing.T) {
	if testing.Short() {
		t.Skip("downloads a Debian kernel package")
	}
	dir := boottest.Package(t, "linux-image-cloud-amd64")
	tr := boottest.HostTree(t, dir)
	k, err := FindKernel(tr, "")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(k.Version, "6.1.") || !strings.HasSuffix(k.Version, "-cloud-amd64") {
		t.Fatalf("kernel %+v", k)
	}
	set, err := ResolveModules(tr, k.Version, DefaultModules)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, m := range set.Modules {
		names = append(names, m.Name)
	}
	// The order proven to boot (DESIGN.md), then the cloud, FAT and data partition modules.
	want := "virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_blk " +
		"dm_mod dm_bufio reed_solomon dm_verity squashfs"
	if got := strings.Join(names, " "); !strings.HasPrefix(got, want+" ") {
		t.Fatalf("load order\n got %s\nwant %s ...", got, want)
	}
	for _, need := range []string{"scsi_mod", "sd_mod", "xen_blkfront", "ena", "fat", "vfat", "nls_cp437", "nls_ascii", "efivarfs"} {
		if !strings.Contains(" "+strings.Join(names, " ")+" ", " "+need+" ") {
			t.Errorf("%s missing from %v", need, names)
		}
	}
	pos := map[string]int{}
	for i, m := range set.Modules {
		pos[m.Name] = i
	}
	for _, m := range set.Modules {
		for _, d := range m.Depends {
			if pos[d] >= pos[m.Name] {
				t.Errorf("%s is loaded before its dependency %s", m.Name, d)
			}
		}
	}
	for _, b := range []string{"ext4", "nvme"} {
		if !strings.Contains(" "+strings.Join(set.Builtin, " ")+" ", " "+b+" ") {
			t.Errorf("%s should be reported built in: %v", b, set.Builtin)
		}
	}
	t.Logf("load order: %s", strings.Join(names, " "))
	t.Logf("built in: %v; missing: %v", set.Builtin, set.Missing)

	init := staticBinary(t)
	for _, comp := range []Compression{Gzip, Zstd} {
		b, err := BuildInitramfs(set, InitramfsOptions{Init: init, Compression: comp})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("initramfs with a %d-byte init, %s: %d bytes", fileSize(init), comp, len(b))
	}
}

func fileSize(p string) int64 {
	fi, err := os.Stat(p)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// TestCompressedModules: .ko.xz and .ko.zst are stored decompressed in the initramfs (finit_module then
// needs no in-kernel decompression), under their .ko name.
func TestCompressedModules(t *testing.T) {
	for _, tc := range []struct{ suffix, tool string }{{".ko.xz", "xz"}, {".ko.zst", "zstd"}, {".ko.gz", "gzip"}} {
		t.Run(tc.tool, func(t *testing.T) {
			if _, err := exec.LookPath(tc.tool); err != nil {
				t.Fatalf("%s is needed", tc.tool)
			}
			comp := run(t, []byte("plain module bytes"), tc.tool, "-c")
			n := &tree.Node{Type: tree.TypeRegular, Mode: 0o644, Size: int64(len(comp)), Content: tree.BytesContent(comp)}
			tr := mkTree(map[string]*tree.Node{
				"usr/lib/modules/6.1/kernel/fs/squashfs/squashfs" + tc.suffix: n,
				"usr/lib/modules/6.1/modules.dep":                             file("kernel/fs/squashfs/squashfs" + tc.suffix + ":\n"),
				"usr/lib/modules/6.1/modules.builtin":                         file("kernel/drivers/md/dm-mod.ko\nkernel/drivers/md/dm-verity.ko\n"),
				"lib":                                                         {Type: tree.TypeSymlink, Target: "usr/lib"},
			})
			set, err := ResolveModules(tr, "6.1", []string{"dm-mod", "dm-verity", "squashfs"})
			if err != nil {
				t.Fatal(err)
			}
			if len(set.Modules) != 1 || len(set.Builtin) != 2 {
				t.Fatalf("%+v", set)
			}
			raw, err := BuildInitramfs(set, InitramfsOptions{Init: staticBinary(t), Compression: None})
			if err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			cmd := exec.Command("cpio", "-i", "-d", "--quiet", "--no-absolute-filenames")
			cmd.Dir = dir
			cmd.Stdin = bytes.NewReader(raw)
			cmd.Run()
			got, err := os.ReadFile(filepath.Join(dir, "lib/modules/6.1/kernel/fs/squashfs/squashfs.ko"))
			if err != nil || string(got) != "plain module bytes" {
				t.Fatalf("module in the initramfs: %q %v", got, err)
			}
		})
	}
}

func TestRequiredModuleMissing(t *testing.T) {
	tr := mkTree(map[string]*tree.Node{"lib/modules/6.1/modules.builtin": file("kernel/fs/ext4/ext4.ko\n")})
	if _, err := ResolveModules(tr, "6.1", DefaultModules); err == nil || !strings.Contains(err.Error(), "dm_mod") {
		t.Fatalf("err = %v", err)
	}
}
