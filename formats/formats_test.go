package formats

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"osbuild.dev/osbuild/internal/tooltest"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func needTool(t *testing.T, name string) { tooltest.Need(t, name, "qemu-utils gdisk") }

func run(t *testing.T, name string, args ...string) string { return tooltest.Run(t, name, args...) }

// makeDisk makes a sparse raw disk of size bytes with a GPT (sgdisk) and data at the given offsets: random
// bytes, compressible text, a block with zeros inside it, and an unaligned write, so that every path of the
// writers (holes, zero clusters, partial clusters, compressible and incompressible data) is taken.
func makeDisk(t *testing.T, path string, size int64, offsets []int64) {
	t.Helper()
	needTool(t, "sgdisk")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	run(t, "sgdisk", "-o", "-U", "11111111-2222-3333-4444-555555555555",
		"-n", "1:2048:+8M", "-t", "1:ef00", "-u", "1:aaaaaaaa-2222-3333-4444-555555555555",
		"-n", "2:0:0", "-t", "2:8300", "-u", "2:bbbbbbbb-2222-3333-4444-555555555555", path)
	rng := rand.New(rand.NewChaCha8([32]byte{1, 2, 3}))
	for i, off := range offsets {
		var b []byte
		switch i % 4 {
		case 0: // incompressible
			b = make([]byte, 300<<10)
			for j := range b {
				b[j] = byte(rng.Uint32())
			}
		case 1: // compressible text
			b = bytes.Repeat([]byte("osbuild writes qcow2, vmdk and vhd images. "), 20000)
		case 2: // data, a zero cluster, data
			b = make([]byte, 256<<10)
			for j := range 64 << 10 {
				b[j] = byte(rng.Uint32())
				b[len(b)-1-j] = byte(j)
			}
		case 3: // a few bytes in the middle of a sector
			b = []byte("an unaligned write")
			off += 777
		}
		if _, err := f.WriteAt(b, off); err != nil {
			t.Fatal(err)
		}
	}
}

var qemuName = map[string]string{Raw: "raw", QCOW2: "qcow2", VMDK: "vmdk", VHD: "vpc", VHDFixed: "vpc"}

type conv struct {
	name     string
	format   string
	compress bool
}

var convs = []conv{
	{"raw", Raw, false},
	{"qcow2", QCOW2, false},
	{"qcow2-compressed", QCOW2, true},
	{"vmdk", VMDK, false},
	{"vhd", VHD, false},
	{"vhd-fixed", VHDFixed, false},
}

