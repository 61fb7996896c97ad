// Package boot turns the kernel and modules of a root Tree into what the firmware and the kernel need to
// boot it: the initramfs (osbuild itself as /init, plus the storage and dm-verity modules), the kernel
// command line carrying the dm-verity table, and systemd-boot Type 1 loader entries with boot counting.
// It works on a *tree.Tree only: nothing is extracted to host paths and no privileges are needed.
package boot

import (
	"errors"
	"fmt"
	"path"
	"sort"
	"strconv"
	"strings"

	"osbuild.dev/osbuild/tree"
)

// Kernel is a kernel image found in a tree.
type Kernel struct {
	Path    string     // canonical path in the tree, no leading slash
	Version string     // kernel release (uname -r), the name of its modules directory
	Node    *tree.Node // the image itself, to copy to the ESP
}

// FindKernel returns the kernel at explicit (a path in the tree) or, when explicit is empty, the newest
// of /boot/vmlinuz-* and /usr/lib/modules/*/vmlinuz. With several versions the highest one wins, so the
// choice depends on the tree alone.
func FindKernel(t *tree.Tree, explicit string) (Kernel, error) {
	if explicit != "" {
		n, canon, err := resolve(t, explicit)
		if err != nil {
			return Kernel{}, fmt.Errorf("kernel %s: %w; check the kernel path in the variant", explicit, err)
		}
		if n.Type != tree.TypeRegular {
			return Kernel{}, fmt.Errorf("kernel %s: is a %s, not a regular file", explicit, n.Type)
		}
		ver := versionFromPath(canon)
		if ver == "" {
			ver = versionFromPath(explicit)
		}
		if ver == "" {
			ver = onlyModulesDir(t)
		}
		if ver == "" {
			return Kernel{}, fmt.Errorf("kernel %s: cannot tell its version: name it vmlinuz-<version> or put it at "+
				"/usr/lib/modules/<version>/vmlinuz, or keep exactly one directory in /usr/lib/modules", explicit)
		}
		return Kernel{Path: canon, Version: ver, Node: n}, nil
	}

	var found []Kernel
	if n, _, err := resolve(t, "boot"); err == nil && n.IsDir() {
		for _, e := range n.Children() {
			if v, ok := strings.CutPrefix(e.Name, "vmlinuz-"); ok && v != "" {
				if k, _, err := resolve(t, "boot/"+e.Name); err == nil && k.Type == tree.TypeRegular {
					found = append(found, Kernel{Path: "boot/" + e.Name, Version: v, Node: k})
				}
			}
		}
	}
	if len(found) == 0 {
		if n, canonDir, err := resolve(t, "usr/lib/modules"); err == nil && n.IsDir() {
			for _, e := range n.Children() {
				p := canonDir + "/" + e.Name + "/vmlinuz"
				if k, canon, err := resolve(t, p); err == nil && k.Type == tree.TypeRegular {
					found = append(found, Kernel{Path: canon, Version: e.Name, Node: k})
				}
			}
		}
	}
	if len(found) == 0 {
		return Kernel{}, errors.New("no kernel in the root: looked for /boot/vmlinuz-* and /usr/lib/modules/*/vmlinuz; " +
			"add a kernel package to the image (Debian: linux-image-cloud-amd64) or set the kernel path explicitly")
	}
	sort.SliceStable(found, func(i, j int) bool { return versionLess(found[j].Version, found[i].Version) })
	return found[0], nil
}

func versionFromPath(p string) string {
	if v, ok := strings.CutPrefix(path.Base(p), "vmlinuz-"); ok {
		return v
	}
	if path.Base(p) == "vmlinuz" {
		dir := path.Dir(p)
		if path.Base(path.Dir(dir)) == "modules" {
			return path.Base(dir)
		}
	}
	return ""
}

func onlyModulesDir(t *tree.Tree) string {
	for _, d := range []string{"usr/lib/modules", "lib/modules"} {
		if n, _, err := resolve(t, d); err == nil && n.IsDir() && n.Len() == 1 {
			return n.Children()[0].Name
		}
	}
	return ""
}

// versionLess orders kernel releases the way `sort -V` does for the common cases: runs of digits
// compare as numbers, everything else bytewise.
func versionLess(a, b string) bool {
	for a != "" && b != "" {
		da, ra := splitRun(a)
		db, rb := splitRun(b)
		if da != db {
			na, ea := strconv.ParseUint(da, 10, 64)
			nb, eb := strconv.ParseUint(db, 10, 64)
			if ea == nil && eb == nil {
				if na != nb {
					return na < nb
				}
			} else {
				return da < db
			}
		}
		a, b = ra, rb
	}
	return len(a) < len(b)
}

func splitRun(s string) (string, string) {
	digit := s[0] >= '0' && s[0] <= '9'
	i := 1
	for i < len(s) && (s[i] >= '0' && s[i] <= '9') == digit {
		i++
	}
	return s[:i], s[i:]
}
