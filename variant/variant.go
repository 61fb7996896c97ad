// Package variant reads and validates a variant spec: the declarative description of one OS image
// (which OCI images make its root, which files to add, how it boots, how its disk is laid out, where its
// updates come from). Loading resolves relative paths against the variant file's folder and fills in
// defaults, so later stages never look at the YAML again.
package variant

import (
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Spec is variant spec v1. Keys are documented in docs/variant.md.
type Spec struct {
	Pos      Pos               `yaml:"-" json:"-"`
	Name     string            `yaml:"name,required" json:"name"`
	Version  string            `yaml:"version,required" json:"version"`
	Arch     string            `yaml:"arch,required" json:"arch"`
	Layers   []Layer           `yaml:"layers,required" json:"layers"`
	Files    []File            `yaml:"files" json:"files,omitempty"`
	Boot     Boot              `yaml:"boot" json:"boot"`
	Disk     Disk              `yaml:"disk" json:"disk"`
	Squashfs Squashfs          `yaml:"squashfs" json:"squashfs"`
	Outputs  []string          `yaml:"outputs" json:"outputs"`
	Update   *Update           `yaml:"update" json:"update,omitempty"`
	Health   []HealthCheck     `yaml:"health" json:"health,omitempty"`
	Labels   map[string]string `yaml:"labels" json:"labels,omitempty"`

	// Dir is the folder of the variant file: relative paths in the spec were resolved against it.
	Dir string `yaml:"-" json:"-"`

	pos map[string]Pos // where each key's value was written, by dotted key
}

// errAt is a validation error placed at the value of key (or the closest enclosing key written).
func (s *Spec) errAt(key, format string, args ...any) *Error {
	for k := key; ; {
		if p, ok := s.pos[k]; ok {
			return p.errorf(key, format, args...)
		}
		i := strings.LastIndexAny(k, ".[")
		if i < 0 {
			return s.Pos.errorf(key, format, args...)
		}
		k = k[:i]
	}
}

// Layer is one source of root content, applied in order. Exactly one of Image, Dir or Tar is set.
type Layer struct {
	Pos   Pos    `yaml:"-" json:"-"`
	Image string `yaml:"image" json:"image,omitempty"`
	Dir   string `yaml:"dir" json:"dir,omitempty"`
	Tar   string `yaml:"tar" json:"tar,omitempty"`
}

// File is a regular file put into the root after all layers.
type File struct {
	Pos     Pos     `yaml:"-" json:"-"`
	Path    string  `yaml:"path,required" json:"path"`
	Content *string `yaml:"content" json:"content,omitempty"`
	Source  string  `yaml:"source" json:"source,omitempty"`
	Mode    *Mode   `yaml:"mode" json:"mode,omitempty"`
	UID     uint32  `yaml:"uid" json:"uid"`
	GID     uint32  `yaml:"gid" json:"gid"`
}

// Boot says what boots the root.
type Boot struct {
	Pos     Pos    `yaml:"-" json:"-"`
	Kernel  string `yaml:"kernel" json:"kernel,omitempty"`   // path inside the root; auto-detected when empty
	Cmdline string `yaml:"cmdline" json:"cmdline,omitempty"` // appended to the generated command line
	Loader  string `yaml:"loader" json:"loader"`             // systemd-boot EFI binary inside the root
	Init    string `yaml:"init" json:"init,omitempty"`       // the root's init; /sbin/init when empty
}

// Disk sizes the A/B layout. Zero means the default.
type Disk struct {
	Pos       Pos    `yaml:"-" json:"-"`
	Size      Size   `yaml:"size" json:"size"`
	ESP       Size   `yaml:"esp" json:"esp"`
	Slot      Size   `yaml:"slot" json:"slot"`
	Data      Size   `yaml:"data" json:"data"` // 0: the rest of the disk
	DataMount string `yaml:"data_mount" json:"data_mount"`
}

// Squashfs tunes the root image.
type Squashfs struct {
	Pos         Pos    `yaml:"-" json:"-"`
	Compression string `yaml:"compression" json:"compression"`
	Level       int    `yaml:"level" json:"level,omitempty"`
	BlockSize   Size   `yaml:"block_size" json:"block_size"`
}

// Update says where the device's agent looks for new releases.
type Update struct {
	Pos        Pos    `yaml:"-" json:"-"`
	Repository string `yaml:"repository,required" json:"repository"`
	Channel    string `yaml:"channel" json:"channel"`
	Reboot     string `yaml:"reboot" json:"reboot,omitempty"`
	// PublicKey is the cosign public key (a host path) releases must be signed with; the build installs
	// it as /etc/osbuild/update.pub.
	PublicKey string `yaml:"public_key,required" json:"public_key"`
}

// HealthCheck is a command that must succeed before a new boot is marked good.
type HealthCheck struct {
	Pos     Pos    `yaml:"-" json:"-"`
	Name    string `yaml:"name" json:"name,omitempty"`
	Command string `yaml:"command,required" json:"command"`
	Timeout string `yaml:"timeout" json:"timeout,omitempty"`
}

// Defaults.
const (
	DefaultLoader      = "/usr/lib/systemd/boot/efi/systemd-bootx64.efi"
	DefaultLoaderArm64 = "/usr/lib/systemd/boot/efi/systemd-bootaa64.efi"
	DefaultDataMount   = "/var"
	DefaultCompression = "zstd"
	DefaultBlockSize   = 128 << 10
	DefaultESP         = 256 << 20
	DefaultSlot        = 1 << 30
)

// Outputs the build knows how to write.
var knownOutputs = map[string]bool{"raw": true, "qcow2": true, "vmdk": true, "vhd": true, "vhd-fixed": true}

var (
	nameRE    = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)
	versionRE = regexp.MustCompile(`^[0-9]+(\.[0-9]+)*([-~+][0-9A-Za-z.+~-]+)?$`)
)

