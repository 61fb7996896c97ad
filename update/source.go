package update

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"osbuild.dev/osbuild/layers"
)

// RegistryOptions say how registries are reached.
type RegistryOptions struct {
	// Insecure lists registry hosts reached over plain HTTP. Loopback hosts always are.
	Insecure  []string
	Transport http.RoundTripper
}

// source is where a release comes from: a registry repository or an OCI image layout.
type source interface {
	// manifest returns a manifest by tag or digest, with its digest.
	manifest(ctx context.Context, ref string) (digest string, raw []byte, err error)
	// blob opens a blob from offset.
	blob(ctx context.Context, digest string, offset int64) (io.ReadCloser, error)
	// name is the repository for signatures ("HOST/REPO") or the layout's path.
	name() string
}

var digestRe = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)

// openSource parses REF: "oci:DIR[:TAG|@DIGEST]" or "HOST/REPO[:TAG|@DIGEST]"; defTag is used when REF
// names neither. It returns the source and the tag or digest to resolve.
func openSource(ctx context.Context, ref, defTag string, ro RegistryOptions) (source, string, error) {
	if p, ok := strings.CutPrefix(ref, "oci:"); ok {
		// A layout is usually one release copied for an air-gapped device: the channel does not apply.
		dir, sel := p, ""
		if i := strings.LastIndex(p, "@"); i >= 0 {
			dir, sel = p[:i], p[i+1:]
		} else if i := strings.LastIndex(p, ":"); i >= 0 && !strings.Contains(p[i:], "/") {
			dir, sel = p[:i], p[i+1:]
		}
		if _, err := os.Stat(filepath.Join(dir, "index.json")); err != nil {
			return nil, "", fmt.Errorf("%s is not an OCI image layout (no index.json): copy the release there with `skopeo copy docker://REF oci:DIR:TAG`", dir)
		}
		return &layoutSource{dir: dir}, sel, nil
	}
	r, err := newRegistrySource(ctx, ref, ro)
	if err != nil {
		return nil, "", err
	}
	sel := defTag
	switch pr := r.ref.(type) {
	case name.Digest:
		sel = pr.DigestStr()
	case name.Tag:
		if strings.Contains(ref, ":"+pr.TagStr()) || sel == "" {
			sel = pr.TagStr()
		}
	}
	return r, sel, nil
}

// registrySource reads from a registry repository.
type registrySource struct {
	repo   name.Repository
	ref    name.Reference
	opts   []remote.Option
	ro     RegistryOptions
	client *http.Client // authenticated, for range requests on blobs
}

func newRegistrySource(ctx context.Context, ref string, ro RegistryOptions) (*registrySource, error) {
	r, err := layers.ParseReference(ref, ro.Insecure)
	if err != nil {
		return nil, fmt.Errorf("reference %q: %w; use HOST/REPO[:TAG|@sha256:DIGEST] or oci:DIR", ref, err)
	}
	s := &registrySource{repo: r.Context(), ref: r, ro: ro}
	s.opts = []remote.Option{remote.WithContext(ctx), remote.WithAuthFromKeychain(authn.DefaultKeychain)}
	if ro.Transport != nil {
		s.opts = append(s.opts, remote.WithTransport(ro.Transport))
	}
	return s, nil
}

func (s *registrySource) name() string { return s.repo.Name() }

func (s *registrySource) refFor(sel string) (name.Reference, error) {
	if digestRe.MatchString(sel) {
		return s.repo.Digest(sel), nil
	}
	return s.repo.Tag(sel), nil
}

func (s *registrySource) manifest(ctx context.Context, sel string) (string, []byte, error) {
	ref, err := s.refFor(sel)
	if err != nil {
		return "", nil, err
	}
	d, err := remote.Get(ref, append(s.opts, remote.WithContext(ctx))...)
	if err != nil {
		var te *transport.Error
		if errors.As(err, &te) && te.StatusCode == http.StatusNotFound {
			return "", nil, fmt.Errorf("%s: %w", ref, errNotFound)
		}
		return "", nil, fmt.Errorf("%s: %w", ref, err)
	}
	if d.MediaType != types.OCIManifestSchema1 {
		return "", nil, fmt.Errorf("%s is a %s, not an OCI manifest: is it an osbuild release?", ref, d.MediaType)
	}
	return d.Digest.String(), d.Manifest, nil
}

var errNotFound = errors.New("not found")

func (s *registrySource) httpClient(ctx context.Context) (*http.Client, error) {
	if s.client != nil {
		return s.client, nil
	}
	base := s.ro.Transport
	if base == nil {
		base = remote.DefaultTransport
	}
	auth, err := authn.DefaultKeychain.Resolve(s.repo)
	if err != nil {
		return nil, fmt.Errorf("registry credentials for %s: %w", s.repo, err)
	}
	rt, err := transport.NewWithContext(ctx, s.repo.Registry, auth, base, []string{s.repo.Scope(transport.PullScope)})
	if err != nil {
		return nil, fmt.Errorf("registry %s: %w", s.repo.Registry, err)
	}
	s.client = &http.Client{Transport: rt}
	return s.client, nil
}

