package squashfs

import (
	"fmt"
	"strings"

	"osbuild.dev/osbuild/tree"
)

// Inode types. Directory entries always carry the basic type.
const (
	typeDir = 1 + iota
	typeFile
	typeSymlink
	typeBlock
	typeChar
	typeFIFO
	typeSocket
	typeExtDir
	typeExtFile
	typeExtSymlink
	typeExtBlock
	typeExtChar
	typeExtFIFO
	typeExtSocket
)

type xattr struct {
	typ   uint16
	name  string
	value string
}

func xattrPrefix(k string) (uint16, string, bool) {
	for i, p := range []string{"user.", "trusted.", "security."} {
		if strings.HasPrefix(k, p) && len(k) > len(p) {
			return uint16(i), k[len(p):], true
		}
	}
	return 0, "", false
}

type inodeInfo struct {
	num   uint32
	block uint32 // inode table offset of the metadata block holding the inode
	off   uint16
	typ   uint16 // basic type, for directory entries
}

type tables struct {
	*builder
	inodes, dirs *metaWriter
	nums         map[*tree.Node]uint32
	written      map[*tree.Node]inodeInfo
	next         uint32
	ids          []uint32
	idIndex      map[uint32]uint16
	xkv          *metaWriter
	xids         le // xattr id entries, 16 bytes each
	xattrIndex   map[string]uint32
	err          error
}

// number assigns inode numbers in the order inodes are written: every directory after its
// contents, each hardlinked node once. A directory's number is needed by its children (parent
// field) before its inode exists, hence a separate pass.
func (t *tables) number(d *tree.Node) {
	for _, e := range d.Children() {
		c := e.Node
		if c.IsDir() {
			t.number(c)
		} else if _, ok := t.nums[c]; !ok {
			t.next++
			t.nums[c] = t.next
		}
	}
	t.next++
	t.nums[d] = t.next
}

func (b *builder) writeTables(out *outWriter) (*superblock, error) {
	newMeta := func() (*metaWriter, error) { return newMetaWriter(b.meta), nil }
	t := &tables{builder: b, nums: map[*tree.Node]uint32{}, written: map[*tree.Node]inodeInfo{},
		idIndex: map[uint32]uint16{}, xattrIndex: map[string]uint32{}}
	var err error
	if t.inodes, err = newMeta(); err != nil {
		return nil, err
	}
	if t.dirs, err = newMeta(); err != nil {
		return nil, err
	}
	if t.xkv, err = newMeta(); err != nil {
		return nil, err
	}
	t.number(b.t.Root)
	root := t.writeDir("", b.t.Root, t.next+1)
	if t.err != nil {
		return nil, t.err
	}
	b.stats.Inodes = int(t.next)

	mt := b.maxTime
	if !b.o.ModTime.IsZero() {
		mt = b.o.ModTime.Unix()
	}
	sb := &superblock{
		inodes:      t.next,
		modTime:     clampTime(mt),
		blockSize:   b.o.BlockSize,
		fragments:   uint32(len(b.frags)),
		comp:        b.codec.id,
		flags:       flagDuplicates,
		rootRef:     uint64(root.block)<<16 | uint64(root.off),
		exportTable: invalidTable,
	}
	if b.codec.options != nil {
		sb.flags |= flagCompOptions
	}

	// Order matters to the kernel: each table is bounds-checked against the start of the next one.
	inodeTab, err := t.inodes.finish()
	if err != nil {
		return nil, err
	}
	dirTab, err := t.dirs.finish()
	if err != nil {
		return nil, err
	}
	sb.inodeTable = uint64(out.off)
	if err := out.write(inodeTab); err != nil {
		return nil, err
	}
	sb.dirTable = uint64(out.off)
	if err := out.write(dirTab); err != nil {
		return nil, err
	}

	fragEntries := make(le, 0, 16*len(b.frags))
	for _, f := range b.frags {
		fragEntries = fragEntries.u64(f.start).u32(f.word).u32(0)
	}
	if sb.fragTable, err = t.lookupTable(out, fragEntries, nil); err != nil {
		return nil, err
	}
	idEntries := make(le, 0, 4*len(t.ids))
	for _, id := range t.ids {
		idEntries = idEntries.u32(id)
	}
	sb.ids = uint16(len(t.ids))
	if sb.idTable, err = t.lookupTable(out, idEntries, nil); err != nil {
		return nil, err
	}

	if len(t.xids) == 0 {
		sb.flags |= flagNoXattrs
		sb.xattrTable = invalidTable
		return sb, nil
	}
	kv, err := t.xkv.finish()
	if err != nil {
		return nil, err
	}
	kvStart := uint64(out.off)
	if err := out.write(kv); err != nil {
		return nil, err
	}
	head := make(le, 0, 16).u64(kvStart).u32(uint32(len(t.xids) / 16)).u32(0)
	if sb.xattrTable, err = t.lookupTable(out, t.xids, head); err != nil {
		return nil, err
	}
	return sb, nil
}