// Load reads, validates and completes the variant at file.
func Load(file string) (*Spec, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read variant: %w", err)
	}
	return Parse(file, data)
}

// Parse is Load for bytes already read; file names them in errors and anchors relative paths.
func Parse(file string, data []byte) (*Spec, error) {
	s := &Spec{}
	pos, err := parseYAML(file, data, s)
	if err != nil {
		return nil, err
	}
	s.pos = pos
	s.Pos = Pos{File: file, Line: 1, Column: 1}
	dir, err := filepath.Abs(filepath.Dir(file))
	if err != nil {
		return nil, fmt.Errorf("variant %s: %w", file, err)
	}
	s.Dir = dir
	if err := s.validate(); err != nil {
		return nil, err
	}
	s.resolvePaths()
	s.setDefaults()
	return s, nil
}

func (s *Spec) validate() error {
	if !nameRE.MatchString(s.Name) {
		return s.errAt("name", "%q is not a valid name: use lower-case letters, digits, '.', '_' and '-' (at most 63)", s.Name)
	}
	if !versionRE.MatchString(s.Version) {
		return s.errAt("version", "%q is not a version: use dotted numbers such as 1.4.2, optionally with a suffix such as 1.4.2-rc1", s.Version)
	}
	switch s.Arch {
	case "amd64", "arm64":
	default:
		return s.errAt("arch", "%q is not supported: use amd64 or arm64", s.Arch)
	}
	if len(s.Layers) == 0 {
		return s.errAt("layers", "at least one layer is needed")
	}
	for i, l := range s.Layers {
		n := 0
		for _, v := range []string{l.Image, l.Dir, l.Tar} {
			if v != "" {
				n++
			}
		}
		if n != 1 {
			return s.errAt(fmt.Sprintf("layers[%d]", i), "set exactly one of image, dir or tar")
		}
		if l.Image != "" {
			if err := checkImageRef(l.Image); err != nil {
				return s.errAt(fmt.Sprintf("layers[%d].image", i), "%v", err)
			}
		}
	}
	seen := map[string]bool{}
	for i, f := range s.Files {
		key := fmt.Sprintf("files[%d]", i)
		if !strings.HasPrefix(f.Path, "/") || path.Clean(f.Path) != f.Path || f.Path == "/" {
			return s.errAt(key+".path", "%q must be an absolute, clean path to a file, such as /etc/hostname", f.Path)
		}
		if seen[f.Path] {
			return s.errAt(key+".path", "%s is listed twice", f.Path)
		}
		seen[f.Path] = true
		if (f.Content == nil) == (f.Source == "") {
			return s.errAt(key, "set exactly one of content or source")
		}
	}
	if s.Boot.Kernel != "" && !strings.HasPrefix(s.Boot.Kernel, "/") {
		return s.errAt("boot.kernel", "%q must be an absolute path inside the root", s.Boot.Kernel)
	}
	if s.Boot.Loader != "" && !strings.HasPrefix(s.Boot.Loader, "/") {
		return s.errAt("boot.loader", "%q must be an absolute path inside the root", s.Boot.Loader)
	}
	if strings.ContainsAny(s.Boot.Cmdline, "\n\r") {
		return s.errAt("boot.cmdline", "must be one line")
	}
	if s.Disk.DataMount != "" && (!strings.HasPrefix(s.Disk.DataMount, "/") || s.Disk.DataMount == "/") {
		return s.errAt("disk.data_mount", "%q must be an absolute path other than /", s.Disk.DataMount)
	}
	if s.Disk.ESP != 0 && s.Disk.ESP < 33<<20 {
		return s.errAt("disk.esp", "%s is too small for FAT32: use at least 33MiB", s.Disk.ESP)
	}
	switch s.Squashfs.Compression {
	case "", "zstd", "gzip", "xz", "lz4":
	default:
		return s.errAt("squashfs.compression", "%q is not supported: use zstd, gzip, xz or lz4", s.Squashfs.Compression)
	}
	if bs := s.Squashfs.BlockSize; bs != 0 && (bs < 4<<10 || bs > 1<<20 || bs&(bs-1) != 0) {
		return s.errAt("squashfs.block_size", "%s must be a power of two from 4KiB to 1MiB", bs)
	}
	for i, o := range s.Outputs {
		if !knownOutputs[o] {
			return s.errAt(fmt.Sprintf("outputs[%d]", i), "%q is not a known output: use raw, qcow2, vmdk or vhd", o)
		}
	}
	if s.Update != nil {
		if err := checkImageRef(s.Update.Repository); err != nil {
			return s.errAt("update.repository", "%v", err)
		}
		switch s.Update.Reboot {
		case "", "immediate", "never":
		default:
			if !strings.HasPrefix(s.Update.Reboot, "window ") {
				return s.errAt("update.reboot", "%q: use immediate, never, or window \"Sun 02:00-04:00\"", s.Update.Reboot)
			}
		}
	}
	return nil
}

