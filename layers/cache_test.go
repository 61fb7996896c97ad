package layers

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"

	"osbuild.dev/osbuild/internal/imagetest"
)

func writeLayout(t *testing.T) (string, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "layout")
	img := imagetest.Image(t, "amd64", imagetest.Tar(t, te{Name: "etc/hostname", Body: "x\n"}))
	l, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.AppendImage(img); err != nil {
		t.Fatal(err)
	}
	layers, _ := img.Layers()
	d, _ := layers[0].Digest()
	return dir, filepath.Join(dir, "blobs", d.Algorithm, d.Hex)
}

func TestPullCachesAndVerifies(t *testing.T) {
	dir, blob := writeLayout(t)
	ctx := context.Background()
	c := &Cache{Dir: t.TempDir()}
	img, err := Resolve(ctx, "oci:"+dir, ResolveOptions{Arch: "amd64"})
	if err != nil {
		t.Fatal(err)
	}
	p, err := c.Pull(ctx, img, "amd64", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p.Layers[0].Path); err != nil {
		t.Fatalf("layer not cached: %v", err)
	}

	// Another arch is refused by name.
	if _, err := (&Cache{Dir: t.TempDir()}).Pull(ctx, img, "arm64", nil); err == nil {
		t.Fatal("an amd64 image was accepted for arm64")
	}

	// A blob whose bytes changed on disk is caught while it streams, and nothing lands in the cache.
	// It is still a valid gzip stream, so only the digest check can catch it.
	var other bytes.Buffer
	zw := gzip.NewWriter(&other)
	zw.Write(imagetest.Tar(t, te{Name: "etc/hostname", Body: "tampered\n"}))
	zw.Close()
	os.WriteFile(blob, other.Bytes(), 0o644)
	fresh := &Cache{Dir: t.TempDir()}
	img, err = Resolve(ctx, "oci:"+dir, ResolveOptions{Arch: "amd64"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = fresh.Pull(ctx, img, "amd64", nil)
	var de *DigestError
	if !errors.As(err, &de) {
		t.Fatalf("want a digest mismatch, got %v", err)
	}
	if _, statErr := os.Stat(filepath.Join(fresh.Dir, "diffs")); statErr == nil {
		entries, _ := os.ReadDir(filepath.Join(fresh.Dir, "diffs", "sha256"))
		if len(entries) != 0 {
			t.Fatalf("a corrupt layer was cached: %v", entries)
		}
	}
}
