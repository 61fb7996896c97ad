// Package builder runs the stages in order: it turns a variant into a merged root, and the root into the
// outputs. It owns no format itself; each stage is a package of its own.
package builder

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"osbuild.dev/osbuild/layers"
	"osbuild.dev/osbuild/tree"
	"osbuild.dev/osbuild/variant"
)

// Options are the knobs of a build that are not part of the variant: where things are cached, how to
// reach registries, and the time the build pretends it is.
type Options struct {
	CacheDir  string   // default layers.DefaultCacheDir()
	Insecure  []string // registry hosts reached over plain HTTP
	Transport http.RoundTripper
	// SourceDateEpoch clamps every mtime; nil reads SOURCE_DATE_EPOCH from the environment.
	SourceDateEpoch *int64
	Progress        *layers.Progress
}

// Input records where one layer source came from, pinned, so that a build can be repeated exactly.
type Input struct {
	Kind   string         `json:"kind"` // image, dir, tar
	Ref    string         `json:"ref"`
	Pinned string         `json:"pinned,omitempty"`
	Digest string         `json:"digest,omitempty"` // image manifest digest, or sha256 of a tar
	Config string         `json:"config,omitempty"` // image config digest
	Layers []layers.Layer `json:"layers,omitempty"`
}

// Root is a merged root and what went into it.
type Root struct {
	Tree            *tree.Tree
	Inputs          []Input
	SourceDateEpoch *int64
}

// Close releases the layer files the tree reads from.
func (r *Root) Close() error { return r.Tree.Close() }

// EpochFromEnv reads SOURCE_DATE_EPOCH; unset gives nil.
func EpochFromEnv() (*int64, error) {
	v, ok := os.LookupEnv("SOURCE_DATE_EPOCH")
	if !ok || v == "" {
		return nil, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return nil, fmt.Errorf("SOURCE_DATE_EPOCH=%q is not a number of seconds since 1970", v)
	}
	return &n, nil
}

func (o *Options) fill() error {
	if o.CacheDir == "" {
		o.CacheDir = layers.DefaultCacheDir()
	}
	if o.SourceDateEpoch == nil {
		e, err := EpochFromEnv()
		if err != nil {
			return err
		}
		o.SourceDateEpoch = e
	}
	return nil
}

