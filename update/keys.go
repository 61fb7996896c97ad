package update

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"

	"github.com/sigstore/sigstore/pkg/cryptoutils"
)

// PassFunc returns the password of a private key; confirm asks twice (for a new key).
type PassFunc = cryptoutils.PassFunc

// GenerateKeys makes an ECDSA P-256 key pair in cosign's format: the private key as PKCS#8, encrypted
// with scrypt + nacl/secretbox under the password, in an "ENCRYPTED SIGSTORE PRIVATE KEY" PEM block; the
// public key as a PKIX "PUBLIC KEY" PEM block. `cosign sign --key` and `cosign verify --key` read both.
func GenerateKeys(pass PassFunc) (privPEM, pubPEM []byte, err error) {
	if pass == nil {
		return nil, nil, errors.New("generate keys: a password is needed (cosign keys are always encrypted)")
	}
	priv, pub, err := cryptoutils.GeneratePEMEncodedECDSAKeyPair(elliptic.P256(), pass)
	if err != nil {
		return nil, nil, fmt.Errorf("generate keys: %w", err)
	}
	return priv, pub, nil
}

// LoadPrivateKey reads a cosign private key file.
func LoadPrivateKey(path string, pass PassFunc) (crypto.Signer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("signing key: %w", err)
	}
	k, err := cryptoutils.UnmarshalPEMToPrivateKey(data, pass)
	if err != nil {
		return nil, fmt.Errorf("signing key %s: %w (wrong password? set OSBUILD_PASSWORD or COSIGN_PASSWORD)", path, err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("signing key %s: %T cannot sign", path, k)
	}
	return s, nil
}

// LoadPublicKey reads a PEM public key (cosign.pub).
func LoadPublicKey(path string) (crypto.PublicKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("public key: %w", err)
	}
	k, err := cryptoutils.UnmarshalPEMToPublicKey(data)
	if err != nil {
		return nil, fmt.Errorf("public key %s: %w", path, err)
	}
	return k, nil
}

// signPayload signs a payload the way cosign does with a key: ECDSA over SHA-256 as ASN.1 DER, RSA
// PKCS#1 v1.5 over SHA-256, or plain ed25519.
func signPayload(s crypto.Signer, payload []byte) ([]byte, error) {
	if _, ok := s.Public().(ed25519.PublicKey); ok {
		return s.Sign(nil, payload, crypto.Hash(0))
	}
	sum := sha256.Sum256(payload)
	return s.Sign(randReader, sum[:], crypto.SHA256)
}

// verifyPayload checks a signature made by signPayload (or by cosign).
func verifyPayload(pub crypto.PublicKey, payload, sig []byte) error {
	sum := sha256.Sum256(payload)
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if !ecdsa.VerifyASN1(k, sum[:], sig) {
			return errBadSignature
		}
	case *rsa.PublicKey:
		if rsa.VerifyPKCS1v15(k, crypto.SHA256, sum[:], sig) != nil {
			return errBadSignature
		}
	case ed25519.PublicKey:
		if !ed25519.Verify(k, payload, sig) {
			return errBadSignature
		}
	default:
		return fmt.Errorf("public key type %T is not supported", pub)
	}
	return nil
}
