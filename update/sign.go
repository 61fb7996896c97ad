package update

import (
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// Cosign's signature format (the "tag" scheme that every cosign version reads): for a manifest
// sha256:HEX, a manifest tagged sha256-HEX.sig in the same repository whose layers are simple-signing
// payloads, each carrying its base64 signature in an annotation.
const (
	SimpleSigningMediaType = "application/vnd.dev.cosign.simplesigning.v1+json"
	SignatureAnnotation    = "dev.cosignproject.cosign/signature"
	simpleSigningType      = "cosign container image signature"
	ociConfigMediaType     = "application/vnd.oci.image.config.v1+json"
	// maxPayload bounds what is read of a payload or a signature manifest: both are a few hundred bytes,
	// and a hostile registry must not make the agent allocate more.
	maxPayload = 1 << 20
)

var (
	randReader = rand.Reader
	// ErrNoSignature means no signature exists for a release.
	ErrNoSignature = errors.New("the release is not signed: publish it with `osbuild publish --key` or sign it with `cosign sign --key`")
	// ErrBadSignature means signatures exist but none verifies with the key.
	ErrBadSignature = errors.New("no signature of the release verifies with the public key: it was signed with another key, or changed after signing")
	errBadSignature = errors.New("signature does not verify")
)

// SignatureTag is the tag cosign stores the signatures of a digest under.
func SignatureTag(digest string) string {
	return strings.Replace(digest, ":", "-", 1) + ".sig"
}

// simpleSigning is the payload cosign signs (containers/image's "simple signing" format).
type simpleSigning struct {
	Critical struct {
		Identity struct {
			DockerReference string `json:"docker-reference"`
		} `json:"identity"`
		Image struct {
			DockerManifestDigest string `json:"docker-manifest-digest"`
		} `json:"image"`
		Type string `json:"type"`
	} `json:"critical"`
	Optional map[string]any `json:"optional"`
}

// payload returns the simple-signing payload for a manifest digest in a repository (HOST/REPO).
func payload(repo, digest string) []byte {
	var p simpleSigning
	p.Critical.Identity.DockerReference = repo
	p.Critical.Image.DockerManifestDigest = digest
	p.Critical.Type = simpleSigningType
	b, _ := json.Marshal(p)
	return b
}

// signatureManifest makes the sha256-HEX.sig manifest and the blobs it needs (config and payload).
func signatureManifest(s crypto.Signer, repo, digest string) (raw []byte, blobs map[string][]byte, err error) {
	pl := payload(repo, digest)
	sig, err := signPayload(s, pl)
	if err != nil {
		return nil, nil, fmt.Errorf("sign: %w", err)
	}
	plDigest := sha256Digest(pl)
	// The config mimics cosign's (an empty image config whose only diff_id is the payload) so that
	// tools that treat the signature as an image still can.
	cfg, _ := json.Marshal(map[string]any{
		"architecture": "", "os": "", "config": map[string]any{},
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{plDigest}},
	})
	m := Manifest{
		SchemaVersion: 2, MediaType: ManifestMediaType,
		Config: Descriptor{MediaType: ociConfigMediaType, Digest: sha256Digest(cfg), Size: int64(len(cfg))},
		Layers: []Descriptor{{
			MediaType: SimpleSigningMediaType, Digest: plDigest, Size: int64(len(pl)),
			Annotations: map[string]string{SignatureAnnotation: base64.StdEncoding.EncodeToString(sig)},
		}},
	}
	raw, err = json.Marshal(m)
	if err != nil {
		return nil, nil, err
	}
	return raw, map[string][]byte{plDigest: pl, sha256Digest(cfg): cfg}, nil
}

// verifySignatures checks a signature manifest for digest: at least one simple-signing layer must be
// signed by pub and name digest. fetch reads a (small) blob by digest.
func verifySignatures(pub crypto.PublicKey, sigManifest []byte, digest string, fetch func(digest string, size int64) ([]byte, error)) error {
	m, err := parseManifest(sigManifest)
	if err != nil {
		return fmt.Errorf("signature manifest: %w", err)
	}
	var errs []error
	for _, l := range m.Layers {
		if l.MediaType != SimpleSigningMediaType {
			continue
		}
		b64 := l.Annotations[SignatureAnnotation]
		if b64 == "" {
			continue
		}
		sig, err := base64.StdEncoding.DecodeString(b64)
		if err != nil {
			errs = append(errs, fmt.Errorf("layer %s: signature is not base64", l.Digest))
			continue
		}
		if l.Size > maxPayload {
			errs = append(errs, fmt.Errorf("layer %s: payload of %d bytes is too large", l.Digest, l.Size))
			continue
		}
		pl, err := fetch(l.Digest, l.Size)
		if err != nil {
			return fmt.Errorf("signature payload %s: %w", l.Digest, err)
		}
		if sha256Digest(pl) != l.Digest {
			errs = append(errs, fmt.Errorf("layer %s: payload does not match its digest", l.Digest))
			continue
		}
		if err := verifyPayload(pub, pl, sig); err != nil {
			errs = append(errs, fmt.Errorf("layer %s: %w", l.Digest, err))
			continue
		}
		var p simpleSigning
		if err := json.Unmarshal(pl, &p); err != nil {
			errs = append(errs, fmt.Errorf("layer %s: payload: %w", l.Digest, err))
			continue
		}
		if p.Critical.Type != simpleSigningType {
			errs = append(errs, fmt.Errorf("layer %s: payload type %q", l.Digest, p.Critical.Type))
			continue
		}
		if p.Critical.Image.DockerManifestDigest != digest {
			errs = append(errs, fmt.Errorf("layer %s: signs %s, not %s", l.Digest, p.Critical.Image.DockerManifestDigest, digest))
			continue
		}
		return nil // a valid signature by the key over this very digest
	}
	if len(errs) == 0 {
		return ErrNoSignature
	}
	return fmt.Errorf("%w (%w)", ErrBadSignature, errors.Join(errs...))
}

func sha256Digest(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}
