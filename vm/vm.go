// Package vm boots images in QEMU for tests and for `osbuild run`: UEFI (OVMF) with a per-image copy of
// the firmware variables, a virtio disk, the serial console captured, and an expect list to wait for
// console markers in sequence.
package vm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Firmware paths of Debian's ovmf package.
const (
	OVMFCode = "/usr/share/OVMF/OVMF_CODE_4M.fd"
	OVMFVars = "/usr/share/OVMF/OVMF_VARS_4M.fd"
)

// Config describes one VM run.
type Config struct {
	// Image is the disk (raw or qcow2, detected from its header). Empty is allowed with Kernel.
	Image string
	// Snapshot discards the guest's writes to the disk (qemu -snapshot).
	Snapshot bool
	// Memory in MiB; default 256 (OVMF fails at 128).
	MemoryMiB int
	// BIOS boots with SeaBIOS instead of OVMF: fastest for direct kernel boot, no variables file.
	BIOS bool
	// VarsFile is the writable UEFI variable store; default Image+".vars", created from OVMFVars when
	// missing, so that boot-count state persists between runs of the same image.
	VarsFile string
	// Kernel, Initrd and Append boot a kernel directly (QEMU -kernel), bypassing the boot loader.
	Kernel, Initrd, Append string
	// NoReboot makes a guest reboot exit QEMU (which then exits 0, as on poweroff).
	NoReboot bool
	// Network adds user-mode networking with a virtio NIC.
	Network bool
	// Expect are regular expressions that must match the console in this order; Run returns as soon as
	// the last one matched (and kills QEMU). With none, Run waits for QEMU to exit.
	Expect []string
	// Timeout bounds the whole run; 0 means none (only ctx).
	Timeout time.Duration
	// Console receives the guest's serial output as it arrives (os.Stdout for a CLI, a t.Log writer
	// in tests). May be nil.
	Console io.Writer
	// Stdin feeds the serial console (interactive use). Nil means none.
	Stdin io.Reader
	// Accel is "kvm", "tcg" or "" to detect (env OSBUILD_ACCEL overrides detection).
	Accel string
	// QEMU is the emulator binary; default qemu-system-x86_64.
	QEMU string
	// ExtraArgs are appended to QEMU's command line.
	ExtraArgs []string
}

// Result is what happened in a run.
type Result struct {
	Output   []byte          // everything the console printed
	Matched  int             // how many Expect patterns matched
	At       []time.Duration // when each matched, from the start
	Duration time.Duration
	Exited   bool  // QEMU exited by itself (guest poweroff, reboot with NoReboot, crash)
	ExitErr  error // QEMU's exit status when it exited by itself with an error
	Accel    string
	Args     []string // QEMU's command line
}

// bootMenu matches the titles systemd-boot shows in its menu for osbuild's slot entries; they are never
// printed on a normal boot.
var bootMenu = regexp.MustCompile(`\(slot [AB]\)`)

// Errors of Run, for errors.Is.
var (
	ErrTimeout = errors.New("timed out")
	ErrExited  = errors.New("QEMU exited before the console matched")
)

// Run boots the VM and returns when every Expect pattern matched in order, when QEMU exits, or on
// timeout (ErrTimeout) or cancellation. With Expect set, QEMU exiting first is ErrExited.
func Run(ctx context.Context, cfg Config) (Result, error) {
	auto := cfg.Accel == "" && os.Getenv("OSBUILD_ACCEL") == ""
	if auto && DetectAccel() == "kvm" {
		start := time.Now()
		res, err := run(ctx, cfg, KVMSilence)
		if !errors.Is(err, errSilent) {
			return res, err
		}
		// The probe passed but the real guest never got going: KVM is flaky here. Use TCG from now on.
		setAccel("tcg")
		cfg.Accel = "tcg"
		if cfg.Timeout > 0 {
			cfg.Timeout -= time.Since(start)
		}
	}
	return run(ctx, cfg, 0)
}

// KVMSilence is how long a guest under a detected KVM may stay silent on the console before Run gives
// up on KVM and boots it again under TCG. Firmware and kernel print within a few seconds under KVM.
var KVMSilence = 10 * time.Second

var errSilent = errors.New("no console output")

func setAccel(a string) {
	DetectAccel()
	accelMu.Lock()
	accelName = a
	accelMu.Unlock()
}

