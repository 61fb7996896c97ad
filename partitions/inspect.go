package partitions

import (
	"encoding/hex"
	"errors"
	"fmt"
	iofs "io/fs"
	"sort"
	"strings"

	"osbuild.dev/osbuild/partitions/bootentry"
	"osbuild.dev/osbuild/verity"
)

// EntriesDir is where systemd-boot looks for Type 1 entries on the ESP.
const EntriesDir = "loader/entries"

// Slot names one A/B slot's pair of partitions.
type Slot struct {
	Name   string `json:"name"` // "a" or "b"
	Root   string `json:"root"` // partition label
	Verity string `json:"verity"`
}

// Slots are the two slots in table order.
var Slots = []Slot{{"a", LabelRootA, LabelVerityA}, {"b", LabelRootB, LabelVerityB}}

// SlotOf returns the slot whose root or verity partition has a PARTUUID, as a kernel table names it
// ("PARTUUID=..." or the bare GUID); "" when none does.
func SlotOf(l *Layout, dev string) string {
	u := normGUID(strings.TrimPrefix(dev, "PARTUUID="))
	for _, s := range Slots {
		for _, label := range []string{s.Root, s.Verity} {
			if p, err := l.Partition(label); err == nil && p.UUID == u {
				return s.Name
			}
		}
	}
	return ""
}

// Entries reads every loader entry in loader/entries, sorted by file name.
func (e *ESP) Entries() ([]*bootentry.Entry, error) {
	des, err := e.ReadDir(EntriesDir)
	if err != nil {
		if errors.Is(err, iofs.ErrNotExist) {
			return nil, nil
		}
		return nil, err
	}
	var out []*bootentry.Entry
	for _, de := range des {
		if de.IsDir() || !strings.HasSuffix(de.Name(), ".conf") {
			continue
		}
		b, err := e.ReadFile(EntriesDir + "/" + de.Name())
		if err != nil {
			return nil, err
		}
		ent, err := bootentry.Parse(de.Name(), b)
		if err != nil {
			return nil, err
		}
		out = append(out, ent)
	}
	return out, nil
}

// SlotReport is what a slot's partitions hold.
type SlotReport struct {
	Slot
	// Formatted is true when the verity partition starts with a verity superblock.
	Formatted  bool   `json:"formatted"`
	Algorithm  string `json:"algorithm,omitempty"`
	DataBlocks uint64 `json:"data_blocks,omitempty"`
	HashUUID   string `json:"hash_uuid,omitempty"`
	// Entries are the loader entry files that boot this slot.
	Entries []string `json:"entries,omitempty"`
}

// EntryReport is a loader entry with what its command line says.
type EntryReport struct {
	*bootentry.Entry
	State  string            `json:"state"`
	Slot   string            `json:"slot,omitempty"`
	Verity *bootentry.Verity `json:"verity,omitempty"`
	// TreeMatches is true when the root hash and block count match the slot's verity partition (the
	// tree alone is checked, not the data).
	TreeMatches bool   `json:"tree_matches"`
	Error       string `json:"error,omitempty"`
}

// Report describes a disk: table, slots, loader configuration and entries.
type Report struct {
	Layout     *Layout       `json:"layout"`
	Slots      []SlotReport  `json:"slots"`
	LoaderConf string        `json:"loader_conf,omitempty"`
	Entries    []EntryReport `json:"entries"`
	// Problems found on the way that did not stop the inspection.
	Problems []string `json:"problems,omitempty"`
}

func checkEntryTree(d *Disk, slot string, v *bootentry.Verity) (bool, string) {
	root, err := hex.DecodeString(v.RootHash)
	if err != nil {
		return false, fmt.Sprintf("root hash %q is not hex", v.RootHash)
	}
	var label string
	for _, s := range Slots {
		if s.Name == slot {
			label = s.Verity
		}
	}
	rd, err := d.Reader(label)
	if err != nil {
		return false, err.Error()
	}
	sb, err := verity.CheckTree(rd, root)
	if err != nil {
		return false, fmt.Sprintf("slot %s: %v", slot, err)
	}
	if sb.DataBlocks != v.DataBlocks || sb.Algorithm != v.Algorithm || hex.EncodeToString(sb.Salt) != strings.TrimPrefix(v.Salt, "-") {
		return false, fmt.Sprintf("the command line says %d %s blocks, salt %s; slot %s's superblock says %d %s blocks, salt %x",
			v.DataBlocks, v.Algorithm, v.Salt, slot, sb.DataBlocks, sb.Algorithm, sb.Salt)
	}
	return true, ""
}

// Inspect reads everything `osbuild inspect` shows. Damage to one part (an unreadable ESP, a bad entry)
// is recorded in Problems rather than hiding the rest.
func Inspect(d *Disk) (*Report, error) {
	r := &Report{Layout: d.Layout}
	for _, s := range Slots {
		sr := SlotReport{Slot: s}
		if rd, err := d.Reader(s.Verity); err == nil {
			if sb, err := verity.ReadSuperblock(rd); err == nil {
				sr.Formatted, sr.Algorithm, sr.DataBlocks, sr.HashUUID = true, sb.Algorithm, sb.DataBlocks, sb.UUIDString()
			}
		} else {
			r.Problems = append(r.Problems, err.Error())
			continue
		}
		r.Slots = append(r.Slots, sr)
	}
	esp, err := d.ESP()
	if err != nil {
		r.Problems = append(r.Problems, err.Error())
		return r, nil
	}
	if b, err := esp.ReadFile("loader/loader.conf"); err == nil {
		r.LoaderConf = string(b)
	}
	entries, err := esp.Entries()
	if err != nil {
		r.Problems = append(r.Problems, err.Error())
	}
	for _, e := range entries {
		er := EntryReport{Entry: e, State: e.State()}
		v, err := bootentry.ParseDMVerity(e.Options)
		switch {
		case err == nil:
			er.Verity = v
			er.Slot = SlotOf(d.Layout, v.DataDevice)
			if er.Slot == "" {
				er.Error = fmt.Sprintf("data device %s is not a root partition of this disk", v.DataDevice)
			} else if hs := SlotOf(d.Layout, v.HashDevice); hs != er.Slot {
				er.Error = fmt.Sprintf("hash device %s is not slot %s's verity partition", v.HashDevice, er.Slot)
			} else {
				er.TreeMatches, er.Error = checkEntryTree(d, er.Slot, v)
			}
		case errors.Is(err, bootentry.ErrNoVerity):
		default:
			er.Error = err.Error()
		}
		r.Entries = append(r.Entries, er)
	}
	for i := range r.Slots {
		for _, e := range r.Entries {
			if e.Slot == r.Slots[i].Name {
				r.Slots[i].Entries = append(r.Slots[i].Entries, e.FileName)
			}
		}
	}
	sort.SliceStable(r.Entries, func(i, j int) bool { return r.Entries[i].FileName < r.Entries[j].FileName })
	return r, nil
}
