package boot

import (
	"bytes"
	"compress/gzip"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"

	"osbuild.dev/osbuild/tree"
)

// DefaultModules is what the initramfs loads, in this order, before dependencies are added: virtio and
// the cloud block drivers to see the disk, device-mapper and dm-verity for the root, squashfs to mount it,
// FAT and efivarfs so that the booted OS can mark the boot good, ext4 for the data partition.
// Any of them may be missing or built into the kernel.
var DefaultModules = []string{
	"virtio_ring", "virtio", "virtio_pci_legacy_dev", "virtio_pci_modern_dev", "virtio_pci", "virtio_blk",
	"dm-mod", "dm-bufio", "reed_solomon", "dm-verity", "squashfs",
	"nvme", "ahci", "sd_mod", "xen-blkfront", "ena",
	"fat", "vfat", "nls_cp437", "nls_ascii", "efivarfs",
	"ext4",
}

// RequiredModules must be present as a module or built in: without them the root cannot be mounted.
var RequiredModules = []string{"dm-mod", "dm-verity", "squashfs"}

// Module is one loadable kernel module chosen for the initramfs.
type Module struct {
	Name    string   // canonical name: dashes as underscores, as the kernel spells it
	Path    string   // relative to the modules directory, e.g. kernel/drivers/md/dm-mod.ko (compression suffix kept)
	Depends []string // canonical names of the modules it needs loaded first
	node    *tree.Node
	data    []byte // decompressed, once read
}

// ModuleSet is the closure of wanted modules for one kernel, in load order.
type ModuleSet struct {
	Kernel  string   // kernel release
	Dir     string   // canonical path of the modules directory in the tree
	Modules []Module // load order: every module after its dependencies
	Builtin []string // wanted modules that are built into the kernel
	Missing []string // wanted modules found neither as a file nor built in
}

// CanonicalModuleName folds the two spellings of a module name ("dm-mod", "dm_mod") into the kernel's.
func CanonicalModuleName(s string) string { return strings.ReplaceAll(s, "-", "_") }

var moduleSuffixes = []string{".ko", ".ko.xz", ".ko.zst", ".ko.gz"}

func moduleName(file string) (string, bool) {
	for _, s := range moduleSuffixes {
		if base, ok := strings.CutSuffix(file, s); ok {
			return CanonicalModuleName(base), true
		}
	}
	return "", false
}

// ResolveModules finds the modules of kernel release kver in t (/lib/modules/<kver> or
// /usr/lib/modules/<kver>) and returns want plus everything they depend on, in load order.
// Dependencies come from modules.dep when the tree has it and otherwise from each module's .modinfo
// (Debian's packages ship no modules.dep: depmod runs at install time). The order is deterministic: wanted
// modules in the order given, each preceded by its dependencies (sorted by name).
func ResolveModules(t *tree.Tree, kver string, want []string) (*ModuleSet, error) {
	var dirNode *tree.Node
	var dir string
	for _, d := range []string{"usr/lib/modules/" + kver, "lib/modules/" + kver} {
		if n, canon, err := resolve(t, d); err == nil && n.IsDir() {
			dirNode, dir = n, canon
			break
		}
	}
	if dirNode == nil {
		return nil, fmt.Errorf("no modules for kernel %s: looked in /lib/modules/%[1]s and /usr/lib/modules/%[1]s; "+
			"install the modules that match the kernel", kver)
	}
	set := &ModuleSet{Kernel: kver, Dir: dir}

	byName := map[string]*Module{}
	var dupErr error
	walkFiles(dirNode, "", func(rel string, n *tree.Node) {
		slash := strings.LastIndexByte(rel, '/')
		name, ok := moduleName(rel[slash+1:])
		if !ok {
			return
		}
		if prev := byName[name]; prev != nil {
			// depmod prefers updates/ and extra/ over kernel/; without its config, be explicit instead.
			if !strings.HasPrefix(rel, "kernel/") && strings.HasPrefix(prev.Path, "kernel/") {
				byName[name] = &Module{Name: name, Path: rel, node: n}
			} else if strings.HasPrefix(rel, "kernel/") == strings.HasPrefix(prev.Path, "kernel/") && dupErr == nil {
				dupErr = fmt.Errorf("modules for %s: %s and %s both provide module %s; remove one", kver, prev.Path, rel, name)
			}
			return
		}
		byName[name] = &Module{Name: name, Path: rel, node: n}
	})
	if dupErr != nil {
		return nil, dupErr
	}

	builtin := map[string]bool{}
	hasBuiltinList := false
	if b, err := readFile(t, dir+"/modules.builtin"); err == nil {
		hasBuiltinList = true
		for _, line := range strings.Split(string(b), "\n") {
			line = strings.TrimSpace(line)
			if line == "" {
				continue
			}
			if name, ok := moduleName(line[strings.LastIndexByte(line, '/')+1:]); ok {
				builtin[name] = true
			}
		}
	}

	var deps map[string][]string // from modules.dep, keyed by module name
	if b, err := readFile(t, dir+"/modules.dep"); err == nil {
		deps = parseModulesDep(string(b))
	}

	dependsOf := func(m *Module) ([]string, error) {
		if deps != nil {
			if d, ok := deps[m.Name]; ok {
				return d, nil
			}
		}
		data, err := m.content()
		if err != nil {
			return nil, fmt.Errorf("module %s: %w", m.Path, err)
		}
		info, err := modinfo(data)
		if err != nil {
			return nil, fmt.Errorf("module %s: %w", m.Path, err)
		}
		var out []string
		for _, d := range strings.Split(info["depends"], ",") {
			if d = strings.TrimSpace(d); d != "" {
				out = append(out, CanonicalModuleName(d))
			}
		}
		return out, nil
	}

	const (
		unvisited = iota
		visiting
		done
	)
	state := map[string]int{}
	var visit func(name string, wanted bool, chain []string) error
	visit = func(name string, wanted bool, chain []string) error {
		switch state[name] {
		case done:
			return nil
		case visiting:
			return fmt.Errorf("modules for %s: dependency cycle %s → %s", kver, strings.Join(chain, " → "), name)
		}
		m := byName[name]
		if m == nil {
			state[name] = done
			switch {
			case builtin[name]:
				if wanted {
					set.Builtin = append(set.Builtin, name)
				}
				return nil
			case wanted:
				set.Missing = append(set.Missing, name)
				return nil
			default:
				return fmt.Errorf("modules for %s: %s needs module %s, which is neither in %s nor built in; "+
					"the modules do not match the kernel", kver, chain[len(chain)-1], name, "/"+dir)
			}
		}
		state[name] = visiting
		d, err := dependsOf(m)
		if err != nil {
			return err
		}
		d = append([]string(nil), d...)
		sort.Strings(d)
		m.Depends = d
		for _, dep := range d {
			if err := visit(dep, false, append(chain, name)); err != nil {
				return err
			}
		}
		state[name] = done
		set.Modules = append(set.Modules, *m)
		return nil
	}
	for _, w := range want {
		if err := visit(CanonicalModuleName(w), true, nil); err != nil {
			return nil, err
		}
	}

	for _, r := range RequiredModules {
		r = CanonicalModuleName(r)
		if !wantsModule(want, r) {
			continue
		}
		if byName[r] == nil && !builtin[r] {
			if hasBuiltinList {
				return nil, fmt.Errorf("kernel %s has no %s module and does not build it in; dm-verity roots need "+
					"device-mapper, dm-verity and squashfs: use a kernel that has them", kver, r)
			}
			return nil, fmt.Errorf("kernel %s: no %s module and no modules.builtin to tell whether it is built in; "+
				"install the kernel's modules.builtin or the module", kver, r)
		}
	}
	return set, nil
}

