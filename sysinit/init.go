//go:build linux

// Package sysinit is the device side of the boot chain: the code that runs as /init in osbuild's
// initramfs. It loads the storage and dm-verity modules, maps the root through dm-verity from the
// dm-mod.create= table on the kernel command line, mounts the squashfs root read-only and the data
// partition writable, and hands over to the root's init. Every failure ends in a reboot, never in a shell
// or a hang: boot counting can only roll back to the other slot if a broken slot restarts the machine.
package sysinit

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"osbuild.dev/osbuild/boot"
)

// IsInit reports whether this process was started by the kernel as the initramfs /init. Both conditions
// are needed: a container may well run osbuild as PID 1, and that must never mount or reboot anything.
func IsInit() bool {
	return os.Getpid() == 1 && filepath.Base(os.Args[0]) == "init"
}

// RebootDelay is how long a failure stays on the console before the machine restarts.
var RebootDelay = 5 * time.Second

var start = time.Now()

// Main runs the init. It never returns: it either execs the root's init or reboots.
func Main() {
	err := run()
	fatal(err)
}

func fatal(err error) {
	if err == nil {
		err = errors.New("the root's init returned")
	}
	msg := "osbuild: init: " + err.Error() + "\n"
	// Straight to the console, not through the kernel log: "quiet" must not hide why a slot failed.
	os.Stderr.WriteString(msg)
	os.Stderr.WriteString(fmt.Sprintf("osbuild: init: rebooting in %s\n", RebootDelay))
	time.Sleep(RebootDelay)
	unix.Sync()
	if os.Getpid() == 1 {
		_ = unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART)
	}
	// Not PID 1 (a test), or reboot(2) refused: exiting makes the kernel panic, and panic=10 restarts.
	os.Exit(1)
}

var kmsg *os.File

// logf writes a line to the kernel log, which reaches the console with a timestamp and is kept in dmesg.
func logf(format string, args ...any) {
	line := fmt.Sprintf("osbuild: init: "+format+"\n", args...)
	if kmsg != nil {
		kmsg.WriteString("<6>" + line)
		return
	}
	os.Stderr.WriteString(line)
}

// config is what the kernel command line tells the init.
type config struct {
	devices   []boot.DMDevice
	dataMount string // "" for none
	init      string
	timeout   time.Duration
}

func parseConfig(cmdline string) (config, error) {
	p := boot.ParseCmdline(cmdline)
	c := config{dataMount: boot.DefaultDataMount, init: boot.DefaultInit, timeout: 30 * time.Second}
	dm, ok := p["dm-mod.create"]
	if !ok {
		return c, errors.New("no dm-mod.create= on the kernel command line: the boot entry does not say how to map the root")
	}
	devs, err := boot.ParseDMCreate(dm)
	if err != nil {
		return c, err
	}
	c.devices = devs
	if v, ok := p["osbuild.data"]; ok {
		c.dataMount = v
		if v == "none" || v == "" {
			c.dataMount = ""
		} else if !strings.HasPrefix(v, "/") || filepath.Clean(v) == "/" {
			return c, fmt.Errorf("osbuild.data=%s: want an absolute path other than /, or none", v)
		}
	}
	if v, ok := p["osbuild.init"]; ok && v != "" {
		c.init = v
	}
	if v, ok := p["osbuild.timeout"]; ok {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			return c, fmt.Errorf("osbuild.timeout=%s: want seconds", v)
		}
		c.timeout = time.Duration(n) * time.Second
	}
	return c, nil
}

