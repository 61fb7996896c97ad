package bootentry

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestParseFileName(t *testing.T) {
	tests := []struct {
		name       string
		id         string
		counting   bool
		left, done int
		wantErr    bool
		roundTrips bool
	}{
		{"a.conf", "a", false, 0, 0, false, true},
		{"a+3.conf", "a", true, 3, 0, false, true},
		{"a+2-1.conf", "a", true, 2, 1, false, true},
		{"a+0-3.conf", "a", true, 0, 3, false, true},
		{"debian-1.2+3.conf", "debian-1.2", true, 3, 0, false, true},
		{"x+y.conf", "x+y", false, 0, 0, false, true}, // not a counter: part of the name
		{"x+1-.conf", "x+1-", false, 0, 0, false, true},
		{"a+3.conf.tmp", "", false, 0, 0, true, false},
		{".conf", "", false, 0, 0, true, false},
		{"dir/a.conf", "", false, 0, 0, true, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			id, counting, left, done, err := ParseFileName(tc.name)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			if id != tc.id || counting != tc.counting || left != tc.left || done != tc.done {
				t.Fatalf("got %q %v +%d-%d, want %q %v +%d-%d", id, counting, left, done, tc.id, tc.counting, tc.left, tc.done)
			}
			if tc.roundTrips {
				if got := FileName(id, counting, left, done); got != tc.name {
					t.Errorf("FileName = %q, want %q", got, tc.name)
				}
			}
		})
	}
}

const sample = `# written by osbuild
title  Debian GNU/Linux (slot b)
version 1.2.0
sort-key osbuild
linux /b/vmlinuz
initrd /b/initrd.img
initrd /b/extra.img
options dm-mod.create="root,,,ro,0 80 verity 1 PARTUUID=11111111-2222-3333-4444-555555555555 PARTUUID=66666666-7777-8888-9999-000000000000 4096 4096 10 1 sha256 abcd 0011 1 restart_on_corruption" root=/dev/dm-0
options panic=10
custom-key some value
`

func TestParse(t *testing.T) {
	e, err := Parse("b+2-1.conf", []byte(sample))
	if err != nil {
		t.Fatal(err)
	}
	want := &Entry{
		FileName: "b+2-1.conf", ID: "b", Counting: true, TriesLeft: 2, TriesDone: 1,
		Title: "Debian GNU/Linux (slot b)", Version: "1.2.0", SortKey: "osbuild",
		Linux: "/b/vmlinuz", Initrd: []string{"/b/initrd.img", "/b/extra.img"},
		Options: `dm-mod.create="root,,,ro,0 80 verity 1 PARTUUID=11111111-2222-3333-4444-555555555555 PARTUUID=66666666-7777-8888-9999-000000000000 4096 4096 10 1 sha256 abcd 0011 1 restart_on_corruption" root=/dev/dm-0 panic=10`,
		Extra:   [][2]string{{"custom-key", "some value"}},
	}
	if !reflect.DeepEqual(e, want) {
		t.Fatalf("Parse:\n%+v\nwant\n%+v", e, want)
	}
	if e.State() != "trial" {
		t.Errorf("State = %s", e.State())
	}
	again, err := Parse(e.FileName, e.Marshal())
	if err != nil || !reflect.DeepEqual(again, e) {
		t.Fatalf("Marshal/Parse round trip: %+v, %v", again, err)
	}
}

func TestState(t *testing.T) {
	for name, want := range map[string]string{"a.conf": "good", "a+1-2.conf": "trial", "a+0-3.conf": "bad"} {
		e, err := Parse(name, nil)
		if err != nil || e.State() != want {
			t.Errorf("%s: State = %v, %v; want %s", name, e.State(), err, want)
		}
	}
}

func TestSplitCmdline(t *testing.T) {
	tests := []struct {
		in   string
		want []string
	}{
		{`a b  c`, []string{"a", "b", "c"}},
		{`x="1 2" y`, []string{"x=1 2", "y"}},
		{`  `, nil},
		{`q=""`, []string{"q="}},
	}
	for _, tc := range tests {
		if got := SplitCmdline(tc.in); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("SplitCmdline(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestParseDMVerity(t *testing.T) {
	tests := []struct {
		name    string
		cmdline string
		want    *Verity
		wantErr string
	}{
		{
			name:    "osbuild entry",
			cmdline: `quiet dm-mod.create="root,,,ro,0 80 verity 1 PARTUUID=aa PARTUUID=bb 4096 4096 10 1 sha256 abcd 0011 1 restart_on_corruption" panic=10`,
			want: &Verity{Name: "root", Sectors: 80, DataDevice: "PARTUUID=aa", HashDevice: "PARTUUID=bb", DataBlockSize: 4096,
				HashBlockSize: 4096, DataBlocks: 10, HashStartBlock: 1, Algorithm: "sha256", RootHash: "abcd", Salt: "0011",
				Flags: []string{"restart_on_corruption"}},
		},
		{
			name:    "second device, no flags",
			cmdline: `dm-mod.create="lin,,,rw,0 10 linear /dev/vda 0;root,uuid,4,ro,0 8 verity 1 /dev/a /dev/b 4096 4096 1 1 sha512 ff -"`,
			want: &Verity{Name: "root", Sectors: 8, DataDevice: "/dev/a", HashDevice: "/dev/b", DataBlockSize: 4096,
				HashBlockSize: 4096, DataBlocks: 1, HashStartBlock: 1, Algorithm: "sha512", RootHash: "ff", Salt: "-"},
		},
		{name: "none", cmdline: "root=/dev/vda2", wantErr: "no dm-mod.create"},
		{name: "short table", cmdline: `dm-mod.create="root,,,ro,0 8 verity 1 a b"`, wantErr: "10 arguments"},
		{name: "bad number", cmdline: `dm-mod.create="root,,,ro,0 8 verity 1 a b 4096 4096 x 1 sha256 ff -"`, wantErr: "invalid syntax"},
		{name: "bad device", cmdline: `dm-mod.create="root,ro"`, wantErr: "name,uuid,minor,flags,table"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseDMVerity(tc.cmdline)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got %v, want an error containing %q", err, tc.wantErr)
				}
				if tc.name == "none" && !errors.Is(err, ErrNoVerity) {
					t.Errorf("got %v, want ErrNoVerity", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}