// lookupTable writes entries as metadata blocks followed by the absolute positions of those blocks,
// preceded by head; it returns where head (or the position list) starts.
func (t *tables) lookupTable(out *outWriter, entries, head []byte) (uint64, error) {
	m := newMetaWriter(t.meta)
	m.Write(entries)
	data, err := m.finish()
	if err != nil {
		return 0, err
	}
	base := uint64(out.off)
	if err := out.write(data); err != nil {
		return 0, err
	}
	start := uint64(out.off)
	idx := le(head)
	for _, p := range m.pos {
		idx = idx.u64(base + p)
	}
	return start, out.write(idx)
}

func clampTime(t int64) uint32 {
	return uint32(min(max(t, 0), 0xFFFFFFFF))
}

func (t *tables) id(v uint32) uint16 {
	if i, ok := t.idIndex[v]; ok {
		return i
	}
	if len(t.ids) >= 1<<16 {
		t.fail(fmt.Errorf("squashfs: more than 65536 distinct uids and gids"))
		return 0
	}
	i := uint16(len(t.ids))
	t.idIndex[v] = i
	t.ids = append(t.ids, v)
	return i
}

func (t *tables) fail(err error) {
	if t.err == nil {
		t.err = err
	}
}

// xattrID stores a node's xattr set once per distinct set and returns its index.
func (t *tables) xattrID(n *tree.Node) uint32 {
	xs := t.sortedXattrs(n)
	if len(xs) == 0 {
		return invalidXattr
	}
	var key strings.Builder
	for _, x := range xs {
		fmt.Fprintf(&key, "%d:%d:%s%d:%s", x.typ, len(x.name), x.name, len(x.value), x.value)
	}
	if i, ok := t.xattrIndex[key.String()]; ok {
		return i
	}
	blk, off := t.xkv.ref()
	before := t.xkv.size
	for _, x := range xs {
		rec := make(le, 0, 8+len(x.name)+len(x.value))
		rec = rec.u16(x.typ).u16(uint16(len(x.name)))
		rec = append(rec, x.name...)
		rec = rec.u32(uint32(len(x.value)))
		rec = append(rec, x.value...)
		t.xkv.Write(rec)
	}
	i := uint32(len(t.xids) / 16)
	t.xids = t.xids.u64(uint64(blk)<<16 | uint64(off)).u32(uint32(len(xs))).u32(uint32(t.xkv.size - before))
	t.xattrIndex[key.String()] = i
	return i
}

func (t *tables) header(typ uint16, n *tree.Node) le {
	b := make(le, 0, 64)
	return b.u16(typ).u16(uint16(n.Mode & tree.ModePerm)).u16(t.id(n.UID)).u16(t.id(n.GID)).
		u32(clampTime(n.ModTime)).u32(t.nums[n])
}

func (t *tables) emitInode(n *tree.Node, basic uint16, rec []byte) inodeInfo {
	blk, off := t.inodes.ref()
	t.inodes.Write(rec)
	return inodeInfo{num: t.nums[n], block: blk, off: off, typ: basic}
}

func (t *tables) writeLeaf(p string, n *tree.Node) inodeInfo {
	nlink := uint32(max(t.nlink[n], 1))
	xid := t.xattrID(n)
	ext := xid != invalidXattr
	switch n.Type {
	case tree.TypeRegular:
		f := t.layouts[n]
		l := f.layout
		if l == nil {
			l = &fileLayout{frag: invalidFragment}
		}
		if ext || nlink > 1 || l.sparse > 0 || l.start > 0xFFFFFFFF || f.size > 0xFFFFFFFF {
			r := t.header(typeExtFile, n).u64(l.start).u64(uint64(f.size)).u64(l.sparse).
				u32(nlink).u32(l.frag).u32(l.fragOff).u32(xid)
			for _, s := range l.sizes {
				r = r.u32(s)
			}
			return t.emitInode(n, typeFile, r)
		}
		r := t.header(typeFile, n).u32(uint32(l.start)).u32(l.frag).u32(l.fragOff).u32(uint32(f.size))
		for _, s := range l.sizes {
			r = r.u32(s)
		}
		return t.emitInode(n, typeFile, r)
	case tree.TypeSymlink:
		typ := uint16(typeSymlink)
		if ext {
			typ = typeExtSymlink
		}
		r := t.header(typ, n).u32(nlink).u32(uint32(len(n.Target)))
		r = append(r, n.Target...)
		if ext {
			r = r.u32(xid)
		}
		return t.emitInode(n, typeSymlink, r)
	case tree.TypeChar, tree.TypeBlock:
		basic := uint16(typeChar)
		if n.Type == tree.TypeBlock {
			basic = typeBlock
		}
		if n.DevMajor > 0xFFF || n.DevMinor > 0xFFFFF {
			t.fail(fmt.Errorf("squashfs: %s: device %d:%d does not fit in 32 bits", p, n.DevMajor, n.DevMinor))
		}
		// The kernel's new_encode_dev layout.
		rdev := n.DevMinor&0xff | n.DevMajor<<8 | (n.DevMinor&^0xff)<<12
		typ := basic
		if ext {
			typ += typeExtDir - typeDir
		}
		r := t.header(typ, n).u32(nlink).u32(rdev)
		if ext {
			r = r.u32(xid)
		}
		return t.emitInode(n, basic, r)
	default: // FIFO, socket
		basic := uint16(typeFIFO)
		if n.Type == tree.TypeSocket {
			basic = typeSocket
		}
		typ := basic
		if ext {
			typ += typeExtDir - typeDir
		}
		r := t.header(typ, n).u32(nlink)
		if ext {
			r = r.u32(xid)
		}
		return t.emitInode(n, basic, r)
	}
}

