package update

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"osbuild.dev/osbuild/boot"
	"osbuild.dev/osbuild/builder"
	"osbuild.dev/osbuild/partitions"
	"osbuild.dev/osbuild/partitions/bootentry"
)

// Paths on the running system.
const (
	// StateDir keeps an interrupted download's progress on the data partition, so that it survives a
	// reboot and the next apply resumes it.
	StateDir = "/var/lib/osbuild/update"
)

// DeviceOptions say which disk the agent works on.
type DeviceOptions struct {
	// Disk is an image file or block device; empty means the disk the running system booted from.
	Disk string
	// Root is where the running system's /etc and /proc are ("" = "/"); tests point it elsewhere.
	Root string
	// EFIVars is the efivarfs folder (default /sys/firmware/efi/efivars), used on the running system only.
	EFIVars string
	// StateDir keeps resumable download state (default StateDir on the running system, the user cache
	// folder for --disk).
	StateDir string
	// ReadOnly opens the disk without write access (status).
	ReadOnly bool
}

// Device is an osbuild disk and what is known about the system on it.
type Device struct {
	Path   string
	Disk   *partitions.Disk
	ESP    *partitions.ESP
	Online bool // the running system's own disk: /proc/cmdline, /etc/osbuild and efivarfs apply

	Name, Version, Arch string // of the running (or, offline, default) slot
	Running             string // slot "a" or "b"
	Repository, Channel string // from /etc/osbuild/variant.json
	// Settings are the running system's (online only).
	Settings builder.DeviceSettings

	opts DeviceOptions
}

// OpenDevice opens the disk of the running system, or opts.Disk.
func OpenDevice(opts DeviceOptions) (*Device, error) {
	if opts.Root == "" {
		opts.Root = "/"
	}
	if opts.EFIVars == "" {
		opts.EFIVars = defaultEFIVars
	}
	d := &Device{opts: opts, Online: opts.Disk == ""}
	rel := map[string]string{}
	if d.Online {
		if err := readEnvFile(filepath.Join(opts.Root, builder.ReleasePath), rel); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		if rel["NAME"] == "" {
			return nil, fmt.Errorf("%s has no NAME: is this an osbuild system? Use --disk to work on an image", builder.ReleasePath)
		}
		d.Name, d.Version, d.Arch = rel["NAME"], rel["VERSION"], rel["ARCH"]
		if data, err := os.ReadFile(filepath.Join(opts.Root, builder.SettingsPath)); err == nil {
			if err := json.Unmarshal(data, &d.Settings); err != nil {
				return nil, fmt.Errorf("%s: %w", builder.SettingsPath, err)
			}
			if u := d.Settings.Update; u != nil {
				d.Repository, d.Channel = u.Repository, u.Channel
			}
		}
		cmdline, err := os.ReadFile(filepath.Join(opts.Root, "proc/cmdline"))
		if err != nil {
			return nil, fmt.Errorf("read the kernel command line: %w", err)
		}
		d.Running, _ = bootentry.Param(string(cmdline), boot.SlotParam)
		if opts.Disk, err = findBootDisk(string(cmdline)); err != nil {
			return nil, err
		}
	}
	disk, err := partitions.Open(opts.Disk, !opts.ReadOnly)
	if err != nil {
		return nil, fmt.Errorf("open disk %s: %w", opts.Disk, err)
	}
	d.Path, d.Disk = opts.Disk, disk
	for _, l := range []string{partitions.LabelESP, partitions.LabelRootA, partitions.LabelVerityA, partitions.LabelRootB, partitions.LabelVerityB} {
		if _, err := disk.Partition(l); err != nil {
			disk.Close()
			return nil, fmt.Errorf("%s is not an osbuild A/B disk: %w", opts.Disk, err)
		}
	}
	if d.ESP, err = disk.ESP(); err != nil {
		disk.Close()
		return nil, fmt.Errorf("%s: ESP: %w", opts.Disk, err)
	}
	if !d.Online {
		// Offline, the "running" slot is the one systemd-boot would boot next.
		entries, err := d.Entries()
		if err != nil {
			d.Close()
			return nil, err
		}
		order := BootOrder(entries)
		if len(order) == 0 || SlotOfEntry(order[0]) == "" {
			d.Close()
			return nil, fmt.Errorf("%s has no bootable osbuild entry: rebuild it", opts.Disk)
		}
		e := order[0]
		d.Running, d.Version = SlotOfEntry(e), e.Version
		d.Name = strings.TrimPrefix(e.SortKey, "osbuild-")
		d.Arch = disk.Layout.Arch
	}
	if d.Running != "a" && d.Running != "b" {
		d.Close()
		return nil, fmt.Errorf("cannot tell which slot is running (no %s= on the command line)", boot.SlotParam)
	}
	return d, nil
}

