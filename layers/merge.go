package layers

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"

	"osbuild.dev/osbuild/tree"
)

// HostileError is a layer entry that tries to reach outside the root: a `..` path, a hardlink whose
// target leaves the root, or a write through a symlink that leaves it. Such a layer is refused whole.
type HostileError struct {
	Layer  string // digest or file name of the layer
	Path   string // the entry's name as written in the tar
	Reason string
}

func (e *HostileError) Error() string {
	return fmt.Sprintf("layer %s: refusing entry %q: %s; the layer is malformed or malicious: rebuild it from trusted sources", e.Layer, e.Path, e.Reason)
}

// Options control how layer entries become tree nodes.
type Options struct {
	// SourceDateEpoch, when set, is the latest mtime any node may have; later ones are clamped to it.
	SourceDateEpoch *int64
}

func (o Options) mtime(t int64) int64 {
	if o.SourceDateEpoch != nil && t > *o.SourceDateEpoch {
		return *o.SourceDateEpoch
	}
	return t
}

// implicitMtime is the mtime of directories that no entry describes (parents created on the way).
func (o Options) implicitMtime() int64 {
	if o.SourceDateEpoch != nil {
		return *o.SourceDateEpoch
	}
	return 0
}

const (
	whiteoutPrefix = ".wh."
	whiteoutMeta   = ".wh..wh."
	opaqueMarker   = ".wh..wh..opq"
)

// entry is a tar header and where its content starts in the uncompressed layer.
type entry struct {
	hdr    *tar.Header
	name   string // cleaned, relative, "" for the root
	offset int64
}

// ApplyTar merges an uncompressed layer tar onto t following the OCI image-spec rules: whiteouts and opaque
// markers act on what lower layers left (never on entries of the same layer), everything else is added or
// replaces what was there. Regular files are not copied: their nodes reference byte ranges of f, which must
// stay open as long as the tree is used (the tree closes it). id names the layer in errors.
func ApplyTar(t *tree.Tree, f *os.File, id string, opts Options) error {
	entries, whiteouts, opaques, err := scanTar(f, id)
	if err != nil {
		return err
	}
	m := &merger{t: t, id: id, opts: opts, f: f}
	for _, p := range opaques {
		if n, err := m.resolve(p, false); err == nil && n != nil && n.IsDir() {
			n.ClearChildren()
		}
	}
	for _, p := range whiteouts {
		dir, base := path.Split(p)
		if n, err := m.resolve(strings.TrimSuffix(dir, "/"), false); err == nil && n != nil && n.IsDir() {
			n.RemoveChild(base)
		}
	}
	var deferred []entry
	for _, e := range entries {
		ok, err := m.apply(e)
		if err != nil {
			return err
		}
		if !ok {
			deferred = append(deferred, e)
		}
	}
	// Hardlinks may come before their target in a stream; by the end of the layer the target must exist.
	for _, e := range deferred {
		ok, err := m.apply(e)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("layer %s: hardlink %q points at %q, which neither this layer nor a lower one has: the layer is incomplete", id, e.hdr.Name, e.hdr.Linkname)
		}
	}
	return nil
}

// scanTar reads every header of the layer once, remembering where each file's content starts.
func scanTar(f *os.File, id string) (entries []entry, whiteouts, opaques []string, err error) {
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, nil, nil, err
	}
	pr := newPosReader(f)
	tr := tar.NewReader(pr)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, nil, nil, fmt.Errorf("layer %s: reading tar: %w", id, err)
		}
		name, err := cleanName(hdr.Name)
		if err != nil {
			return nil, nil, nil, &HostileError{Layer: id, Path: hdr.Name, Reason: err.Error()}
		}
		dir, base := path.Split(name)
		dir = strings.TrimSuffix(dir, "/")
		switch {
		case base == opaqueMarker:
			opaques = append(opaques, dir)
			continue
		case strings.HasPrefix(base, whiteoutMeta):
			// Other aufs metadata (.wh..wh.plnk and friends) carries nothing for the root.
			continue
		case strings.HasPrefix(base, whiteoutPrefix):
			target := strings.TrimPrefix(base, whiteoutPrefix)
			if target == "" || target == "." || target == ".." {
				return nil, nil, nil, &HostileError{Layer: id, Path: hdr.Name, Reason: "whiteout of an invalid name"}
			}
			whiteouts = append(whiteouts, path.Join(dir, target))
			continue
		}
		for k := range hdr.PAXRecords {
			if strings.HasPrefix(k, "GNU.sparse.") {
				return nil, nil, nil, fmt.Errorf("layer %s: %q is a sparse tar entry, which is not supported: re-create the layer without --sparse", id, hdr.Name)
			}
		}
		entries = append(entries, entry{hdr: hdr, name: name, offset: pr.pos})
	}
	return entries, whiteouts, opaques, nil
}

