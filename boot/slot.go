package boot

import (
	"fmt"
	"strings"

	"osbuild.dev/osbuild/tree"
)

// SlotConfig says how to make the boot files of one A/B slot.
type SlotConfig struct {
	Slot    string // "a" or "b"
	Name    string // the variant name (sort-key osbuild-<Name>)
	Version string // the release; systemd-boot boots the highest version of equal sort-keys first
	// KernelPath is the kernel in the tree; empty means auto-detect (FindKernel).
	KernelPath string
	// Modules to put in the initramfs (with their dependencies); nil means DefaultModules.
	Modules []string
	// Initramfs options: the init binary, compression, mtime.
	Initramfs InitramfsOptions
	// Cmdline carries the verity table and the rest of the command line; SlotParam=<Slot> is added.
	Cmdline CmdlineOptions
	// Tries is the boot counter of the new entry (0: no counting).
	Tries int
}

// SlotFiles is what a slot puts on the ESP. Paths are relative to the ESP root, no leading slash.
type SlotFiles struct {
	Kernel     Kernel
	Modules    *ModuleSet
	KernelPath string // osbuild/<slot>/vmlinuz: copy Kernel.Node's content here
	InitrdPath string // osbuild/<slot>/initrd
	Initrd     []byte
	Entry      Entry // Entry.FileName() is where Entry.Render() goes
}

// BuildSlot finds the kernel and modules in t and builds the initramfs and the loader entry of one slot.
func BuildSlot(t *tree.Tree, c SlotConfig) (*SlotFiles, error) {
	if c.Slot == "" || strings.ContainsAny(c.Slot, "/+ ") {
		return nil, fmt.Errorf("slot %q: use a short name such as a or b", c.Slot)
	}
	k, err := FindKernel(t, c.KernelPath)
	if err != nil {
		return nil, err
	}
	want := c.Modules
	if want == nil {
		want = DefaultModules
	}
	mods, err := ResolveModules(t, k.Version, want)
	if err != nil {
		return nil, err
	}
	initrd, err := BuildInitramfs(mods, c.Initramfs)
	if err != nil {
		return nil, err
	}
	co := c.Cmdline
	co.Extra = append([]string{SlotParam + "=" + c.Slot}, co.Extra...)
	opts, err := Cmdline(co)
	if err != nil {
		return nil, err
	}
	e := SlotEntry(c.Name, c.Version, c.Slot, opts, c.Tries)
	if _, err := e.Render(); err != nil {
		return nil, err
	}
	return &SlotFiles{Kernel: k, Modules: mods, KernelPath: strings.TrimPrefix(e.Linux, "/"),
		InitrdPath: strings.TrimPrefix(e.Initrd, "/"), Initrd: initrd, Entry: e}, nil
}
