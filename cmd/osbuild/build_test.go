package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"osbuild.dev/osbuild/boot"
	"osbuild.dev/osbuild/builder"
	"osbuild.dev/osbuild/internal/tooltest"
	"osbuild.dev/osbuild/partitions"
)

// The boot tests share one build of examples/minimal; each copies the raw image before changing it.
var minimal struct {
	once sync.Once
	dir  string // output folder of the first build
	m    *builder.Manifest
	err  error
}

const minimalEpoch = "SOURCE_DATE_EPOCH=1700000000"

// minimalImages makes examples/minimal's OCI layouts from Debian packages when they are missing.
func minimalImages(t *testing.T) string {
	t.Helper()
	dir, _ := filepath.Abs("../../examples/minimal")
	if _, err := os.Stat(filepath.Join(dir, "images", "base", "index.json")); err == nil {
		return dir
	}
	cmd := exec.Command(filepath.Join(dir, "mkimages.sh"))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("examples/minimal/mkimages.sh: %v\n%s", err, out)
	}
	return dir
}

func buildMinimal(t *testing.T) (string, *builder.Manifest) {
	t.Helper()
	if testing.Short() {
		t.Skip("builds examples/minimal from Debian packages and boots it")
	}
	ex := minimalImages(t)
	minimal.once.Do(func() {
		minimal.dir, minimal.err = os.MkdirTemp("", "osbuild-minimal-")
		if minimal.err != nil {
			return
		}
		minimal.m, minimal.err = runBuild(t, filepath.Join(ex, "variant.yaml"), minimal.dir)
	})
	if minimal.err != nil {
		t.Fatal(minimal.err)
	}
	return minimal.dir, minimal.m
}

func runBuild(t *testing.T, variant, out string) (*builder.Manifest, error) {
	t.Helper()
	_, stderr, code := run(t, ".", []string{minimalEpoch}, "build", "-q", "--cache", filepath.Join(os.TempDir(), "osbuild-test-cache"), variant, "-o", out)
	if code != 0 {
		return nil, fmt.Errorf("osbuild build %s: exit %d: %s", variant, code, stderr)
	}
	var m builder.Manifest
	data, err := os.ReadFile(filepath.Join(out, "minimal-1.0.0.json"))
	if err != nil {
		return nil, err
	}
	return &m, json.Unmarshal(data, &m)
}

func fileSum(t *testing.T, p string) string {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// copyImage copies a raw image (sparse files stay sparse with cp) into a test's own folder.
func copyImage(t *testing.T, src string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), filepath.Base(src))
	if out, err := exec.Command("cp", "--sparse=always", src, dst).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	return dst
}

// cut copies one partition of a disk image into its own file.
func cut(t *testing.T, raw string, p *partitions.Partition) string {
	t.Helper()
	src, err := os.Open(raw)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst := filepath.Join(t.TempDir(), p.Label+".img")
	f, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := io.Copy(f, io.NewSectionReader(src, p.Start, p.Size)); err != nil {
		t.Fatal(err)
	}
	return dst
}

