package layers

import (
	"archive/tar"
	"fmt"
	"io"
	"sort"
	"time"

	"osbuild.dev/osbuild/tree"
)

// WriteTar writes t as one PAX tar: entries in tree.Walk order, the root as "./", directories with a
// trailing slash, xattrs as SCHILY.xattr records, no user or group names, no atime or ctime. The first path
// of a hardlinked node carries the content and the later ones link to it. The bytes are a function of the
// tree alone.
func WriteTar(w io.Writer, t *tree.Tree) error {
	tw := tar.NewWriter(w)
	first := map[*tree.Node]string{}
	links := t.LinkCounts()
	err := t.Walk(func(p string, n *tree.Node) error {
		hdr := &tar.Header{
			Name:    p,
			Mode:    int64(n.Mode & tree.ModePerm),
			Uid:     int(n.UID),
			Gid:     int(n.GID),
			ModTime: time.Unix(n.ModTime, 0),
			Format:  tar.FormatPAX,
		}
		if len(n.Xattrs) > 0 {
			hdr.PAXRecords = map[string]string{}
			keys := make([]string, 0, len(n.Xattrs))
			for k := range n.Xattrs {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				hdr.PAXRecords["SCHILY.xattr."+k] = n.Xattrs[k]
			}
		}
		if links[n] > 1 {
			if target, ok := first[n]; ok {
				hdr.Typeflag = tar.TypeLink
				hdr.Linkname = target
				return tw.WriteHeader(hdr)
			}
			first[n] = p
		}
		switch n.Type {
		case tree.TypeDir:
			hdr.Typeflag = tar.TypeDir
			hdr.Name = p + "/"
			if p == "" {
				hdr.Name = "./"
			}
		case tree.TypeRegular:
			hdr.Typeflag = tar.TypeReg
			hdr.Size = n.Size
		case tree.TypeSymlink:
			hdr.Typeflag = tar.TypeSymlink
			hdr.Linkname = n.Target
		case tree.TypeChar, tree.TypeBlock, tree.TypeFIFO:
			hdr.Typeflag = map[tree.Type]byte{tree.TypeChar: tar.TypeChar, tree.TypeBlock: tar.TypeBlock, tree.TypeFIFO: tar.TypeFifo}[n.Type]
			hdr.Devmajor, hdr.Devminor = int64(n.DevMajor), int64(n.DevMinor)
		case tree.TypeSocket:
			// tar has no socket type; GNU tar skips them too, and a root image gains nothing from one.
			return nil
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("write tar entry %q: %w", p, err)
		}
		if n.Type != tree.TypeRegular || n.Size == 0 {
			return nil
		}
		rc, err := n.Open()
		if err != nil {
			return fmt.Errorf("read %q: %w", p, err)
		}
		defer rc.Close()
		copied, err := io.Copy(tw, io.LimitReader(rc, n.Size))
		if err != nil {
			return fmt.Errorf("write %q: %w", p, err)
		}
		if copied != n.Size {
			return fmt.Errorf("read %q: its source has %d bytes, %d expected: was it changed during the build?", p, copied, n.Size)
		}
		return nil
	})
	if err != nil {
		return err
	}
	return tw.Close()
}
