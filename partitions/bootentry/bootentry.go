// Package bootentry reads and writes Boot Loader Specification Type 1 entries
// (loader/entries/*.conf) as systemd-boot uses them, including boot counting in the file name and the
// dm-verity table osbuild puts on the kernel command line. It is shared by the builder (which writes
// entries), the update agent (which renames them) and `osbuild inspect`.
package bootentry

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Entry is one loader entry file.
type Entry struct {
	// FileName is the file's name as found or to be written, e.g. "a+2-1.conf".
	FileName string `json:"file"`
	// ID is the name without the boot counter and ".conf", e.g. "a".
	ID string `json:"id"`

	// Counting is true when the name carries a boot counter (+LEFT[-DONE]): the entry is on trial.
	// Without a counter the entry has been marked good.
	Counting  bool `json:"counting"`
	TriesLeft int  `json:"tries_left"`
	TriesDone int  `json:"tries_done"`

	Title        string   `json:"title,omitempty"`
	Version      string   `json:"version,omitempty"`
	SortKey      string   `json:"sort_key,omitempty"`
	MachineID    string   `json:"machine_id,omitempty"`
	Architecture string   `json:"architecture,omitempty"`
	Linux        string   `json:"linux,omitempty"`
	EFI          string   `json:"efi,omitempty"`
	Initrd       []string `json:"initrd,omitempty"`
	// Options is the kernel command line: every "options" line, joined by a space as the spec says.
	Options string `json:"options,omitempty"`
	// Extra holds other keys, in file order, so that Marshal keeps them.
	Extra [][2]string `json:"extra,omitempty"`
}

// State is "good" (no counter), "trial" (tries left) or "bad" (no tries left: systemd-boot sorts it
// last and boots the other slot).
func (e *Entry) State() string {
	switch {
	case !e.Counting:
		return "good"
	case e.TriesLeft > 0:
		return "trial"
	}
	return "bad"
}

// ParseFileName splits "ID[+LEFT[-DONE]].conf".
func ParseFileName(name string) (id string, counting bool, left, done int, err error) {
	base, ok := strings.CutSuffix(name, ".conf")
	if !ok || base == "" || strings.Contains(name, "/") {
		return "", false, 0, 0, fmt.Errorf("bootentry: %q is not an entry file name (want ID.conf or ID+TRIES.conf)", name)
	}
	i := strings.LastIndexByte(base, '+')
	if i < 0 {
		return base, false, 0, 0, nil
	}
	counter := base[i+1:]
	l, d, hasDone := strings.Cut(counter, "-")
	left, err1 := strconv.Atoi(l)
	if hasDone {
		done, err = strconv.Atoi(d)
	}
	if err1 != nil || err != nil || !allDigits(l) || (hasDone && !allDigits(d)) {
		// Not a counter (systemd-boot treats it as part of the name too).
		return base, false, 0, 0, nil
	}
	return base[:i], true, left, done, nil
}