// TestQemuCompare converts real disks and lets qemu-img, an independent reader, check every output:
// `qemu-img check` clean where the format supports checks, `qemu-img compare` identical to the source.
func TestQemuCompare(t *testing.T) {
	needTool(t, "qemu-img")
	dir := t.TempDir()
	disks := []struct {
		name    string
		size    int64
		offsets []int64
		slow    bool
	}{
		{"64MiB", 64 << 20, []int64{1 << 20, 10 << 20, 20<<20 + 4096, 33 << 20, 40 << 20, 41 << 20, 63 << 20, 50<<20 + 3}, false},
		{"4GiB-sparse", 4 << 30, []int64{9 << 20, 700 << 20, 2<<30 + 65536, 3 << 30, 4<<30 - 2<<20}, true},
	}
	for _, d := range disks {
		t.Run(d.name, func(t *testing.T) {
			if d.slow && testing.Short() {
				t.Skip("4 GiB image: skipped with -short")
			}
			raw := filepath.Join(dir, d.name+".raw")
			makeDisk(t, raw, d.size, d.offsets)
			for _, c := range convs {
				t.Run(c.name, func(t *testing.T) {
					out := filepath.Join(dir, d.name+"-"+c.name+Ext(c.format))
					opts := Options{Compress: c.compress, SourceDateEpoch: 1700000000}
					if err := ConvertFile(context.Background(), raw, c.format, out, opts); err != nil {
						t.Fatal(err)
					}
					qf := qemuName[c.format]
					if c.format == QCOW2 || c.format == VMDK {
						run(t, "qemu-img", "check", "-f", qf, out)
					}
					cmp := run(t, "qemu-img", "compare", "-f", "raw", "-F", qf, raw, out)
					if !strings.Contains(cmp, "Images are identical") {
						t.Fatalf("qemu-img compare: %s", cmp)
					}
					var info struct {
						VirtualSize    int64 `json:"virtual-size"`
						FormatSpecific struct {
							Data map[string]any `json:"data"`
						} `json:"format-specific"`
					}
					if err := json.Unmarshal([]byte(run(t, "qemu-img", "info", "--output=json", "-f", qf, out)), &info); err != nil {
						t.Fatal(err)
					}
					want := d.size
					if c.format == VHDFixed {
						want = (d.size + 1<<20 - 1) &^ (1<<20 - 1)
					}
					if c.format != VHDFixed && info.VirtualSize != want {
						t.Errorf("virtual size %d, want %d", info.VirtualSize, want)
					}
					if c.format == VMDK && info.FormatSpecific.Data["create-type"] != "streamOptimized" {
						t.Errorf("vmdk create-type %v, want streamOptimized", info.FormatSpecific.Data["create-type"])
					}
					if c.format == QCOW2 && info.FormatSpecific.Data["compat"] != "1.1" {
						t.Errorf("qcow2 compat %v, want 1.1 (version 3)", info.FormatSpecific.Data["compat"])
					}
					f, err := os.Open(out)
					if err != nil {
						t.Fatal(err)
					}
					defer f.Close()
					if got, err := Detect(f); err != nil || got != c.format {
						t.Errorf("Detect = %q, %v; want %q", got, err, c.format)
					}
					// A mostly empty disk must stay small: allocated blocks well under the virtual size.
					var st syscall.Stat_t
					if err := syscall.Stat(out, &st); err == nil && st.Blocks*512 > 64<<20 {
						t.Errorf("%s uses %d bytes on disk: holes and zero clusters should not be stored", out, st.Blocks*512)
					}
				})
			}
		})
	}
}

// TestReproducible converts each format twice, with different worker counts, and wants identical bytes:
// the output may not depend on scheduling, the clock or randomness.
func TestReproducible(t *testing.T) {
	dir := t.TempDir()
	raw := filepath.Join(dir, "disk.raw")
	makeDisk(t, raw, 64<<20, []int64{1 << 20, 10 << 20, 20 << 20, 30 << 20, 40 << 20, 50 << 20})
	t.Setenv("SOURCE_DATE_EPOCH", "1700000000")
	epoch, err := EpochFromEnv()
	if err != nil || epoch != 1700000000 {
		t.Fatalf("EpochFromEnv = %d, %v", epoch, err)
	}
	for _, c := range convs {
		t.Run(c.name, func(t *testing.T) {
			var outs [][]byte
			for i, workers := range []int{1, 4} {
				out := filepath.Join(dir, c.name+string(rune('a'+i))+Ext(c.format))
				opts := Options{Compress: c.compress, SourceDateEpoch: epoch, Workers: workers}
				if err := ConvertFile(context.Background(), raw, c.format, out, opts); err != nil {
					t.Fatal(err)
				}
				b, err := os.ReadFile(out)
				if err != nil {
					t.Fatal(err)
				}
				outs = append(outs, b)
			}
			if !bytes.Equal(outs[0], outs[1]) {
				t.Fatalf("two conversions differ")
			}
		})
	}
}

