package vm

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestArgs(t *testing.T) {
	dir := t.TempDir()
	raw := filepath.Join(dir, "disk.raw")
	os.WriteFile(raw, make([]byte, 4096), 0o644)
	qcow := filepath.Join(dir, "disk.qcow2")
	os.WriteFile(qcow, []byte("QFI\xfb\x00\x00\x00\x03"), 0o644)
	for _, tc := range []struct {
		name string
		cfg  Config
		want []string // must appear, in this order, adjacent
		not  []string
		err  string
	}{
		{name: "uefi raw", cfg: Config{Image: raw, Accel: "tcg", Network: true},
			want: []string{"-drive", "if=pflash,format=raw,unit=1,file=" + raw + ".vars", "-drive", "file=" + raw + ",format=raw,if=virtio,cache=unsafe",
				"-netdev", "user,id=net0", "-device", "virtio-net-pci,netdev=net0,romfile="}},
		{name: "qcow2", cfg: Config{Image: qcow, Accel: "tcg"}, want: []string{"-drive", "file=" + qcow + ",format=qcow2,if=virtio,cache=unsafe"}},
		{name: "bios kernel", cfg: Config{Kernel: "/k", Initrd: "/i", Append: "console=ttyS0", BIOS: true, NoReboot: true, Accel: "tcg", MemoryMiB: 512},
			want: []string{"-kernel", "/k", "-initrd", "/i", "-append", "console=ttyS0", "-no-reboot"}, not: []string{"if=pflash"}},
		{name: "kvm uses host cpu", cfg: Config{Kernel: "/k", BIOS: true, Accel: "kvm"}, want: []string{"q35,accel=kvm", "-cpu", "host"}},
		{name: "nothing", cfg: Config{Accel: "tcg"}, err: "nothing to boot"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args, _, err := Args(tc.cfg)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			line := "\x00" + strings.Join(args, "\x00") + "\x00"
			if !strings.Contains(line, "\x00"+strings.Join(tc.want, "\x00")+"\x00") {
				t.Fatalf("%q does not contain %q", args, tc.want)
			}
			for _, n := range tc.not {
				if strings.Contains(line, n) {
					t.Fatalf("%q contains %q", args, n)
				}
			}
			if slices.Contains(args, "if=pflash,format=raw,unit=1,file="+raw+".vars") {
				if _, err := os.Stat(raw + ".vars"); err != nil {
					t.Fatalf("vars file not created: %v", err)
				}
			}
		})
	}
}

// fakeQEMU is a shell script standing in for QEMU, so that Run's matching, timeout and exit handling are
// tested without booting anything.
func fakeQEMU(t *testing.T, script string) string {
	p := filepath.Join(t.TempDir(), "qemu")
	os.WriteFile(p, []byte("#!/bin/sh\n"+script), 0o755)
	return p
}

func TestRunExpect(t *testing.T) {
	for _, tc := range []struct {
		name    string
		script  string
		expect  []string
		timeout time.Duration
		matched int
		err     error
		exited  bool
	}{
		{name: "sequence", script: "echo a; echo boot 1; echo b; echo login; sleep 30", expect: []string{`boot \d`, `login`}, matched: 2},
		{name: "order matters", script: "echo login; echo boot 1; exit 0", expect: []string{`boot \d`, `login`}, matched: 1, err: ErrExited, exited: true},
		{name: "timeout", script: "echo nothing; sleep 30", expect: []string{`never`}, timeout: 500 * time.Millisecond, err: ErrTimeout},
		{name: "no expect waits for exit", script: "echo bye; exit 0", exited: true},
		{name: "split across writes", script: "printf 'mar'; sleep 0.2; printf 'ker\\n'; sleep 30", expect: []string{`marker`}, matched: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := fakeQEMU(t, tc.script)
			start := time.Now()
			res, err := Run(context.Background(), Config{Kernel: "/k", BIOS: true, Accel: "tcg", QEMU: q, Expect: tc.expect, Timeout: tc.timeout})
			if tc.err == nil && err != nil || tc.err != nil && !errors.Is(err, tc.err) {
				t.Fatalf("err = %v, want %v", err, tc.err)
			}
			if res.Matched != tc.matched || res.Exited != tc.exited {
				t.Fatalf("matched %d exited %v; output %q", res.Matched, res.Exited, res.Output)
			}
			if time.Since(start) > 10*time.Second {
				t.Fatal("Run did not return promptly")
			}
		})
	}
}

func TestDetectFormat(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string]string{"qcow2": "QFI\xfbrest", "raw": "\x00\x00\x00\x00", "short": "Q"} {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(content), 0o644)
		got, err := DetectFormat(p)
		want := name
		if name == "short" {
			want = "raw"
		}
		if err != nil || got != want {
			t.Errorf("%s: %s %v", name, got, err)
		}
	}
}

// TestProbe checks that the accelerator probe recognises a guest that runs: under TCG it always does.
func TestProbe(t *testing.T) {
	if testing.Short() {
		t.Skip("runs QEMU")
	}
	if !probe("tcg") {
		t.Fatal("the probe guest printed nothing under TCG: the probe is broken")
	}
	t.Logf("accelerator here: %s", DetectAccel())
}

func TestSilenceWatchdog(t *testing.T) {
	q := fakeQEMU(t, "sleep 30")
	if _, err := run(context.Background(), Config{Kernel: "/k", BIOS: true, Accel: "kvm", QEMU: q}, 300*time.Millisecond); !errors.Is(err, errSilent) {
		t.Fatalf("err = %v, want errSilent", err)
	}
	q = fakeQEMU(t, "echo hi; sleep 1; echo marker; sleep 30")
	if _, err := run(context.Background(), Config{Kernel: "/k", BIOS: true, Accel: "kvm", QEMU: q, Expect: []string{"marker"}}, 300*time.Millisecond); err != nil {
		t.Fatalf("a guest that talks was stopped: %v", err)
	}
}