func allDigits(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// FileName builds an entry file name: "ID.conf" when not counting, "ID+LEFT.conf" before the first try
// and "ID+LEFT-DONE.conf" after.
func FileName(id string, counting bool, left, done int) string {
	switch {
	case !counting:
		return id + ".conf"
	case done == 0:
		return fmt.Sprintf("%s+%d.conf", id, left)
	}
	return fmt.Sprintf("%s+%d-%d.conf", id, left, done)
}

// Parse reads an entry file. Unknown keys are kept in Extra; blank lines and comments are dropped.
func Parse(fileName string, data []byte) (*Entry, error) {
	e := &Entry{FileName: fileName}
	var err error
	if e.ID, e.Counting, e.TriesLeft, e.TriesDone, err = ParseFileName(fileName); err != nil {
		return nil, err
	}
	var opts []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		key, value := line, ""
		if i := strings.IndexAny(line, " \t"); i >= 0 {
			key, value = line[:i], strings.TrimSpace(line[i+1:])
		}
		switch key {
		case "title":
			e.Title = value
		case "version":
			e.Version = value
		case "sort-key":
			e.SortKey = value
		case "machine-id":
			e.MachineID = value
		case "architecture":
			e.Architecture = value
		case "linux":
			e.Linux = value
		case "efi":
			e.EFI = value
		case "initrd":
			e.Initrd = append(e.Initrd, value)
		case "options":
			opts = append(opts, value)
		default:
			e.Extra = append(e.Extra, [2]string{key, value})
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("bootentry: %s: %w", fileName, err)
	}
	e.Options = strings.Join(opts, " ")
	return e, nil
}

// Marshal writes the entry in the canonical key order.
func (e *Entry) Marshal() []byte {
	var b bytes.Buffer
	put := func(k, v string) {
		if v != "" {
			fmt.Fprintf(&b, "%s %s\n", k, v)
		}
	}
	put("title", e.Title)
	put("version", e.Version)
	put("sort-key", e.SortKey)
	put("machine-id", e.MachineID)
	put("architecture", e.Architecture)
	put("linux", e.Linux)
	put("efi", e.EFI)
	for _, i := range e.Initrd {
		put("initrd", i)
	}
	put("options", e.Options)
	for _, kv := range e.Extra {
		put(kv[0], kv[1])
	}
	return b.Bytes()
}

// SplitCmdline splits a kernel command line into parameters the way the kernel does: on spaces, with
// double quotes grouping (and removed).
func SplitCmdline(s string) []string {
	var out []string
	var cur strings.Builder
	inQuote, has := false, false
	for _, c := range s {
		switch {
		case c == '"':
			inQuote = !inQuote
			has = true
		case (c == ' ' || c == '\t' || c == '\n') && !inQuote:
			if has {
				out = append(out, cur.String())
				cur.Reset()
				has = false
			}
		default:
			cur.WriteRune(c)
			has = true
		}
	}
	if has {
		out = append(out, cur.String())
	}
	return out
}

// Param returns the value of the last "key=value" parameter on a command line (the kernel's rule).
func Param(cmdline, key string) (string, bool) {
	val, found := "", false
	for _, p := range SplitCmdline(cmdline) {
		if v, ok := strings.CutPrefix(p, key+"="); ok {
			val, found = v, true
		}
	}
	return val, found
}

// Verity is the verity target of a dm-mod.create= device.
type Verity struct {
	Name           string   `json:"name"` // device-mapper name, e.g. "root"
	Sectors        uint64   `json:"sectors"`
	DataDevice     string   `json:"data_device"` // e.g. "PARTUUID=..."
	HashDevice     string   `json:"hash_device"`
	DataBlockSize  uint32   `json:"data_block_size"`
	HashBlockSize  uint32   `json:"hash_block_size"`
	DataBlocks     uint64   `json:"data_blocks"`
	HashStartBlock uint64   `json:"hash_start_block"`
	Algorithm      string   `json:"algorithm"`
	RootHash       string   `json:"root_hash"`
	Salt           string   `json:"salt"`
	Flags          []string `json:"flags,omitempty"` // optional arguments, e.g. restart_on_corruption
}

// ErrNoVerity means the command line has no dm-mod.create= with a verity target.
var ErrNoVerity = errors.New("bootentry: no dm-mod.create= verity device on the command line")

// ParseDMVerity finds the first verity target in the command line's dm-mod.create= parameter
// (DM_INIT syntax: name,uuid,minor,flags,table[,table][;device...], a table being
// "start length verity args").
func ParseDMVerity(cmdline string) (*Verity, error) {
	spec, ok := Param(cmdline, "dm-mod.create")
	if !ok {
		return nil, ErrNoVerity
	}
	for _, dev := range strings.Split(spec, ";") {
		fields := strings.Split(dev, ",")
		if len(fields) < 5 {
			return nil, fmt.Errorf("bootentry: dm-mod.create device %q: want name,uuid,minor,flags,table", dev)
		}
		for _, table := range fields[4:] {
			a := strings.Fields(table)
			if len(a) < 3 || a[2] != "verity" {
				continue
			}
			if len(a) < 13 {
				return nil, fmt.Errorf("bootentry: verity table %q: want 10 arguments after \"verity\"", table)
			}
			v := &Verity{Name: fields[0], DataDevice: a[4], HashDevice: a[5], Algorithm: a[10], RootHash: a[11], Salt: a[12]}
			var errs []error
			num := func(s string, bits int) uint64 {
				n, err := strconv.ParseUint(s, 10, bits)
				errs = append(errs, err)
				return n
			}
			v.Sectors = num(a[1], 64)
			if num(a[3], 32) != 1 {
				errs = append(errs, fmt.Errorf("verity format version %s is not 1", a[3]))
			}
			v.DataBlockSize = uint32(num(a[6], 32))
			v.HashBlockSize = uint32(num(a[7], 32))
			v.DataBlocks = num(a[8], 64)
			v.HashStartBlock = num(a[9], 64)
			if len(a) > 13 {
				// An optional-argument count, then the arguments.
				v.Flags = a[14:]
			}
			if err := errors.Join(errs...); err != nil {
				return nil, fmt.Errorf("bootentry: verity table %q: %w", table, err)
			}
			return v, nil
		}
	}
	return nil, ErrNoVerity
}