func run() error {
	if err := mountEarly(); err != nil {
		return err
	}
	if f, err := os.OpenFile("/dev/kmsg", os.O_WRONLY|unix.O_CLOEXEC, 0); err == nil {
		kmsg = f
	}
	cmdline, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		return fmt.Errorf("read the kernel command line: %w", err)
	}
	cfg, err := parseConfig(string(cmdline))
	if err != nil {
		return err
	}
	loadModules()

	parts, err := waitForPartitions(cfg)
	if err != nil {
		return err
	}
	ctl, err := openDMControl()
	if err != nil {
		return err
	}
	var rootDev string
	for i, d := range cfg.devices {
		for j, t := range d.Tables {
			p, err := substituteDevices(t.Params, parts)
			if err != nil {
				return fmt.Errorf("device-mapper table of %s: %w", d.Name, err)
			}
			d.Tables[j].Params = p
		}
		dev, err := createDevice(ctl, d)
		if err != nil {
			return err
		}
		node, err := mapperNode(d.Name, dev)
		if err != nil {
			return err
		}
		logf("%s: %s %d:%d", d.Name, d.Tables[0].Type, unix.Major(dev), unix.Minor(dev))
		if i == 0 {
			rootDev = node // like root=/dev/dm-0 on a DM_INIT kernel: the first device is the root
		}
	}
	ctl.Close()

	if err := unix.Mount(rootDev, boot.NewRootPath, "squashfs", unix.MS_RDONLY, ""); err != nil {
		return fmt.Errorf("mount the root %s (squashfs): %w", rootDev, err)
	}
	// Move the API filesystems now: mkfs runs chrooted in the root and needs /dev there.
	for _, m := range []string{"/dev", "/proc", "/sys"} {
		target := boot.NewRootPath + m
		if fi, err := os.Stat(target); err != nil || !fi.IsDir() {
			return fmt.Errorf("the root has no %s directory; add it to the image", m)
		}
		if err := unix.Mount(m, target, "", unix.MS_MOVE, ""); err != nil {
			return fmt.Errorf("move %s into the root: %w", m, err)
		}
	}
	if cfg.dataMount != "" {
		if err := mountData(cfg, parts); err != nil {
			return err
		}
	}
	return switchRoot(cfg.init)
}

func mountEarly() error {
	for _, m := range []struct {
		src, target, fstype string
		flags               uintptr
	}{
		{"devtmpfs", "/dev", "devtmpfs", unix.MS_NOSUID},
		{"proc", "/proc", "proc", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC},
		{"sysfs", "/sys", "sysfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC},
	} {
		_ = os.MkdirAll(m.target, 0o755)
		if err := unix.Mount(m.src, m.target, m.fstype, m.flags, ""); err != nil && !errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("mount %s on %s: %w", m.fstype, m.target, err)
		}
	}
	return nil
}

// loadModules loads the initramfs' modules in the order the build computed. A module that fails is
// reported and skipped: many are for other clouds' hardware and refuse to load here (xen-blkfront outside
// Xen); a missing essential one shows up as the next step's error.
func loadModules() {
	f, err := os.Open(boot.ModulesListPath)
	if err != nil {
		logf("no module list (%v): relying on built-in drivers", err)
		return
	}
	defer f.Close()
	loaded, failed := 0, 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		p := strings.TrimSpace(sc.Text())
		if p == "" || strings.HasPrefix(p, "#") {
			continue
		}
		if err := loadModule(p); err != nil {
			failed++
			logf("module %s: %v", filepath.Base(p), err)
			continue
		}
		loaded++
	}
	logf("loaded %d modules (%d failed) in %s", loaded, failed, time.Since(start).Round(time.Millisecond))
}

func loadModule(p string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	err = unix.FinitModule(int(f.Fd()), "", 0)
	if errors.Is(err, unix.ENOSYS) {
		b, rerr := os.ReadFile(p)
		if rerr != nil {
			return rerr
		}
		err = unix.InitModule(b, "")
	}
	if errors.Is(err, unix.EEXIST) {
		return nil
	}
	return err
}

