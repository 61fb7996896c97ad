package squashfs

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"osbuild.dev/osbuild/tree"
)

// zeroRuns is lazily generated content: each 10 MiB stretch starts with 1 MiB of compressible,
// non-zero bytes and continues with zeros, so big files cost no memory and exercise holes.
type zeroRuns struct {
	size int64
	seed byte
}

func (z zeroRuns) Open() (io.ReadCloser, error) { return io.NopCloser(&zeroRunsReader{z: z}), nil }

type zeroRunsReader struct {
	z   zeroRuns
	off int64
}

func (r *zeroRunsReader) Read(p []byte) (int, error) {
	if r.off >= r.z.size {
		return 0, io.EOF
	}
	n := int(min(int64(len(p)), r.z.size-r.off))
	for i := 0; i < n; i++ {
		o := r.off + int64(i)
		if o%(10<<20) < 1<<20 {
			p[i] = byte(o/7) ^ r.z.seed ^ byte(o>>13)
		} else {
			p[i] = 0
		}
	}
	r.off += int64(n)
	return n, nil
}

// textish returns deterministic compressible bytes.
func textish(seed, n int) []byte {
	words := []string{"lorem ", "ipsum ", "dolor ", "sit ", "amet\n", "osbuild ", "squashfs ", "0x", "\t"}
	var b bytes.Buffer
	x := uint32(seed*2654435761 + 1)
	for b.Len() < n {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b.WriteString(words[x%uint32(len(words))])
		if x%5 == 0 {
			b.WriteByte(byte(x >> 8))
		}
	}
	return b.Bytes()[:n]
}

// capV2 is a valid security.capability value (revision 2, effective, CAP_NET_BIND_SERVICE): the
// kernel refuses to return malformed ones.
func capV2() string {
	var b []byte
	b = binary.LittleEndian.AppendUint32(b, 0x02000001)
	b = binary.LittleEndian.AppendUint32(b, 1<<10)
	b = binary.LittleEndian.AppendUint32(b, 0)
	b = binary.LittleEndian.AppendUint32(b, 0)
	b = binary.LittleEndian.AppendUint32(b, 0)
	return string(b)
}

func reg(mode uint32, data []byte) *tree.Node {
	return &tree.Node{Type: tree.TypeRegular, Mode: mode, Size: int64(len(data)), Content: tree.BytesContent(data), ModTime: 1700000000}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func mkdirs(root *tree.Node, p string) *tree.Node {
	n := root
	for _, part := range tree.Split(p) {
		c := n.Child(part)
		if c == nil {
			c = tree.NewDir(0o755, 0, 0, 1600000000)
			n.SetChild(part, c)
		}
		n = c
	}
	return n
}

// writeImage writes tr to a file in dir and returns its path.
func writeImage(t testing.TB, dir string, tr *tree.Tree, o Options) (string, Stats) {
	t.Helper()
	name := filepath.Join(dir, fmt.Sprintf("img-%s-%d-%d.sqfs", o.Compression, o.BlockSize, o.Workers))
	f, err := os.Create(name)
	must(t, err)
	defer f.Close()
	st, err := Write(context.Background(), f, tr, o)
	must(t, err)
	fi, err := f.Stat()
	must(t, err)
	if fi.Size()%4096 != 0 || fi.Size() != st.Bytes {
		t.Fatalf("image is %d bytes, stats say %d, want a multiple of 4096", fi.Size(), st.Bytes)
	}
	return name, st
}

func needTool(t testing.TB, name string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		t.Fatalf("%s is required for this test: %v", name, err)
	}
}

