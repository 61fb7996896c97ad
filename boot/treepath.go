package boot

import (
	"fmt"
	"path"
	"strings"

	"osbuild.dev/osbuild/tree"
)

// maxSymlinks bounds symlink resolution the way the kernel does (ELOOP after 40).
const maxSymlinks = 40

// resolve looks p up in t, following symlinks inside the tree (merged-/usr roots make /lib a symlink to
// usr/lib, and /vmlinuz style links are common). Absolute targets are relative to the tree's root, and ".."
// never climbs above it, so a hostile link cannot point outside the image. It returns the node and the
// canonical path (no leading slash).
func resolve(t *tree.Tree, p string) (*tree.Node, string, error) {
	return resolveN(t, p, 0)
}

func resolveN(t *tree.Tree, p string, depth int) (*tree.Node, string, error) {
	parts := tree.Split(p)
	var cur []string // canonical components resolved so far
	n := t.Root
	for i := 0; i < len(parts); i++ {
		if n.Type != tree.TypeDir {
			return nil, "", fmt.Errorf("%s: not a directory", strings.Join(cur, "/"))
		}
		c := n.Child(parts[i])
		if c == nil {
			return nil, "", fmt.Errorf("/%s: %w", strings.Join(append(cur, parts[i:]...), "/"), errNotExist)
		}
		if c.Type == tree.TypeSymlink {
			if depth >= maxSymlinks {
				return nil, "", fmt.Errorf("/%s: too many levels of symbolic links", strings.Join(append(cur, parts[i]), "/"))
			}
			base := "/" + strings.Join(cur, "/")
			target := c.Target
			if !strings.HasPrefix(target, "/") {
				target = path.Join(base, target)
			}
			rest := strings.Join(parts[i+1:], "/")
			return resolveN(t, path.Join("/", target, rest), depth+1)
		}
		cur = append(cur, parts[i])
		n = c
	}
	return n, strings.Join(cur, "/"), nil
}

type notExistError struct{}

func (notExistError) Error() string { return "no such file or directory" }

var errNotExist error = notExistError{}