// boot runs the image in QEMU until the console has matched every pattern in order.
func bootImage(t *testing.T, raw string, timeout string, expect ...string) string {
	t.Helper()
	args := []string{"run", raw, "--timeout", timeout, "--no-network"}
	for _, e := range expect {
		args = append(args, "--expect", e)
	}
	stdout, stderr, code := run(t, ".", nil, args...)
	if code != 0 {
		t.Fatalf("boot %s: exit %d, wanted %q\nconsole:\n%s\n%s", raw, code, expect, tail(stdout, 4000), stderr)
	}
	return stdout
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// TestBuildMinimal is issue 3's checks 1, 4 and 5: the disk is valid to sgdisk, fsck.fat and veritysetup,
// boots to the marker, keeps the data partition across boots, and two builds give the same bytes.
func TestBuildMinimal(t *testing.T) {
	dir, m := buildMinimal(t)
	raw := filepath.Join(dir, "minimal-1.0.0.raw")

	t.Run("reproducible", func(t *testing.T) {
		again := t.TempDir()
		if _, err := runBuild(t, "../../examples/minimal/variant.yaml", again); err != nil {
			t.Fatal(err)
		}
		for _, f := range []string{"raw", "root.squashfs", "verity", "initrd", "vmlinuz", "json"} {
			name := "minimal-1.0.0." + f
			if a, b := fileSum(t, filepath.Join(dir, name)), fileSum(t, filepath.Join(again, name)); a != b {
				t.Errorf("%s differs between two builds: %s vs %s", name, a, b)
			}
		}
	})

	t.Run("standard tools accept it", func(t *testing.T) {
		if out := tooltest.Run(t, "sgdisk", "-v", raw); !strings.Contains(out, "No problems found") {
			t.Errorf("sgdisk -v: %s", out)
		}
		esp, _ := m.Layout.Partition(partitions.LabelESP)
		out := tooltest.Run(t, "fsck.fat", "-n", cut(t, raw, esp))
		if strings.Contains(strings.ToLower(out), "warning") || strings.Contains(out, "dirty") {
			t.Errorf("fsck.fat -n: %s", out)
		}
		rootA, _ := m.Layout.Partition(partitions.LabelRootA)
		verityA, _ := m.Layout.Partition(partitions.LabelVerityA)
		tooltest.Run(t, "veritysetup", "verify", cut(t, raw, rootA), cut(t, raw, verityA), m.Verity.RootHash)
		// The separate root and verity files are what the disk holds.
		tooltest.Run(t, "veritysetup", "verify", filepath.Join(dir, "minimal-1.0.0.root.squashfs"), filepath.Join(dir, "minimal-1.0.0.verity"), m.Verity.RootHash)
		tooltest.Run(t, "unsquashfs", "-s", filepath.Join(dir, "minimal-1.0.0.root.squashfs"))
	})

	t.Run("formats match the raw image and qcow2 boots", func(t *testing.T) {
		// The build converts its raw image and keeps only what was asked for; the raw image of the first
		// build is the same bytes (see "reproducible"), so it is the reference.
		out := t.TempDir()
		_, stderr, code := run(t, ".", []string{minimalEpoch}, "build", "-q", "--cache", filepath.Join(os.TempDir(), "osbuild-test-cache"),
			"../../examples/minimal/variant.yaml", "-o", out, "--format", "qcow2,vmdk,vhd,vhd-fixed")
		if code != 0 {
			t.Fatalf("build --format: %s", stderr)
		}
		if _, err := os.Stat(filepath.Join(out, "minimal-1.0.0.raw")); err == nil {
			t.Error("raw was not asked for but kept")
		}
		for _, f := range []struct{ file, qemu string }{{"minimal-1.0.0.qcow2", "qcow2"}, {"minimal-1.0.0.vmdk", "vmdk"}, {"minimal-1.0.0.vhd", "vpc"}, {"minimal-1.0.0-fixed.vhd", "vpc"}} {
			p := filepath.Join(out, f.file)
			if f.qemu != "vpc" {
				tooltest.Run(t, "qemu-img", "check", "-f", f.qemu, p)
			}
			// qemu-img check knows no VHD; compare reads every sector of both.
			if o := tooltest.Run(t, "qemu-img", "compare", "-f", "raw", "-F", f.qemu, raw, p); !strings.Contains(o, "Images are identical") {
				t.Errorf("%s: %s", f.file, o)
			}
		}
		bootImage(t, filepath.Join(out, "minimal-1.0.0.qcow2"), "90s", `osbuild: booted 1\.0\.0 slot a`)
	})

	t.Run("boots and keeps its data", func(t *testing.T) {
		img := copyImage(t, raw)
		bootImage(t, img, "90s", `osbuild: booted 1\.0\.0 slot a`, `boot number 1 on this data partition`)
		bootImage(t, img, "90s", `osbuild: booted 1\.0\.0 slot a`, `boot number 2 on this data partition`)
	})
}

// TestBuildTamperedRootReboots is issue 3's check 2.
func TestBuildTamperedRootReboots(t *testing.T) {
	dir, m := buildMinimal(t)
	img := copyImage(t, filepath.Join(dir, "minimal-1.0.0.raw"))
	rootA, _ := m.Layout.Partition(partitions.LabelRootA)
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	// Byte 100 is in the squashfs superblock's block, which mounting reads first.
	b := make([]byte, 1)
	f.ReadAt(b, rootA.Start+100)
	b[0] ^= 0xff
	f.WriteAt(b, rootA.Start+100)
	f.Close()
	bootImage(t, img, "90s", `device-mapper: verity: .*data block 0 is corrupted`, `reboot: Restarting system|reboot: machine restart`)
}

// TestBuildBootCounting is issue 3's check 3: a slot B whose root hash is wrong, with 2 tries, is tried
// twice and then slot A boots by itself; inspect shows B with no tries left.
func TestBuildBootCounting(t *testing.T) {
	dir, m := buildMinimal(t)
	img := copyImage(t, filepath.Join(dir, "minimal-1.0.0.raw"))
	d, err := partitions.Open(img, true)
	if err != nil {
		t.Fatal(err)
	}
	rootB, _ := m.Layout.Partition(partitions.LabelRootB)
	verityB, _ := m.Layout.Partition(partitions.LabelVerityB)
	for _, c := range []struct{ from, to string }{{filepath.Join(dir, "minimal-1.0.0.root.squashfs"), partitions.LabelRootB}, {filepath.Join(dir, "minimal-1.0.0.verity"), partitions.LabelVerityB}} {
		src, err := os.Open(c.from)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := d.WritePartition(c.to, src); err != nil {
			t.Fatal(err)
		}
		src.Close()
	}
	wrongHash := strings.Repeat("0", len(m.Verity.RootHash))
	cmdline, err := boot.Cmdline(boot.CmdlineOptions{
		Verity: boot.Verity{DataPartUUID: rootB.UUID, HashPartUUID: verityB.UUID, DataBlocks: m.Verity.DataBlocks,
			RootHash: wrongHash, Salt: m.Verity.Salt},
		DataMount: m.DataMount,
		Extra:     []string{boot.SlotParam + "=b"},
	})
	if err != nil {
		t.Fatal(err)
	}
	entry := boot.SlotEntry("minimal", "2.0.0", "b", cmdline, 2)
	data, _ := entry.Render()
	esp, err := d.ESP()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"vmlinuz", "initrd"} {
		content, err := esp.ReadFile("osbuild/a/" + f)
		if err != nil {
			t.Fatal(err)
		}
		if err := esp.WriteFile("osbuild/b/"+f, content); err != nil {
			t.Fatal(err)
		}
	}
	if err := esp.WriteFile(entry.FileName(), data); err != nil {
		t.Fatal(err)
	}
	d.Close()

	console := bootImage(t, img, "240s", `osbuild\.slot=b`, `osbuild\.slot=b`, `osbuild: booted 1\.0\.0 slot a`)
	if n := strings.Count(console, "Command line: "); n != 3 {
		t.Errorf("want 3 kernel starts (B, B, A), saw %d", n)
	}
	out, stderr, code := run(t, ".", nil, "inspect", "--json", img)
	if code != 0 {
		t.Fatalf("inspect: %s", stderr)
	}
	if !bytes.Contains([]byte(out), []byte(`"tries_left": 0`)) || !strings.Contains(out, "osbuild-b+0-2.conf") {
		t.Errorf("inspect should show slot B at 0 tries left:\n%s", out)
	}
}

