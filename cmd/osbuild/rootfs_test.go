package main

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"osbuild.dev/osbuild/internal/imagetest"
	"osbuild.dev/osbuild/internal/registrytest"
)

var update = flag.Bool("update", false, "rewrite golden files")

type e = imagetest.Entry

// mergeImages are three images whose layers exercise every merge rule across images: whiteouts and an
// opaque directory, a hardlink to a lower layer's file and one before its target, a directory replaced by
// a file and the reverse, xattrs, a device, a fifo, setuid and sticky bits, owners, symlinks.
func mergeImages(t *testing.T) map[string]v1.Image {
	base := imagetest.Image(t, "amd64",
		imagetest.Tar(t,
			e{Name: "etc/"}, e{Name: "etc/passwd", Body: "root:x:0:0::/root:/bin/sh\n"},
			e{Name: "usr/", Mtime: 1900000000}, e{Name: "usr/bin/"},
			e{Name: "usr/bin/su", Body: "su-binary", Mode: 0o4755},
			e{Name: "usr/bin/ping", Body: "ping-binary", Mode: 0o755, Xattrs: map[string]string{"security.capability": "\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"}},
			e{Name: "etc/shadow", Body: "root:*:19000::::::\n", Mode: 0o640, GID: 42, Xattrs: map[string]string{"security.selinux": "system_u:object_r:shadow_t:s0\x00"}},
			e{Name: "dev/"}, e{Name: "dev/null", Type: tar.TypeChar, Major: 1, Minor: 3, Mode: 0o666},
			e{Name: "run/"}, e{Name: "run/initctl", Type: tar.TypeFifo, Mode: 0o600},
			e{Name: "tmp/", Mode: 0o1777},
			e{Name: "opt/app/"}, e{Name: "opt/app/old-1", Body: "1"}, e{Name: "opt/app/old-2", Body: "2"},
			e{Name: "srv/data/"}, e{Name: "srv/data/a", Body: "a"}, e{Name: "srv/data/b", Body: "b"},
			e{Name: "var/cache/"}, e{Name: "var/cache/x", Body: "x"},
			e{Name: "lower.txt", Body: "from the lowest layer\n", UID: 1000, GID: 1000},
			e{Name: "becomes-dir", Body: "a file first"},
			e{Name: "lib", Type: tar.TypeSymlink, Link: "usr/lib"}, e{Name: "usr/lib/"},
		),
		imagetest.Tar(t,
			e{Name: "etc/.wh.shadow"}, // deleted within the first image...
			e{Name: "etc/shadow", Body: "root:!:19000::::::\n", Mode: 0o640, Xattrs: map[string]string{"security.selinux": "system_u:object_r:shadow_t:s0\x00"}}, // ...and written again in the same layer: the new one stays
			e{Name: "usr/bin/.wh.nothing-here"},
		),
	)
	middle := imagetest.Image(t, "amd64", imagetest.Tar(t,
		e{Name: "opt/app/"}, e{Name: "opt/app/.wh..wh..opq"}, e{Name: "opt/app/new", Body: "new app"},
		e{Name: "srv/data/.wh.a"},
		e{Name: "var/cache", Body: "a file where a directory was"},
		e{Name: "hardlink-to-lower", Type: tar.TypeLink, Link: "lower.txt"},
		e{Name: "early-link", Type: tar.TypeLink, Link: "usr/bin/late-target"},
		e{Name: "usr/bin/late-target", Body: "the target comes after its link", Mode: 0o755},
		e{Name: "lib/libfoo.so.1", Body: "written through the lib -> usr/lib symlink"},
	))
	top := imagetest.Image(t, "amd64", imagetest.Tar(t,
		e{Name: "becomes-dir/"}, e{Name: "becomes-dir/child", Body: "child"},
		e{Name: "etc/passwd", Body: "root:x:0:0::/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n"},
		e{Name: "etc/localtime", Type: tar.TypeSymlink, Link: "/usr/share/zoneinfo/UTC"},
		e{Name: "dangling", Type: tar.TypeSymlink, Link: "does/not/exist"},
		e{Name: "srv/.wh.data"}, e{Name: "srv/data/"}, e{Name: "srv/data/c", Body: "c"}, // whiteout of a dir, then a new one
	))
	return map[string]v1.Image{"base": base, "middle": middle, "top": top}
}

