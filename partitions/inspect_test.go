package partitions

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestInspect(t *testing.T) {
	td := buildTestDisk(t, t.TempDir())
	d, err := Open(td.path, true)
	if err != nil {
		t.Fatal(err)
	}
	// A second entry whose root hash is not slot A's, and one without a verity table.
	esp, err := d.ESP()
	if err != nil {
		t.Fatal(err)
	}
	bad := strings.Replace(string(testEntry(td.layout, strings.Repeat("ab", 32), td.written.Verity.SaltHex(), td.written.Verity.DataBlocks)), "1.0.0", "0.9.0", 1)
	if err := esp.WriteFile("loader/entries/old+0-3.conf", []byte(bad)); err != nil {
		t.Fatal(err)
	}
	if err := esp.WriteFile("loader/entries/rescue.conf", []byte("title Rescue\nlinux /vmlinuz\noptions single\n")); err != nil {
		t.Fatal(err)
	}
	d.Close()

	d, err = Open(td.path, false)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	r, err := Inspect(d)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Entries) != 3 {
		t.Fatalf("%d entries, want 3", len(r.Entries))
	}
	a, old := r.Entries[0], r.Entries[1]
	if a.FileName != "a+3.conf" || a.Slot != "a" || !a.TreeMatches || a.Verity.RootHash != td.written.Verity.RootHashHex() || a.State != "trial" {
		t.Errorf("a+3.conf: %+v", a)
	}
	if old.State != "bad" || old.TreeMatches || !strings.Contains(old.Error, "root hash does not match") {
		t.Errorf("old+0-3.conf: state %s, tree matches %v, error %q", old.State, old.TreeMatches, old.Error)
	}
	if !r.Slots[0].Formatted || r.Slots[1].Formatted || strings.Join(r.Slots[0].Entries, ",") != "a+3.conf,old+0-3.conf" {
		t.Errorf("slots: %+v", r.Slots)
	}
	j, _ := json.MarshalIndent(r, "", "  ")
	golden(t, "inspect.json", append(j, '\n'))
}
