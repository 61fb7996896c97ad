//go:build linux

package sysinit_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"osbuild.dev/osbuild/boot"
	"osbuild.dev/osbuild/boot/boottest"
	"osbuild.dev/osbuild/vm"
)

const (
	rootUUID   = "6f1c3c7a-5b7e-4c55-9d6a-2a1e0c0f0a02"
	verityUUID = "6f1c3c7a-5b7e-4c55-9d6a-2a1e0c0f0a03"
	dataUUID   = "6f1c3c7a-5b7e-4c55-9d6a-2a1e0c0f0a06"
	marker     = "OSBUILD-E2E-MARKER"
	growMiB    = 48
)

// testInit is the root's /sbin/init: it proves the root is the verity device, that the data partition
// is writable and persists, then powers off.
const testInit = `#!/bin/busybox sh
export PATH=/bin
busybox echo "root: $(busybox grep ' / ' /proc/mounts)"
busybox echo "data: $(busybox grep ' /var ' /proc/mounts)"
busybox echo "datasize: $(busybox cat /sys/class/block/vda6/size)"
busybox echo boot >> /var/boots
busybox sync
busybox echo "` + marker + ` boots=$(busybox wc -l < /var/boots)"
busybox poweroff -f
`

func need(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is needed for this test: install it (qemu-system-x86, squashfs-tools, cryptsetup-bin, gdisk)", tool)
		}
	}
}