// lsMode renders a mode as ls and unsquashfs do.
func lsMode(n *tree.Node) string {
	b := []byte("----------")
	switch n.Type {
	case tree.TypeDir:
		b[0] = 'd'
	case tree.TypeSymlink:
		b[0] = 'l'
	case tree.TypeChar:
		b[0] = 'c'
	case tree.TypeBlock:
		b[0] = 'b'
	case tree.TypeFIFO:
		b[0] = 'p'
	case tree.TypeSocket:
		b[0] = 's'
	}
	const rwx = "rwxrwxrwx"
	for i := 0; i < 9; i++ {
		if n.Mode&(1<<(8-i)) != 0 {
			b[1+i] = rwx[i]
		}
	}
	special := func(pos int, bit uint32, set, unset byte) {
		if n.Mode&bit != 0 {
			if b[pos] == '-' {
				b[pos] = unset
			} else {
				b[pos] = set
			}
		}
	}
	special(3, tree.ModeSetuid, 's', 'S')
	special(6, tree.ModeSetgid, 's', 'S')
	special(9, tree.ModeSticky, 't', 'T')
	return string(b)
}

// listing is the unsquashfs -lln view of one path, minus directory sizes (a property of the
// encoding, not of the tree).
type listing struct {
	mode, owner, size, mtime, target string
}

func expectedListing(tr *tree.Tree) map[string]listing {
	out := map[string]listing{}
	_ = tr.Walk(func(p string, n *tree.Node) error {
		l := listing{mode: lsMode(n), owner: fmt.Sprintf("%d/%d", n.UID, n.GID),
			mtime: time.Unix(int64(clampTime(n.ModTime)), 0).UTC().Format("2006-01-02 15:04")}
		switch n.Type {
		case tree.TypeRegular:
			l.size = strconv.FormatInt(n.Size, 10)
		case tree.TypeSymlink:
			l.size = strconv.Itoa(len(n.Target))
			l.target = n.Target
		case tree.TypeChar, tree.TypeBlock:
			// unsquashfs -lln prints the encoded rdev as (rdev>>8),(rdev&0xff), which is only the
			// real major and minor when the minor is below 256.
			rdev := n.DevMinor&0xff | n.DevMajor<<8 | (n.DevMinor&^0xff)<<12
			l.size = fmt.Sprintf("%d,%d", rdev>>8, rdev&0xff)
		case tree.TypeFIFO, tree.TypeSocket:
			l.size = "0"
		}
		out[path("squashfs-root", p)] = l
		return nil
	})
	return out
}

func path(root, p string) string {
	if p == "" {
		return root
	}
	return root + "/" + p
}

func unsquashfsListing(t testing.TB, img string) map[string]listing {
	t.Helper()
	cmd := exec.Command("unsquashfs", "-lln", img)
	cmd.Env = append(os.Environ(), "TZ=UTC")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	raw, err := cmd.Output()
	if err != nil {
		t.Fatalf("unsquashfs -lln: %v: %s", err, stderr.String())
	}
	out := map[string]listing{}
	for _, line := range strings.Split(strings.TrimRight(string(raw), "\n"), "\n") {
		at := strings.Index(line, " squashfs-root")
		if at < 0 {
			t.Fatalf("unexpected unsquashfs line %q", line)
		}
		f := strings.Fields(line[:at])
		name := line[at+1:]
		l := listing{mode: f[0], owner: f[1]}
		switch f[0][0] {
		case 'c', 'b':
			if strings.HasSuffix(f[2], ",") {
				f = append([]string{f[0], f[1], f[2] + f[3]}, f[4:]...)
			}
			l.size = f[2]
			l.mtime = f[3] + " " + f[4]
		default:
			l.size = f[2]
			l.mtime = f[3] + " " + f[4]
		}
		if f[0][0] == 'd' {
			l.size = ""
		}
		if f[0][0] == 'l' {
			i := strings.Index(name, " -> ")
			name, l.target = name[:i], name[i+4:]
		}
		if _, dup := out[name]; dup {
			t.Fatalf("unsquashfs lists %q twice", name)
		}
		out[name] = l
	}
	return out
}

