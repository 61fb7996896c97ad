package partitions

import (
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata/")

// golden compares got with testdata/name, or rewrites it with -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	p := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(p, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("%v (run go test ./partitions -run %s -update to create it)", err, t.Name())
	}
	if string(got) != string(want) {
		t.Errorf("%s differs from the golden file (if intended, rerun with -update):\ngot:\n%s\nwant:\n%s", p, got, want)
	}
}

func TestNewLayout(t *testing.T) {
	tests := []struct {
		name       string
		spec       Spec
		wantSizes  []int64 // MiB, partitions in order
		wantDisk   int64
		wantErr    string
		wantNeed   int64 // for DiskTooSmallError
		wantGolden string
	}{
		{
			name:       "4 GiB amd64",
			spec:       Spec{Arch: "amd64", DiskSize: 4 << 30, SlotSize: 1 << 30, Seed: "debian-minimal"},
			wantSizes:  []int64{256, 1024, 17, 1024, 17, 1756},
			wantDisk:   4 << 30,
			wantGolden: "layout-amd64-4g.json",
		},
		{
			name:       "arm64, smallest disk",
			spec:       Spec{Arch: "arm64", SlotSize: 300 << 20, ESPSize: 64 << 20, Seed: "x"},
			wantSizes:  []int64{64, 300, 5, 300, 5, 16},
			wantDisk:   (1 + 64 + 2*(300+5) + 16 + 1) << 20,
			wantGolden: "layout-arm64-min.json",
		},
		{
			name:      "sizes round up to MiB",
			spec:      Spec{Arch: "amd64", SlotSize: 100<<20 + 1, VeritySize: 1<<20 + 1, MinDataSize: 1, Seed: "x"},
			wantSizes: []int64{256, 101, 2, 101, 2, 1},
			wantDisk:  (1 + 256 + 2*(101+2) + 1 + 1) << 20,
		},
		{
			name:     "disk too small",
			spec:     Spec{Arch: "amd64", DiskSize: 1 << 30, SlotSize: 1 << 30},
			wantErr:  "too small",
			wantNeed: (1 + 256 + 2*(1024+17) + 16 + 1) << 20,
		},
		{name: "no slot size", spec: Spec{Arch: "amd64"}, wantErr: "slot size is required"},
		{name: "unknown arch", spec: Spec{Arch: "riscv64", SlotSize: 1 << 30}, wantErr: "use amd64 or arm64"},
		{name: "ESP below FAT32 minimum", spec: Spec{Arch: "amd64", SlotSize: 1 << 30, ESPSize: 8 << 20}, wantErr: "FAT32 minimum"},
		{name: "verity too small", spec: Spec{Arch: "amd64", SlotSize: 1 << 30, VeritySize: 1 << 20}, wantErr: "cannot hold the tree"},
		{name: "odd disk size", spec: Spec{Arch: "amd64", SlotSize: 1 << 30, DiskSize: 5<<30 + 1}, wantErr: "sectors"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l, err := NewLayout(tc.spec)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got %v, want an error containing %q", err, tc.wantErr)
				}
				var tooSmall *DiskTooSmallError
				if tc.wantNeed != 0 && (!errors.As(err, &tooSmall) || tooSmall.Need != tc.wantNeed || tooSmall.Have != tc.spec.DiskSize) {
					t.Fatalf("got %#v, want DiskTooSmallError{Need: %d, Have: %d}", err, tc.wantNeed, tc.spec.DiskSize)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if l.DiskSize != tc.wantDisk {
				t.Errorf("DiskSize = %d, want %d", l.DiskSize, tc.wantDisk)
			}
			labels := []string{LabelESP, LabelRootA, LabelVerityA, LabelRootB, LabelVerityB, LabelData}
			for i, p := range l.Partitions {
				if p.Number != i+1 || p.Label != labels[i] {
					t.Errorf("partition %d is %d %q, want %d %q", i, p.Number, p.Label, i+1, labels[i])
				}
				if p.Size != tc.wantSizes[i]<<20 {
					t.Errorf("%s: size %d MiB, want %d MiB", p.Label, p.Size>>20, tc.wantSizes[i])
				}
				if p.Start%MiB != 0 || p.Size%MiB != 0 {
					t.Errorf("%s: not MiB-aligned: start %d size %d", p.Label, p.Start, p.Size)
				}
				if i > 0 && p.Start != l.Partitions[i-1].End() {
					t.Errorf("%s starts at %d, previous ends at %d", p.Label, p.Start, l.Partitions[i-1].End())
				}
			}
			if last := l.Partitions[len(l.Partitions)-1]; last.End() > l.DiskSize-34*512 {
				t.Errorf("data ends at %d, over the backup GPT (disk %d)", last.End(), l.DiskSize)
			}
			again, _ := NewLayout(tc.spec)
			a, _ := json.Marshal(l)
			b, _ := json.Marshal(again)
			if string(a) != string(b) {
				t.Error("two layouts from one spec differ")
			}
			if tc.wantGolden != "" {
				j, _ := json.MarshalIndent(l, "", "  ")
				golden(t, tc.wantGolden, append(j, '\n'))
			}
		})
	}
}

func TestGUIDsDependOnSeed(t *testing.T) {
	a, _ := NewLayout(Spec{Arch: "amd64", SlotSize: 1 << 30, Seed: "one"})
	b, _ := NewLayout(Spec{Arch: "amd64", SlotSize: 1 << 30, Seed: "two"})
	seen := map[string]bool{a.DiskGUID: true}
	for i := range a.Partitions {
		if a.Partitions[i].UUID == b.Partitions[i].UUID {
			t.Errorf("%s: same PARTUUID for different seeds", a.Partitions[i].Label)
		}
		if seen[a.Partitions[i].UUID] {
			t.Errorf("%s: PARTUUID %s used twice", a.Partitions[i].Label, a.Partitions[i].UUID)
		}
		seen[a.Partitions[i].UUID] = true
	}
	if a.DiskGUID == b.DiskGUID {
		t.Error("same disk GUID for different seeds")
	}
}

func TestDefaultVeritySize(t *testing.T) {
	for _, tc := range []struct{ slot, want int64 }{
		{4096, MiB},
		{1 << 30, 17 * MiB},
		{2 << 30, 33 * MiB},
	} {
		if got := DefaultVeritySize(tc.slot); got != tc.want {
			t.Errorf("DefaultVeritySize(%d) = %d MiB, want %d MiB", tc.slot, got>>20, tc.want>>20)
		}
	}
}
