// Package tree holds the merged root filesystem as an in-memory index: every path with its header and a
// reference to where its content lives. It is the pivot between the stage that assembles a root (layers)
// and the stages that write it out (a PAX tar, squashfs). Nothing here touches host paths.
package tree

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"
)

// Type is the kind of an inode.
type Type uint8

const (
	TypeRegular Type = iota + 1
	TypeDir
	TypeSymlink
	TypeChar
	TypeBlock
	TypeFIFO
	TypeSocket
)

func (t Type) String() string {
	switch t {
	case TypeRegular:
		return "file"
	case TypeDir:
		return "dir"
	case TypeSymlink:
		return "symlink"
	case TypeChar:
		return "char"
	case TypeBlock:
		return "block"
	case TypeFIFO:
		return "fifo"
	case TypeSocket:
		return "socket"
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

// Mode bits beyond the permission bits, as in stat(2) and tar.
const (
	ModeSetuid = 0o4000
	ModeSetgid = 0o2000
	ModeSticky = 0o1000
	ModePerm   = 0o7777
)

// Content is where a regular file's bytes live: a range of a layer blob, a local file, or memory.
// Open may be called any number of times, concurrently.
type Content interface {
	Open() (io.ReadCloser, error)
}

// Node is an inode. Hardlinked paths share one *Node, so the link count of a node is the number of
// directory entries that point at it (see Tree.LinkCounts).
type Node struct {
	Type     Type
	Mode     uint32 // permission bits plus setuid, setgid and sticky (ModePerm)
	UID, GID uint32
	ModTime  int64             // seconds since the Unix epoch
	Xattrs   map[string]string // name → raw value
	Target   string            // symlink target, verbatim
	DevMajor uint32
	DevMinor uint32
	Size     int64   // regular files
	Content  Content // regular files; nil means empty

	children map[string]*Node // directories
}

// Entry is one name in a directory.
type Entry struct {
	Name string
	Node *Node
}

// NewDir returns an empty directory node.
func NewDir(mode uint32, uid, gid uint32, mtime int64) *Node {
	return &Node{Type: TypeDir, Mode: mode & ModePerm, UID: uid, GID: gid, ModTime: mtime, children: map[string]*Node{}}
}

// IsDir reports whether n is a directory.
func (n *Node) IsDir() bool { return n.Type == TypeDir }

// Child returns the entry called name in directory n, or nil.
func (n *Node) Child(name string) *Node {
	if n.children == nil {
		return nil
	}
	return n.children[name]
}

// SetChild puts c under name in directory n, replacing what was there.
func (n *Node) SetChild(name string, c *Node) {
	if n.Type != TypeDir {
		panic("tree: SetChild on a non-directory")
	}
	if n.children == nil {
		n.children = map[string]*Node{}
	}
	n.children[name] = c
}

// RemoveChild deletes name from directory n, with everything below it.
func (n *Node) RemoveChild(name string) { delete(n.children, name) }

// ClearChildren empties directory n.
func (n *Node) ClearChildren() { n.children = map[string]*Node{} }

// Len is the number of entries in directory n.
func (n *Node) Len() int { return len(n.children) }

// Children returns the entries of directory n sorted by name, bytewise (the order squashfs and a
// reproducible tar need).
func (n *Node) Children() []Entry {
	out := make([]Entry, 0, len(n.children))
	for name, c := range n.children {
		out = append(out, Entry{Name: name, Node: c})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Open returns a reader of a regular file's content (empty when there is none).
func (n *Node) Open() (io.ReadCloser, error) {
	if n.Content == nil {
		return io.NopCloser(bytes.NewReader(nil)), nil
	}
	return n.Content.Open()
}

// Tree is a whole root filesystem.
type Tree struct {
	Root *Node
	// Closers are released by Close: open layer files that Content values read from.
	closers []io.Closer
}

// New returns a tree holding only a root directory (0755, root:root, mtime 0).
func New() *Tree { return &Tree{Root: NewDir(0o755, 0, 0, 0)} }

// AddCloser registers something to release when the tree is closed.
func (t *Tree) AddCloser(c io.Closer) { t.closers = append(t.closers, c) }

// Close releases the files that content references read from.
func (t *Tree) Close() error {
	var errs []error
	for _, c := range t.closers {
		errs = append(errs, c.Close())
	}
	t.closers = nil
	return errors.Join(errs...)
}

// Lookup returns the node at p (slash-separated, relative to the root, "" or "." for the root) without
// following any symlink, or nil.
func (t *Tree) Lookup(p string) *Node {
	n := t.Root
	for _, part := range Split(p) {
		if n.Type != TypeDir {
			return nil
		}
		n = n.Child(part)
		if n == nil {
			return nil
		}
	}
	return n
}

// Split cleans p and returns its components; the root has none.
func Split(p string) []string {
	p = strings.TrimPrefix(path.Clean("/"+p), "/")
	if p == "" {
		return nil
	}
	return strings.Split(p, "/")
}

// WalkFunc is called for each path; p is "" for the root, otherwise "a/b" with no leading slash.
type WalkFunc func(p string, n *Node) error

// Walk visits every path in pre-order, directories before their contents, names sorted bytewise.
// The order is a function of the tree alone, so outputs built from it are reproducible.
func (t *Tree) Walk(fn WalkFunc) error { return walk("", t.Root, fn) }

func walk(p string, n *Node, fn WalkFunc) error {
	if err := fn(p, n); err != nil {
		return err
	}
	if n.Type != TypeDir {
		return nil
	}
	for _, e := range n.Children() {
		cp := e.Name
		if p != "" {
			cp = p + "/" + e.Name
		}
		if err := walk(cp, e.Node, fn); err != nil {
			return err
		}
	}
	return nil
}

// LinkCounts returns, for every non-directory node reachable more than once, how many entries point at it.
// Nodes absent from the map have a link count of one.
func (t *Tree) LinkCounts() map[*Node]int {
	counts := map[*Node]int{}
	_ = t.Walk(func(_ string, n *Node) error {
		if n.Type != TypeDir {
			counts[n]++
		}
		return nil
	})
	for n, c := range counts {
		if c == 1 {
			delete(counts, n)
		}
	}
	return counts
}

// BytesContent is content held in memory.
type BytesContent []byte

func (b BytesContent) Open() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }

// FileContent is the content of a local file, read when opened.
type FileContent string

func (f FileContent) Open() (io.ReadCloser, error) { return os.Open(string(f)) }

// SectionContent is a byte range of something readable at offsets, such as an uncompressed layer blob.
type SectionContent struct {
	R      io.ReaderAt
	Offset int64
	Size   int64
}

func (s SectionContent) Open() (io.ReadCloser, error) {
	return io.NopCloser(io.NewSectionReader(s.R, s.Offset, s.Size)), nil
}