// TestBuildBadInput is issue 3's check 6: each mistake is a clear error and leaves no file behind.
func TestBuildBadInput(t *testing.T) {
	if testing.Short() {
		t.Skip("needs examples/minimal's images")
	}
	ex := minimalImages(t)
	img := func(n string) string { return "  - image: oci:" + filepath.Join(ex, "images", n) + ":v1\n" }
	head := "name: minimal\nversion: 1.0.0\narch: amd64\nlayers:\n"
	tests := []struct {
		name, variant string
		want          []string
	}{
		{"root larger than its slot", head + img("base") + img("kernel") + img("systemd-boot") + "disk:\n  slot: 16MiB\n",
			[]string{"content for root-a is ", "16777216 bytes", "larger than the partition"}},
		{"no kernel", head + img("base") + img("systemd-boot"),
			[]string{"no kernel", "/boot/vmlinuz-*", "/usr/lib/modules/*/vmlinuz"}},
		{"no systemd-boot", head + img("base") + img("kernel"),
			[]string{"no systemd-boot in the image", "/usr/lib/systemd/boot/efi/systemd-bootx64.efi"}},
		{"disk too small", head + img("base") + img("kernel") + img("systemd-boot") + "disk:\n  size: 200MiB\n  slot: 256MiB\n",
			[]string{"disk", "too small", "200"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			work := t.TempDir()
			v := filepath.Join(work, "variant.yaml")
			os.WriteFile(v, []byte(tc.variant), 0o644)
			out := filepath.Join(work, "out")
			os.Mkdir(out, 0o755)
			_, stderr, code := run(t, work, []string{minimalEpoch}, "build", "--cache", filepath.Join(os.TempDir(), "osbuild-test-cache"), v, "-o", out)
			if code == 0 {
				t.Fatal("the build succeeded")
			}
			for _, w := range tc.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("the error should mention %q:\n%s", w, stderr)
				}
			}
			if left, _ := os.ReadDir(out); len(left) != 0 {
				t.Errorf("files left in the output folder: %v", left)
			}
		})
	}
}

// TestBuildInterrupted: Ctrl-C in the middle of a build leaves nothing in the output folder, neither under
// the final names nor as temporary files.
func TestBuildInterrupted(t *testing.T) {
	if testing.Short() {
		t.Skip("needs examples/minimal's images")
	}
	ex := minimalImages(t)
	out := t.TempDir()
	cmd := exec.Command(osbuildBin, "build", "-q", "--cache", filepath.Join(os.TempDir(), "osbuild-test-cache"), filepath.Join(ex, "variant.yaml"), "-o", out)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Interrupt once the root image is being written.
	for i := 0; ; i++ {
		if m, _ := filepath.Glob(filepath.Join(out, ".minimal-1.0.0.root.squashfs.tmp-*")); len(m) > 0 {
			break
		}
		if i > 3000 {
			cmd.Process.Kill()
			t.Fatal("the build never started writing its root image")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cmd.Process.Signal(os.Interrupt)
	err := cmd.Wait()
	if err == nil {
		t.Fatal("an interrupted build exited 0")
	}
	if left, _ := os.ReadDir(out); len(left) != 0 {
		t.Fatalf("an interrupted build left %v; stderr: %s", left, stderr.String())
	}
	if !strings.Contains(stderr.String(), "interrupt") {
		t.Fatalf("the build did not stop because of the interrupt: %s", stderr.String())
	}
}