// waitForPartitions polls until every PARTUUID= the tables name has a block device. Drivers probe
// asynchronously, so the disks appear some time after their modules load.
func waitForPartitions(cfg config) ([]partition, error) {
	var want []string
	for _, d := range cfg.devices {
		for _, t := range d.Tables {
			for _, f := range strings.Fields(t.Params) {
				if u, ok := strings.CutPrefix(f, "PARTUUID="); ok {
					want = append(want, strings.ToLower(u))
				}
			}
		}
	}
	deadline := time.Now().Add(cfg.timeout)
	for {
		parts, _ := scanPartitions()
		var missing []string
		for _, u := range want {
			if findPart(parts, func(p partition) bool { return p.UUID == u }) == nil {
				missing = append(missing, u)
			}
		}
		if len(missing) == 0 {
			return parts, nil
		}
		if time.Now().After(deadline) {
			var seen []string
			for _, p := range parts {
				seen = append(seen, p.Name+"="+p.UUID)
			}
			return nil, fmt.Errorf("no partition with PARTUUID %s after %s (found: %s); is the disk driver in the initramfs?",
				strings.Join(missing, ", "), cfg.timeout, strings.Join(seen, " "))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func findPart(parts []partition, match func(partition) bool) *partition {
	for i := range parts {
		if match(parts[i]) {
			return &parts[i]
		}
	}
	return nil
}

// substituteDevices replaces PARTUUID=... in a table with major:minor, which every kernel accepts.
func substituteDevices(params string, parts []partition) (string, error) {
	f := strings.Fields(params)
	for i, s := range f {
		if u, ok := strings.CutPrefix(s, "PARTUUID="); ok {
			p := findPart(parts, func(p partition) bool { return p.UUID == strings.ToLower(u) })
			if p == nil {
				return "", fmt.Errorf("no partition with PARTUUID %s", u)
			}
			f[i] = p.Dev
		}
	}
	return strings.Join(f, " "), nil
}

// mapperNode makes /dev/mapper/<name> for a mapped device; without udev nothing else does.
func mapperNode(name string, dev uint64) (string, error) {
	p := "/dev/mapper/" + name
	_ = os.MkdirAll("/dev/mapper", 0o755)
	_ = os.Remove(p)
	if err := unix.Mknod(p, unix.S_IFBLK|0o600, int(dev)); err != nil {
		return "", fmt.Errorf("mknod %s: %w", p, err)
	}
	return p, nil
}

// mountData mounts the partition named "data" of the root's disk on the data mount point, formatting
// it first when it holds no ext2/3/4 filesystem (the first boot of an image that ships it empty).
func mountData(cfg config, parts []partition) error {
	var rootDisk string
	for _, t := range cfg.devices[0].Tables {
		for _, f := range strings.Fields(t.Params) {
			if p := findPart(parts, func(p partition) bool { return p.Dev == f }); p != nil {
				rootDisk = p.Disk
				break
			}
		}
	}
	data := findPart(parts, func(p partition) bool { return p.Disk == rootDisk && p.PartName == boot.DataPartLabel })
	if data == nil {
		return fmt.Errorf("no partition named %q on %s for %s; add one to the disk or boot with osbuild.data=none",
			boot.DataPartLabel, rootDisk, cfg.dataMount)
	}
	devInRoot := "/dev/" + data.Name
	dev := boot.NewRootPath + devInRoot
	target := boot.NewRootPath + cfg.dataMount
	if fi, err := os.Stat(target); err != nil || !fi.IsDir() {
		return fmt.Errorf("the root has no %s directory to mount the data partition on; add it to the image", cfg.dataMount)
	}
	isExt, err := hasExtFS(dev)
	if err != nil {
		return fmt.Errorf("data partition %s: %w", dev, err)
	}
	if !isExt {
		// First boot: give the data partition the rest of the disk before formatting it, so that an image
		// can ship small and use whatever disk it is written to.
		if grown, err := growLastPartition(boot.NewRootPath, data.Disk, data.Number); err != nil {
			logf("data: not grown: %v", err)
		} else if grown {
			if b, err := os.ReadFile(filepath.Join(boot.NewRootPath, "/sys/class/block", data.Name, "size")); err == nil {
				n, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
				logf("data: %s grown to %d MiB", devInRoot, n>>11)
			}
		}
		logf("data: %s has no filesystem, formatting", devInRoot)
		if err := mkfs(devInRoot); err != nil {
			return err
		}
	}
	// Mount through a node at /dev/<name> in the initramfs (deleted with it): the source /proc/mounts
	// shows is then the path that is valid in the new root, which systemd and fsck rely on.
	var maj, min uint32
	if _, err := fmt.Sscanf(data.Dev, "%d:%d", &maj, &min); err != nil {
		return fmt.Errorf("data partition %s: bad device number %q", data.Name, data.Dev)
	}
	_ = os.MkdirAll("/dev", 0o755)
	if err := unix.Mknod(devInRoot, unix.S_IFBLK|0o600, int(unix.Mkdev(maj, min))); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("mknod %s: %w", devInRoot, err)
	}
	var errs []error
	for _, fs := range []string{"ext4", "ext2"} {
		// No nosuid/nodev: container runtimes keep images with setuid files and device nodes under /var.
		err := unix.Mount(devInRoot, target, fs, 0, "")
		if err == nil {
			logf("data: %s on %s (%s)", devInRoot, cfg.dataMount, fs)
			return nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", fs, err))
	}
	return fmt.Errorf("mount the data partition %s on %s: %w", devInRoot, cfg.dataMount, errors.Join(errs...))
}

func hasExtFS(dev string) (bool, error) {
	f, err := os.Open(dev)
	if err != nil {
		return false, err
	}
	defer f.Close()
	b := make([]byte, 2)
	if _, err := f.ReadAt(b, 1024+56); err != nil {
		return false, err
	}
	return b[0] == 0x53 && b[1] == 0xef, nil
}

// mkfs formats the data partition with the root's own tools, run chrooted in the root so that a
// dynamically linked mkfs finds its libraries: e2fsprogs' mkfs.ext4 when the image has it, else
// busybox's mke2fs (ext2, which the ext4 driver mounts read-write just as well).
func mkfs(dev string) error {
	candidates := [][]string{
		{"/usr/sbin/mkfs.ext4", "-q", "-F", "-L", boot.DataPartLabel, dev},
		{"/sbin/mkfs.ext4", "-q", "-F", "-L", boot.DataPartLabel, dev},
		{"/usr/sbin/mke2fs", "-q", "-F", "-L", boot.DataPartLabel, dev},
		{"/sbin/mke2fs", "-q", "-F", "-L", boot.DataPartLabel, dev},
		{"/bin/busybox", "mke2fs", "-F", "-L", boot.DataPartLabel, dev},
		{"/usr/bin/busybox", "mke2fs", "-F", "-L", boot.DataPartLabel, dev},
	}
	var tried []string
	for _, c := range candidates {
		if _, err := os.Lstat(boot.NewRootPath + c[0]); err != nil {
			continue
		}
		cmd := exec.Command(c[0], c[1:]...)
		cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
		// Not nil: exec would open /dev/null, and /dev has already moved into the root.
		cmd.Stdin = strings.NewReader("")
		cmd.Dir = "/"
		cmd.SysProcAttr = &unix.SysProcAttr{Chroot: boot.NewRootPath}
		out, err := cmd.CombinedOutput()
		if err == nil {
			return nil
		}
		tried = append(tried, fmt.Sprintf("%s: %v: %s", strings.Join(c, " "), err, strings.TrimSpace(string(out))))
	}
	if len(tried) == 0 {
		return errors.New("the data partition is empty and the root has no mkfs.ext4, mke2fs or busybox to format it; " +
			"add e2fsprogs to the image or format the partition at build time")
	}
	return fmt.Errorf("format the data partition: %s", strings.Join(tried, "; "))
}

// switchRoot frees the initramfs, makes the new root / and execs its init, as switch_root(8) does.
func switchRoot(init string) error {
	if _, err := os.Lstat(boot.NewRootPath + init); err != nil {
		return fmt.Errorf("the root has no %s: %w; set osbuild.init= on the command line", init, err)
	}
	var st unix.Stat_t
	if err := unix.Stat("/", &st); err != nil {
		return err
	}
	// The initramfs lives in RAM until its files are deleted; the osbuild binary alone is tens of MB.
	removeSameDev("/", st.Dev, boot.NewRootPath)
	if err := unix.Chdir(boot.NewRootPath); err != nil {
		return err
	}
	if err := unix.Mount(".", "/", "", unix.MS_MOVE, ""); err != nil {
		return fmt.Errorf("move the root onto /: %w", err)
	}
	if err := unix.Chroot("."); err != nil {
		return fmt.Errorf("chroot: %w", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return err
	}
	logf("starting %s after %s", init, time.Since(start).Round(time.Millisecond))
	if kmsg != nil {
		kmsg.Close()
		kmsg = nil
	}
	env := os.Environ()
	if err := unix.Exec(init, []string{init}, env); err != nil {
		return fmt.Errorf("exec %s: %w", init, err)
	}
	return nil
}

// removeSameDev deletes everything under dir that is on device dev, except keep; it never crosses into
// another filesystem.
func removeSameDev(dir string, dev uint64, keep string) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		p := filepath.Join(dir, e.Name())
		if p == keep {
			continue
		}
		var st unix.Stat_t
		if unix.Lstat(p, &st) != nil || st.Dev != dev {
			continue
		}
		if st.Mode&unix.S_IFMT == unix.S_IFDIR {
			removeSameDev(p, dev, keep)
			_ = unix.Rmdir(p)
		} else {
			_ = unix.Unlink(p)
		}
	}
}

// IsPID1 reports whether this process is PID 1, for the explicit `osbuild init` (rdinit=/init init).
func IsPID1() bool { return os.Getpid() == 1 }