func wantsModule(want []string, name string) bool {
	for _, w := range want {
		if CanonicalModuleName(w) == name {
			return true
		}
	}
	return false
}

// content returns the module's ELF bytes, decompressed.
func (m *Module) content() ([]byte, error) {
	if m.data != nil {
		return m.data, nil
	}
	rc, err := m.node.Open()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	var r io.Reader = rc
	switch {
	case strings.HasSuffix(m.Path, ".xz"):
		xr, err := xz.NewReader(rc)
		if err != nil {
			return nil, fmt.Errorf("xz: %w", err)
		}
		r = xr
	case strings.HasSuffix(m.Path, ".zst"):
		zr, err := zstd.NewReader(rc, zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, fmt.Errorf("zstd: %w", err)
		}
		defer zr.Close()
		r = zr
	case strings.HasSuffix(m.Path, ".gz"):
		gr, err := gzip.NewReader(rc)
		if err != nil {
			return nil, fmt.Errorf("gzip: %w", err)
		}
		r = gr
	}
	b, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	m.data = b
	return b, nil
}

// modinfo reads the key=value strings of a module's .modinfo section.
func modinfo(data []byte) (map[string]string, error) {
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("not a kernel module (ELF): %w", err)
	}
	s := f.Section(".modinfo")
	if s == nil {
		return nil, errors.New("not a kernel module: no .modinfo section")
	}
	b, err := s.Data()
	if err != nil {
		return nil, fmt.Errorf(".modinfo: %w", err)
	}
	info := map[string]string{}
	for _, kv := range bytes.Split(b, []byte{0}) {
		if k, v, ok := strings.Cut(string(kv), "="); ok {
			if _, seen := info[k]; !seen {
				info[k] = v
			}
		}
	}
	return info, nil
}

// parseModulesDep reads depmod's "path: dep-path dep-path" lines into name → direct dependencies. depmod
// lists the whole closure, which is harmless: the visit order stays correct and deterministic.
func parseModulesDep(s string) map[string][]string {
	out := map[string][]string{}
	for _, line := range strings.Split(s, "\n") {
		mod, rest, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		name, ok := moduleName(mod[strings.LastIndexByte(mod, '/')+1:])
		if !ok {
			continue
		}
		var d []string
		for _, f := range strings.Fields(rest) {
			if dn, ok := moduleName(f[strings.LastIndexByte(f, '/')+1:]); ok {
				d = append(d, dn)
			}
		}
		out[name] = d
	}
	return out
}

// walkFiles calls fn for every regular file below n, in sorted order; symlinks are not followed (the
// modules directory's build/ and source/ links point outside it).
func walkFiles(n *tree.Node, prefix string, fn func(rel string, n *tree.Node)) {
	for _, e := range n.Children() {
		rel := e.Name
		if prefix != "" {
			rel = prefix + "/" + e.Name
		}
		switch e.Node.Type {
		case tree.TypeDir:
			walkFiles(e.Node, rel, fn)
		case tree.TypeRegular:
			fn(rel, e.Node)
		}
	}
}

func readFile(t *tree.Tree, p string) ([]byte, error) {
	n, _, err := resolve(t, p)
	if err != nil {
		return nil, err
	}
	if n.Type != tree.TypeRegular {
		return nil, fmt.Errorf("/%s: not a regular file", p)
	}
	rc, err := n.Open()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}
