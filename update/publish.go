package update

import (
	"context"
	"crypto"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"osbuild.dev/osbuild/builder"
)

// PublishOptions say where a release goes.
type PublishOptions struct {
	RegistryOptions
	// To is HOST/REPO (a tag or digest on it is an error: the version and channel are the tags).
	To string
	// Channel is also tagged (e.g. "stable"); empty tags only the version.
	Channel string
	// Signer signs the release; nil publishes unsigned (devices refuse it).
	Signer crypto.Signer
	// Log receives one line per step; nil is quiet.
	Log io.Writer
}

// Published says what Publish pushed.
type Published struct {
	Ref       string `json:"ref"`    // HOST/REPO@sha256:...
	Digest    string `json:"digest"` // manifest digest
	Tags      []string
	Signature string `json:"signature,omitempty"` // HOST/REPO:sha256-HEX.sig
}

// ReadManifest reads a build's NAME-VERSION.json; files it names are relative to its folder.
func ReadManifest(path string) (*builder.Manifest, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var m builder.Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if m.Name == "" || m.Version == "" || m.Root.File == "" || m.Verity.File == "" || m.Kernel.File == "" {
		return nil, fmt.Errorf("%s is not an osbuild build manifest (NAME-VERSION.json from osbuild build)", path)
	}
	return &m, nil
}

// fileLayer is a v1.Layer over a build output whose digest the build manifest already gives: it is
// pushed as is (uncompressed: squashfs, kernels and initrds are compressed already).
type fileLayer struct {
	path      string
	digest    v1.Hash
	size      int64
	mediaType types.MediaType
}

func (l *fileLayer) Digest() (v1.Hash, error)             { return l.digest, nil }
func (l *fileLayer) DiffID() (v1.Hash, error)             { return l.digest, nil }
func (l *fileLayer) Compressed() (io.ReadCloser, error)   { return os.Open(l.path) }
func (l *fileLayer) Uncompressed() (io.ReadCloser, error) { return os.Open(l.path) }
func (l *fileLayer) Size() (int64, error)                 { return l.size, nil }
func (l *fileLayer) MediaType() (types.MediaType, error)  { return l.mediaType, nil }

type rawManifest struct {
	raw []byte
	mt  types.MediaType
}

func (r rawManifest) RawManifest() ([]byte, error)        { return r.raw, nil }
func (r rawManifest) MediaType() (types.MediaType, error) { return r.mt, nil }

// Publish pushes the build described by manifestPath as a release and signs it. The manifest and
// config hold no timestamps: publishing the same build twice gives the same digest.
func Publish(ctx context.Context, manifestPath string, o PublishOptions) (*Published, error) {
	bm, err := ReadManifest(manifestPath)
	if err != nil {
		return nil, err
	}
	dir := filepath.Dir(manifestPath)
	logf := func(format string, args ...any) {
		if o.Log != nil {
			fmt.Fprintf(o.Log, format+"\n", args...)
		}
	}
	if strings.ContainsAny(strings.TrimPrefix(o.To, strings.SplitN(o.To, "/", 2)[0]), ":@") {
		return nil, fmt.Errorf("publish --to %s: give HOST/REPO only; the version and the channel become the tags", o.To)
	}
	src, err := newRegistrySource(ctx, o.To, o.RegistryOptions)
	if err != nil {
		return nil, err
	}
	repo := src.repo
	cfg := ConfigFromManifest(bm)
	cfgRaw, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", manifestPath, err)
	}
	m := Manifest{
		SchemaVersion: 2, MediaType: ManifestMediaType, ArtifactType: ArtifactType,
		Config: Descriptor{MediaType: ConfigMediaType, Digest: sha256Digest(cfgRaw), Size: int64(len(cfgRaw))},
		Annotations: map[string]string{
			"org.opencontainers.image.title":   bm.Name,
			"org.opencontainers.image.version": bm.Version,
		},
	}
	opts := append(src.opts, remote.WithContext(ctx))
	for _, f := range []struct {
		fi builder.FileInfo
		mt string
	}{{bm.Root.FileInfo, RootMediaType}, {bm.Verity.FileInfo, VerityMediaType}, {bm.Kernel, KernelMediaType}, {bm.Initrd, InitrdMediaType}} {
		p := filepath.Join(dir, f.fi.File)
		st, err := os.Stat(p)
		if err != nil {
			return nil, fmt.Errorf("publish: %w (the build folder must hold every file its manifest names)", err)
		}
		if st.Size() != f.fi.Size {
			return nil, fmt.Errorf("publish: %s is %d bytes, its manifest says %d: rebuild", p, st.Size(), f.fi.Size)
		}
		h, err := v1.NewHash("sha256:" + f.fi.SHA256)
		if err != nil {
			return nil, fmt.Errorf("publish: %s: %w", p, err)
		}
		l := &fileLayer{path: p, digest: h, size: f.fi.Size, mediaType: types.MediaType(f.mt)}
		logf("push %s (%d bytes) %s", f.fi.File, f.fi.Size, h)
		if err := remote.WriteLayer(repo, l, opts...); err != nil {
			return nil, fmt.Errorf("push %s to %s: %w", f.fi.File, repo, err)
		}
		m.Layers = append(m.Layers, Descriptor{MediaType: f.mt, Digest: h.String(), Size: f.fi.Size,
			Annotations: map[string]string{TitleAnnotation: f.fi.File}})
	}
	if err := remote.WriteLayer(repo, static.NewLayer(cfgRaw, ConfigMediaType), opts...); err != nil {
		return nil, fmt.Errorf("push the config to %s: %w", repo, err)
	}
	raw, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	digest := sha256Digest(raw)
	tags := []string{bm.Version}
	if o.Channel != "" {
		tags = append(tags, o.Channel)
	}
	// Sign before tagging: a device polling the channel must never see an unsigned release there.
	pub := &Published{Ref: repo.Name() + "@" + digest, Digest: digest, Tags: tags}
	if err := remote.Put(repo.Digest(digest), rawManifest{raw, types.OCIManifestSchema1}, opts...); err != nil {
		return nil, fmt.Errorf("push the manifest to %s: %w", repo, err)
	}
	if o.Signer != nil {
		sigRaw, blobs, err := signatureManifest(o.Signer, repo.Name(), digest)
		if err != nil {
			return nil, err
		}
		for d, b := range blobs {
			mt := types.MediaType(SimpleSigningMediaType)
			if !strings.Contains(string(b), "docker-manifest-digest") {
				mt = ociConfigMediaType
			}
			if err := remote.WriteLayer(repo, static.NewLayer(b, mt), opts...); err != nil {
				return nil, fmt.Errorf("push signature blob %s: %w", d, err)
			}
		}
		sigTag := repo.Tag(SignatureTag(digest))
		if err := remote.Put(sigTag, rawManifest{sigRaw, types.OCIManifestSchema1}, opts...); err != nil {
			return nil, fmt.Errorf("push the signature to %s: %w", sigTag, err)
		}
		pub.Signature = sigTag.Name()
		logf("signed %s", sigTag.Name())
	}
	for _, t := range tags {
		if err := remote.Put(repo.Tag(t), rawManifest{raw, types.OCIManifestSchema1}, opts...); err != nil {
			return nil, fmt.Errorf("tag %s:%s: %w", repo, t, err)
		}
		logf("tagged %s:%s", repo.Name(), t)
	}
	return pub, nil
}
