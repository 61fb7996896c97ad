// Package update publishes signed OCI update artifacts and applies them on a device (DESIGN.md, "Update
// artifact" and "Agent order of writes").
//
// Build side: Publish pushes one OCI 1.1 manifest per release (artifactType ArtifactType, a config
// describing the release, and the root squashfs, verity tree, kernel and initrd as uncompressed layers),
// tags it with its version and its channel, and signs it the way cosign does (a simple-signing payload in
// a manifest tagged sha256-<digest>.sig), so that `cosign verify --key` accepts it offline.
//
// Device side: Apply installs a release into the slot that is not running, in an order that leaves a
// bootable system after a power loss at any point: verify → drop the target's entry → stream and hash →
// verify the verity tree on disk → kernel, initrd, then the entry (NAME+3.conf) last. systemd-boot's boot
// counting then tries the new slot and falls back by itself; MarkGood ends the trial.
package update