// checkImageRef catches refs that can never resolve, early and with the line of the layer.
func checkImageRef(ref string) error {
	switch {
	case strings.HasPrefix(ref, "oci:"):
		if strings.TrimPrefix(ref, "oci:") == "" {
			return errors.New("oci: needs a path to an OCI image layout, such as oci:./base or oci:./base:v1")
		}
	case strings.HasPrefix(ref, "docker-archive:"):
		if strings.TrimPrefix(ref, "docker-archive:") == "" {
			return errors.New("docker-archive: needs a path to a tar made by docker save")
		}
	case strings.ContainsAny(ref, " \t") || ref == "":
		return fmt.Errorf("%q is not an image reference: use HOST/REPO[:TAG][@sha256:DIGEST], oci:PATH or docker-archive:PATH", ref)
	}
	return nil
}

func (s *Spec) abs(p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(s.Dir, p)
}

func (s *Spec) resolvePaths() {
	for i := range s.Layers {
		l := &s.Layers[i]
		l.Dir, l.Tar = s.abs(l.Dir), s.abs(l.Tar)
		for _, scheme := range []string{"oci:", "docker-archive:"} {
			if rest, ok := strings.CutPrefix(l.Image, scheme); ok {
				l.Image = scheme + s.abs(rest)
			}
		}
	}
	for i := range s.Files {
		s.Files[i].Source = s.abs(s.Files[i].Source)
	}
	if s.Update != nil {
		s.Update.PublicKey = s.abs(s.Update.PublicKey)
	}
}

