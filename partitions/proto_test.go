package partitions

import (
	"fmt"
	"os"
	"testing"
)

func TestProto(t *testing.T) {
	f, _ := os.Create("/tmp/proto/esp.img")
	n := 0
	fmt.Sscan(os.Getenv("MIB"), &n)
	sz := int64(n) << 20
	f.Truncate(sz)
	big := make([]byte, 10<<20)
	for i := range big {
		big[i] = byte(i * 7)
	}
	err := WriteESP(f, 0, sz, []File{
		{Path: "EFI/BOOT/BOOTX64.EFI", Data: []byte("efi")},
		{Path: "loader/loader.conf", Data: []byte("timeout 0\n")},
		{Path: "loader/entries/a+3.conf", Data: []byte("title A\n")},
		{Path: "a/vmlinuz", Data: big},
	}, ESPOptions{})
	if err != nil {
		t.Fatal(err)
	}
	e, err := OpenESP(f, 0, sz, true)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Rename("loader/entries/a+3.conf", "loader/entries/a.conf"); err != nil {
		t.Fatal(err)
	}
	if err := e.WriteFile("b/initrd.img", []byte("x")); err != nil {
		t.Fatal(err)
	}
	f.Close()
}
