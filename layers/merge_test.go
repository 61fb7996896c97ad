package layers

import (
	"archive/tar"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"osbuild.dev/osbuild/internal/imagetest"
	"osbuild.dev/osbuild/tree"
)

type te = imagetest.Entry

func layerFile(t *testing.T, entries ...te) *os.File {
	t.Helper()
	p := filepath.Join(t.TempDir(), "layer.tar")
	if err := os.WriteFile(p, imagetest.Tar(t, entries...), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// listing is a compact, sorted description of a tree for assertions.
func listing(t *testing.T, tr *tree.Tree) string {
	t.Helper()
	var lines []string
	err := tr.Walk(func(p string, n *tree.Node) error {
		line := "/" + p + " " + n.Type.String()
		switch n.Type {
		case tree.TypeRegular:
			rc, err := n.Open()
			if err != nil {
				return err
			}
			b, _ := io.ReadAll(rc)
			rc.Close()
			line += " " + string(b)
		case tree.TypeSymlink:
			line += " -> " + n.Target
		}
		lines = append(lines, line)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

func TestApplyTarMergeRules(t *testing.T) {
	base := []te{
		{Name: "etc/"}, {Name: "etc/a", Body: "a1"}, {Name: "etc/b", Body: "b1"},
		{Name: "opq/"}, {Name: "opq/old", Body: "old"},
		{Name: "d2f/"}, {Name: "d2f/x", Body: "x"},
		{Name: "f2d", Body: "file"},
		{Name: "lower", Body: "lower"},
		{Name: "lib", Type: tar.TypeSymlink, Link: "usr/lib"}, {Name: "usr/lib/"},
	}
	tests := []struct {
		name  string
		upper []te
		want  []string // lines that must be in the listing
		gone  []string // paths that must be absent
	}{
		{"whiteout removes a lower file", []te{{Name: "etc/.wh.a"}}, []string{"/etc/b file b1"}, []string{"/etc/a"}},
		{"whiteout does not hide the same layer's entry", []te{{Name: "etc/a", Body: "a2"}, {Name: "etc/.wh.a"}}, []string{"/etc/a file a2"}, nil},
		{"opaque dir empties the lower dir but keeps this layer's entries", []te{{Name: "opq/"}, {Name: "opq/.wh..wh..opq"}, {Name: "opq/new", Body: "new"}},
			[]string{"/opq/new file new"}, []string{"/opq/old"}},
		{"dir replaced by a file", []te{{Name: "d2f", Body: "now a file"}}, []string{"/d2f file now a file"}, []string{"/d2f/x"}},
		{"file replaced by a dir", []te{{Name: "f2d/"}, {Name: "f2d/c", Body: "c"}}, []string{"/f2d dir", "/f2d/c file c"}, nil},
		{"hardlink to a lower file", []te{{Name: "hl", Type: tar.TypeLink, Link: "lower"}}, []string{"/hl file lower"}, nil},
		{"hardlink before its target", []te{{Name: "early", Type: tar.TypeLink, Link: "late"}, {Name: "late", Body: "late"}}, []string{"/early file late"}, nil},
		{"write through an in-root symlink", []te{{Name: "lib/libx.so", Body: "so"}}, []string{"/usr/lib/libx.so file so"}, nil},
		{"absolute hardlink name is relative to the root", []te{{Name: "hl", Type: tar.TypeLink, Link: "/lower"}}, []string{"/hl file lower"}, nil},
		{"missing parents are created", []te{{Name: "new/deep/file", Body: "z"}}, []string{"/new/deep dir", "/new/deep/file file z"}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr := tree.New()
			if err := ApplyTar(tr, layerFile(t, base...), "base", Options{}); err != nil {
				t.Fatal(err)
			}
			if err := ApplyTar(tr, layerFile(t, tc.upper...), "upper", Options{}); err != nil {
				t.Fatal(err)
			}
			got := listing(t, tr)
			for _, w := range tc.want {
				if !strings.Contains(got+"\n", w+"\n") {
					t.Errorf("missing %q in\n%s", w, got)
				}
			}
			for _, g := range tc.gone {
				if tr.Lookup(g) != nil {
					t.Errorf("%s should be gone:\n%s", g, got)
				}
			}
		})
	}
}

func TestApplyTarHardlinkSharesNode(t *testing.T) {
	tr := tree.New()
	if err := ApplyTar(tr, layerFile(t, te{Name: "a", Body: "x"}, te{Name: "b", Type: tar.TypeLink, Link: "a"}), "l", Options{}); err != nil {
		t.Fatal(err)
	}
	if tr.Lookup("a") != tr.Lookup("b") || tr.LinkCounts()[tr.Lookup("a")] != 2 {
		t.Fatal("a and b should be one inode with two links")
	}
	// Replacing one name later must not change the other (a new inode, as a runtime unlinks first).
	if err := ApplyTar(tr, layerFile(t, te{Name: "a", Body: "new"}), "l2", Options{}); err != nil {
		t.Fatal(err)
	}
	if got := listing(t, tr); !strings.Contains(got, "/b file x") || !strings.Contains(got, "/a file new") {
		t.Fatal(got)
	}
}

func TestApplyTarRefusesHostileEntries(t *testing.T) {
	tests := []struct {
		name    string
		entries []te
		path    string // the entry the error must name
	}{
		{"dotdot path", []te{{Name: "../../etc/passwd", Body: "x"}}, "../../etc/passwd"},
		{"dotdot inside a path", []te{{Name: "a/../../escape", Body: "x"}}, "a/../../escape"},
		{"write through a symlink that leaves the root", []te{{Name: "up", Type: tar.TypeSymlink, Link: "../../.."}, {Name: "up/tmp/evil", Body: "x"}}, "up/tmp/evil"},
		{"write through a chain of symlinks that leaves the root", []te{{Name: "d/"}, {Name: "d/s1", Type: tar.TypeSymlink, Link: "../s2"}, {Name: "s2", Type: tar.TypeSymlink, Link: "d/../.."}, {Name: "d/s1/evil", Body: "x"}}, "d/s1/evil"},
		{"hardlink to a path outside", []te{{Name: "hl", Type: tar.TypeLink, Link: "../../etc/shadow"}}, "hl"},
		{"hardlink through a symlink that leaves the root", []te{{Name: "up", Type: tar.TypeSymlink, Link: ".."}, {Name: "hl", Type: tar.TypeLink, Link: "up/etc/shadow"}}, "hl"},
		{"whiteout of dotdot", []te{{Name: "a/.wh..."}}, "a/.wh..."},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr := tree.New()
			err := ApplyTar(tr, layerFile(t, tc.entries...), "sha256:feedface", Options{})
			var he *HostileError
			if !errors.As(err, &he) {
				t.Fatalf("want a HostileError, got %v", err)
			}
			if he.Layer != "sha256:feedface" || he.Path != tc.path {
				t.Fatalf("error names layer %q path %q, want sha256:feedface and %q: %v", he.Layer, he.Path, tc.path, err)
			}
			if !strings.Contains(err.Error(), "sha256:feedface") || !strings.Contains(err.Error(), tc.path) {
				t.Fatalf("message must name the layer and the path: %v", err)
			}
		})
	}
}

func TestApplyTarMetadata(t *testing.T) {
	epoch := int64(1600000000)
	tr := tree.New()
	f := layerFile(t,
		te{Name: "bin/ping", Body: "elf", Mode: 0o4755, Xattrs: map[string]string{"security.capability": "\x01\x00\x00\x02", "security.selinux": "system_u:object_r:bin_t:s0\x00"}},
		te{Name: "dev/null", Type: tar.TypeChar},
		te{Name: "run/fifo", Type: tar.TypeFifo},
		te{Name: "tmp/", Mode: 0o1777},
	)
	if err := ApplyTar(tr, f, "l", Options{SourceDateEpoch: &epoch}); err != nil {
		t.Fatal(err)
	}
	ping := tr.Lookup("bin/ping")
	if ping.Mode != 0o4755 || ping.Xattrs["security.capability"] != "\x01\x00\x00\x02" || ping.Xattrs["security.selinux"] != "system_u:object_r:bin_t:s0\x00" {
		t.Fatalf("ping: %+v", ping)
	}
	if ping.ModTime != epoch {
		t.Fatalf("mtime %d not clamped to %d", ping.ModTime, epoch)
	}
	if tr.Lookup("dev/null").Type != tree.TypeChar || tr.Lookup("run/fifo").Type != tree.TypeFIFO || tr.Lookup("tmp").Mode != 0o1777 {
		t.Fatal("device, fifo or sticky dir wrong")
	}
	if tr.Lookup("dev").ModTime != epoch {
		t.Fatal("implicit parent should carry the epoch")
	}
}
