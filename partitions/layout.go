// Package partitions lays out and writes osbuild's A/B GPT disk (see DESIGN.md, "Disk layout"):
//
//	1 esp (FAT32)  2 root-a  3 verity-a  4 root-b  5 verity-b  6 data
//
// Everything is built into a plain file without root, mounts or loop devices: the GPT with go-diskfs,
// partition contents written at their offsets, slot B and unwritten space left as holes. The same package
// opens an existing disk (image or block device) for the update agent: partitions by label, files in the
// ESP.
package partitions

import (
	"errors"
	"fmt"
	"strings"

	"github.com/google/uuid"

	"osbuild.dev/osbuild/verity"
)

// Partition labels (GPT partition names). The update agent and the init find partitions by these and by
// type, so they are part of the on-disk contract.
const (
	LabelESP     = "esp"
	LabelRootA   = "root-a"
	LabelVerityA = "verity-a"
	LabelRootB   = "root-b"
	LabelVerityB = "verity-b"
	LabelData    = "data"
)

// Partition type GUIDs from the Discoverable Partitions Specification.
const (
	TypeESP         = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"
	TypeLinuxData   = "0fc63daf-8483-4772-8e79-3d69d8477de4"
	TypeRootAMD64   = "4f68bce3-e8cd-4db1-96e7-fbcaf984b709"
	TypeVerityAMD64 = "2c7357ed-ebd2-46d9-aec1-23d437ec2bf5"
	TypeRootARM64   = "b921b045-1df0-41c3-af44-4c6f280d3fae"
	TypeVerityARM64 = "df3300ce-d69f-4c92-978c-9bfb0f38d820"
)

const (
	// MiB is the alignment of every partition: what fdisk, sgdisk and systemd-repart use, and a multiple
	// of every erase block and RAID stripe that matters.
	MiB = int64(1) << 20

	sectorSize = 512

	// DefaultESPSize holds two slots' kernels and initrds with room to spare; the unused part stays sparse.
	DefaultESPSize = 256 * MiB
	// MinESPSize keeps the ESP a valid FAT32 (at least 65,525 clusters of 512 bytes).
	MinESPSize = 34 * MiB
	// DefaultMinDataSize is the smallest data partition a layout accepts when the caller gives none.
	DefaultMinDataSize = 16 * MiB
)

// Arch names the architectures whose root partition types are known.
var archTypes = map[string][2]string{
	"amd64": {TypeRootAMD64, TypeVerityAMD64},
	"arm64": {TypeRootARM64, TypeVerityARM64},
}

// RootTypes returns the root and root-verity partition type GUIDs for an architecture (GOARCH names).
func RootTypes(arch string) (root, verityType string, err error) {
	t, ok := archTypes[arch]
	if !ok {
		return "", "", fmt.Errorf("partitions: unknown architecture %q: use amd64 or arm64", arch)
	}
	return t[0], t[1], nil
}

// Spec gives the sizes a Layout is computed from. Sizes are rounded up to whole MiB.
type Spec struct {
	Arch string // "amd64" or "arm64"
	// DiskSize is the whole disk; 0 means as small as the other sizes allow.
	DiskSize int64
	// ESPSize defaults to DefaultESPSize.
	ESPSize int64
	// SlotSize is the size of each root partition (required). It cannot grow after the build: leave
	// headroom for future releases.
	SlotSize int64
	// VeritySize is the size of each verity partition; 0 means DefaultVeritySize(SlotSize).
	VeritySize int64
	// MinDataSize is the smallest data partition accepted (default DefaultMinDataSize). The data partition
	// takes the rest of the disk.
	MinDataSize int64
	// Seed derives the disk GUID and the partition GUIDs (e.g. the variant name), so that two builds give
	// the same bytes. Disks built from the same seed share PARTUUIDs: use a per-machine seed if several
	// may be attached to one machine.
	Seed string
}

// Partition is one GPT entry, with byte offsets.
type Partition struct {
	Number int    `json:"number"` // 1-based, as in /dev/vda1
	Label  string `json:"label"`  // GPT partition name
	Type   string `json:"type"`   // type GUID, lower case
	UUID   string `json:"uuid"`   // unique GUID (PARTUUID), lower case
	Start  int64  `json:"start"`  // bytes from the start of the disk
	Size   int64  `json:"size"`   // bytes
}

// End is the first byte after the partition.
func (p *Partition) End() int64 { return p.Start + p.Size }

// Layout is a complete disk: size, disk GUID and partitions in table order.
type Layout struct {
	Arch       string      `json:"arch,omitempty"`
	DiskSize   int64       `json:"disk_size"`
	DiskGUID   string      `json:"disk_guid"`
	Partitions []Partition `json:"partitions"`
}

// Partition returns the partition with a label.
func (l *Layout) Partition(label string) (*Partition, error) {
	for i := range l.Partitions {
		if l.Partitions[i].Label == label {
			return &l.Partitions[i], nil
		}
	}
	return nil, &NoPartitionError{Label: label}
}

// NoPartitionError says a label is not in the table.
type NoPartitionError struct{ Label string }

