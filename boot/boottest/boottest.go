// Package boottest provides real boot ingredients for tests: Debian packages fetched with apt into a
// cache shared between runs, and trees built from host directories.
package boottest

import (
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"osbuild.dev/osbuild/tree"
)

// CacheDir is where downloads are kept between test runs: $XDG_CACHE_HOME/osbuild-test, else
// ~/.cache/osbuild-test.
func CacheDir(t testing.TB) string {
	t.Helper()
	base := os.Getenv("XDG_CACHE_HOME")
	if base == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			t.Fatalf("no cache directory: set XDG_CACHE_HOME: %v", err)
		}
		base = filepath.Join(home, ".cache")
	}
	d := filepath.Join(base, "osbuild-test")
	if err := os.MkdirAll(d, 0o755); err != nil {
		t.Fatal(err)
	}
	return d
}

var mu sync.Mutex

// Package downloads a Debian package with apt-get (following a metapackage such as
// linux-image-cloud-amd64 to the real package it depends on), extracts it with dpkg-deb into the cache
// and returns the directory. Later calls reuse it.
func Package(t testing.TB, name string) string {
	t.Helper()
	mu.Lock()
	defer mu.Unlock()
	cache := CacheDir(t)
	real := name
	if rest, ok := strings.CutPrefix(name, "linux-image-"); ok && rest != "" && (rest[0] < '0' || rest[0] > '9') {
		out, err := exec.Command("apt-cache", "depends", name).Output()
		if err != nil {
			t.Fatalf("apt-cache depends %s: %v", name, err)
		}
		for _, line := range strings.Split(string(out), "\n") {
			if d, ok := strings.CutPrefix(strings.TrimSpace(line), "Depends: "); ok && strings.HasPrefix(d, "linux-image-") {
				real = d
				break
			}
		}
	}
	dir := filepath.Join(cache, real+".d")
	if _, err := os.Stat(filepath.Join(dir, ".complete")); err == nil {
		return dir
	}
	debs, _ := filepath.Glob(filepath.Join(cache, real+"_*.deb"))
	if len(debs) == 0 {
		cmd := exec.Command("apt-get", "download", real)
		cmd.Dir = cache
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("apt-get download %s: %v\n%s", real, err, out)
		}
		debs, _ = filepath.Glob(filepath.Join(cache, real+"_*.deb"))
		if len(debs) == 0 {
			t.Fatalf("apt-get download %s left no .deb in %s", real, cache)
		}
	}
	os.RemoveAll(dir)
	if out, err := exec.Command("dpkg-deb", "-x", debs[len(debs)-1], dir).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb -x %s: %v\n%s", debs[0], err, out)
	}
	if err := os.WriteFile(filepath.Join(dir, ".complete"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// HostTree indexes a host directory as a tree (contents read lazily from the files). Owners are root;
// only regular files, directories and symlinks are kept.
func HostTree(t testing.TB, dir string) *tree.Tree {
	t.Helper()
	tr := tree.New()
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if rel == "." || rel == ".complete" {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		parent := tr.Lookup(filepath.Dir(rel))
		if parent == nil || !parent.IsDir() {
			return fmt.Errorf("%s: parent missing", rel)
		}
		var n *tree.Node
		switch {
		case d.IsDir():
			n = tree.NewDir(uint32(info.Mode().Perm()), 0, 0, 0)
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			n = &tree.Node{Type: tree.TypeSymlink, Mode: 0o777, Target: target}
		case d.Type().IsRegular():
			n = &tree.Node{Type: tree.TypeRegular, Mode: uint32(info.Mode().Perm()), Size: info.Size(), Content: tree.FileContent(p)}
		default:
			return nil
		}
		parent.SetChild(filepath.Base(rel), n)
		return nil
	})
	if err != nil {
		t.Fatalf("index %s: %v", dir, err)
	}
	return tr
}
