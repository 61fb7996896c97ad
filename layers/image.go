package layers

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// Image is an OCI image resolved for one platform, with what is needed to fetch it again exactly.
type Image struct {
	Ref string // as the variant wrote it
	// Pinned repeats the build exactly: HOST/REPO@sha256:… for registries, oci:PATH@sha256:… for layouts.
	Pinned string
	Digest v1.Hash // of the image manifest that was used
	Image  v1.Image
	// remote images verify compressed blobs against the manifest; archives store layers uncompressed.
	compressed bool
}

// ResolveOptions say how to reach registries.
type ResolveOptions struct {
	Arch string // amd64 or arm64
	// Insecure lists registry hosts reached over plain HTTP. Loopback hosts always are.
	Insecure  []string
	Transport http.RoundTripper
}

// NotFoundError is an image reference that resolved to nothing.
type NotFoundError struct {
	Ref string
	Err error
}

func (e *NotFoundError) Error() string {
	return fmt.Sprintf("image %s not found: %v; check the name and tag, and that you are logged in to the registry (docker login writes ~/.docker/config.json)", e.Ref, e.Err)
}

func (e *NotFoundError) Unwrap() error { return e.Err }

// Resolve turns a reference (HOST/REPO[:TAG][@DIGEST], oci:PATH[:TAG|@DIGEST], docker-archive:PATH) into
// an image for opts.Arch. Nothing is downloaded but manifests.
func Resolve(ctx context.Context, ref string, opts ResolveOptions) (*Image, error) {
	platform := v1.Platform{OS: "linux", Architecture: opts.Arch}
	if platform.Architecture == "" {
		platform.Architecture = "amd64"
	}
	var img *Image
	var err error
	switch {
	case strings.HasPrefix(ref, "oci:"):
		img, err = resolveLayout(ref, platform)
	case strings.HasPrefix(ref, "docker-archive:"):
		p := strings.TrimPrefix(ref, "docker-archive:")
		var i v1.Image
		if i, err = tarball.ImageFromPath(p, nil); err == nil {
			img = &Image{Ref: ref, Image: i}
			if img.Digest, err = i.Digest(); err == nil {
				img.Pinned = ref + "@" + img.Digest.String()
			}
		} else if errors.Is(err, os.ErrNotExist) {
			err = &NotFoundError{Ref: ref, Err: err}
		}
	default:
		img, err = resolveRemote(ctx, ref, platform, opts)
	}
	if err != nil {
		return nil, err
	}
	return img, nil
}

// ParseReference parses a registry reference, reaching its host over plain HTTP when it is a loopback
// address or listed in insecure (HOST or HOST:PORT as written in the reference).
func ParseReference(ref string, insecure []string) (name.Reference, error) {
	host := ref
	if i := strings.Index(ref, "/"); i > 0 {
		host = ref[:i]
	}
	var opts []name.Option
	if isLoopback(host) || slices.Contains(insecure, host) {
		opts = append(opts, name.Insecure)
	}
	return name.ParseReference(ref, opts...)
}

func isLoopback(host string) bool {
	h := host
	if hh, _, err := net.SplitHostPort(host); err == nil {
		h = hh
	}
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

func resolveRemote(ctx context.Context, ref string, platform v1.Platform, opts ResolveOptions) (*Image, error) {
	r, err := ParseReference(ref, opts.Insecure)
	if err != nil {
		return nil, fmt.Errorf("image %q: %w", ref, err)
	}
	ropts := []remote.Option{
		remote.WithContext(ctx),
		remote.WithAuthFromKeychain(authn.DefaultKeychain),
		remote.WithPlatform(platform),
	}
	if opts.Transport != nil {
		ropts = append(ropts, remote.WithTransport(opts.Transport))
	}
	i, err := remote.Image(r, ropts...)
	if err != nil {
		if isNotFound(err) {
			return nil, &NotFoundError{Ref: ref, Err: err}
		}
		return nil, fmt.Errorf("image %s: %w", ref, err)
	}
	d, err := i.Digest()
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", ref, err)
	}
	return &Image{Ref: ref, Image: i, Digest: d, Pinned: r.Context().Name() + "@" + d.String(), compressed: true}, nil
}

func isNotFound(err error) bool {
	s := err.Error()
	return strings.Contains(s, "MANIFEST_UNKNOWN") || strings.Contains(s, "NAME_UNKNOWN") || strings.Contains(s, "404")
}

// resolveLayout picks an image out of an OCI image layout by tag (org.opencontainers.image.ref.name), by
// digest, or the only one there is; an index inside is narrowed to the platform.
func resolveLayout(ref string, platform v1.Platform) (*Image, error) {
	spec := strings.TrimPrefix(ref, "oci:")
	dir, tag, dgst := spec, "", ""
	if i := strings.LastIndex(spec, "@"); i >= 0 {
		dir, dgst = spec[:i], spec[i+1:]
	} else if i := strings.LastIndex(spec, ":"); i > strings.LastIndex(spec, "/") {
		dir, tag = spec[:i], spec[i+1:]
	}
	p, err := layout.FromPath(dir)
	if err != nil {
		return nil, &NotFoundError{Ref: ref, Err: fmt.Errorf("no OCI image layout at %s: %w", dir, err)}
	}
	idx, err := p.ImageIndex()
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", ref, err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", ref, err)
	}
	var found []v1.Descriptor
	for _, d := range im.Manifests {
		switch {
		case dgst != "":
			if d.Digest.String() == dgst {
				found = append(found, d)
			}
		case tag != "":
			if d.Annotations["org.opencontainers.image.ref.name"] == tag {
				found = append(found, d)
			}
		default:
			found = append(found, d)
		}
	}
	if len(found) != 1 {
		what := "the layout holds several images: name one with oci:PATH:TAG or oci:PATH@DIGEST"
		if len(found) == 0 {
			what = "no image with that tag or digest in the layout"
		}
		return nil, &NotFoundError{Ref: ref, Err: errors.New(what)}
	}
	d := found[0]
	if d.MediaType.IsIndex() {
		child, err := idx.ImageIndex(d.Digest)
		if err != nil {
			return nil, fmt.Errorf("image %s: %w", ref, err)
		}
		cm, err := child.IndexManifest()
		if err != nil {
			return nil, fmt.Errorf("image %s: %w", ref, err)
		}
		var match *v1.Descriptor
		for i := range cm.Manifests {
			if cm.Manifests[i].Platform != nil && cm.Manifests[i].Platform.Satisfies(platform) {
				match = &cm.Manifests[i]
				break
			}
		}
		if match == nil {
			return nil, &NotFoundError{Ref: ref, Err: fmt.Errorf("the index has no image for linux/%s", platform.Architecture)}
		}
		i, err := child.Image(match.Digest)
		if err != nil {
			return nil, fmt.Errorf("image %s: %w", ref, err)
		}
		return &Image{Ref: ref, Image: i, Digest: match.Digest, Pinned: "oci:" + dir + "@" + match.Digest.String(), compressed: true}, nil
	}
	i, err := idx.Image(d.Digest)
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", ref, err)
	}
	return &Image{Ref: ref, Image: i, Digest: d.Digest, Pinned: "oci:" + dir + "@" + d.Digest.String(), compressed: true}, nil
}