// cleanName makes a tar name relative to the root; a name that climbs out of it is refused.
func cleanName(name string) (string, error) {
	if name == "" {
		return "", errors.New("empty name")
	}
	trimmed := strings.TrimLeft(name, "/")
	c := path.Clean(trimmed)
	if c == ".." || strings.HasPrefix(c, "../") {
		return "", errors.New("the path climbs out of the root with ..")
	}
	if c == "." {
		return "", nil
	}
	return c, nil
}

type merger struct {
	t    *tree.Tree
	id   string
	opts Options
	f    *os.File
}

const maxSymlinkHops = 40

var errEscape = errors.New("a symlink on the way leads out of the root")

// resolve walks p from the root, following symlinks in every component as a container runtime does inside
// its root: absolute targets start again at the root, and a relative target that climbs above the root is
// hostile. With create, missing directories are made; otherwise a missing component gives (nil, nil).
func (m *merger) resolve(p string, create bool) (*tree.Node, error) {
	var stack []*tree.Node // resolved ancestors, stack[0] is the root
	stack = append(stack, m.t.Root)
	todo := tree.Split(p)
	hops := 0
	for len(todo) > 0 {
		c := todo[0]
		todo = todo[1:]
		cur := stack[len(stack)-1]
		switch c {
		case ".", "":
			continue
		case "..":
			if len(stack) == 1 {
				return nil, errEscape
			}
			stack = stack[:len(stack)-1]
			continue
		}
		if !cur.IsDir() {
			return nil, fmt.Errorf("%q is not a directory", c)
		}
		n := cur.Child(c)
		switch {
		case n == nil:
			if !create {
				return nil, nil
			}
			n = tree.NewDir(0o755, 0, 0, m.opts.implicitMtime())
			cur.SetChild(c, n)
		case n.Type == tree.TypeSymlink:
			hops++
			if hops > maxSymlinkHops {
				return nil, errors.New("too many levels of symlinks")
			}
			target := n.Target
			if strings.HasPrefix(target, "/") {
				stack = stack[:1]
			}
			todo = append(strings.Split(target, "/"), todo...)
			continue
		case !n.IsDir():
			return nil, fmt.Errorf("%q is a %s, not a directory", c, n.Type)
		}
		stack = append(stack, n)
	}
	return stack[len(stack)-1], nil
}

// apply adds one entry; it returns false for a hardlink whose target does not exist yet.
func (m *merger) apply(e entry) (bool, error) {
	hdr := e.hdr
	if e.name == "" {
		if hdr.Typeflag != tar.TypeDir {
			return false, &HostileError{Layer: m.id, Path: hdr.Name, Reason: "the root must be a directory"}
		}
		m.setMeta(m.t.Root, hdr)
		return true, nil
	}
	var n *tree.Node
	switch hdr.Typeflag {
	case tar.TypeDir:
		n = tree.NewDir(0, 0, 0, 0)
	case tar.TypeReg, tar.TypeRegA:
		n = &tree.Node{Type: tree.TypeRegular, Size: hdr.Size}
		if hdr.Size > 0 {
			n.Content = tree.SectionContent{R: m.f, Offset: e.offset, Size: hdr.Size}
		}
	case tar.TypeSymlink:
		n = &tree.Node{Type: tree.TypeSymlink, Target: hdr.Linkname}
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		n = &tree.Node{Type: map[byte]tree.Type{tar.TypeChar: tree.TypeChar, tar.TypeBlock: tree.TypeBlock, tar.TypeFifo: tree.TypeFIFO}[hdr.Typeflag],
			DevMajor: uint32(hdr.Devmajor), DevMinor: uint32(hdr.Devminor)}
	case tar.TypeLink:
		target, err := m.linkTarget(hdr)
		if err != nil || target == nil {
			return false, err
		}
		return true, m.put(e.name, target)
	default:
		return false, fmt.Errorf("layer %s: %q has tar type %q, which a root filesystem cannot hold", m.id, hdr.Name, string(hdr.Typeflag))
	}
	m.setMeta(n, hdr)
	return true, m.put(e.name, n)
}

