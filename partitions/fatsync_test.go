package partitions

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"
)

// A write cut short can leave the two FATs different; opening the ESP for writing must still work, going
// by the first FAT as the firmware does, and leave both FATs equal.
func TestOpenESPRepairsDivergentFATs(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "esp.img"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	const size = 64 << 20
	if err := WriteESP(f, 0, size, []File{{Path: "loader/loader.conf", Data: []byte("timeout 0\n")}}, ESPOptions{}); err != nil {
		t.Fatal(err)
	}
	bs := make([]byte, 512)
	f.ReadAt(bs, 0)
	bps := int64(binary.LittleEndian.Uint16(bs[11:]))
	fat1 := int64(binary.LittleEndian.Uint16(bs[14:])) * bps
	fatBytes := int64(binary.LittleEndian.Uint32(bs[36:])) * bps
	// Scribble over an entry of the second FAT.
	f.WriteAt([]byte{0xde, 0xad, 0xbe, 0xef}, fat1+fatBytes+64)

	e, err := OpenESP(f, 0, size, true)
	if err != nil {
		t.Fatalf("open after a torn FAT write: %v", err)
	}
	if err := e.WriteFile("loader/entries/x.conf", []byte("title x\n")); err != nil {
		t.Fatal(err)
	}
	a, b := make([]byte, fatBytes), make([]byte, fatBytes)
	f.ReadAt(a, fat1)
	f.ReadAt(b, fat1+fatBytes)
	if !bytes.Equal(a, b) {
		t.Fatal("the FATs still differ")
	}
}