func checkListing(t testing.TB, tr *tree.Tree, img string) {
	t.Helper()
	want := expectedListing(tr)
	got := unsquashfsListing(t, img)
	bad := 0
	for p, w := range want {
		g, ok := got[p]
		if !ok {
			t.Errorf("unsquashfs does not list %q", p)
		} else if g != w {
			t.Errorf("%q: unsquashfs lists %+v, want %+v", p, g, w)
		}
		if bad++; t.Failed() && bad > 20 {
			t.FailNow()
		}
	}
	for p := range got {
		if _, ok := want[p]; !ok {
			t.Errorf("unsquashfs lists %q, which is not in the tree", p)
		}
	}
	if len(got) != len(want) {
		t.Fatalf("unsquashfs lists %d paths, the tree has %d", len(got), len(want))
	}
}

// sameContent compares a reader with a node's content without holding either in memory.
func sameContent(n *tree.Node, r io.Reader) error {
	want, err := n.Open()
	if err != nil {
		return err
	}
	defer want.Close()
	a := make([]byte, 256<<10)
	b := make([]byte, 256<<10)
	var off int64
	for {
		na, ea := io.ReadFull(want, a)
		nb, _ := io.ReadFull(r, b[:na])
		if na != nb || !bytes.Equal(a[:na], b[:nb]) {
			return fmt.Errorf("content differs in the %d bytes at %d", na, off)
		}
		off += int64(na)
		if ea == io.EOF || ea == io.ErrUnexpectedEOF {
			if k, _ := io.ReadFull(r, b[:1]); k > 0 {
				return fmt.Errorf("content longer than %d bytes", off)
			}
			return nil
		}
		if ea != nil {
			return ea
		}
	}
}

func wantXattrs(n *tree.Node) map[string]string {
	if len(n.Xattrs) == 0 {
		return map[string]string{}
	}
	return n.Xattrs
}

func sameXattrs(want, got map[string]string) bool {
	if len(want) != len(got) {
		return false
	}
	for k, v := range want {
		if g, ok := got[k]; !ok || g != v {
			return false
		}
	}
	return true
}

