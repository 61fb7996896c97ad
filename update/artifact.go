package update

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"osbuild.dev/osbuild/builder"
)

// Media types of the update artifact.
const (
	ArtifactType      = "application/vnd.osbuild.update.v1"
	ConfigMediaType   = "application/vnd.osbuild.update.config.v1+json"
	RootMediaType     = "application/vnd.osbuild.update.root.v1.squashfs"
	VerityMediaType   = "application/vnd.osbuild.update.verity.v1"
	KernelMediaType   = "application/vnd.osbuild.update.kernel.v1"
	InitrdMediaType   = "application/vnd.osbuild.update.initrd.v1"
	ManifestMediaType = "application/vnd.oci.image.manifest.v1+json"

	// TitleAnnotation names a layer's file, as ORAS and most registries' UIs show it.
	TitleAnnotation = "org.opencontainers.image.title"
)

// Config is the artifact's config blob: everything the agent needs to check a release against the device
// and to write the target slot's boot entry, without trusting anything that is not signed.
type Config struct {
	Name          string       `json:"name"`
	Version       string       `json:"version"`
	Arch          string       `json:"arch"`
	KernelVersion string       `json:"kernel_version,omitempty"`
	Verity        ConfigVerity `json:"verity"`
	Cmdline       ConfigCmd    `json:"cmdline"`
	// Slot is what the target slot's partitions must hold at least.
	Slot ConfigSlot `json:"slot"`
	// Layers are the digests of the four layers, by role, repeated here so that the signed config alone
	// ties the release together.
	Layers ConfigLayers `json:"layers"`
}

// ConfigVerity is the dm-verity description of the root.
type ConfigVerity struct {
	Algorithm     string `json:"algorithm"`
	RootHash      string `json:"root_hash"`
	Salt          string `json:"salt"`
	DataBlocks    uint64 `json:"data_blocks"`
	DataBlockSize uint32 `json:"data_block_size"`
	HashBlockSize uint32 `json:"hash_block_size"`
}

// ConfigCmd holds the variant's parts of the kernel command line; the agent adds the verity table with
// the target slot's PARTUUIDs (boot.Cmdline), which only the device knows.
type ConfigCmd struct {
	Extra     []string `json:"extra,omitempty"`
	DataMount string   `json:"data_mount,omitempty"`
	Init      string   `json:"init,omitempty"`
}

// ConfigSlot gives the sizes the target slot needs.
type ConfigSlot struct {
	RootSize   int64 `json:"root_size"`
	VeritySize int64 `json:"verity_size"`
}

// ConfigLayers are layer digests by role ("sha256:...").
type ConfigLayers struct {
	Root   string `json:"root"`
	Verity string `json:"verity"`
	Kernel string `json:"kernel"`
	Initrd string `json:"initrd"`
}

// ConfigFromManifest makes the artifact config of a build.
func ConfigFromManifest(m *builder.Manifest) *Config {
	return &Config{
		Name: m.Name, Version: m.Version, Arch: m.Arch, KernelVersion: m.KernelVersion,
		Verity: ConfigVerity{
			Algorithm: m.Verity.Algorithm, RootHash: m.Verity.RootHash, Salt: m.Verity.Salt,
			DataBlocks: m.Verity.DataBlocks, DataBlockSize: m.Verity.DataBlockSize, HashBlockSize: m.Verity.HashBlockSize,
		},
		Cmdline: ConfigCmd{Extra: m.CmdlineExtra, DataMount: m.DataMount, Init: m.Init},
		Slot:    ConfigSlot{RootSize: m.Root.Size, VeritySize: m.Verity.Size},
		Layers: ConfigLayers{
			Root: "sha256:" + m.Root.SHA256, Verity: "sha256:" + m.Verity.SHA256,
			Kernel: "sha256:" + m.Kernel.SHA256, Initrd: "sha256:" + m.Initrd.SHA256,
		},
	}
}

// Validate checks that a config is complete: it comes from the network, signed or not, and every later
// step relies on these fields.
func (c *Config) Validate() error {
	var missing []string
	for k, v := range map[string]string{"name": c.Name, "version": c.Version, "arch": c.Arch,
		"verity.root_hash": c.Verity.RootHash, "layers.root": c.Layers.Root, "layers.verity": c.Layers.Verity,
		"layers.kernel": c.Layers.Kernel, "layers.initrd": c.Layers.Initrd} {
		if v == "" {
			missing = append(missing, k)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("update config: %s missing", strings.Join(missing, ", "))
	}
	if c.Verity.DataBlocks == 0 || c.Slot.RootSize <= 0 || c.Slot.VeritySize <= 0 {
		return errors.New("update config: data blocks and slot sizes must be positive")
	}
	bs := int64(c.Verity.DataBlockSize)
	if bs == 0 {
		bs = 4096
	}
	if (c.Slot.RootSize+bs-1)/bs != int64(c.Verity.DataBlocks) {
		return fmt.Errorf("update config: %d data blocks do not cover a root of %d bytes", c.Verity.DataBlocks, c.Slot.RootSize)
	}
	return nil
}

// Descriptor is an OCI content descriptor.
type Descriptor struct {
	MediaType    string            `json:"mediaType"`
	Digest       string            `json:"digest"`
	Size         int64             `json:"size"`
	ArtifactType string            `json:"artifactType,omitempty"`
	Annotations  map[string]string `json:"annotations,omitempty"`
}

// Manifest is an OCI 1.1 image manifest, as this package writes and reads it.
type Manifest struct {
	SchemaVersion int               `json:"schemaVersion"`
	MediaType     string            `json:"mediaType"`
	ArtifactType  string            `json:"artifactType,omitempty"`
	Config        Descriptor        `json:"config"`
	Layers        []Descriptor      `json:"layers"`
	Subject       *Descriptor       `json:"subject,omitempty"`
	Annotations   map[string]string `json:"annotations,omitempty"`
}

// Release is a resolved, verified artifact: its manifest digest, manifest and config.
type Release struct {
	Ref      string // what was resolved, for messages
	Digest   string // manifest digest, "sha256:..."
	Manifest *Manifest
	Config   *Config
}

// layer returns the manifest's layer with a digest, checking its media type.
func (r *Release) layer(digest, mediaType string) (Descriptor, error) {
	for _, l := range r.Manifest.Layers {
		if l.Digest == digest {
			if l.MediaType != mediaType {
				return Descriptor{}, fmt.Errorf("update %s: layer %s has media type %s, want %s", r.Ref, digest, l.MediaType, mediaType)
			}
			return l, nil
		}
	}
	return Descriptor{}, fmt.Errorf("update %s: the config names layer %s, which the manifest does not have", r.Ref, digest)
}

func parseManifest(raw []byte) (*Manifest, error) {
	var m Manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("parse manifest: %w", err)
	}
	return &m, nil
}