func (e *NoPartitionError) Error() string {
	return fmt.Sprintf("partitions: no partition labelled %q: is this an osbuild disk?", e.Label)
}

// DiskTooSmallError says the layout does not fit the disk size given.
type DiskTooSmallError struct {
	Need, Have int64
}

func (e *DiskTooSmallError) Error() string {
	return fmt.Sprintf("partitions: disk of %d bytes (%s) is too small for the layout, which needs at least %d bytes (%s): "+
		"give a larger disk size, or smaller slot, ESP or data sizes", e.Have, human(e.Have), e.Need, human(e.Need))
}

// TooLargeError says a partition's content does not fit its partition.
type TooLargeError struct {
	Label               string
	Size, PartitionSize int64
}

func (e *TooLargeError) Error() string {
	return fmt.Sprintf("partitions: content for %s is %d bytes (%s), larger than the partition's %d bytes (%s): "+
		"build with a larger slot size (slots cannot grow after the first build) or make the image smaller",
		e.Label, e.Size, human(e.Size), e.PartitionSize, human(e.PartitionSize))
}

// DefaultVeritySize is the verity partition size for a root partition of slotSize bytes: the hash device
// of a full slot with sha512 (twice sha256's), rounded up to a MiB, so either algorithm fits any root.
func DefaultVeritySize(slotSize int64) int64 {
	n, err := verity.HashSize(slotSize, verity.Options{Hash: "sha512"})
	if err != nil {
		return MiB
	}
	return alignUp(n, MiB)
}

func alignUp(n, a int64) int64 { return (n + a - 1) / a * a }

// NewLayout computes the partition table for a spec.
func NewLayout(s Spec) (*Layout, error) {
	if _, _, err := RootTypes(s.Arch); err != nil {
		return nil, err
	}
	if s.SlotSize <= 0 {
		return nil, errors.New("partitions: the slot size is required: the largest root image a slot must ever hold, with headroom")
	}
	if s.ESPSize == 0 {
		s.ESPSize = DefaultESPSize
	}
	if s.ESPSize < MinESPSize {
		return nil, fmt.Errorf("partitions: ESP size %d bytes is below the FAT32 minimum of %d (%s)", s.ESPSize, MinESPSize, human(MinESPSize))
	}
	if s.VeritySize == 0 {
		s.VeritySize = DefaultVeritySize(s.SlotSize)
	}
	if s.MinDataSize == 0 {
		s.MinDataSize = DefaultMinDataSize
	}
	esp, slot, ver, minData := alignUp(s.ESPSize, MiB), alignUp(s.SlotSize, MiB), alignUp(s.VeritySize, MiB), alignUp(s.MinDataSize, MiB)
	if need, err := verity.HashSize(slot, verity.Options{}); err == nil && ver < need {
		return nil, fmt.Errorf("partitions: verity size %d bytes cannot hold the tree of a full %d-byte slot (%d bytes needed with sha256): leave VeritySize at 0 for a default",
			ver, slot, need)
	}
	// The first MiB holds the protective MBR and the primary GPT, the last MiB the backup GPT.
	need := MiB + esp + 2*(slot+ver) + minData + MiB
	size := s.DiskSize
	if size == 0 {
		size = need
	}
	if size%sectorSize != 0 {
		return nil, fmt.Errorf("partitions: disk size %d is not a multiple of %d-byte sectors", size, sectorSize)
	}
	if size < need {
		return nil, &DiskTooSmallError{Need: need, Have: size}
	}
	rootType, verityType, _ := RootTypes(s.Arch)
	l := &Layout{Arch: s.Arch, DiskSize: size, DiskGUID: deriveGUID(s.Seed, "disk")}
	pos := MiB
	add := func(label, typ string, n int64) {
		l.Partitions = append(l.Partitions, Partition{
			Number: len(l.Partitions) + 1, Label: label, Type: typ, UUID: deriveGUID(s.Seed, "partition/"+label),
			Start: pos, Size: n,
		})
		pos += n
	}
	add(LabelESP, TypeESP, esp)
	add(LabelRootA, rootType, slot)
	add(LabelVerityA, verityType, ver)
	add(LabelRootB, rootType, slot)
	add(LabelVerityB, verityType, ver)
	// The data partition ends on a MiB boundary before the backup GPT (33 sectors at the very end).
	dataEnd := (size - 34*sectorSize) / MiB * MiB
	add(LabelData, TypeLinuxData, dataEnd-pos)
	return l, nil
}

// guidNamespace scopes osbuild's name-based (version 5) GUIDs.
var guidNamespace = uuid.NewSHA1(uuid.NameSpaceURL, []byte("https://osbuild.dev/partitions"))

func deriveGUID(seed, what string) string {
	return uuid.NewSHA1(guidNamespace, []byte(seed+"\x00"+what)).String()
}

func human(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= MiB:
		return fmt.Sprintf("%.1f MiB", float64(n)/float64(MiB))
	}
	return fmt.Sprintf("%d bytes", n)
}

func normGUID(s string) string { return strings.ToLower(s) }
