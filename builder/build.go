package builder

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"osbuild.dev/osbuild/boot"
	"osbuild.dev/osbuild/formats"
	"osbuild.dev/osbuild/layers"
	"osbuild.dev/osbuild/partitions"
	"osbuild.dev/osbuild/squashfs"
	"osbuild.dev/osbuild/tree"
	"osbuild.dev/osbuild/variant"
	"osbuild.dev/osbuild/verity"
)

// BuildOptions extend Options with where the outputs go.
type BuildOptions struct {
	Options
	OutDir string
	// Self is the static osbuild binary that becomes the initramfs /init (and the update agent in the
	// image); default os.Executable().
	Self string
	// Log receives one line per stage; nil is quiet.
	Log io.Writer
	// Formats overrides the variant's outputs: (raw, qcow2, vmdk, vhd, vhd-fixed).
	Formats []string
}

// Manifest is NAME-VERSION.json: everything needed to check, repeat or publish a build.
type Manifest struct {
	Name            string             `json:"name"`
	Version         string             `json:"version"`
	Arch            string             `json:"arch"`
	SourceDateEpoch *int64             `json:"source_date_epoch,omitempty"`
	Inputs          []Input            `json:"inputs"`
	Root            RootInfo           `json:"root"`
	Verity          VerityInfo         `json:"verity"`
	Kernel          FileInfo           `json:"kernel"`
	KernelVersion   string             `json:"kernel_version"`
	Initrd          FileInfo           `json:"initrd"`
	Modules         []string           `json:"modules"`
	Cmdline         string             `json:"cmdline"`       // slot A's, as written to its entry
	CmdlineExtra    []string           `json:"cmdline_extra"` // the variant's boot.cmdline, for other slots' lines
	DataMount       string             `json:"data_mount"`
	Init            string             `json:"init,omitempty"`
	Layout          *partitions.Layout `json:"layout"`
	Outputs         []FileInfo         `json:"outputs"`
}