func sh(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

type image struct {
	disk, kernel, initrd string
	cmdline              string
	rootOffset           int64 // byte offset of the root partition
	espOffset            int64
}

// buildImage makes a GPT disk with the standard tools: a squashfs of a busybox root, its verity tree,
// and an empty data partition; plus the Debian cloud kernel and an initramfs with osbuild as /init.
func buildImage(t *testing.T) image {
	need(t, "qemu-system-x86_64", "mksquashfs", "veritysetup", "sgdisk", "dd", "go", "mkfs.fat", "mmd", "mcopy", "mdir")
	dir := t.TempDir()

	bin := filepath.Join(dir, "osbuild")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", bin, "osbuild.dev/osbuild/cmd/osbuild")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Logf("WARNING: cmd/osbuild does not build, booting sysinit alone as /init: %v\n%s", err, out)
		cmd = exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", bin, "osbuild.dev/osbuild/sysinit/internal/testinit")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("build the init: %v\n%s", err, out)
		}
	}

	kdir := boottest.Package(t, "linux-image-cloud-amd64")
	ktree := boottest.HostTree(t, kdir)
	k, err := boot.FindKernel(ktree, "")
	if err != nil {
		t.Fatal(err)
	}
	mods, err := boot.ResolveModules(ktree, k.Version, boot.DefaultModules)
	if err != nil {
		t.Fatal(err)
	}
	initrd := filepath.Join(dir, "initrd")
	f, err := os.Create(initrd)
	if err != nil {
		t.Fatal(err)
	}
	if err := boot.WriteInitramfs(f, mods, boot.InitramfsOptions{Init: bin}); err != nil {
		t.Fatal(err)
	}
	f.Close()

	bb := boottest.Package(t, "busybox-static")
	root := filepath.Join(dir, "root")
	for _, d := range []string{"bin", "sbin", "dev", "proc", "sys", "var"} {
		os.MkdirAll(filepath.Join(root, d), 0o755)
	}
	sh(t, "cp", filepath.Join(bb, "bin/busybox"), filepath.Join(root, "bin/busybox"))
	os.Symlink("busybox", filepath.Join(root, "bin/sh"))
	os.WriteFile(filepath.Join(root, "sbin/init"), []byte(testInit), 0o755)
	rootImg := filepath.Join(dir, "root.img")
	sh(t, "mksquashfs", root, rootImg, "-noappend", "-all-root", "-comp", "zstd", "-quiet")
	verityImg := filepath.Join(dir, "verity.img")
	out := sh(t, "veritysetup", "format", rootImg, verityImg)
	field := func(name string) string {
		m := regexp.MustCompile(`(?m)^` + name + `:\s*(\S+)`).FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("veritysetup printed no %s:\n%s", name, out)
		}
		return m[1]
	}
	var blocks uint64
	fmt.Sscan(field("Data blocks"), &blocks)

	const mib = 1 << 20
	size := func(p string) int64 {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Size()
	}
	const espMiB = 40
	rootMiB := size(rootImg)/mib + 1
	verityMiB := size(verityImg)/mib + 1
	rootStart := int64(1 + espMiB)
	disk := filepath.Join(dir, "disk.raw")
	total := rootStart + rootMiB + verityMiB + 16 + 1
	sh(t, "truncate", "-s", fmt.Sprintf("%dM", total), disk)
	sh(t, "sgdisk", "-Z",
		"-n", fmt.Sprintf("1:1M:+%dM", espMiB), "-t", "1:c12a7328-f81f-11d2-ba4b-00a0c93ec93b", "-c", "1:esp",
		"-n", fmt.Sprintf("2:%dM:+%dM", rootStart, rootMiB), "-t", "2:4f68bce3-e8cd-4db1-96e7-fbcaf984b709", "-c", "2:root-a", "-u", "2:"+rootUUID,
		"-n", fmt.Sprintf("3:%dM:+%dM", rootStart+rootMiB, verityMiB), "-t", "3:2c7357ed-ebd2-46d9-aec1-23d437ec2bf5", "-c", "3:verity-a", "-u", "3:"+verityUUID,
		"-n", fmt.Sprintf("6:%dM:+16M", rootStart+rootMiB+verityMiB), "-t", "6:0fc63daf-8483-4772-8e79-3d69d8477de4", "-c", "6:data", "-u", "6:"+dataUUID,
		disk)
	// The disk is then made bigger than its GPT, as when an image is written to a larger cloud disk:
	// the first boot grows the data partition into the free space.
	sh(t, "truncate", "-s", fmt.Sprintf("%dM", total+growMiB), disk)
	sh(t, "dd", "if="+rootImg, "of="+disk, "bs=1M", fmt.Sprintf("seek=%d", rootStart), "conv=notrunc", "status=none")
	sh(t, "dd", "if="+verityImg, "of="+disk, "bs=1M", fmt.Sprintf("seek=%d", rootStart+rootMiB), "conv=notrunc", "status=none")

	cmdline, err := boot.Cmdline(boot.CmdlineOptions{Verity: boot.Verity{
		DataPartUUID: rootUUID, HashPartUUID: verityUUID, DataBlocks: blocks,
		RootHash: field("Root hash"), Salt: field("Salt"),
	}})
	if err != nil {
		t.Fatal(err)
	}
	kernel := filepath.Join(kdir, k.Path)

	// The ESP for the full UEFI chain: systemd-boot, loader.conf and one counted entry.
	sdboot := boottest.Package(t, "systemd-boot-efi")
	esp := filepath.Join(dir, "esp.img")
	sh(t, "mkfs.fat", "-F", "32", "-n", "ESP", "-C", esp, fmt.Sprint(espMiB*1024))
	sh(t, "mmd", "-i", esp, "::EFI", "::EFI/BOOT", "::loader", "::loader/entries", "::osbuild", "::osbuild/a")
	sh(t, "mcopy", "-i", esp, filepath.Join(sdboot, "usr/lib/systemd/boot/efi/systemd-bootx64.efi"), "::EFI/BOOT/BOOTX64.EFI")
	sh(t, "mcopy", "-i", esp, kernel, "::osbuild/a/vmlinuz")
	sh(t, "mcopy", "-i", esp, initrd, "::osbuild/a/initrd")
	entry := boot.SlotEntry("e2e", "1", "a", cmdline, boot.DefaultTries)
	body, err := entry.Render()
	if err != nil {
		t.Fatal(err)
	}
	for name, content := range map[string][]byte{"loader.conf": boot.LoaderConf(), "entry.conf": body} {
		os.WriteFile(filepath.Join(dir, name), content, 0o644)
	}
	sh(t, "mcopy", "-i", esp, filepath.Join(dir, "loader.conf"), "::loader/loader.conf")
	sh(t, "mcopy", "-i", esp, filepath.Join(dir, "entry.conf"), "::"+entry.FileName())
	sh(t, "dd", "if="+esp, "of="+disk, "bs=1M", "seek=1", "conv=notrunc", "status=none")

	t.Logf("initramfs %d bytes, root %d blocks, cmdline %s", size(initrd), blocks, cmdline)
	return image{disk: disk, kernel: kernel, initrd: initrd, cmdline: cmdline, rootOffset: rootStart * mib, espOffset: mib}
}

type logWriter struct{ t *testing.T }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func boot1(t *testing.T, img image, disk, appendExtra string, expect ...string) (vm.Result, error) {
	t.Helper()
	var console bytes.Buffer
	res, err := vm.Run(context.Background(), vm.Config{
		Image: disk, Kernel: img.kernel, Initrd: img.initrd, Append: strings.TrimSpace(img.cmdline + " " + appendExtra),
		BIOS: true, NoReboot: true, Expect: expect, Timeout: 3 * time.Minute, Console: &console,
	})
	if err != nil || testing.Verbose() {
		t.Logf("console (%s, %s):\n%s", res.Accel, res.Duration.Round(time.Millisecond), console.String())
	}
	return res, err
}