// checkTar converts the image with sqfs2tar and checks every entry against the tree: type,
// metadata, bytes and xattrs.
func checkTar(t testing.TB, tr *tree.Tree, img string) {
	t.Helper()
	cmd := exec.Command("sqfs2tar", img)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	pipe, err := cmd.StdoutPipe()
	must(t, err)
	must(t, cmd.Start())
	defer func() {
		_, _ = io.Copy(io.Discard, pipe)
		if err := cmd.Wait(); err != nil {
			t.Fatalf("sqfs2tar: %v: %s", err, stderr.String())
		}
	}()
	seen := map[string]bool{}
	tarPath := map[*tree.Node]string{}
	tr2 := tar.NewReader(pipe)
	for {
		h, err := tr2.Next()
		if err == io.EOF {
			break
		}
		must(t, err)
		p := strings.TrimSuffix(strings.TrimPrefix(h.Name, "./"), "/")
		n := tr.Lookup(p)
		if n == nil {
			t.Fatalf("sqfs2tar gives %q, which is not in the tree", h.Name)
		}
		seen[p] = true
		xs := map[string]string{}
		for k, v := range h.PAXRecords {
			if name, ok := strings.CutPrefix(k, "SCHILY.xattr."); ok {
				xs[name] = v
			} else if name, ok := strings.CutPrefix(k, "LIBARCHIVE.xattr."); ok {
				dn, err1 := base64.RawURLEncoding.DecodeString(name)
				dv, err2 := base64.StdEncoding.DecodeString(v)
				if err1 != nil || err2 != nil {
					t.Fatalf("%s: bad LIBARCHIVE.xattr record %q", p, k)
				}
				xs[string(dn)] = string(dv)
			}
		}
		// A hardlink entry carries no metadata of its own: its first path does.
		if h.Typeflag != tar.TypeLink && !sameXattrs(wantXattrs(n), xs) {
			t.Errorf("%s: xattrs %q, want %q", p, xs, n.Xattrs)
		}
		if int64(h.Mode)&0o7777 != int64(n.Mode) || h.Uid != int(n.UID) || h.Gid != int(n.GID) {
			t.Errorf("%s: mode %o %d:%d, want %o %d:%d", p, h.Mode, h.Uid, h.Gid, n.Mode, n.UID, n.GID)
		}
		if h.ModTime.Unix() != int64(clampTime(n.ModTime)) {
			t.Errorf("%s: mtime %d, want %d", p, h.ModTime.Unix(), n.ModTime)
		}
		want := map[tree.Type]byte{tree.TypeDir: tar.TypeDir, tree.TypeRegular: tar.TypeReg, tree.TypeSymlink: tar.TypeSymlink,
			tree.TypeChar: tar.TypeChar, tree.TypeBlock: tar.TypeBlock, tree.TypeFIFO: tar.TypeFifo}[n.Type]
		if n.Type == tree.TypeSocket && h.Typeflag != tar.TypeLink {
			// tar has no sockets; sqfs2tar skips them (but may still hardlink a second name to one).
			t.Errorf("%s: sqfs2tar emitted a socket as %c", p, h.Typeflag)
			continue
		}
		switch {
		case h.Typeflag == tar.TypeLink:
			target := strings.TrimPrefix(h.Linkname, "./")
			if tr.Lookup(target) != n || n.IsDir() {
				t.Errorf("%s: hardlink to %q, which is a different node", p, h.Linkname)
			}
		case h.Typeflag != want:
			t.Errorf("%s: tar type %c, want %c", p, h.Typeflag, want)
		case n.Type == tree.TypeRegular:
			if h.Size != n.Size {
				t.Errorf("%s: size %d, want %d", p, h.Size, n.Size)
			}
			if err := sameContent(n, tr2); err != nil {
				t.Errorf("%s: %v", p, err)
			}
			tarPath[n] = p
		case n.Type == tree.TypeSymlink:
			if h.Linkname != n.Target {
				t.Errorf("%s: target %q, want %q", p, h.Linkname, n.Target)
			}
		case n.Type == tree.TypeChar || n.Type == tree.TypeBlock:
			if h.Devmajor != int64(n.DevMajor) || h.Devminor != int64(n.DevMinor) {
				t.Errorf("%s: device %d:%d, want %d:%d", p, h.Devmajor, h.Devminor, n.DevMajor, n.DevMinor)
			}
		}
		if t.Failed() {
			t.FailNow()
		}
	}
	_ = tr.Walk(func(p string, n *tree.Node) error {
		if p != "" && !seen[p] && n.Type != tree.TypeSocket {
			t.Errorf("sqfs2tar output lacks %q", p)
		}
		return nil
	})
}

func lxattrs(p string) (map[string]string, error) {
	out := map[string]string{}
	sz, err := unix.Llistxattr(p, nil)
	if err == unix.EOPNOTSUPP { // an image without an xattr table
		return out, nil
	}
	if err != nil || sz == 0 {
		return out, err
	}
	buf := make([]byte, sz)
	sz, err = unix.Llistxattr(p, buf)
	if err != nil {
		return nil, err
	}
	for _, name := range strings.Split(strings.TrimRight(string(buf[:sz]), "\x00"), "\x00") {
		vs, err := unix.Lgetxattr(p, name, nil)
		if err != nil {
			return nil, fmt.Errorf("getxattr %s: %w", name, err)
		}
		v := make([]byte, vs)
		vs, err = unix.Lgetxattr(p, name, v)
		if err != nil {
			return nil, fmt.Errorf("getxattr %s: %w", name, err)
		}
		out[name] = string(v[:vs])
	}
	return out, nil
}

