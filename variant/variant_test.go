package variant

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLoadFull(t *testing.T) {
	s, err := Load("testdata/full.yaml")
	if err != nil {
		t.Fatal(err)
	}
	dir, _ := filepath.Abs("testdata")
	if s.Layers[1].Image != "oci:"+filepath.Join(dir, "../layouts/app:v1") {
		t.Errorf("oci path not resolved against the variant folder: %s", s.Layers[1].Image)
	}
	if s.Layers[2].Dir != filepath.Join(dir, "overlay") || s.Files[1].Source != filepath.Join(dir, "bin/hello") {
		t.Errorf("relative paths not resolved: %+v %+v", s.Layers[2], s.Files[1])
	}
	if *s.Files[1].Mode != 0o755 || *s.Files[0].Content != "demo\n" {
		t.Errorf("files: %+v", s.Files)
	}
	if s.Disk.Size != 4<<30 || s.Disk.ESP != 128<<20 || s.Squashfs.BlockSize != 128<<10 || s.Squashfs.Level != 15 {
		t.Errorf("sizes: %+v %+v", s.Disk, s.Squashfs)
	}
	// Defaults.
	if s.Boot.Loader != DefaultLoader || s.Disk.DataMount != "/var" || s.Update.Reboot != "immediate" {
		t.Errorf("defaults: %+v %+v", s.Boot, s.Update)
	}
}

// The docs' example must stay valid.
func TestDocsExample(t *testing.T) {
	doc, err := os.ReadFile("../docs/variant.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(doc), "```yaml\n")
	example, _, ok2 := strings.Cut(rest, "```")
	if !ok || !ok2 {
		t.Fatal("docs/variant.md has no ```yaml example")
	}
	if _, err := Parse("docs/variant.md", []byte(example)); err != nil {
		t.Fatal(err)
	}
}

func TestMalformed(t *testing.T) {
	const head = "name: demo\nversion: 1.0.0\narch: amd64\nlayers:\n  - image: r.example/base:1\n"
	tests := []struct {
		name, yaml, want string
	}{
		{"empty file", "", "v.yaml: the file is empty: a variant needs at least name, version, arch and layers"},
		{"bad syntax", "name: demo\n  version: 1\n", "v.yaml:2:1: invalid YAML: mapping values are not allowed in this context"},
		{"unknown top-level key", head + "colour: blue\n", `v.yaml:6:1: colour: unknown key (known keys here: arch, boot, disk, files, health, labels, layers, name, outputs, squashfs, update, version)`},
		{"unknown nested key", head + "disk:\n  size: 2GiB\n  sise: 3\n", "v.yaml:8:3: disk.sise: unknown key (known keys here: data, data_mount, esp, size, slot)"},
		{"missing name", "version: 1.0.0\narch: amd64\nlayers:\n  - image: a/b\n", "v.yaml:1:1: name: missing required key"},
		{"missing layers", "name: demo\nversion: 1.0.0\narch: amd64\n", "v.yaml:1:1: layers: missing required key"},
		{"layers not a list", "name: demo\nversion: 1.0.0\narch: amd64\nlayers: base\n", `v.yaml:4:9: layers: want a list, got "base"`},
		{"wrong type for a string", "name: [a, b]\nversion: 1.0.0\narch: amd64\nlayers:\n  - image: a/b\n", "v.yaml:1:7: name: want a string, got a list"},
		{"wrong arch", "name: demo\nversion: 1.0.0\narch: riscv64\nlayers:\n  - image: a/b\n", `v.yaml:3:7: arch: "riscv64" is not supported: use amd64 or arm64`},
		{"bad version", "name: demo\nversion: one\narch: amd64\nlayers:\n  - image: a/b\n", `v.yaml:2:10: version: "one" is not a version: use dotted numbers such as 1.4.2, optionally with a suffix such as 1.4.2-rc1`},
		{"bad name", "name: Demo OS\nversion: 1.0.0\narch: amd64\nlayers:\n  - image: a/b\n", `v.yaml:1:7: name: "Demo OS" is not a valid name: use lower-case letters, digits, '.', '_' and '-' (at most 63)`},
		{"layer with two sources", "name: demo\nversion: 1.0.0\narch: amd64\nlayers:\n  - image: a/b\n    dir: x\n", "v.yaml:5:5: layers[0]: set exactly one of image, dir or tar"},
		{"layer unknown key", "name: demo\nversion: 1.0.0\narch: amd64\nlayers:\n  - imag: a/b\n", "v.yaml:5:5: layers[0].imag: unknown key (known keys here: dir, image, tar)"},
		{"bad size", head + "disk:\n  size: lots\n", `v.yaml:7:9: disk.size: "lots" is not a size: use bytes or a unit such as 512MiB or 4GiB`},
		{"bad mode", head + "files:\n  - path: /etc/x\n    content: x\n    mode: 0999\n", `v.yaml:9:11: files[0].mode: "0999" is not a file mode: write it in octal, such as 0644 or 4755`},
		{"relative file path", head + "files:\n  - path: etc/x\n    content: x\n", `v.yaml:7:11: files[0].path: "etc/x" must be an absolute, clean path to a file, such as /etc/hostname`},
		{"file without content", head + "files:\n  - path: /etc/x\n", "v.yaml:7:5: files[0]: set exactly one of content or source"},
		{"duplicate key", head + "arch: arm64\n", "v.yaml:6:1: arch: duplicate key"},
		{"uid negative", head + "files:\n  - path: /etc/x\n    content: x\n    uid: -1\n", `v.yaml:9:10: files[0].uid: want a non-negative integer, got "-1"`},
		{"bad compression", head + "squashfs:\n  compression: brotli\n", `v.yaml:7:16: squashfs.compression: "brotli" is not supported: use zstd, gzip, xz or lz4`},
		{"bad block size", head + "squashfs:\n  block_size: 3000\n", "v.yaml:7:15: squashfs.block_size: 3000 bytes must be a power of two from 4KiB to 1MiB"},
		{"unknown output", head + "outputs: [raw, iso]\n", `v.yaml:6:16: outputs[1]: "iso" is not a known output: use raw, qcow2, vmdk or vhd`},
		{"update without repository", head + "update:\n  channel: stable\n  public_key: k.pub\n", "v.yaml:7:3: update.repository: missing required key"},
		{"alias", head + "boot: &b\n  cmdline: x\ndisk: *b\n", "v.yaml:8:7: disk: aliases are not supported: write the value out"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("v.yaml", []byte(tc.yaml))
			if err == nil {
				t.Fatalf("no error; want %s", tc.want)
			}
			if err.Error() != tc.want {
				t.Fatalf("\n got: %s\nwant: %s", err, tc.want)
			}
		})
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]Size{"512": 512, "4GiB": 4 << 30, "1G": 1 << 30, "128K": 128 << 10, "1.5MiB": 3 << 19, "2 MB": 2e6} {
		got, err := ParseSize(in)
		if err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "GiB", "-1", "1PB", "x"} {
		if _, err := ParseSize(bad); err == nil {
			t.Errorf("ParseSize(%q) should fail", bad)
		}
	}
}
