//go:build linux

package sysinit

import (
	"encoding/binary"
	"strings"
	"testing"
	"time"

	"osbuild.dev/osbuild/boot"
)

func TestParseConfig(t *testing.T) {
	const dm = `dm-mod.create="root,,,ro,0 8 verity 1 PARTUUID=a PARTUUID=b 4096 4096 1 1 sha256 ab -"`
	for _, tc := range []struct {
		cmdline string
		data    string
		init    string
		timeout time.Duration
		err     string
	}{
		{cmdline: dm + " console=ttyS0", data: "/var", init: "/sbin/init", timeout: 30 * time.Second},
		{cmdline: dm + " osbuild.data=/srv osbuild.init=/usr/lib/systemd/systemd osbuild.timeout=5", data: "/srv",
			init: "/usr/lib/systemd/systemd", timeout: 5 * time.Second},
		{cmdline: dm + " osbuild.data=none", data: "", init: "/sbin/init", timeout: 30 * time.Second},
		{cmdline: "console=ttyS0", err: "no dm-mod.create="},
		{cmdline: dm + " osbuild.data=var", err: "absolute path"},
		{cmdline: dm + " osbuild.data=/", err: "absolute path"},
		{cmdline: dm + " osbuild.timeout=soon", err: "want seconds"},
		{cmdline: `dm-mod.create="root,,,ro"`, err: "want name,uuid,minor,flags,table"},
	} {
		c, err := parseConfig(tc.cmdline)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: err = %v, want %q", tc.cmdline, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.cmdline, err)
			continue
		}
		if c.dataMount != tc.data || c.init != tc.init || c.timeout != tc.timeout || len(c.devices) != 1 {
			t.Errorf("%s: got %+v", tc.cmdline, c)
		}
	}
}

func TestTablePayload(t *testing.T) {
	b, err := tablePayload([]boot.DMTable{
		{Start: 0, Length: 8, Type: "verity", Params: "1 254:2 254:3"},
		{Start: 8, Length: 16, Type: "zero"},
	})
	if err != nil {
		t.Fatal(err)
	}
	le := binary.LittleEndian
	// First spec: 40-byte header + "1 254:2 254:3\0" (14) = 54, padded to 56.
	if next := le.Uint32(b[20:]); next != 56 {
		t.Fatalf("next = %d, want 56", next)
	}
	if le.Uint64(b[8:]) != 8 || strings.TrimRight(string(b[24:40]), "\x00") != "verity" || string(b[40:53]) != "1 254:2 254:3" || b[53] != 0 {
		t.Fatalf("first spec % x", b[:56])
	}
	second := b[56:]
	if le.Uint64(second[0:]) != 8 || le.Uint64(second[8:]) != 16 || strings.TrimRight(string(second[24:40]), "\x00") != "zero" {
		t.Fatalf("second spec % x", second)
	}
	if len(b) != 56+48 {
		t.Fatalf("payload is %d bytes", len(b))
	}
	if _, err := tablePayload([]boot.DMTable{{Type: "a-very-long-target-type"}}); err == nil {
		t.Fatal("long target type accepted")
	}
}

func TestGUIDString(t *testing.T) {
	// The ESP type GUID as stored on disk (mixed-endian).
	raw := []byte{0x28, 0x73, 0x2a, 0xc1, 0x1f, 0xf8, 0xd2, 0x11, 0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e, 0xc9, 0x3b}
	if got := guidString(raw); got != "c12a7328-f81f-11d2-ba4b-00a0c93ec93b" {
		t.Fatal(got)
	}
}

func TestSubstituteDevices(t *testing.T) {
	parts := []partition{{Name: "vda2", Dev: "254:2", UUID: "aa"}, {Name: "vda3", Dev: "254:3", UUID: "bb"}}
	got, err := substituteDevices("1 PARTUUID=AA PARTUUID=bb 4096", parts)
	if err != nil || got != "1 254:2 254:3 4096" {
		t.Fatalf("%q %v", got, err)
	}
	if _, err := substituteDevices("PARTUUID=cc", parts); err == nil {
		t.Fatal("unknown PARTUUID accepted")
	}
}
