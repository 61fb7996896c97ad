package tree

import (
	"strings"
	"testing"
)

func TestWalkOrderAndLinks(t *testing.T) {
	tr := New()
	etc := NewDir(0o755, 0, 0, 0)
	tr.Root.SetChild("etc", etc)
	f := &Node{Type: TypeRegular, Content: BytesContent("x"), Size: 1}
	etc.SetChild("b", f)
	etc.SetChild("a", f) // a hardlink: the same node under two names
	tr.Root.SetChild("etc-x", &Node{Type: TypeSymlink, Target: "etc"})
	tr.Root.SetChild("a", &Node{Type: TypeFIFO})

	var got []string
	if err := tr.Walk(func(p string, n *Node) error { got = append(got, p+":"+n.Type.String()); return nil }); err != nil {
		t.Fatal(err)
	}
	// Pre-order, names sorted bytewise within each directory: "etc" before "etc-x" and its contents first.
	want := ":dir a:fifo etc:dir etc/a:file etc/b:file etc-x:symlink"
	if strings.Join(got, " ") != want {
		t.Fatalf("walk order\n got %s\nwant %s", strings.Join(got, " "), want)
	}
	if lc := tr.LinkCounts(); lc[f] != 2 || len(lc) != 1 {
		t.Fatalf("link counts: %v", lc)
	}
	if tr.Lookup("/etc/../etc/a") != f || tr.Lookup("etc-x/a") != nil {
		t.Fatal("Lookup must clean paths and never follow symlinks")
	}
	etc.RemoveChild("a")
	if tr.LinkCounts()[f] != 0 {
		t.Fatal("a single remaining link is not counted")
	}
}