func run(ctx context.Context, cfg Config, silence time.Duration) (Result, error) {
	var res Result
	exps := make([]*regexp.Regexp, len(cfg.Expect))
	for i, e := range cfg.Expect {
		re, err := regexp.Compile(e)
		if err != nil {
			return res, fmt.Errorf("vm: expect %q: %w", e, err)
		}
		exps[i] = re
	}
	args, accel, err := Args(cfg)
	if err != nil {
		return res, err
	}
	res.Accel, res.Args = accel, args
	qemu := cfg.QEMU
	if qemu == "" {
		qemu = "qemu-system-x86_64"
	}
	if cfg.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cfg.Timeout)
		defer cancel()
	}
	cmd := exec.Command(qemu, args...)
	pr, pw, err := os.Pipe()
	if err != nil {
		return res, err
	}
	cmd.Stdout = pw
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.Stdin = cfg.Stdin
	// Without a user at the console, keep a way to press Enter: on a loaded host systemd-boot has been seen
	// to stop at its menu despite "timeout 0", where a person would press Enter to boot the default entry.
	var keys *os.File
	if cfg.Stdin == nil {
		kr, kw, err := os.Pipe()
		if err != nil {
			return res, err
		}
		defer kw.Close()
		defer kr.Close()
		cmd.Stdin, keys = kr, kw
	}
	// Its own process group, so that a kill reaches everything it started. Not when it reads a terminal:
	// a background process group reading the terminal would be stopped (SIGTTIN).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: cfg.Stdin == nil}
	// Whatever still holds QEMU's stderr after it died must not keep Run waiting.
	cmd.WaitDelay = time.Second
	started := time.Now()
	if err := cmd.Start(); err != nil {
		pr.Close()
		pw.Close()
		return res, fmt.Errorf("vm: start %s: %w; install qemu-system-x86", qemu, err)
	}
	pw.Close()

	var mu sync.Mutex
	var out bytes.Buffer
	matched := make(chan struct{})
	readDone := make(chan struct{})
	gotOutput := make(chan struct{})
	go func() {
		defer close(readDone)
		next, from := 0, 0
		buf := make([]byte, 32*1024)
		for {
			n, err := pr.Read(buf)
			if n > 0 && out.Len() == 0 {
				close(gotOutput)
			}
			if n > 0 {
				if cfg.Console != nil {
					cfg.Console.Write(buf[:n])
				}
				mu.Lock()
				out.Write(buf[:n])
				for next < len(exps) {
					loc := exps[next].FindIndex(out.Bytes()[from:])
					if loc == nil {
						break
					}
					from += loc[1]
					res.At = append(res.At, time.Since(started))
					next++
					res.Matched = next
					if next == len(exps) {
						close(matched)
					}
				}
				mu.Unlock()
			}
			if err != nil {
				return
			}
		}
	}()
	waitErr := make(chan error, 1)
	go func() { waitErr <- cmd.Wait() }()

	finish := func(err error) (Result, error) {
		mu.Lock()
		res.Output = append([]byte(nil), out.Bytes()...)
		mu.Unlock()
		res.Duration = time.Since(started)
		return res, err
	}
	kill := func() {
		if cfg.Stdin == nil {
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		}
		_ = cmd.Process.Kill()
		<-waitErr
		pr.Close()
		<-readDone
	}
	var matchedCh <-chan struct{}
	if len(exps) > 0 {
		matchedCh = matched
	}
	var silent <-chan time.Time
	if silence > 0 {
		tm := time.NewTimer(silence)
		defer tm.Stop()
		silent = tm.C
	}
	output := (<-chan struct{})(gotOutput)
	menuCheck := time.NewTicker(time.Second)
	defer menuCheck.Stop()
	menuFrom, lastLen, quietSince := 0, 0, time.Now()
	for {
		select {
		case <-menuCheck.C:
			if keys == nil {
				continue
			}
			mu.Lock()
			if out.Len() != lastLen {
				lastLen, quietSince = out.Len(), time.Now()
			} else if time.Since(quietSince) > 3*time.Second && bootMenu.Match(out.Bytes()[menuFrom:]) {
				menuFrom = out.Len()
				keys.Write([]byte("\r"))
			}
			mu.Unlock()
		case <-output:
			silent, output = nil, nil
		case <-silent:
			kill()
			return finish(errSilent)
		case <-matchedCh:
			kill()
			return finish(nil)
		case err := <-waitErr:
			<-readDone
			pr.Close()
			res.Exited = true
			if err != nil {
				res.ExitErr = fmt.Errorf("%w: %s", err, strings.TrimSpace(stderr.String()))
			}
			if len(exps) > 0 && res.Matched < len(exps) {
				return finish(fmt.Errorf("vm: %w (matched %d of %d, waiting for %q)%s", ErrExited, res.Matched, len(exps),
					cfg.Expect[res.Matched], stderrNote(stderr.String())))
			}
			if res.ExitErr != nil {
				return finish(fmt.Errorf("vm: QEMU failed: %w", res.ExitErr))
			}
			return finish(nil)
		case <-ctx.Done():
			kill()
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				if len(exps) > 0 {
					return finish(fmt.Errorf("vm: waited %s for %q (matched %d of %d): %w",
						time.Since(started).Round(time.Millisecond), cfg.Expect[res.Matched], res.Matched, len(exps), ErrTimeout))
				}
				return finish(fmt.Errorf("vm: %w after %s", ErrTimeout, time.Since(started).Round(time.Millisecond)))
			}
			return finish(ctx.Err())
		}
	}
}