// FileInfo is one file of the build.
type FileInfo struct {
	File   string `json:"file"` // name in the output folder
	Format string `json:"format,omitempty"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// RootInfo describes the squashfs root image.
type RootInfo struct {
	FileInfo
	Compression string `json:"compression"`
	BlockSize   uint32 `json:"block_size"`
	Inodes      int    `json:"inodes"`
}

// VerityInfo describes the hash tree: what the kernel table and the update agent need.
type VerityInfo struct {
	FileInfo
	Algorithm     string `json:"algorithm"`
	RootHash      string `json:"root_hash"`
	Salt          string `json:"salt"`
	DataBlocks    uint64 `json:"data_blocks"`
	DataBlockSize uint32 `json:"data_block_size"`
	HashBlockSize uint32 `json:"hash_block_size"`
}

// Stage errors a user acts on.
var (
	ErrNoLoader = errors.New("no systemd-boot in the image")
)

// Build turns a variant into OUTDIR/NAME-VERSION.{raw,root.squashfs,verity,vmlinuz,initrd,json}. Every
// file is written under a temporary name and renamed only when the whole build succeeded.
func Build(ctx context.Context, spec *variant.Spec, opts BuildOptions) (_ *Manifest, err error) {
	if err := opts.fill(); err != nil {
		return nil, err
	}
	if opts.Self == "" {
		if opts.Self, err = os.Executable(); err != nil {
			return nil, fmt.Errorf("find the osbuild binary for the initramfs: %w", err)
		}
	}
	if st, err := os.Stat(opts.OutDir); err != nil || !st.IsDir() {
		return nil, fmt.Errorf("output folder %s does not exist: create it first", opts.OutDir)
	}
	for _, f := range opts.Formats {
		if !slices.Contains(formats.Names, f) {
			return nil, fmt.Errorf("unknown output format %q: use %s", f, strings.Join(formats.Names, ", "))
		}
	}
	logf := func(format string, args ...any) {
		if opts.Log != nil {
			fmt.Fprintf(opts.Log, format+"\n", args...)
		}
	}
	base := spec.Name + "-" + spec.Version
	out := &outputs{dir: opts.OutDir}
	defer func() {
		if err != nil {
			out.discard()
		}
	}()
	mtime := int64(0)
	if opts.SourceDateEpoch != nil {
		mtime = *opts.SourceDateEpoch
	}

	start := time.Now()
	root, err := BuildRoot(ctx, spec, opts.Options)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	logf("root: merged %d inputs in %s", len(root.Inputs), time.Since(start).Round(time.Millisecond))
	if err := completeRoot(root.Tree, spec, opts.Self, mtime); err != nil {
		return nil, err
	}

	// Boot pieces come from the root itself: kernel, modules, loader.
	kernel, err := boot.FindKernel(root.Tree, spec.Boot.Kernel)
	if err != nil {
		return nil, fmt.Errorf("%w; install a kernel package in one of the images or set boot.kernel", err)
	}
	loader := root.Tree.Lookup(spec.Boot.Loader)
	if loader == nil || loader.Type != tree.TypeRegular {
		return nil, fmt.Errorf("%w: %s is not a file in the root; add the systemd-boot-efi package to an image or set boot.loader", ErrNoLoader, spec.Boot.Loader)
	}
	mods, err := boot.ResolveModules(root.Tree, kernel.Version, boot.DefaultModules)
	if err != nil {
		return nil, fmt.Errorf("kernel %s modules: %w", kernel.Version, err)
	}
	for _, m := range boot.RequiredModules {
		for _, missing := range mods.Missing {
			if boot.CanonicalModuleName(m) == boot.CanonicalModuleName(missing) {
				return nil, fmt.Errorf("kernel %s has no module %s, which the root needs (and it is not built in): use a kernel with it", kernel.Version, missing)
			}
		}
	}

	// The layout is fixed before anything is written to it, so a disk too small for its layout fails before the
	// long work, and a root that outgrew its slot fails right after the root image is written.
	layout, err := partitions.NewLayout(partitions.Spec{
		Arch: spec.Arch, DiskSize: int64(spec.Disk.Size), ESPSize: int64(spec.Disk.ESP),
		SlotSize: int64(spec.Disk.Slot), MinDataSize: int64(spec.Disk.Data), Seed: spec.Name,
	})
	if err != nil {
		return nil, fmt.Errorf("disk layout: %w; adjust disk: in the variant", err)
	}
	rootA, _ := layout.Partition(partitions.LabelRootA)
	verityA, _ := layout.Partition(partitions.LabelVerityA)
	// Root image.
	start = time.Now()
	rootF, err := out.create(base + ".root.squashfs")
	if err != nil {
		return nil, err
	}
	sqOpts := squashfs.Options{Compression: spec.Squashfs.Compression, Level: spec.Squashfs.Level, BlockSize: uint32(spec.Squashfs.BlockSize)}
	if opts.SourceDateEpoch != nil {
		sqOpts.ModTime = time.Unix(*opts.SourceDateEpoch, 0)
	}
	stats, err := squashfs.Write(ctx, rootF, root.Tree, sqOpts)
	if err != nil {
		return nil, fmt.Errorf("write the root image: %w", err)
	}
	logf("root: %s squashfs, %d inodes, %.1f MB in %s", sqOpts.Compression, stats.Inodes, float64(stats.Bytes)/1e6, time.Since(start).Round(time.Millisecond))

	if stats.Bytes > rootA.Size {
		return nil, &partitions.TooLargeError{Label: partitions.LabelRootA, Size: stats.Bytes, PartitionSize: rootA.Size}
	}

	// Verity tree over the root image as written.
	start = time.Now()
	verF, err := out.create(base + ".verity")
	if err != nil {
		return nil, err
	}
	vres, err := verity.Format(rootF, stats.Bytes, verF, verity.Options{Seed: []byte(spec.Name + "\x00" + spec.Version)})
	if err != nil {
		return nil, fmt.Errorf("verity: %w", err)
	}
	if vres.HashSize > verityA.Size {
		return nil, &partitions.TooLargeError{Label: partitions.LabelVerityA, Size: vres.HashSize, PartitionSize: verityA.Size}
	}
	logf("verity: root hash %s in %s", vres.RootHashHex(), time.Since(start).Round(time.Millisecond))

	// Kernel, initramfs and the boot entry for slot A.
	kernF, err := out.create(base + ".vmlinuz")
	if err != nil {
		return nil, err
	}
	if err := copyNode(kernF, kernel.Node); err != nil {
		return nil, fmt.Errorf("copy kernel %s: %w", kernel.Path, err)
	}
	initrdF, err := out.create(base + ".initrd")
	if err != nil {
		return nil, err
	}
	if err := boot.WriteInitramfs(initrdF, mods, boot.InitramfsOptions{Init: opts.Self, ModTime: mtime}); err != nil {
		return nil, fmt.Errorf("initramfs: %w", err)
	}
	cmdline, err := boot.Cmdline(boot.CmdlineOptions{
		Verity: boot.Verity{
			DataPartUUID: rootA.UUID, HashPartUUID: verityA.UUID, DataBlocks: vres.DataBlocks,
			DataBlockSize: vres.DataBlockSize, HashBlockSize: vres.HashBlockSize,
			Algorithm: vres.Algorithm, RootHash: vres.RootHashHex(), Salt: vres.SaltHex(),
		},
		DataMount: spec.Disk.DataMount,
		Init:      spec.Boot.Init,
		Extra:     append([]string{boot.SlotParam + "=a"}, strings.Fields(spec.Boot.Cmdline)...),
	})
	if err != nil {
		return nil, fmt.Errorf("kernel command line: %w", err)
	}
	entry := boot.SlotEntry(spec.Name, spec.Version, "a", cmdline, 0)
	entryData, err := entry.Render()
	if err != nil {
		return nil, err
	}
	loaderData, err := readNode(loader)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", spec.Boot.Loader, err)
	}
	espFiles := []partitions.File{
		{Path: "EFI/BOOT/" + bootFileName(spec.Arch), Data: loaderData},
		{Path: "loader/loader.conf", Data: boot.LoaderConf()},
		{Path: entry.FileName(), Data: entryData},
		partitions.HostFile(strings.TrimPrefix(entry.Linux, "/"), kernF.Name()),
		partitions.HostFile(strings.TrimPrefix(entry.Initrd, "/"), initrdF.Name()),
	}

	// The disk.
	start = time.Now()
	rawF, err := out.create(base + ".raw")
	if err != nil {
		return nil, err
	}
	contents := partitions.Contents{ESP: espFiles, Root: rootF, RootSize: stats.Bytes, Verity: verF, VeritySize: vres.HashSize}
	if opts.SourceDateEpoch != nil {
		contents.ESPOptions.ModTime = time.Unix(*opts.SourceDateEpoch, 0)
	}
	if _, err := partitions.Write(rawF, layout, contents); err != nil {
		return nil, fmt.Errorf("write the disk: %w", err)
	}
	logf("disk: %s, %d MiB in %s", base+".raw", layout.DiskSize>>20, time.Since(start).Round(time.Millisecond))

	m := &Manifest{
		Name: spec.Name, Version: spec.Version, Arch: spec.Arch, SourceDateEpoch: opts.SourceDateEpoch,
		Inputs: root.Inputs, KernelVersion: kernel.Version, Cmdline: cmdline, CmdlineExtra: strings.Fields(spec.Boot.Cmdline),
		DataMount: spec.Disk.DataMount, Init: spec.Boot.Init, Layout: layout,
		Root: RootInfo{Compression: sqOpts.Compression, BlockSize: uint32(spec.Squashfs.BlockSize), Inodes: stats.Inodes},
		Verity: VerityInfo{Algorithm: vres.Algorithm, RootHash: vres.RootHashHex(), Salt: vres.SaltHex(),
			DataBlocks: vres.DataBlocks, DataBlockSize: vres.DataBlockSize, HashBlockSize: vres.HashBlockSize},
	}
	for _, mod := range mods.Modules {
		m.Modules = append(m.Modules, mod.Name)
	}
	for _, f := range []struct {
		dst *FileInfo
		f   *os.File
		fmt string
	}{{&m.Root.FileInfo, rootF, "squashfs"}, {&m.Verity.FileInfo, verF, "verity"}, {&m.Kernel, kernF, ""}, {&m.Initrd, initrdF, ""}} {
		if *f.dst, err = out.info(f.f, f.fmt); err != nil {
			return nil, err
		}
	}
	// The raw image is built once and converted for each other format; it stays only when asked for.
	wanted := spec.Outputs
	if len(opts.Formats) > 0 {
		wanted = opts.Formats
	}
	keepRaw := false
	for _, f := range wanted {
		if f == formats.Raw {
			keepRaw = true
			continue
		}
		start = time.Now()
		dst, err := out.create(base + formats.Ext(f))
		if err != nil {
			return nil, err
		}
		fopts := formats.Options{Name: base + formats.Ext(f)}
		if opts.SourceDateEpoch != nil {
			fopts.SourceDateEpoch = *opts.SourceDateEpoch
		}
		if err := formats.Convert(ctx, rawF, f, dst, fopts); err != nil {
			return nil, fmt.Errorf("convert to %s: %w", f, err)
		}
		info, err := out.info(dst, f)
		if err != nil {
			return nil, err
		}
		m.Outputs = append(m.Outputs, info)
		logf("%s: %s in %s", f, info.File, time.Since(start).Round(time.Millisecond))
	}
	if keepRaw {
		raw, err := out.info(rawF, formats.Raw)
		if err != nil {
			return nil, err
		}
		m.Outputs = append([]FileInfo{raw}, m.Outputs...)
	} else {
		out.drop(rawF)
	}
	if err := out.writeJSON(base+".json", m); err != nil {
		return nil, err
	}
	if err := out.commit(); err != nil {
		return nil, err
	}
	return m, nil
}

func bootFileName(arch string) string {
	if arch == "arm64" {
		return "BOOTAA64.EFI"
	}
	return "BOOTX64.EFI"
}

// Files every osbuild root carries, for the device side (the init, the update agent, health checks).
const (
	// ReleasePath is shell-sourceable: NAME=, VERSION=, ARCH=.
	ReleasePath = "/etc/osbuild/release"
	// SettingsPath holds DeviceSettings as JSON.
	SettingsPath = "/etc/osbuild/variant.json"
	// UpdateKeyPath is the public key releases must be signed with.
	UpdateKeyPath = "/etc/osbuild/update.pub"
	// AgentPath is where a variant with update: gets the osbuild binary.
	AgentPath = "/usr/bin/osbuild"
)

// DeviceSettings are the parts of the variant the running system needs: where updates come from, how to
// reboot into them, and which health checks gate marking a boot good.
type DeviceSettings struct {
	Name      string                `json:"name"`
	Version   string                `json:"version"`
	Arch      string                `json:"arch"`
	DataMount string                `json:"data_mount"`
	Update    *variant.Update       `json:"update,omitempty"`
	Health    []variant.HealthCheck `json:"health,omitempty"`
}

// completeRoot adds what every osbuild root carries: its release file and the mount point of the data
// partition; and, when the variant updates itself, the agent (this very binary) and the release key.
func completeRoot(t *tree.Tree, spec *variant.Spec, self string, mtime int64) error {
	release := fmt.Sprintf("NAME=%s\nVERSION=%s\nARCH=%s\n", spec.Name, spec.Version, spec.Arch)
	opts := layers.Options{SourceDateEpoch: &mtime}
	if err := layers.AddFile(t, ReleasePath, tree.BytesContent(release), int64(len(release)), 0o644, 0, 0, opts); err != nil {
		return err
	}
	ds := DeviceSettings{Name: spec.Name, Version: spec.Version, Arch: spec.Arch, DataMount: spec.Disk.DataMount, Health: spec.Health}
	if spec.Update != nil {
		u := *spec.Update
		u.PublicKey = UpdateKeyPath // the device's copy, not the build host's path
		ds.Update = &u
	}
	settings, err := json.MarshalIndent(ds, "", "  ")
	if err != nil {
		return err
	}
	settings = append(settings, '\n')
	if err := layers.AddFile(t, SettingsPath, tree.BytesContent(settings), int64(len(settings)), 0o644, 0, 0, opts); err != nil {
		return err
	}
	if spec.Update != nil {
		for _, f := range []struct {
			host, path string
			mode       uint32
		}{{self, AgentPath, 0o755}, {spec.Update.PublicKey, UpdateKeyPath, 0o644}} {
			st, err := os.Stat(f.host)
			if err != nil {
				return fmt.Errorf("update: %w", err)
			}
			if err := layers.AddFile(t, f.path, tree.FileContent(f.host), st.Size(), f.mode, 0, 0, opts); err != nil {
				return err
			}
		}
	}
	if n := t.Lookup(spec.Disk.DataMount); n == nil {
		if err := layers.AddDir(t, spec.Disk.DataMount, 0o755, opts); err != nil {
			return fmt.Errorf("data mount point %s: %w", spec.Disk.DataMount, err)
		}
	}
	return nil
}

func readNode(n *tree.Node) ([]byte, error) {
	rc, err := n.Open()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

func copyNode(w io.Writer, n *tree.Node) error {
	rc, err := n.Open()
	if err != nil {
		return err
	}
	defer rc.Close()
	_, err = io.Copy(w, rc)
	return err
}

// outputs are the files of one build, kept under temporary names until commit.
type outputs struct {
	dir   string
	files []*os.File
	names []string
}

func (o *outputs) create(name string) (*os.File, error) {
	f, err := os.CreateTemp(o.dir, "."+name+".tmp-*")
	if err != nil {
		return nil, fmt.Errorf("create output in %s: %w; check that the folder is writable", o.dir, err)
	}
	o.files = append(o.files, f)
	o.names = append(o.names, name)
	return f, nil
}

func (o *outputs) info(f *os.File, format string) (FileInfo, error) {
	st, err := f.Stat()
	if err != nil {
		return FileInfo{}, err
	}
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(f, 0, st.Size())); err != nil {
		return FileInfo{}, fmt.Errorf("hash %s: %w", f.Name(), err)
	}
	for i, of := range o.files {
		if of == f {
			return FileInfo{File: o.names[i], Format: format, Size: st.Size(), SHA256: hex.EncodeToString(h.Sum(nil))}, nil
		}
	}
	return FileInfo{}, fmt.Errorf("internal: %s is not an output", f.Name())
}

func (o *outputs) writeJSON(name string, v any) error {
	f, err := o.create(name)
	if err != nil {
		return err
	}
	enc := json.NewEncoder(f)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// commit syncs every file and renames it to its final name.
func (o *outputs) commit() error {
	for _, f := range o.files {
		if err := f.Chmod(0o644); err != nil {
			return err
		}
		if err := f.Sync(); err != nil {
			return fmt.Errorf("write %s: %w", f.Name(), err)
		}
	}
	for i, f := range o.files {
		f.Close()
		if err := os.Rename(f.Name(), filepath.Join(o.dir, o.names[i])); err != nil {
			return err
		}
	}
	o.files = nil
	return nil
}

// drop removes one output that served only as an intermediate.
func (o *outputs) drop(f *os.File) {
	for i, of := range o.files {
		if of == f {
			f.Close()
			os.Remove(f.Name())
			o.files = append(o.files[:i], o.files[i+1:]...)
			o.names = append(o.names[:i], o.names[i+1:]...)
			return
		}
	}
}

func (o *outputs) discard() {
	for _, f := range o.files {
		f.Close()
		os.Remove(f.Name())
	}
	o.files = nil
}