// TestBadInput: a source that is not a raw disk, a read-only folder and a full disk give errors that say
// what to do, and leave nothing under the final name (nor a temporary file).
func TestBadInput(t *testing.T) {
	dir := t.TempDir()
	raw := filepath.Join(dir, "disk.raw")
	makeDisk(t, raw, 64<<20, []int64{1 << 20, 10 << 20, 20 << 20})
	notDisk := filepath.Join(dir, "notes.txt")
	if err := os.WriteFile(notDisk, bytes.Repeat([]byte("not a disk\n"), 1000), 0o644); err != nil {
		t.Fatal(err)
	}
	qcow := filepath.Join(dir, "already.qcow2")
	if err := ConvertFile(context.Background(), raw, QCOW2, qcow, Options{}); err != nil {
		t.Fatal(err)
	}
	tiny := filepath.Join(dir, "tiny.raw")
	if err := os.WriteFile(tiny, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}

	// A disk with 4 MiB of random data, which cannot fit in a 1 MiB tmpfs in any format.
	big := filepath.Join(dir, "big.raw")
	makeDisk(t, big, 64<<20, nil)
	rnd := make([]byte, 4<<20)
	rng := rand.New(rand.NewChaCha8([32]byte{9}))
	for i := range rnd {
		rnd[i] = byte(rng.Uint32())
	}
	if f, err := os.OpenFile(big, os.O_WRONLY, 0); err != nil {
		t.Fatal(err)
	} else if _, err := f.WriteAt(rnd, 16<<20); err != nil {
		t.Fatal(err)
	} else {
		f.Close()
	}

	roDir := mountTmpfs(t, "ro,size=1m")
	fullDir := mountTmpfs(t, "size=1m")

	cases := []struct {
		name, src, format, out string
		is                     error
		msg                    string
	}{
		{"not a disk", notDisk, QCOW2, filepath.Join(dir, "o1.qcow2"), ErrNotRawDisk, "not a raw disk image"},
		{"already qcow2", qcow, VMDK, filepath.Join(dir, "o2.vmdk"), ErrNotRawDisk, "already a qcow2"},
		{"too small", tiny, VHD, filepath.Join(dir, "o3.vhd"), ErrNotRawDisk, "smaller than"},
		{"unknown format", raw, "vdi", filepath.Join(dir, "o4.vdi"), nil, "unknown image format"},
		{"read-only folder", raw, QCOW2, filepath.Join(roDir, "o5.qcow2"), syscall.EROFS, "not writable"},
		{"full disk qcow2", big, QCOW2, filepath.Join(fullDir, "o6.qcow2"), syscall.ENOSPC, "free some space"},
		{"full disk vhd-fixed", big, VHDFixed, filepath.Join(fullDir, "o7.vhd"), syscall.ENOSPC, "free some space"},
		{"full disk vmdk", big, VMDK, filepath.Join(fullDir, "o8.vmdk"), syscall.ENOSPC, "free some space"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := ConvertFile(context.Background(), c.src, c.format, c.out, Options{})
			if err == nil {
				t.Fatal("no error")
			}
			if c.is != nil && !errors.Is(err, c.is) {
				t.Errorf("error %v is not %v", err, c.is)
			}
			if !strings.Contains(err.Error(), c.msg) {
				t.Errorf("error %q does not say %q", err, c.msg)
			}
			if _, serr := os.Stat(c.out); !errors.Is(serr, fs.ErrNotExist) {
				t.Errorf("%s exists after a failed conversion", c.out)
			}
			left, _ := filepath.Glob(filepath.Join(filepath.Dir(c.out), ".*tmp*"))
			if len(left) > 0 {
				t.Errorf("temporary files left: %v", left)
			}
		})
	}
	var ue *UnknownFormatError
	if err := ConvertFile(context.Background(), raw, "vdi", filepath.Join(dir, "x"), Options{}); !errors.As(err, &ue) {
		t.Errorf("unknown format: %T %v", err, err)
	}
}

// mountTmpfs mounts a small tmpfs (root only: this sandbox runs tests as root, so permission bits alone
// cannot make a folder read-only).
func mountTmpfs(t *testing.T, opts string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("TestBadInput mounts tmpfs folders and needs root")
	}
	d := t.TempDir()
	run(t, "mount", "-t", "tmpfs", "-o", opts, "tmpfs", d)
	t.Cleanup(func() { exec.Command("umount", d).Run() })
	return d
}

func TestDetect(t *testing.T) {
	gpt := make([]byte, 4096)
	copy(gpt[512:], "EFI PART")
	mbr := make([]byte, 4096)
	mbr[510], mbr[511] = 0x55, 0xaa
	fixed := make([]byte, 4096)
	copy(fixed[512:], "EFI PART")
	copy(fixed[4096-512:], vhdFooter(3584, vhdTypeFixed, ^uint64(0), [32]byte{}, 0))
	for _, c := range []struct {
		name string
		data []byte
		want string
		err  error
	}{
		{"gpt", gpt, Raw, nil},
		{"mbr", mbr, Raw, nil},
		{"qcow2", append([]byte("QFI\xfb"), make([]byte, 600)...), QCOW2, nil},
		{"vmdk", vmdkHeader(8, vmdkGDAtEnd), VMDK, nil},
		{"vmdk descriptor", []byte("# Disk DescriptorFile\nversion=1\n"), VMDK, nil},
		{"vhd dynamic", vhdFooter(1<<20, vhdTypeDynamic, 512, [32]byte{}, 0), VHD, nil},
		{"vhd fixed", fixed, VHDFixed, nil},
		{"text", []byte("hello"), "", ErrNotRawDisk},
		{"empty", nil, "", ErrNotRawDisk},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := Detect(bytes.NewReader(c.data))
			if got != c.want || !errors.Is(err, c.err) {
				t.Errorf("Detect = %q, %v; want %q, %v", got, err, c.want, c.err)
			}
		})
	}
}