// Close syncs and closes the disk.
func (d *Device) Close() error { return d.Disk.Close() }

// Other is the slot that is not running: the target of an update.
func (d *Device) Other() string {
	if d.Running == "a" {
		return "b"
	}
	return "a"
}

// Entries reads the loader entries.
func (d *Device) Entries() ([]*bootentry.Entry, error) {
	es, err := d.ESP.Entries()
	if err != nil {
		return nil, fmt.Errorf("%s: loader entries: %w", d.Path, err)
	}
	return es, nil
}

// SlotOfEntry returns the slot an entry boots, from its id ("osbuild-a"); "" when it is not osbuild's.
func SlotOfEntry(e *bootentry.Entry) string {
	switch e.ID {
	case "osbuild-a":
		return "a"
	case "osbuild-b":
		return "b"
	}
	return ""
}

// slotEntries returns the entries of a slot.
func slotEntries(es []*bootentry.Entry, slot string) []*bootentry.Entry {
	var out []*bootentry.Entry
	for _, e := range es {
		if SlotOfEntry(e) == slot {
			out = append(out, e)
		}
	}
	return out
}

// BootOrder sorts entries the way systemd-boot 252 does (config_entry_compare) and drops none: entries
// without tries left last; entries with a sort-key before those without; by sort-key, then version,
// newest first; then by id, descending; then more tries left and fewer tries done first. With no
// "default" in loader.conf and no one-shot variable, systemd-boot boots the first.
func BootOrder(es []*bootentry.Entry) []*bootentry.Entry {
	out := append([]*bootentry.Entry(nil), es...)
	bad := func(e *bootentry.Entry) bool { return e.Counting && e.TriesLeft == 0 }
	sort.SliceStable(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if bad(a) != bad(b) {
			return !bad(a)
		}
		if (a.SortKey == "") != (b.SortKey == "") {
			return a.SortKey != ""
		}
		if a.SortKey != "" {
			if a.SortKey != b.SortKey {
				return a.SortKey < b.SortKey
			}
			if a.MachineID != b.MachineID {
				return a.MachineID < b.MachineID
			}
			if c := CompareVersions(a.Version, b.Version); c != 0 {
				return c > 0
			}
		}
		if c := CompareVersions(a.ID, b.ID); c != 0 {
			return c > 0
		}
		if !a.Counting || !b.Counting {
			return false
		}
		if a.TriesLeft != b.TriesLeft {
			return a.TriesLeft > b.TriesLeft
		}
		return a.TriesDone < b.TriesDone
	})
	return out
}

// readEnvFile reads KEY=VALUE lines (os-release style; quotes removed) into m.
func readEnvFile(p string, m map[string]string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		m[strings.TrimSpace(k)] = strings.Trim(strings.TrimSpace(v), `"'`)
	}
	return sc.Err()
}

// findBootDisk returns the whole-disk device that holds the running root's partition: the PARTUUID of
// the root in the dm-mod.create= table on the command line, looked up in each disk's GPT.
func findBootDisk(cmdline string) (string, error) {
	v, ok := bootentry.Param(cmdline, "dm-mod.create")
	if !ok {
		return "", errors.New("no dm-mod.create= on the kernel command line: not an osbuild system? Use --disk")
	}
	devs, err := boot.ParseDMCreate(v)
	if err != nil || len(devs) == 0 || len(devs[0].Tables) == 0 {
		return "", fmt.Errorf("dm-mod.create= on the command line: %v", err)
	}
	f := strings.Fields(devs[0].Tables[0].Params)
	if len(f) < 2 {
		return "", errors.New("dm-mod.create= on the command line has no data device")
	}
	uuid := strings.ToLower(strings.TrimPrefix(f[1], "PARTUUID="))
	disks, _ := os.ReadDir("/sys/block")
	for _, de := range disks {
		n := de.Name()
		if strings.HasPrefix(n, "dm-") || strings.HasPrefix(n, "loop") || strings.HasPrefix(n, "ram") || strings.HasPrefix(n, "sr") {
			continue
		}
		fd, err := os.Open("/dev/" + n)
		if err != nil {
			continue
		}
		l, err := partitions.ReadLayout(fd)
		fd.Close()
		if err != nil {
			continue
		}
		for _, p := range l.Partitions {
			if p.UUID == uuid {
				return "/dev/" + n, nil
			}
		}
	}
	return "", fmt.Errorf("no disk holds the running root (PARTUUID %s): pass --disk", uuid)
}
