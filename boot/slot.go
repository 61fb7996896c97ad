package boot

import (
	"fmt"
	"strings"
)

// SlotParam is the command-line parameter that tells the booted system which slot it runs from.
const SlotParam = "osbuild.slot"

// SlotEntry is the boot entry of one A/B slot ("a" or "b"). Both slots' entries share a sort key, so
// systemd-boot orders them by version, newest first; tries > 0 turns on boot counting for a slot on trial
// (NAME+tries.conf), 0 marks a slot known good. The build writes slot A's; the update agent writes the
// other's with the same function, so the two never drift apart.
func SlotEntry(name, version, slot, cmdline string, tries int) Entry {
	return Entry{
		ID:      "osbuild-" + slot,
		Title:   fmt.Sprintf("%s %s (slot %s)", name, version, strings.ToUpper(slot)),
		Version: version,
		SortKey: "osbuild-" + name,
		Linux:   "/osbuild/" + slot + "/vmlinuz",
		Initrd:  "/osbuild/" + slot + "/initrd",
		Options: cmdline,
		Tries:   tries,
	}
}
