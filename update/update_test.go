package update

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sigstore/sigstore/pkg/cryptoutils"

	"osbuild.dev/osbuild/partitions/bootentry"
	"osbuild.dev/osbuild/variant"
)

func entry(t *testing.T, file, version string) *bootentry.Entry {
	t.Helper()
	e, err := bootentry.Parse(file, []byte("title x\nversion "+version+"\nsort-key osbuild-minimal\nlinux /osbuild/a/vmlinuz\noptions ro\n"))
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// TestBootOrder checks the ordering systemd-boot 252 uses, on the states an A/B disk goes through.
func TestBootOrder(t *testing.T) {
	for _, c := range []struct {
		name    string
		entries [][2]string // file, version
		first   string
	}{
		{"built", [][2]string{{"osbuild-a.conf", "1.0.0"}}, "osbuild-a.conf"},
		{"staged update", [][2]string{{"osbuild-a.conf", "1.0.0"}, {"osbuild-b+3.conf", "2.0.0"}}, "osbuild-b+3.conf"},
		{"trying", [][2]string{{"osbuild-a.conf", "1.0.0"}, {"osbuild-b+1-2.conf", "2.0.0"}}, "osbuild-b+1-2.conf"},
		{"failed update falls back", [][2]string{{"osbuild-a.conf", "1.0.0"}, {"osbuild-b+0-3.conf", "2.0.0"}}, "osbuild-a.conf"},
		{"both good: newer first", [][2]string{{"osbuild-a.conf", "3.0.0"}, {"osbuild-b.conf", "2.0.0"}}, "osbuild-a.conf"},
		{"downgrade sorts after", [][2]string{{"osbuild-a+3.conf", "1.0.0"}, {"osbuild-b.conf", "2.0.0"}}, "osbuild-b.conf"},
		{"version 10 after 9", [][2]string{{"osbuild-a.conf", "9.0"}, {"osbuild-b+3.conf", "10.0"}}, "osbuild-b+3.conf"},
	} {
		var es []*bootentry.Entry
		for _, e := range c.entries {
			es = append(es, entry(t, e[0], e[1]))
		}
		if got := BootOrder(es)[0].FileName; got != c.first {
			t.Errorf("%s: boots %s, want %s", c.name, got, c.first)
		}
	}
}

func TestSignVerify(t *testing.T) {
	priv, pub, err := GenerateKeys(cryptoutils.StaticPasswordFunc([]byte("pw")))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(priv), "ENCRYPTED SIGSTORE PRIVATE KEY") || !strings.Contains(string(pub), "PUBLIC KEY") {
		t.Fatalf("key format:\n%s\n%s", priv, pub)
	}
	k, err := cryptoutils.UnmarshalPEMToPrivateKey(priv, cryptoutils.StaticPasswordFunc([]byte("pw")))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cryptoutils.UnmarshalPEMToPrivateKey(priv, cryptoutils.StaticPasswordFunc([]byte("wrong"))); err == nil {
		t.Fatal("a wrong password opened the key")
	}
	pk, err := cryptoutils.UnmarshalPEMToPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)

	digest := sha256Digest([]byte("manifest"))
	raw, blobs, err := signatureManifest(k.(crypto.Signer), "127.0.0.1:5000/minimal", digest)
	if err != nil {
		t.Fatal(err)
	}
	fetch := func(d string, _ int64) ([]byte, error) { return blobs[d], nil }
	if err := verifySignatures(pk, raw, digest, fetch); err != nil {
		t.Fatalf("own signature: %v", err)
	}
	if err := verifySignatures(pk, raw, sha256Digest([]byte("other manifest")), fetch); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("signature over another digest: %v", err)
	}
	raw2, blobs2, _ := signatureManifest(other, "127.0.0.1:5000/minimal", digest)
	if err := verifySignatures(pk, raw2, digest, func(d string, _ int64) ([]byte, error) { return blobs2[d], nil }); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("another key's signature: %v", err)
	}
	var m Manifest
	json.Unmarshal(raw, &m)
	if m.Layers[0].MediaType != SimpleSigningMediaType || m.Layers[0].Annotations[SignatureAnnotation] == "" {
		t.Fatalf("signature manifest: %s", raw)
	}
	if SignatureTag(digest) != strings.Replace(digest, "sha256:", "sha256-", 1)+".sig" {
		t.Fatal(SignatureTag(digest))
	}
}

func TestConfigValidate(t *testing.T) {
	c := Config{Name: "m", Version: "1", Arch: "amd64", Verity: ConfigVerity{RootHash: "ab", DataBlocks: 2, DataBlockSize: 4096},
		Slot: ConfigSlot{RootSize: 4097, VeritySize: 8192}, Layers: ConfigLayers{Root: "r", Verity: "v", Kernel: "k", Initrd: "i"}}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	c.Verity.DataBlocks = 1 // would leave the tail of the root unverified
	if err := c.Validate(); err == nil {
		t.Fatal("a block count short of the root size passed")
	}
}

func TestEFIStrings(t *testing.T) {
	dir := t.TempDir()
	if err := writeEFIString(dir, "LoaderEntryOneShot", oneShotID("osbuild-A+3.conf")); err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(filepath.Join(dir, "LoaderEntryOneShot-"+loaderGUID))
	// 4 bytes of attributes (non-volatile, boot and runtime access), then UTF-16LE with a NUL.
	if len(raw) != 4+2*len("osbuild-a+3.conf\x00") || raw[0] != 7 || raw[4] != 'o' || raw[5] != 0 {
		t.Fatalf("variable bytes: %x", raw)
	}
	got, err := readEFIString(dir, "LoaderEntryOneShot")
	if err != nil || got != "osbuild-a+3.conf" {
		t.Fatalf("read back %q, %v", got, err)
	}
	p, err := bootCountEntry(`\loader\entries\osbuild-b+2-1.conf`)
	if err != nil || p != "loader/entries/osbuild-b+2-1.conf" {
		t.Fatalf("LoaderBootCountPath: %q %v", p, err)
	}
	if _, err := bootCountEntry(`\EFI\..\x.conf`); err == nil {
		t.Fatal("a path outside loader/entries was accepted")
	}
}

func TestHealthChecks(t *testing.T) {
	d := &Device{}
	d.Settings.Health = []variant.HealthCheck{{Name: "ok", Command: "true"}, {Name: "slow", Command: "sleep 5", Timeout: "100ms"}}
	err := d.RunHealthChecks(context.Background(), nil)
	if err == nil || !strings.Contains(err.Error(), `"slow" failed`) {
		t.Fatalf("a health check past its timeout: %v", err)
	}
	d.Settings.Health = d.Settings.Health[:1]
	if err := d.RunHealthChecks(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
}