// checkMount loop-mounts the image with the kernel's squashfs and compares every path with the tree.
func checkMount(t testing.TB, tr *tree.Tree, img string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("mounting needs root")
	}
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-t", "squashfs", "-o", "loop,ro", img, mnt).CombinedOutput(); err != nil {
		t.Fatalf("mount: %v: %s", err, out)
	}
	defer func() {
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			t.Errorf("umount: %v: %s", err, out)
		}
	}()
	links := tr.LinkCounts()
	inodes := map[uint64]*tree.Node{}
	count := 0
	err := filepath.Walk(mnt, func(full string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		count++
		rel, _ := filepath.Rel(mnt, full)
		if rel == "." {
			rel = ""
		}
		n := tr.Lookup(rel)
		if n == nil {
			return fmt.Errorf("kernel shows %q, which is not in the tree", rel)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if prev, ok := inodes[st.Ino]; ok && prev != n {
			return fmt.Errorf("%s: inode %d shared with another node", rel, st.Ino)
		}
		inodes[st.Ino] = n
		if st.Mode&0o7777 != n.Mode || st.Uid != n.UID || st.Gid != n.GID {
			return fmt.Errorf("%s: mode %o %d:%d, want %o %d:%d", rel, st.Mode&0o7777, st.Uid, st.Gid, n.Mode, n.UID, n.GID)
		}
		if st.Mtim.Sec != int64(clampTime(n.ModTime)) {
			return fmt.Errorf("%s: mtime %d, want %d", rel, st.Mtim.Sec, n.ModTime)
		}
		wantNlink := uint64(max(links[n], 1))
		if n.IsDir() {
			wantNlink = 2
			for _, e := range n.Children() {
				if e.Node.IsDir() {
					wantNlink++
				}
			}
		}
		if st.Nlink != wantNlink {
			return fmt.Errorf("%s: nlink %d, want %d", rel, st.Nlink, wantNlink)
		}
		xs, err := lxattrs(full)
		if err != nil {
			return fmt.Errorf("%s: %w", rel, err)
		}
		if !sameXattrs(wantXattrs(n), xs) {
			return fmt.Errorf("%s: xattrs %q, want %q", rel, xs, n.Xattrs)
		}
		typ := map[uint32]tree.Type{unix.S_IFREG: tree.TypeRegular, unix.S_IFDIR: tree.TypeDir, unix.S_IFLNK: tree.TypeSymlink,
			unix.S_IFCHR: tree.TypeChar, unix.S_IFBLK: tree.TypeBlock, unix.S_IFIFO: tree.TypeFIFO, unix.S_IFSOCK: tree.TypeSocket}[st.Mode&unix.S_IFMT]
		if typ != n.Type {
			return fmt.Errorf("%s: type %v, want %v", rel, typ, n.Type)
		}
		switch n.Type {
		case tree.TypeRegular:
			if st.Size != n.Size {
				return fmt.Errorf("%s: size %d, want %d", rel, st.Size, n.Size)
			}
			f, err := os.Open(full)
			if err != nil {
				return err
			}
			err = sameContent(n, f)
			f.Close()
			if err != nil {
				return fmt.Errorf("%s: %w", rel, err)
			}
		case tree.TypeSymlink:
			target, err := os.Readlink(full)
			if err != nil || target != n.Target {
				return fmt.Errorf("%s: target %q (%v), want %q", rel, target, err, n.Target)
			}
		case tree.TypeChar, tree.TypeBlock:
			if unix.Major(st.Rdev) != n.DevMajor || unix.Minor(st.Rdev) != n.DevMinor {
				return fmt.Errorf("%s: device %d:%d, want %d:%d", rel, unix.Major(st.Rdev), unix.Minor(st.Rdev), n.DevMajor, n.DevMinor)
			}
		}
		return nil
	})
	must(t, err)
	want := 0
	_ = tr.Walk(func(string, *tree.Node) error { want++; return nil })
	if count != want {
		t.Fatalf("the kernel shows %d paths, the tree has %d", count, want)
	}
}

func fileHash(t testing.TB, name string) [32]byte {
	t.Helper()
	f, err := os.Open(name)
	must(t, err)
	defer f.Close()
	h := sha256.New()
	_, err = io.Copy(h, f)
	must(t, err)
	var s [32]byte
	h.Sum(s[:0])
	return s
}
