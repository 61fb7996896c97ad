package layers

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"

	"osbuild.dev/osbuild/atomicfile"
)

// Cache keeps image configs and uncompressed layers by digest, so that a second build of the same inputs
// downloads nothing and later stages can read any file of any layer at its offset. Entries are written
// under a temporary name and renamed once their digest has been checked: a cache entry is always whole.
type Cache struct {
	Dir string
}

// DefaultCacheDir is $XDG_CACHE_HOME/osbuild, or ~/.cache/osbuild.
func DefaultCacheDir() string {
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" {
		return filepath.Join(d, "osbuild")
	}
	if home, err := os.UserHomeDir(); err == nil {
		return filepath.Join(home, ".cache", "osbuild")
	}
	return filepath.Join(os.TempDir(), "osbuild-cache")
}

func (c *Cache) path(kind string, h v1.Hash) string {
	return filepath.Join(c.Dir, kind, h.Algorithm, h.Hex)
}

// DigestError is a blob whose bytes do not match the digest it was asked for.
type DigestError struct {
	What      string
	Want, Got v1.Hash
}

func (e *DigestError) Error() string {
	return fmt.Sprintf("%s: digest mismatch: want %s, got %s; the registry or the file is corrupt or was tampered with", e.What, e.Want, e.Got)
}

// Layer is one uncompressed layer in the cache.
type Layer struct {
	Digest v1.Hash // as the manifest names it (compressed); zero for docker archives
	DiffID v1.Hash
	Path   string
	Size   int64
}

// Pulled is an image whose config and layers are all in the cache.
type Pulled struct {
	*Image
	Config    *v1.ConfigFile
	RawConfig []byte
	Layers    []Layer
}

// Pull brings the image's config and layers into the cache (what is there already is not fetched) and
// checks that it is a Linux image for arch. Every byte is checked against its digest while it streams.
func (c *Cache) Pull(ctx context.Context, img *Image, arch string, progress *Progress) (*Pulled, error) {
	var cfgDigest v1.Hash
	var manifest *v1.Manifest
	var err error
	if img.compressed {
		if manifest, err = img.Image.Manifest(); err != nil {
			return nil, fmt.Errorf("image %s: manifest: %w", img.Ref, err)
		}
		cfgDigest = manifest.Config.Digest
	} else if cfgDigest, err = img.Image.ConfigName(); err != nil {
		return nil, fmt.Errorf("image %s: config: %w", img.Ref, err)
	}
	raw, err := c.config(img, cfgDigest)
	if err != nil {
		return nil, err
	}
	cfg, err := v1.ParseConfigFile(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("image %s: config: %w", img.Ref, err)
	}
	if cfg.Architecture != "" && cfg.Architecture != arch || cfg.OS != "" && cfg.OS != "linux" {
		return nil, fmt.Errorf("image %s is for %s/%s, but the variant is for linux/%s: use an image (or an index) built for %s",
			img.Ref, cfg.OS, cfg.Architecture, arch, arch)
	}
	diffIDs := cfg.RootFS.DiffIDs
	if manifest != nil && len(manifest.Layers) != len(diffIDs) {
		return nil, fmt.Errorf("image %s: the manifest has %d layers but the config %d diff ids: the image is malformed", img.Ref, len(manifest.Layers), len(diffIDs))
	}
	p := &Pulled{Image: img, Config: cfg, RawConfig: raw}
	for i, diffID := range diffIDs {
		l := Layer{DiffID: diffID, Path: c.path("diffs", diffID)}
		if manifest != nil {
			l.Digest = manifest.Layers[i].Digest
		}
		if st, err := os.Stat(l.Path); err == nil {
			l.Size = st.Size()
			p.Layers = append(p.Layers, l)
			continue
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if l.Size, err = c.fetchLayer(img, l, manifest, i, progress); err != nil {
			return nil, err
		}
		p.Layers = append(p.Layers, l)
	}
	return p, nil
}

func (c *Cache) config(img *Image, d v1.Hash) ([]byte, error) {
	p := c.path("blobs", d)
	if raw, err := os.ReadFile(p); err == nil {
		if got := sha256Hash(raw); got == d {
			return raw, nil
		}
		// A damaged cache entry is fetched again rather than trusted.
	}
	raw, err := img.Image.RawConfigFile()
	if err != nil {
		return nil, fmt.Errorf("image %s: config: %w", img.Ref, err)
	}
	if got := sha256Hash(raw); got != d {
		return nil, &DigestError{What: "image " + img.Ref + " config", Want: d, Got: got}
	}
	return raw, c.write(p, func(w io.Writer) error { _, err := w.Write(raw); return err })
}

func sha256Hash(b []byte) v1.Hash {
	sum := sha256.Sum256(b)
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}
}