func writeVariant(t *testing.T, dir string, refs ...string) string {
	t.Helper()
	var b strings.Builder
	b.WriteString("name: merge-test\nversion: 1.0.0\narch: amd64\nlayers:\n")
	for _, r := range refs {
		fmt.Fprintf(&b, "  - image: %s\n", r)
	}
	b.WriteString("files:\n  - path: /etc/hostname\n    content: \"merge-test\\n\"\n  - path: /usr/bin/tool\n    content: \"#!/bin/sh\\n\"\n    mode: 0755\n")
	p := filepath.Join(dir, "variant.yaml")
	if err := os.WriteFile(p, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// tarListing describes every entry of a tar on one line: what the golden file holds.
func tarListing(t *testing.T, data []byte) string {
	t.Helper()
	tr := tar.NewReader(bytes.NewReader(data))
	var lines []string
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		h := sha256.New()
		io.Copy(h, tr)
		var xs []string
		for k, v := range hdr.PAXRecords {
			if x, ok := strings.CutPrefix(k, "SCHILY.xattr."); ok {
				xs = append(xs, fmt.Sprintf("%s=%q", x, v))
			}
		}
		sort.Strings(xs)
		line := fmt.Sprintf("%s %c %04o %d:%d size=%d mtime=%d", hdr.Name, hdr.Typeflag, hdr.Mode, hdr.Uid, hdr.Gid, hdr.Size, hdr.ModTime.Unix())
		if hdr.Linkname != "" {
			line += " link=" + hdr.Linkname
		}
		if hdr.Typeflag == tar.TypeChar || hdr.Typeflag == tar.TypeBlock {
			line += fmt.Sprintf(" dev=%d,%d", hdr.Devmajor, hdr.Devminor)
		}
		if len(xs) > 0 {
			line += " xattrs=" + strings.Join(xs, ",")
		}
		if hdr.Typeflag == tar.TypeReg {
			line += " sha256=" + hex.EncodeToString(h.Sum(nil))[:16]
		}
		lines = append(lines, line)
	}
	return strings.Join(lines, "\n") + "\n"
}

func golden(t *testing.T, file, got string) {
	t.Helper()
	p := filepath.Join("testdata", file)
	if *update {
		os.MkdirAll("testdata", 0o755)
		if err := os.WriteFile(p, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if string(want) != got {
		t.Fatalf("%s differs from the golden file:\n got:\n%s\nwant:\n%s", file, got, want)
	}
}

const epoch = "SOURCE_DATE_EPOCH=1750000000"

func rootfs(t *testing.T, dir, cache, variant string) []byte {
	t.Helper()
	out := filepath.Join(dir, "root.tar")
	os.Remove(out)
	_, stderr, code := run(t, dir, []string{epoch}, "rootfs", "--cache", cache, variant, "-o", out, "--manifest", filepath.Join(dir, "inputs.json"))
	if code != 0 {
		t.Fatalf("osbuild rootfs failed (%d): %s", code, stderr)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// TestRootfsFromRegistryLayoutAndArchive is issue 1's checks 1, 2 and 4: the same three images from a
// real registry, from OCI layouts and from docker archives give one golden root, byte for byte; a second
// run downloads no blob; resolved digests are recorded.
func TestRootfsFromRegistryLayoutAndArchive(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a registry")
	}
	imgs := mergeImages(t)
	reg := registrytest.Start(t)
	work := t.TempDir()
	order := []string{"base", "middle", "top"}

	var regRefs, ociRefs, archiveRefs []string
	for _, n := range order {
		ref := fmt.Sprintf("%s/test/%s:v1", reg.Host, n)
		r, err := name.ParseReference(ref, name.Insecure)
		if err != nil {
			t.Fatal(err)
		}
		if err := remote.Write(r, imgs[n]); err != nil {
			t.Fatalf("push %s: %v", ref, err)
		}
		regRefs = append(regRefs, ref)

		lp := filepath.Join(work, "layouts", n)
		l, err := layout.Write(lp, empty.Index)
		if err != nil {
			t.Fatal(err)
		}
		if err := l.AppendImage(imgs[n], layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": "v1"})); err != nil {
			t.Fatal(err)
		}
		ociRefs = append(ociRefs, "oci:layouts/"+n+":v1")

		ap := filepath.Join(work, n+"-archive.tar")
		tag, _ := name.NewTag("example.com/" + n + ":v1")
		if err := tarball.WriteToFile(ap, tag, imgs[n]); err != nil {
			t.Fatal(err)
		}
		archiveRefs = append(archiveRefs, "docker-archive:"+n+"-archive.tar")
	}

	cache := filepath.Join(work, "cache")
	regDir := filepath.Join(work, "reg")
	os.Mkdir(regDir, 0o755)
	first := rootfs(t, regDir, cache, writeVariant(t, regDir, regRefs...))
	pulls := reg.BlobGets()
	// 3 configs and 4 layers.
	if pulls != 7 {
		t.Errorf("first build made %d blob requests, want 7 (3 configs + 4 layers)\n%s", pulls, reg.Logs())
	}
	golden(t, "merge.golden", tarListing(t, first))

	var inputs []struct {
		Ref, Pinned, Digest string
	}
	raw, _ := os.ReadFile(filepath.Join(regDir, "inputs.json"))
	if err := json.Unmarshal(raw, &inputs); err != nil || len(inputs) != 3 {
		t.Fatalf("inputs.json: %v %s", err, raw)
	}
	for i, in := range inputs {
		d, _ := imgs[order[i]].Digest()
		if in.Digest != d.String() || in.Pinned != fmt.Sprintf("%s/test/%s@%s", reg.Host, order[i], d) {
			t.Errorf("input %d recorded as %+v, want digest %s", i, in, d)
		}
	}

	second := rootfs(t, regDir, cache, filepath.Join(regDir, "variant.yaml"))
	if !bytes.Equal(first, second) {
		t.Error("two runs gave different tars")
	}
	if n := reg.BlobGets(); n != pulls {
		t.Errorf("second run made %d blob requests, want none", n-pulls)
	}

	// Layouts and archives each start from an empty cache, so they read their own blobs.
	for _, src := range []struct {
		name string
		refs []string
	}{{"oci", ociRefs}, {"docker-archive", archiveRefs}} {
		got := rootfs(t, work, filepath.Join(work, "cache-"+src.name), writeVariant(t, work, src.refs...))
		if !bytes.Equal(first, got) {
			t.Errorf("%s: the tar differs from the registry's:\n%s", src.name, tarListing(t, got))
		}
	}
}

// TestRootfsRefusesHostileLayers is issue 1's check 3 through the CLI: each hostile layer is refused with
// the layer digest and the path, and nothing is written: no output, nothing outside the work folder.
func TestRootfsRefusesHostileLayers(t *testing.T) {
	outside := filepath.Join(t.TempDir(), "outside")
	os.Mkdir(outside, 0o755)
	rel, _ := filepath.Rel("/", outside)
	tests := []struct {
		name    string
		entries []e
		path    string
	}{
		{"dotdot", []e{{Name: "../../../../../../../../" + rel + "/evil", Body: "x"}}, "../../../../../../../../" + rel + "/evil"},
		{"symlink escape", []e{{Name: "up", Type: tar.TypeSymlink, Link: "../../../../../../../../../" + rel}, {Name: "up/evil", Body: "x"}}, "up/evil"},
		{"absolute-looking symlink chain escape", []e{{Name: "a/"}, {Name: "a/b", Type: tar.TypeSymlink, Link: "../../.."}, {Name: "a/b/" + rel + "/evil", Body: "x"}}, "a/b/" + rel + "/evil"},
		{"hardlink outside", []e{{Name: "hl", Type: tar.TypeLink, Link: "../../../../../../../etc/passwd"}}, "hl"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			work := t.TempDir()
			img := imagetest.Image(t, "amd64", imagetest.Tar(t, tc.entries...))
			l, err := layout.Write(filepath.Join(work, "layout"), empty.Index)
			if err != nil {
				t.Fatal(err)
			}
			if err := l.AppendImage(img); err != nil {
				t.Fatal(err)
			}
			layers, _ := img.Layers()
			diffID, _ := layers[0].DiffID()
			v := writeVariant(t, work, "oci:layout")
			before := listDir(t, work)
			_, stderr, code := run(t, work, nil, "rootfs", "--cache", filepath.Join(t.TempDir(), "c"), v, "-o", filepath.Join(work, "root.tar"))
			if code == 0 {
				t.Fatal("a hostile layer was accepted")
			}
			if !strings.Contains(stderr, diffID.String()) || !strings.Contains(stderr, fmt.Sprintf("%q", tc.path)) || !strings.Contains(stderr, "refusing") {
				t.Fatalf("the error must name the layer %s and the path %q:\n%s", diffID, tc.path, stderr)
			}
			if after := listDir(t, work); after != before {
				t.Fatalf("files changed in the work folder:\nbefore:\n%s\nafter:\n%s", before, after)
			}
			if entries, _ := os.ReadDir(outside); len(entries) != 0 {
				t.Fatalf("something was written outside: %v", entries)
			}
		})
	}
}

func listDir(t *testing.T, dir string) string {
	var out []string
	filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err == nil {
			out = append(out, fmt.Sprintf("%s %d", p, info.Size()))
		}
		return nil
	})
	return strings.Join(out, "\n")
}

func TestValidateExitCodes(t *testing.T) {
	dir := t.TempDir()
	good := writeVariant(t, dir, "example.com/base:1")
	if out, stderr, code := run(t, dir, nil, "validate", good); code != 0 || !strings.Contains(out, "ok") {
		t.Fatalf("validate good: %d %s %s", code, out, stderr)
	}
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("name: x\nversion: 1\narch: amd64\nlayers: []\nkernel: x\n"), 0o644)
	_, stderr, code := run(t, dir, nil, "validate", bad)
	if code == 0 || !strings.Contains(stderr, bad+":5:1: kernel: unknown key") {
		t.Fatalf("validate bad: exit %d, %s", code, stderr)
	}
}

func TestRootfsMissingImageNamesRef(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a registry")
	}
	reg := registrytest.Start(t)
	dir := t.TempDir()
	ref := reg.Host + "/no/such:image"
	v := writeVariant(t, dir, ref)
	_, stderr, code := run(t, dir, nil, "rootfs", "--cache", filepath.Join(dir, "c"), v, "-o", filepath.Join(dir, "root.tar"))
	if code == 0 || !strings.Contains(stderr, "image "+ref+" not found") || !strings.Contains(stderr, "variant.yaml:5: layers[0]") {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, "root.tar")); err == nil {
		t.Fatal("an output was left behind")
	}
}
