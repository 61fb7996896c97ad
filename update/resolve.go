package update

import (
	"context"
	"crypto"
	"encoding/json"
	"errors"
	"fmt"
)

// Resolve finds a release (ref: HOST/REPO[:TAG|@DIGEST] or oci:DIR[:TAG]; defTag when ref names no tag),
// checks its signature with pub, then reads and checks its config. Nothing is trusted before the
// signature over the manifest digest verifies: the manifest pins the config and every layer by digest.
func Resolve(ctx context.Context, ref, defTag string, pub crypto.PublicKey, ro RegistryOptions) (*Release, error) {
	r, _, err := resolve(ctx, ref, defTag, pub, ro)
	return r, err
}

func resolve(ctx context.Context, ref, defTag string, pub crypto.PublicKey, ro RegistryOptions) (*Release, source, error) {
	if pub == nil {
		return nil, nil, errors.New("no public key to verify releases with: pass --key cosign.pub (the device uses /etc/osbuild/update.pub)")
	}
	src, sel, err := openSource(ctx, ref, defTag, ro)
	if err != nil {
		return nil, nil, err
	}
	digest, raw, err := src.manifest(ctx, sel)
	if err != nil {
		return nil, nil, fmt.Errorf("resolve %s: %w", ref, err)
	}
	if sha256Digest(raw) != digest {
		return nil, nil, fmt.Errorf("resolve %s: the manifest does not match its digest %s", ref, digest)
	}
	_, sigRaw, err := src.manifest(ctx, SignatureTag(digest))
	if errors.Is(err, errNotFound) {
		return nil, nil, fmt.Errorf("%s (%s): %w", ref, digest, ErrNoSignature)
	} else if err != nil {
		return nil, nil, fmt.Errorf("signature of %s: %w", ref, err)
	}
	err = verifySignatures(pub, sigRaw, digest, func(d string, size int64) ([]byte, error) {
		return readSmall(ctx, src, d, size)
	})
	if err != nil {
		return nil, nil, fmt.Errorf("%s (%s): %w", ref, digest, err)
	}
	m, err := parseManifest(raw)
	if err != nil {
		return nil, nil, err
	}
	if m.ArtifactType != ArtifactType || m.Config.MediaType != ConfigMediaType {
		return nil, nil, fmt.Errorf("%s is signed but is not an osbuild release (artifactType %q, config %q)", ref, m.ArtifactType, m.Config.MediaType)
	}
	cfgRaw, err := readSmall(ctx, src, m.Config.Digest, m.Config.Size)
	if err != nil {
		return nil, nil, fmt.Errorf("config of %s: %w", ref, err)
	}
	var cfg Config
	if err := json.Unmarshal(cfgRaw, &cfg); err != nil {
		return nil, nil, fmt.Errorf("config of %s: %w", ref, err)
	}
	if err := cfg.Validate(); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", ref, err)
	}
	rel := &Release{Ref: ref, Digest: digest, Manifest: m, Config: &cfg}
	for _, l := range []struct{ d, mt string }{{cfg.Layers.Root, RootMediaType}, {cfg.Layers.Verity, VerityMediaType},
		{cfg.Layers.Kernel, KernelMediaType}, {cfg.Layers.Initrd, InitrdMediaType}} {
		desc, err := rel.layer(l.d, l.mt)
		if err != nil {
			return nil, nil, err
		}
		if l.mt == RootMediaType && desc.Size != cfg.Slot.RootSize || l.mt == VerityMediaType && desc.Size != cfg.Slot.VeritySize {
			return nil, nil, fmt.Errorf("%s: layer %s is %d bytes but the config says otherwise", ref, l.d, desc.Size)
		}
	}
	return rel, src, nil
}