func stderrNote(s string) string {
	s = strings.TrimSpace(s)
	if s == "" {
		return ""
	}
	return "; QEMU said: " + s
}

// Args returns QEMU's command line for cfg and the accelerator it uses. It creates the variables file
// when needed.
func Args(cfg Config) ([]string, string, error) {
	if cfg.Image == "" && cfg.Kernel == "" {
		return nil, "", errors.New("vm: nothing to boot: give an image or a kernel")
	}
	accel := cfg.Accel
	if accel == "" {
		accel = os.Getenv("OSBUILD_ACCEL")
	}
	if accel == "" {
		accel = DetectAccel()
	}
	mem := cfg.MemoryMiB
	if mem == 0 {
		mem = 256
	}
	cpu := "max"
	if accel == "kvm" {
		cpu = "host"
	}
	args := []string{
		"-machine", "q35,accel=" + accel, "-cpu", cpu, "-m", strconv.Itoa(mem),
		"-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio",
	}
	if !cfg.BIOS {
		if _, err := os.Stat(OVMFCode); err != nil {
			return nil, "", fmt.Errorf("vm: UEFI firmware: %w; install the ovmf package", err)
		}
		vars := cfg.VarsFile
		if vars == "" {
			if cfg.Image == "" {
				return nil, "", errors.New("vm: UEFI boot without an image needs a VarsFile")
			}
			vars = cfg.Image + ".vars"
		}
		if err := ensureVars(vars); err != nil {
			return nil, "", err
		}
		args = append(args,
			"-drive", "if=pflash,format=raw,unit=0,readonly=on,file="+OVMFCode,
			"-drive", "if=pflash,format=raw,unit=1,file="+vars)
	}
	if cfg.Image != "" {
		format, err := DetectFormat(cfg.Image)
		if err != nil {
			return nil, "", err
		}
		if strings.Contains(cfg.Image, ",") {
			return nil, "", fmt.Errorf("vm: image path %q contains a comma, which QEMU cannot take", cfg.Image)
		}
		args = append(args, "-drive", "file="+cfg.Image+",format="+format+",if=virtio,cache=unsafe")
	}
	if cfg.Snapshot {
		args = append(args, "-snapshot")
	}
	if cfg.Kernel != "" {
		args = append(args, "-kernel", cfg.Kernel)
		if cfg.Initrd != "" {
			args = append(args, "-initrd", cfg.Initrd)
		}
		if cfg.Append != "" {
			args = append(args, "-append", cfg.Append)
		}
	}
	if cfg.NoReboot {
		args = append(args, "-no-reboot")
	}
	if cfg.Network {
		// romfile= keeps QEMU from loading an iPXE option ROM (Debian ships it in a separate package):
		// boots never come from the network here.
		args = append(args, "-netdev", "user,id=net0", "-device", "virtio-net-pci,netdev=net0,romfile=")
	}
	args = append(args, cfg.ExtraArgs...)
	return args, accel, nil
}

func ensureVars(p string) error {
	if _, err := os.Stat(p); err == nil {
		return nil
	}
	b, err := os.ReadFile(OVMFVars)
	if err != nil {
		return fmt.Errorf("vm: UEFI variables template: %w; install the ovmf package", err)
	}
	if err := os.WriteFile(p, b, 0o644); err != nil {
		return fmt.Errorf("vm: create the UEFI variables file: %w", err)
	}
	return nil
}