type dirIndex struct {
	listOff uint32 // offset in the directory's listing
	pos     int64  // absolute uncompressed position in the directory table
	name    string
	block   uint32 // filled when written
}

// writeDir writes everything below d, then d's listing, then d's inode.
func (t *tables) writeDir(p string, d *tree.Node, parent uint32) inodeInfo {
	children := d.Children()
	infos := make([]inodeInfo, len(children))
	subdirs := 0
	for i, e := range children {
		c := e.Node
		cp := e.Name
		if p != "" {
			cp = p + "/" + e.Name
		}
		if e.Name == "" || e.Name == "." || e.Name == ".." || strings.ContainsAny(e.Name, "/\x00") {
			t.fail(fmt.Errorf("squashfs: %q: invalid name", cp))
		}
		switch {
		case c.IsDir():
			infos[i] = t.writeDir(cp, c, t.nums[d])
			subdirs++
		default:
			inf, ok := t.written[c]
			if !ok {
				inf = t.writeLeaf(cp, c)
				t.written[c] = inf
			}
			infos[i] = inf
		}
	}

	// The listing: runs of entries behind a header sharing one inode block and a base inode number
	// (±32767), at most 256 per header. A new header also starts at the first entry that begins in
	// a new directory-table block, and such headers get an index entry for the kernel's lookup.
	base := t.dirs.size
	blockOf := func(pos int64) int64 { return pos / metadataSize }
	var list le
	var idx []dirIndex
	hdrAt, hdrCount := -1, 0
	var hdrBlock, hdrBase uint32
	var hdrDirBlock int64
	lastIndexed := blockOf(base)
	for i, e := range children {
		inf := infos[i]
		pos := base + int64(len(list))
		delta := int64(inf.num) - int64(hdrBase)
		if hdrAt < 0 || hdrCount == dirHeaderMaxCount || inf.block != hdrBlock || delta > 32767 ||
			delta < -32768 || blockOf(pos) != hdrDirBlock {
			if hdrAt >= 0 {
				putU32(list[hdrAt:], uint32(hdrCount-1))
			}
			if blockOf(pos) != lastIndexed {
				idx = append(idx, dirIndex{listOff: uint32(len(list)), pos: pos, name: e.Name})
				lastIndexed = blockOf(pos)
			}
			hdrAt, hdrCount, hdrBlock, hdrBase, hdrDirBlock = len(list), 0, inf.block, inf.num, blockOf(pos)
			list = list.u32(0).u32(inf.block).u32(inf.num)
			delta = 0
		}
		list = list.u16(inf.off).u16(uint16(int16(delta))).u16(inf.typ).u16(uint16(len(e.Name) - 1))
		list = append(list, e.Name...)
		hdrCount++
	}
	if hdrAt >= 0 {
		putU32(list[hdrAt:], uint32(hdrCount-1))
	}
	startBlock, startOff := t.dirs.ref()
	written := 0
	for i := range idx {
		k := int(idx[i].listOff)
		t.dirs.Write(list[written:k])
		written = k
		idx[i].block, _ = t.dirs.ref()
	}
	t.dirs.Write(list[written:])

	nlink := uint32(2 + subdirs)
	size := uint32(len(list) + 3)
	xid := t.xattrID(d)
	if xid == invalidXattr && len(idx) == 0 && size <= 0xFFFF {
		r := t.header(typeDir, d).u32(startBlock).u32(nlink).u16(uint16(size)).u16(startOff).u32(parent)
		return t.emitInode(d, typeDir, r)
	}
	r := t.header(typeExtDir, d).u32(nlink).u32(size).u32(startBlock).u32(parent).
		u16(uint16(len(idx))).u16(startOff).u32(xid)
	for _, x := range idx {
		r = r.u32(x.listOff).u32(x.block).u32(uint32(len(x.name) - 1))
		r = append(r, x.name...)
	}
	return t.emitInode(d, typeDir, r)
}

func putU32(b []byte, v uint32) {
	b[0], b[1], b[2], b[3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24)
}