func TestVHDFields(t *testing.T) {
	for _, c := range []struct {
		size int64
		want uint32 // cylinders<<16 | heads<<8 | sectors, from the spec's algorithm
	}{
		{64 << 20, 963<<16 | 8<<8 | 17},
		{1 << 30, 2080<<16 | 16<<8 | 63},
		{4 << 30, 8322<<16 | 16<<8 | 63},
		{200 << 30, 65535<<16 | 16<<8 | 255},
	} {
		if got := chsGeometry(c.size); got != c.want {
			t.Errorf("chsGeometry(%d) = %d/%d/%d, want %d/%d/%d", c.size, got>>16, got>>8&0xff, got&0xff,
				c.want>>16, c.want>>8&0xff, c.want&0xff)
		}
	}
	f := vhdFooter(1<<20, vhdTypeFixed, ^uint64(0), [32]byte{}, vhdEpoch+5)
	sum := uint32(0)
	for i, b := range f {
		if i < 64 || i >= 68 {
			sum += uint32(b)
		}
	}
	if got := uint32(f[64])<<24 | uint32(f[65])<<16 | uint32(f[66])<<8 | uint32(f[67]); got != ^sum {
		t.Errorf("footer checksum %08x, want %08x", got, ^sum)
	}
	if f[27] != 5 {
		t.Errorf("timestamp byte %d, want 5 seconds after 2000-01-01", f[27])
	}
}

func TestOutputPaths(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "img", "demo-1.0.raw")
	if err := os.MkdirAll(filepath.Dir(src), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(src, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out")
	for _, c := range []struct {
		name string
		list []string
		out  string
		want []string
		err  string
	}{
		{"one format, no -o", []string{QCOW2}, "", []string{filepath.Join(dir, "img", "demo-1.0.qcow2")}, ""},
		{"one format, a file", []string{VMDK}, filepath.Join(dir, "x.vmdk"), []string{filepath.Join(dir, "x.vmdk")}, ""},
		{"one format, a folder", []string{VHDFixed}, dir, []string{filepath.Join(dir, "demo-1.0-fixed.vhd")}, ""},
		{"several, new folder", []string{QCOW2, VHD, VHDFixed}, out,
			[]string{filepath.Join(out, "demo-1.0.qcow2"), filepath.Join(out, "demo-1.0.vhd"), filepath.Join(out, "demo-1.0-fixed.vhd")}, ""},
		{"raw onto itself", []string{Raw}, "", nil, "is the input image"},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := OutputPaths(src, c.list, c.out)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("err = %v, want %q", err, c.err)
				}
				return
			}
			if err != nil || strings.Join(got, "|") != strings.Join(c.want, "|") {
				t.Fatalf("OutputPaths = %q, %v; want %q", got, err, c.want)
			}
		})
	}
}

// TestCanceled: a canceled conversion stops with the context's error and leaves no output.
func TestCanceled(t *testing.T) {
	dir := t.TempDir()
	raw := filepath.Join(dir, "disk.raw")
	makeDisk(t, raw, 64<<20, []int64{1 << 20, 10 << 20, 20 << 20})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for _, c := range convs {
		out := filepath.Join(dir, c.name+Ext(c.format))
		err := ConvertFile(ctx, raw, c.format, out, Options{Compress: c.compress})
		if !errors.Is(err, context.Canceled) {
			t.Errorf("%s: err = %v, want context.Canceled", c.name, err)
		}
		if _, err := os.Stat(out); err == nil {
			t.Errorf("%s: output left after cancel", c.name)
		}
	}
}
