//go:build linux

package sysinit

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestGrowLastPartition grows the last partition of a disk image that was enlarged after partitioning
// (backup GPT no longer at the end) and checks the result with sgdisk. The image is a plain file, so the
// final BLKPG ioctl fails; the on-disk result is what is checked.
func TestGrowLastPartition(t *testing.T) {
	if _, err := exec.LookPath("sgdisk"); err != nil {
		t.Fatal("sgdisk is needed: apt-get install gdisk")
	}
	for _, tc := range []struct {
		name     string
		parts    []string // sgdisk -n arguments
		grow     int
		addMiB   int
		grown    bool
		wantLast string // sgdisk -i N "Last sector" after
	}{
		{name: "last partition grows", parts: []string{"1:1M:+4M", "2:5M:+4M"}, grow: 2, addMiB: 20, grown: true, wantLast: "Last sector: 59391"},
		{name: "not the last partition", parts: []string{"1:1M:+4M", "2:5M:+4M"}, grow: 1, addMiB: 20, grown: false},
		{name: "no room", parts: []string{"1:1M:+4M", "2:5M:0"}, grow: 2, addMiB: 0, grown: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			os.MkdirAll(filepath.Join(root, "sys/block/vdx/queue"), 0o755)
			os.MkdirAll(filepath.Join(root, "dev"), 0o755)
			disk := filepath.Join(root, "dev/vdx")
			if err := os.WriteFile(disk, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(disk, 10<<20); err != nil {
				t.Fatal(err)
			}
			args := []string{"-Z"}
			for _, p := range tc.parts {
				args = append(args, "-n", p)
			}
			if out, err := exec.Command("sgdisk", append(args, disk)...).CombinedOutput(); err != nil {
				t.Fatalf("sgdisk: %v\n%s", err, out)
			}
			size := int64(10+tc.addMiB) << 20
			os.Truncate(disk, size)
			os.WriteFile(filepath.Join(root, "sys/block/vdx/size"), []byte(strconv.FormatInt(size/512, 10)+"\n"), 0o644)
			os.WriteFile(filepath.Join(root, "sys/block/vdx/queue/logical_block_size"), []byte("512\n"), 0o644)

			grown, err := growLastPartition(root, "vdx", tc.grow)
			if tc.grown {
				if !grown || err == nil || !strings.Contains(err.Error(), "did not take the new size") {
					t.Fatalf("grown %v, err %v (want the BLKPG error on a plain file)", grown, err)
				}
			} else if grown || err != nil {
				t.Fatalf("grown %v, err %v", grown, err)
			}
			out, err := exec.Command("sgdisk", "-v", disk).CombinedOutput()
			if !tc.grown {
				return
			}
			if err != nil || !strings.Contains(string(out), "No problems found") {
				t.Fatalf("sgdisk -v: %v\n%s", err, out)
			}
			info, _ := exec.Command("sgdisk", "-i", "2", disk).CombinedOutput()
			if !strings.Contains(string(info), tc.wantLast) {
				t.Fatalf("partition 2:\n%s", info)
			}
		})
	}
}