func (m *merger) linkTarget(hdr *tar.Header) (*tree.Node, error) {
	target, err := cleanName(hdr.Linkname)
	if err != nil || target == "" {
		return nil, &HostileError{Layer: m.id, Path: hdr.Name, Reason: fmt.Sprintf("hardlink target %q is outside the root", hdr.Linkname)}
	}
	dir, base := path.Split(target)
	parent, err := m.resolve(strings.TrimSuffix(dir, "/"), false)
	if errors.Is(err, errEscape) {
		return nil, &HostileError{Layer: m.id, Path: hdr.Name, Reason: fmt.Sprintf("hardlink target %q: %v", hdr.Linkname, err)}
	}
	if err != nil {
		return nil, fmt.Errorf("layer %s: hardlink %q to %q: %w", m.id, hdr.Name, hdr.Linkname, err)
	}
	if parent == nil || parent.Child(base) == nil {
		return nil, nil
	}
	n := parent.Child(base)
	if n.IsDir() {
		return nil, fmt.Errorf("layer %s: %q is a hardlink to the directory %q, which a filesystem cannot hold", m.id, hdr.Name, hdr.Linkname)
	}
	return n, nil
}

func (m *merger) setMeta(n *tree.Node, hdr *tar.Header) {
	n.Mode = uint32(hdr.Mode) & tree.ModePerm
	n.UID, n.GID = uint32(hdr.Uid), uint32(hdr.Gid)
	n.ModTime = m.opts.mtime(hdr.ModTime.Unix())
	n.Xattrs = nil
	for k, v := range hdr.PAXRecords {
		if name, ok := strings.CutPrefix(k, "SCHILY.xattr."); ok {
			if n.Xattrs == nil {
				n.Xattrs = map[string]string{}
			}
			n.Xattrs[name] = v
		}
	}
}

// posReader is a buffered reader that knows the position in the underlying file of the next byte it
// returns: archive/tar does not expose where an entry's content starts, but it reads headers block by
// block, so after Next the position is exactly the start of the content. It implements io.Seeker so that
// tar skips content by seeking instead of reading it.
type posReader struct {
	f    *os.File
	buf  []byte
	r, w int
	pos  int64
}

func newPosReader(f *os.File) *posReader { return &posReader{f: f, buf: make([]byte, 64<<10)} }

func (p *posReader) Read(b []byte) (int, error) {
	if p.r == p.w {
		if len(b) >= len(p.buf) {
			n, err := p.f.ReadAt(b, p.pos)
			p.pos += int64(n)
			if err == io.EOF && n > 0 {
				err = nil
			}
			return n, err
		}
		n, err := p.f.ReadAt(p.buf, p.pos)
		p.r, p.w = 0, n
		if n == 0 {
			if err == nil {
				err = io.ErrNoProgress
			}
			return 0, err
		}
	}
	n := copy(b, p.buf[p.r:p.w])
	p.r += n
	p.pos += int64(n)
	return n, nil
}

func (p *posReader) Seek(off int64, whence int) (int64, error) {
	var abs int64
	switch whence {
	case io.SeekStart:
		abs = off
	case io.SeekCurrent:
		abs = p.pos + off
	case io.SeekEnd:
		st, err := p.f.Stat()
		if err != nil {
			return 0, err
		}
		abs = st.Size() + off
	}
	if abs < 0 {
		return 0, errors.New("negative position")
	}
	if d := abs - p.pos; d >= 0 && d <= int64(p.w-p.r) {
		p.r += int(d)
	} else {
		p.r, p.w = 0, 0
	}
	p.pos = abs
	return abs, nil
}