// BuildRoot resolves the variant's layers, pulls what the cache lacks, and merges everything into one tree:
// images' layers in order, then dir and tar layers where they stand in the list, then files.
func BuildRoot(ctx context.Context, spec *variant.Spec, opts Options) (_ *Root, err error) {
	if err := opts.fill(); err != nil {
		return nil, err
	}
	cache := &layers.Cache{Dir: opts.CacheDir}
	lopts := layers.Options{SourceDateEpoch: opts.SourceDateEpoch}
	root := &Root{Tree: tree.New(), SourceDateEpoch: opts.SourceDateEpoch}
	root.Tree.Root.ModTime = 0
	if opts.SourceDateEpoch != nil {
		root.Tree.Root.ModTime = *opts.SourceDateEpoch
	}
	defer func() {
		if err != nil {
			root.Close()
		}
	}()
	for i, l := range spec.Layers {
		where := fmt.Sprintf("%s:%d: layers[%d]", l.Pos.File, l.Pos.Line, i)
		switch {
		case l.Image != "":
			img, err := layers.Resolve(ctx, l.Image, layers.ResolveOptions{Arch: spec.Arch, Insecure: opts.Insecure, Transport: opts.Transport})
			if err != nil {
				return nil, fmt.Errorf("%s: %w", where, err)
			}
			pulled, err := cache.Pull(ctx, img, spec.Arch, opts.Progress)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", where, err)
			}
			in := Input{Kind: "image", Ref: l.Image, Pinned: img.Pinned, Digest: img.Digest.String(), Config: pulledConfig(pulled), Layers: pulled.Layers}
			root.Inputs = append(root.Inputs, in)
			for _, layer := range pulled.Layers {
				if err := applyFile(root.Tree, layer.Path, layer.DiffID.String(), lopts); err != nil {
					return nil, fmt.Errorf("%s: image %s: %w", where, l.Image, err)
				}
			}
		case l.Tar != "":
			sum, err := fileSHA256(l.Tar)
			if err != nil {
				return nil, fmt.Errorf("%s: tar layer: %w", where, err)
			}
			p, err := layers.Uncompressed(l.Tar, cache)
			if err != nil {
				return nil, fmt.Errorf("%s: tar layer: %w", where, err)
			}
			root.Inputs = append(root.Inputs, Input{Kind: "tar", Ref: l.Tar, Digest: "sha256:" + sum})
			if err := applyFile(root.Tree, p, l.Tar, lopts); err != nil {
				return nil, fmt.Errorf("%s: %w", where, err)
			}
		case l.Dir != "":
			st, err := os.Stat(l.Dir)
			if err != nil || !st.IsDir() {
				return nil, fmt.Errorf("%s: dir layer %s is not a directory: fix the path (relative paths start at the variant's folder)", where, l.Dir)
			}
			root.Inputs = append(root.Inputs, Input{Kind: "dir", Ref: l.Dir})
			if err := layers.ApplyDir(root.Tree, l.Dir, layers.DirOptions{Options: lopts}); err != nil {
				return nil, fmt.Errorf("%s: %w", where, err)
			}
		}
	}
	for i, f := range spec.Files {
		where := fmt.Sprintf("%s:%d: files[%d]", f.Pos.File, f.Pos.Line, i)
		var content tree.Content
		var size int64
		if f.Content != nil {
			content, size = tree.BytesContent(*f.Content), int64(len(*f.Content))
		} else {
			st, err := os.Stat(f.Source)
			if err != nil || !st.Mode().IsRegular() {
				return nil, fmt.Errorf("%s: source %s is not a readable file: fix the path (relative paths start at the variant's folder)", where, f.Source)
			}
			content, size = tree.FileContent(f.Source), st.Size()
		}
		mode := uint32(0o644)
		if f.Mode != nil {
			mode = uint32(*f.Mode)
		}
		if err := layers.AddFile(root.Tree, f.Path, content, size, mode, f.UID, f.GID, lopts); err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
	}
	return root, nil
}

func pulledConfig(p *layers.Pulled) string {
	sum := sha256.Sum256(p.RawConfig)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// applyFile opens an uncompressed layer and merges it; the tree keeps the file open for its content.
func applyFile(t *tree.Tree, p, id string, opts layers.Options) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	if err := layers.ApplyTar(t, f, id, opts); err != nil {
		f.Close()
		return err
	}
	t.AddCloser(f)
	return nil
}

func fileSHA256(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// OpenSource turns what `osbuild squashfs SRC` accepts into a tree: a variant file (.yaml or .yml), a
// directory (owners and xattrs kept, as mksquashfs does), or a tar (plain, gzip or zstd).
func OpenSource(ctx context.Context, src string, opts Options) (*tree.Tree, error) {
	if err := opts.fill(); err != nil {
		return nil, err
	}
	st, err := os.Stat(src)
	if err != nil {
		return nil, fmt.Errorf("source: %w", err)
	}
	lopts := layers.Options{SourceDateEpoch: opts.SourceDateEpoch}
	switch ext := strings.ToLower(filepath.Ext(src)); {
	case st.IsDir():
		t := tree.New()
		if err := layers.ApplyDir(t, src, layers.DirOptions{Options: lopts, KeepOwner: true, Xattrs: true}); err != nil {
			return nil, err
		}
		return t, nil
	case ext == ".yaml" || ext == ".yml":
		spec, err := variant.Load(src)
		if err != nil {
			return nil, err
		}
		root, err := BuildRoot(ctx, spec, opts)
		if err != nil {
			return nil, err
		}
		return root.Tree, nil
	default:
		p, err := layers.Uncompressed(src, &layers.Cache{Dir: opts.CacheDir})
		if err != nil {
			return nil, err
		}
		t := tree.New()
		if err := applyFile(t, p, src, lopts); err != nil {
			t.Close()
			return nil, err
		}
		return t, nil
	}
}