// TestBoot boots the Debian kernel with osbuild's initramfs: root through dm-verity, data partition
// formatted on first boot and kept on the second, a corrupted root refused with a reboot, and an init
// failure ending in a reboot.
func TestBoot(t *testing.T) {
	if testing.Short() {
		t.Skip("boots QEMU")
	}
	img := buildImage(t)

	t.Run("first boot formats data", func(t *testing.T) {
		res, err := boot1(t, img, img.disk, "",
			`osbuild: init: loaded \d+ modules`, `osbuild: init: data: /dev/vda6 grown to \d+ MiB`,
			`osbuild: init: data: \S+ has no filesystem, formatting`,
			`root: /dev/mapper/root / squashfs ro`, `data: /dev/vda6 /var ext[24] rw`, marker+` boots=1`)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("marker after %s (%s)", res.At[len(res.At)-1].Round(time.Millisecond), res.Accel)
		// 16 MiB at build time, plus the space added after the GPT was written, minus the backup GPT
		// and alignment.
		m := regexp.MustCompile(`datasize: (\d+)`).FindSubmatch(res.Output)
		var sectors int64
		if m != nil {
			fmt.Sscan(string(m[1]), &sectors)
		}
		if sectors < (16+growMiB-1)*2048 {
			t.Fatalf("data partition not grown: %d sectors", sectors)
		}
		if out := sh(t, "sgdisk", "-v", img.disk); !strings.Contains(out, "No problems found") {
			t.Fatalf("GPT after growing:\n%s", out)
		}
	})
	t.Run("second boot keeps data", func(t *testing.T) {
		res, err := boot1(t, img, img.disk, "", marker+` boots=2`)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(res.Output, []byte("formatting")) {
			t.Fatal("the data partition was formatted again")
		}
		t.Logf("marker after %s", res.At[0].Round(time.Millisecond))
	})
	t.Run("uefi systemd-boot counts the boot", func(t *testing.T) {
		// The whole chain from the disk alone: OVMF, systemd-boot, the counted entry, kernel, initramfs.
		res, err := vm.Run(context.Background(), vm.Config{Image: img.disk, NoReboot: true, Timeout: 4 * time.Minute,
			Expect: []string{marker + ` boots=3`}, Console: &bytes.Buffer{}})
		if err != nil {
			t.Fatalf("%v\n%s", err, res.Output)
		}
		t.Logf("UEFI marker after %s (%s)", res.At[0].Round(time.Millisecond), res.Accel)
		// systemd-boot renamed the entry before booting it: one try used, two left.
		out := sh(t, "mdir", "-b", "-i", fmt.Sprintf("%s@@%d", img.disk, img.espOffset), "::loader/entries")
		if !strings.Contains(out, "osbuild-a+2-1.conf") {
			t.Fatalf("entry not counted down by systemd-boot:\n%s", out)
		}
		if _, err := os.Stat(img.disk + ".vars"); err != nil {
			t.Fatalf("no UEFI variables file beside the image: %v", err)
		}
	})
	t.Run("corrupted root reboots", func(t *testing.T) {
		bad := filepath.Join(t.TempDir(), "bad.raw")
		sh(t, "cp", "--sparse=always", img.disk, bad)
		f, err := os.OpenFile(bad, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		// Block 0 holds the squashfs superblock: mounting reads it, so verity must catch it at once.
		b := make([]byte, 1)
		f.ReadAt(b, img.rootOffset+100)
		b[0] ^= 0x01
		f.WriteAt(b, img.rootOffset+100)
		f.Close()
		res, err := boot1(t, img, bad, "")
		if err != nil {
			t.Fatal(err)
		}
		if !res.Exited {
			t.Fatal("QEMU did not exit: the guest did not reboot")
		}
		if !regexp.MustCompile(`device-mapper: verity: \S+: data block \d+ is corrupted`).Match(res.Output) {
			t.Fatal("no verity corruption message on the console")
		}
		if !bytes.Contains(res.Output, []byte("reboot: Restarting system")) {
			t.Fatal("the kernel did not restart")
		}
		if bytes.Contains(res.Output, []byte(marker)) {
			t.Fatal("the corrupted root booted")
		}
	})
	t.Run("missing partition reboots", func(t *testing.T) {
		wrong := strings.ReplaceAll(img.cmdline, rootUUID, "00000000-0000-4000-8000-000000000000")
		img2 := img
		img2.cmdline = wrong
		res, err := boot1(t, img2, img.disk, "osbuild.timeout=2")
		if err != nil {
			t.Fatal(err)
		}
		if !res.Exited || !bytes.Contains(res.Output, []byte("osbuild: init: no partition with PARTUUID 00000000-0000-4000-8000-000000000000")) {
			t.Fatal("no init failure message, or no reboot")
		}
	})
}
