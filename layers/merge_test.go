package layers

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"osbuild.dev/osbuild/tree"
)

// te is one tar entry of a test layer.
type te struct {
	name, link string
	typ        byte
	body       string
	mode       int64
	xattrs     map[string]string
}

func layerFile(t *testing.T, entries ...te) *os.File {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		typ := e.typ
		if typ == 0 {
			typ = tar.TypeReg
			if strings.HasSuffix(e.name, "/") {
				typ = tar.TypeDir
			}
		}
		mode := e.mode
		if mode == 0 {
			mode = 0o644
		}
		hdr := &tar.Header{Name: e.name, Typeflag: typ, Linkname: e.link, Mode: mode, Size: int64(len(e.body)),
			ModTime: time.Unix(1700000000, 0), Format: tar.FormatPAX}
		if typ != tar.TypeReg {
			hdr.Size = 0
		}
		for k, v := range e.xattrs {
			if hdr.PAXRecords == nil {
				hdr.PAXRecords = map[string]string{}
			}
			hdr.PAXRecords["SCHILY.xattr."+k] = v
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if hdr.Size > 0 {
			tw.Write([]byte(e.body))
		}
	}
	tw.Close()
	p := filepath.Join(t.TempDir(), "layer.tar")
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
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
		{name: "etc/"}, {name: "etc/a", body: "a1"}, {name: "etc/b", body: "b1"},
		{name: "opq/"}, {name: "opq/old", body: "old"},
		{name: "d2f/"}, {name: "d2f/x", body: "x"},
		{name: "f2d", body: "file"},
		{name: "lower", body: "lower"},
		{name: "lib", typ: tar.TypeSymlink, link: "usr/lib"}, {name: "usr/lib/"},
	}
	tests := []struct {
		name  string
		upper []te
		want  []string // lines that must be in the listing
		gone  []string // paths that must be absent
	}{
		{"whiteout removes a lower file", []te{{name: "etc/.wh.a"}}, []string{"/etc/b file b1"}, []string{"/etc/a"}},
		{"whiteout does not hide the same layer's entry", []te{{name: "etc/a", body: "a2"}, {name: "etc/.wh.a"}}, []string{"/etc/a file a2"}, nil},
		{"opaque dir empties the lower dir but keeps this layer's entries", []te{{name: "opq/"}, {name: "opq/.wh..wh..opq"}, {name: "opq/new", body: "new"}},
			[]string{"/opq/new file new"}, []string{"/opq/old"}},
		{"dir replaced by a file", []te{{name: "d2f", body: "now a file"}}, []string{"/d2f file now a file"}, []string{"/d2f/x"}},
		{"file replaced by a dir", []te{{name: "f2d/"}, {name: "f2d/c", body: "c"}}, []string{"/f2d dir", "/f2d/c file c"}, nil},
		{"hardlink to a lower file", []te{{name: "hl", typ: tar.TypeLink, link: "lower"}}, []string{"/hl file lower"}, nil},
		{"hardlink before its target", []te{{name: "early", typ: tar.TypeLink, link: "late"}, {name: "late", body: "late"}}, []string{"/early file late"}, nil},
		{"write through an in-root symlink", []te{{name: "lib/libx.so", body: "so"}}, []string{"/usr/lib/libx.so file so"}, nil},
		{"absolute hardlink name is relative to the root", []te{{name: "hl", typ: tar.TypeLink, link: "/lower"}}, []string{"/hl file lower"}, nil},
		{"missing parents are created", []te{{name: "new/deep/file", body: "z"}}, []string{"/new/deep dir", "/new/deep/file file z"}, nil},
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
	if err := ApplyTar(tr, layerFile(t, te{name: "a", body: "x"}, te{name: "b", typ: tar.TypeLink, link: "a"}), "l", Options{}); err != nil {
		t.Fatal(err)
	}
	if tr.Lookup("a") != tr.Lookup("b") || tr.LinkCounts()[tr.Lookup("a")] != 2 {
		t.Fatal("a and b should be one inode with two links")
	}
	// Replacing one name later must not change the other (a new inode, as a runtime unlinks first).
	if err := ApplyTar(tr, layerFile(t, te{name: "a", body: "new"}), "l2", Options{}); err != nil {
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
		{"dotdot path", []te{{name: "../../etc/passwd", body: "x"}}, "../../etc/passwd"},
		{"dotdot inside a path", []te{{name: "a/../../escape", body: "x"}}, "a/../../escape"},
		{"write through a symlink that leaves the root", []te{{name: "up", typ: tar.TypeSymlink, link: "../../.."}, {name: "up/tmp/evil", body: "x"}}, "up/tmp/evil"},
		{"write through a chain of symlinks that leaves the root", []te{{name: "d/"}, {name: "d/s1", typ: tar.TypeSymlink, link: "../s2"}, {name: "s2", typ: tar.TypeSymlink, link: "d/../.."}, {name: "d/s1/evil", body: "x"}}, "d/s1/evil"},
		{"hardlink to a path outside", []te{{name: "hl", typ: tar.TypeLink, link: "../../etc/shadow"}}, "hl"},
		{"hardlink through a symlink that leaves the root", []te{{name: "up", typ: tar.TypeSymlink, link: ".."}, {name: "hl", typ: tar.TypeLink, link: "up/etc/shadow"}}, "hl"},
		{"whiteout of dotdot", []te{{name: "a/.wh..."}}, "a/.wh..."},
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
		te{name: "bin/ping", body: "elf", mode: 0o4755, xattrs: map[string]string{"security.capability": "\x01\x00\x00\x02", "security.selinux": "system_u:object_r:bin_t:s0\x00"}},
		te{name: "dev/null", typ: tar.TypeChar},
		te{name: "run/fifo", typ: tar.TypeFifo},
		te{name: "tmp/", mode: 0o1777},
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
