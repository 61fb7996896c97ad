package layers

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"osbuild.dev/osbuild/tree"
)

// DirOptions say how much of a host directory's metadata a dir layer keeps.
type DirOptions struct {
	Options
	// KeepOwner keeps the files' uid and gid; otherwise everything is owned by root, which is what a
	// variant means by a folder of overlay files checked out by whoever runs the build.
	KeepOwner bool
	// Xattrs copies extended attributes.
	Xattrs bool
}

// ApplyDir merges the host directory dir onto t like a layer whose entries are the directory's contents.
// Symlinks are copied as symlinks, never followed. File contents are read from dir when the tree is
// written, so dir must not change until then.
func ApplyDir(t *tree.Tree, dir string, opts DirOptions) error {
	m := &merger{t: t, id: dir, opts: opts.Options}
	inodes := map[[2]uint64]*tree.Node{}
	return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("dir layer %s: %w", dir, err)
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		st, err := os.Lstat(p)
		if err != nil {
			return fmt.Errorf("dir layer %s: %w", dir, err)
		}
		sys, _ := st.Sys().(*syscall.Stat_t)
		n, err := nodeFromStat(p, st, sys)
		if err != nil {
			return fmt.Errorf("dir layer %s: %w", dir, err)
		}
		n.Mode = uint32(st.Mode().Perm())
		if st.Mode()&fs.ModeSetuid != 0 {
			n.Mode |= tree.ModeSetuid
		}
		if st.Mode()&fs.ModeSetgid != 0 {
			n.Mode |= tree.ModeSetgid
		}
		if st.Mode()&fs.ModeSticky != 0 {
			n.Mode |= tree.ModeSticky
		}
		n.ModTime = opts.mtime(st.ModTime().Unix())
		if opts.KeepOwner && sys != nil {
			n.UID, n.GID = sys.Uid, sys.Gid
		}
		if opts.Xattrs {
			if n.Xattrs, err = readXattrs(p); err != nil {
				return fmt.Errorf("dir layer %s: %w", dir, err)
			}
		}
		if rel == "." {
			m.t.Root.Mode, m.t.Root.UID, m.t.Root.GID, m.t.Root.ModTime, m.t.Root.Xattrs = n.Mode, n.UID, n.GID, n.ModTime, n.Xattrs
			return nil
		}
		if sys != nil && sys.Nlink > 1 && !n.IsDir() {
			key := [2]uint64{sys.Dev, sys.Ino}
			if first, ok := inodes[key]; ok {
				n = first
			} else {
				inodes[key] = n
			}
		}
		return m.put(rel, n)
	})
}

func nodeFromStat(p string, st fs.FileInfo, sys *syscall.Stat_t) (*tree.Node, error) {
	var rdev uint64
	if sys != nil {
		rdev = sys.Rdev
	}
	switch mode := st.Mode(); {
	case mode.IsDir():
		return tree.NewDir(0, 0, 0, 0), nil
	case mode.IsRegular():
		return &tree.Node{Type: tree.TypeRegular, Size: st.Size(), Content: tree.FileContent(p)}, nil
	case mode&fs.ModeSymlink != 0:
		target, err := os.Readlink(p)
		if err != nil {
			return nil, err
		}
		return &tree.Node{Type: tree.TypeSymlink, Target: target}, nil
	case mode&fs.ModeNamedPipe != 0:
		return &tree.Node{Type: tree.TypeFIFO}, nil
	case mode&fs.ModeSocket != 0:
		return &tree.Node{Type: tree.TypeSocket}, nil
	case mode&fs.ModeCharDevice != 0:
		return &tree.Node{Type: tree.TypeChar, DevMajor: unix.Major(rdev), DevMinor: unix.Minor(rdev)}, nil
	case mode&fs.ModeDevice != 0:
		return &tree.Node{Type: tree.TypeBlock, DevMajor: unix.Major(rdev), DevMinor: unix.Minor(rdev)}, nil
	}
	return nil, fmt.Errorf("%s: unsupported file type %v", p, st.Mode().Type())
}

func readXattrs(p string) (map[string]string, error) {
	size, err := unix.Llistxattr(p, nil)
	if err != nil || size == 0 {
		if errors.Is(err, unix.ENOTSUP) {
			return nil, nil
		}
		return nil, err
	}
	buf := make([]byte, size)
	size, err = unix.Llistxattr(p, buf)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, name := range strings.Split(strings.TrimRight(string(buf[:size]), "\x00"), "\x00") {
		if name == "" {
			continue
		}
		vs, err := unix.Lgetxattr(p, name, nil)
		if err != nil {
			return nil, fmt.Errorf("%s: xattr %s: %w", p, name, err)
		}
		v := make([]byte, vs)
		vs, err = unix.Lgetxattr(p, name, v)
		if err != nil {
			return nil, fmt.Errorf("%s: xattr %s: %w", p, name, err)
		}
		out[name] = string(v[:vs])
	}
	if len(out) == 0 {
		return nil, nil
	}
	return out, nil
}

// put places n at rel (a clean relative path), resolving parents inside the root. A directory over a
// directory only updates the metadata, as a layer would.
func (m *merger) put(rel string, n *tree.Node) error {
	dirPath, base := path.Split(rel)
	parent, err := m.resolve(strings.TrimSuffix(dirPath, "/"), true)
	if err != nil {
		if errors.Is(err, errEscape) {
			return &HostileError{Layer: m.id, Path: rel, Reason: "it is written through " + err.Error()}
		}
		return fmt.Errorf("%s: %q: parent %w", m.id, rel, err)
	}
	if old := parent.Child(base); old != nil && old.IsDir() && n.IsDir() {
		old.Mode, old.UID, old.GID, old.ModTime, old.Xattrs = n.Mode, n.UID, n.GID, n.ModTime, n.Xattrs
		return nil
	}
	parent.SetChild(base, n)
	return nil
}

// AddFile puts a regular file at the absolute path p, replacing what was there; missing parents are made.
func AddFile(t *tree.Tree, p string, content tree.Content, size int64, mode, uid, gid uint32, opts Options) error {
	rel := strings.TrimPrefix(path.Clean(p), "/")
	if rel == "" {
		return fmt.Errorf("file %q: not a file path", p)
	}
	m := &merger{t: t, id: "files", opts: opts}
	return m.put(rel, &tree.Node{Type: tree.TypeRegular, Mode: mode & tree.ModePerm, UID: uid, GID: gid,
		ModTime: opts.implicitMtime(), Size: size, Content: content})
}

// AddDir makes a directory at the absolute path p (and its parents) if nothing is there.
func AddDir(t *tree.Tree, p string, mode uint32, opts Options) error {
	rel := strings.TrimPrefix(path.Clean(p), "/")
	if rel == "" {
		return nil
	}
	m := &merger{t: t, id: "files", opts: opts}
	n, err := m.resolve(rel, true)
	if err != nil {
		return err
	}
	n.Mode = mode & tree.ModePerm
	return nil
}