func (s *Spec) setDefaults() {
	if s.Boot.Loader == "" {
		s.Boot.Loader = DefaultLoader
		if s.Arch == "arm64" {
			s.Boot.Loader = DefaultLoaderArm64
		}
	}
	if s.Disk.ESP == 0 {
		s.Disk.ESP = DefaultESP
	}
	if s.Disk.Slot == 0 {
		s.Disk.Slot = DefaultSlot
	}
	if s.Disk.DataMount == "" {
		s.Disk.DataMount = DefaultDataMount
	}
	if s.Squashfs.Compression == "" {
		s.Squashfs.Compression = DefaultCompression
	}
	if s.Squashfs.BlockSize == 0 {
		s.Squashfs.BlockSize = DefaultBlockSize
	}
	if len(s.Outputs) == 0 {
		s.Outputs = []string{"raw"}
	}
	if s.Update != nil && s.Update.Channel == "" {
		s.Update.Channel = "stable"
	}
	if s.Update != nil && s.Update.Reboot == "" {
		s.Update.Reboot = "immediate"
	}
}

// Size is a byte count written as an integer or with a unit: 512MiB, 4GiB, 1G, 128K.
type Size int64

var sizeUnits = map[string]int64{
	"": 1, "b": 1,
	"k": 1 << 10, "kib": 1 << 10, "kb": 1000,
	"m": 1 << 20, "mib": 1 << 20, "mb": 1000 * 1000,
	"g": 1 << 30, "gib": 1 << 30, "gb": 1000 * 1000 * 1000,
	"t": 1 << 40, "tib": 1 << 40, "tb": 1000 * 1000 * 1000 * 1000,
}

// ParseSize reads a size such as 4GiB.
func ParseSize(v string) (Size, error) {
	v = strings.TrimSpace(v)
	i := strings.IndexFunc(v, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
	num, unit := v, ""
	if i >= 0 {
		num, unit = v[:i], strings.ToLower(strings.TrimSpace(v[i:]))
	}
	mult, ok := sizeUnits[unit]
	if !ok || num == "" {
		return 0, fmt.Errorf("%q is not a size: use bytes or a unit such as 512MiB or 4GiB", v)
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || f < 0 || f*float64(mult) > 1<<62 {
		return 0, fmt.Errorf("%q is not a size: use bytes or a unit such as 512MiB or 4GiB", v)
	}
	return Size(f * float64(mult)), nil
}

func (s *Size) decodeNode(n *yaml.Node) error {
	v, err := ParseSize(n.Value)
	if err != nil {
		return err
	}
	*s = v
	return nil
}

func (s Size) String() string {
	for _, u := range []struct {
		n    string
		mult int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if int64(s) >= u.mult && int64(s)%u.mult == 0 {
			return fmt.Sprintf("%d%s", int64(s)/u.mult, u.n)
		}
	}
	return fmt.Sprintf("%d bytes", int64(s))
}

// MarshalText keeps the build manifest readable.
func (s Size) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// Mode is a file mode written in octal, with or without a leading 0 or 0o: 0644, 755, 0o4755.
type Mode uint32

func (m *Mode) decodeNode(n *yaml.Node) error {
	v := strings.TrimPrefix(strings.TrimPrefix(n.Value, "0o"), "0O")
	u, err := strconv.ParseUint(v, 8, 32)
	if err != nil || u > 0o7777 {
		return fmt.Errorf("%q is not a file mode: write it in octal, such as 0644 or 4755", n.Value)
	}
	*m = Mode(u)
	return nil
}

func (m Mode) String() string { return fmt.Sprintf("%04o", uint32(m)) }

// MarshalText keeps the build manifest readable.
func (m Mode) MarshalText() ([]byte, error) { return []byte(m.String()), nil }