// DetectFormat returns "qcow2" or "raw" from the image's first bytes.
func DetectFormat(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", fmt.Errorf("vm: %w", err)
	}
	defer f.Close()
	magic := make([]byte, 4)
	if _, err := io.ReadFull(f, magic); err != nil {
		return "raw", nil
	}
	if string(magic) == "QFI\xfb" {
		return "qcow2", nil
	}
	return "raw", nil
}

var (
	accelOnce sync.Once
	accelMu   sync.Mutex
	accelName string
)

// DetectAccel returns "kvm" when KVM really runs a 64-bit guest here and "tcg" otherwise. Opening
// /dev/kvm is not enough: on some hosts the module loads and QEMU starts, but a kernel never gets going.
// So boot a tiny guest that enters long mode and writes one byte to the serial port, and see whether it
// arrives. The result is cached for the process.
func DetectAccel() string {
	accelOnce.Do(func() {
		accelName = "tcg"
		if f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0); err != nil {
			return
		} else {
			f.Close()
		}
		if probeKVM() {
			accelName = "kvm"
		}
	})
	accelMu.Lock()
	defer accelMu.Unlock()
	return accelName
}

func probeKVM() bool { return probe("kvm") }

// kvmProbe is a multiboot kernel that switches to 64-bit long mode and writes 'K' to COM1: the source is
// kvmprobe.S.txt (as --32; ld -m elf_i386 -Ttext=0x100000 --oformat binary). Real-mode and 32-bit code
// can run on the broken KVM hosts seen so far (a PVM module) while a 64-bit kernel hangs, so only long
// mode is a faithful test.
var kvmProbe = []byte{
	0x02, 0xb0, 0xad, 0x1b, 0x00, 0x00, 0x01, 0x00, 0xfe, 0x4f, 0x51, 0xe4,
	0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x10, 0x00, 0x96, 0x00, 0x10, 0x00,
	0x00, 0x40, 0x10, 0x00, 0x20, 0x00, 0x10, 0x00, 0xc7, 0x05, 0x00, 0x10,
	0x10, 0x00, 0x03, 0x20, 0x10, 0x00, 0xc7, 0x05, 0x00, 0x20, 0x10, 0x00,
	0x03, 0x30, 0x10, 0x00, 0xc7, 0x05, 0x00, 0x30, 0x10, 0x00, 0x83, 0x00,
	0x00, 0x00, 0xb8, 0x00, 0x10, 0x10, 0x00, 0x0f, 0x22, 0xd8, 0x0f, 0x20,
	0xe0, 0x83, 0xc8, 0x20, 0x0f, 0x22, 0xe0, 0xb9, 0x80, 0x00, 0x00, 0xc0,
	0x0f, 0x32, 0x0d, 0x00, 0x01, 0x00, 0x00, 0x0f, 0x30, 0x0f, 0x01, 0x15,
	0x90, 0x00, 0x10, 0x00, 0x0f, 0x20, 0xc0, 0x0d, 0x01, 0x00, 0x00, 0x80,
	0x0f, 0x22, 0xc0, 0xea, 0x76, 0x00, 0x10, 0x00, 0x08, 0x00, 0x66, 0xba,
	0xf8, 0x03, 0xb0, 0x4b, 0xee, 0xf4, 0xeb, 0xfd, 0x00, 0x00, 0x00, 0x00,
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x9a, 0x20, 0x00,
	0x0f, 0x00, 0x80, 0x00, 0x10, 0x00,
}

// probe reports whether a 64-bit guest runs with accelerator accel.
func probe(accel string) bool {
	dir, err := os.MkdirTemp("", "osbuild-kvm-probe")
	if err != nil {
		return false
	}
	defer os.RemoveAll(dir)
	p := dir + "/probe.bin"
	if err := os.WriteFile(p, kvmProbe, 0o644); err != nil {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "qemu-system-x86_64", "-machine", "pc,accel="+accel, "-m", "16", "-nodefaults",
		"-no-user-config", "-display", "none", "-serial", "stdio", "-kernel", p)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return false
	}
	if err := cmd.Start(); err != nil {
		return false
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	b := make([]byte, 1)
	n, _ := stdout.Read(b)
	return n == 1 && b[0] == 'K'
}