// fetchLayer streams one layer into the cache uncompressed, checking the compressed digest (registries and
// layouts) and the diff id at once.
func (c *Cache) fetchLayer(img *Image, l Layer, manifest *v1.Manifest, i int, progress *Progress) (int64, error) {
	var rc io.ReadCloser
	var total int64 = -1
	var err error
	label := l.DiffID.String()
	if img.compressed {
		label = l.Digest.String()
		total = manifest.Layers[i].Size
		var layer v1.Layer
		if layer, err = img.Image.LayerByDigest(l.Digest); err == nil {
			rc, err = layer.Compressed()
		}
	} else {
		var layer v1.Layer
		if layer, err = img.Image.LayerByDiffID(l.DiffID); err == nil {
			rc, err = layer.Uncompressed()
		}
	}
	if err != nil {
		return 0, fmt.Errorf("image %s: layer %s: %w", img.Ref, label, err)
	}
	defer rc.Close()
	bar := progress.Start(img.Ref, label, total)
	defer bar.Done()

	var compressedHash hash.Hash
	src := io.Reader(io.TeeReader(rc, bar))
	if img.compressed {
		compressedHash = sha256.New()
		src = io.TeeReader(src, compressedHash)
	}
	var size int64
	err = c.write(l.Path, func(w io.Writer) error {
		diffHash := sha256.New()
		dec, closeDec, err := decompress(bufio.NewReaderSize(src, 1<<20))
		if err != nil {
			return err
		}
		defer closeDec()
		if size, err = io.Copy(io.MultiWriter(w, diffHash), dec); err != nil {
			return err
		}
		// Drain what the decompressor left (padding), so that the compressed digest covers the whole blob.
		if _, err := io.Copy(io.Discard, src); err != nil {
			return err
		}
		if compressedHash != nil {
			got := v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(compressedHash.Sum(nil))}
			if got != l.Digest {
				return &DigestError{What: "image " + img.Ref + " layer", Want: l.Digest, Got: got}
			}
		}
		got := v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(diffHash.Sum(nil))}
		if got != l.DiffID {
			return &DigestError{What: "image " + img.Ref + " layer " + label + " (uncompressed)", Want: l.DiffID, Got: got}
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("image %s: layer %s: %w", img.Ref, label, err)
	}
	return size, nil
}

// decompress recognises gzip and zstd by their magic; anything else is taken as an uncompressed tar.
func decompress(r *bufio.Reader) (io.Reader, func(), error) {
	magic, _ := r.Peek(4)
	switch {
	case bytes.HasPrefix(magic, []byte{0x1f, 0x8b}):
		zr, err := gzip.NewReader(r)
		if err != nil {
			return nil, nil, err
		}
		zr.Multistream(true)
		return zr, func() { zr.Close() }, nil
	case bytes.Equal(magic, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		zr, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, nil, err
		}
		return zr, zr.Close, nil
	}
	return r, func() {}, nil
}

// write puts a cache entry in place atomically, making its folder first.
func (c *Cache) write(p string, fill func(io.Writer) error) error {
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return fmt.Errorf("cache: %w; pass --cache DIR to use another folder", err)
	}
	return atomicfile.Write(p, fill)
}

// MarshalJSON keeps the build manifest small: the path is local to this machine.
func (l Layer) MarshalJSON() ([]byte, error) {
	type out struct {
		Digest string `json:"digest,omitempty"`
		DiffID string `json:"diff_id"`
		Size   int64  `json:"size"`
	}
	o := out{DiffID: l.DiffID.String(), Size: l.Size}
	if l.Digest != (v1.Hash{}) {
		o.Digest = l.Digest.String()
	}
	return json.Marshal(o)
}

// Uncompressed returns p itself when it is a plain tar, or the path of a cached uncompressed copy of a
// gzip or zstd one: tree content is read at offsets, which a compressed stream cannot give.
func Uncompressed(p string, c *Cache) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	br := bufio.NewReaderSize(f, 1<<20)
	magic, _ := br.Peek(4)
	if !bytes.HasPrefix(magic, []byte{0x1f, 0x8b}) && !bytes.Equal(magic, []byte{0x28, 0xb5, 0x2f, 0xfd}) {
		return p, nil
	}
	h := sha256.New()
	if _, err := io.Copy(h, br); err != nil {
		return "", err
	}
	out := c.path("tars", v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(h.Sum(nil))})
	if _, err := os.Stat(out); err == nil {
		return out, nil
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return "", err
	}
	err = c.write(out, func(w io.Writer) error {
		dec, closeDec, err := decompress(bufio.NewReaderSize(f, 1<<20))
		if err != nil {
			return err
		}
		defer closeDec()
		_, err = io.Copy(w, dec)
		return err
	})
	if err != nil {
		return "", fmt.Errorf("decompress %s: %w", p, err)
	}
	return out, nil
}