// blob GETs a blob with a Range header when resuming, so that an interrupted download goes on where it
// stopped. A registry that ignores the range answers 200: then the bytes before offset are skipped.
func (s *registrySource) blob(ctx context.Context, digest string, offset int64) (io.ReadCloser, error) {
	c, err := s.httpClient(ctx)
	if err != nil {
		return nil, err
	}
	u := fmt.Sprintf("%s://%s/v2/%s/blobs/%s", s.repo.Registry.Scheme(), s.repo.RegistryStr(), s.repo.RepositoryStr(), digest)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	if offset > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", offset))
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("download %s: %w", digest, err)
	}
	switch {
	case resp.StatusCode == http.StatusPartialContent && offset > 0:
		return resp.Body, nil
	case resp.StatusCode == http.StatusOK:
		if offset > 0 {
			if _, err := io.CopyN(io.Discard, resp.Body, offset); err != nil {
				resp.Body.Close()
				return nil, fmt.Errorf("download %s: skip to %d: %w", digest, offset, err)
			}
		}
		return resp.Body, nil
	}
	resp.Body.Close()
	return nil, fmt.Errorf("download %s from %s: HTTP %s", digest, s.repo, resp.Status)
}

// layoutSource reads an OCI image layout (e.g. made by `skopeo copy docker://... oci:DIR:TAG`).
type layoutSource struct{ dir string }

func (s *layoutSource) name() string { return "oci:" + s.dir }

type layoutIndex struct {
	Manifests []Descriptor `json:"manifests"`
}

const refNameAnnotation = "org.opencontainers.image.ref.name"

func (s *layoutSource) index() (*layoutIndex, error) {
	data, err := os.ReadFile(filepath.Join(s.dir, "index.json"))
	if err != nil {
		return nil, err
	}
	var idx layoutIndex
	if err := json.Unmarshal(data, &idx); err != nil {
		return nil, fmt.Errorf("%s/index.json: %w", s.dir, err)
	}
	return &idx, nil
}

// manifest finds a manifest by tag (ref name) or digest; with no selector, the only release manifest.
func (s *layoutSource) manifest(_ context.Context, sel string) (string, []byte, error) {
	idx, err := s.index()
	if err != nil {
		return "", nil, err
	}
	var found []Descriptor
	for _, d := range idx.Manifests {
		switch {
		case sel == "":
			if d.ArtifactType == ArtifactType || d.ArtifactType == "" && !strings.HasSuffix(d.Annotations[refNameAnnotation], ".sig") {
				found = append(found, d)
			}
		case d.Digest == sel || d.Annotations[refNameAnnotation] == sel:
			found = append(found, d)
		}
	}
	if len(found) == 0 {
		return "", nil, fmt.Errorf("%s has no manifest %q: %w", s.name(), sel, errNotFound)
	}
	if len(found) > 1 && found[0].Digest != found[1].Digest {
		return "", nil, fmt.Errorf("%s holds several releases: name one, oci:DIR:TAG", s.name())
	}
	d := found[0]
	if d.MediaType != ManifestMediaType {
		return "", nil, fmt.Errorf("%s: %s is a %s, not an OCI manifest", s.name(), d.Digest, d.MediaType)
	}
	raw, err := s.readBlob(d.Digest, maxPayload)
	if err != nil {
		return "", nil, err
	}
	return d.Digest, raw, nil
}

func (s *layoutSource) blobPath(digest string) (string, error) {
	if !digestRe.MatchString(digest) {
		return "", fmt.Errorf("bad digest %q", digest)
	}
	return filepath.Join(s.dir, "blobs", "sha256", strings.TrimPrefix(digest, "sha256:")), nil
}

func (s *layoutSource) readBlob(digest string, limit int64) ([]byte, error) {
	rc, err := s.blob(context.Background(), digest, 0)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("blob %s is larger than %d bytes", digest, limit)
	}
	if sha256Digest(b) != digest {
		return nil, fmt.Errorf("blob %s in %s is corrupt: its content does not match its digest", digest, s.dir)
	}
	return b, nil
}

func (s *layoutSource) blob(_ context.Context, digest string, offset int64) (io.ReadCloser, error) {
	p, err := s.blobPath(digest)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("%s: blob %s: %w", s.name(), digest, err)
	}
	if offset > 0 {
		if _, err := f.Seek(offset, io.SeekStart); err != nil {
			f.Close()
			return nil, err
		}
	}
	return f, nil
}

// readSmall reads a small blob fully and checks its digest.
func readSmall(ctx context.Context, src source, digest string, size int64) ([]byte, error) {
	if size > maxPayload {
		return nil, fmt.Errorf("blob %s: %d bytes is more than a config or payload can be", digest, size)
	}
	rc, err := src.blob(ctx, digest, 0)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, maxPayload+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", digest, err)
	}
	if sha256Digest(b) != digest {
		return nil, fmt.Errorf("blob %s does not match its digest", digest)
	}
	return b, nil
}
