package boot

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"osbuild.dev/osbuild/partitions/bootentry"
)

// Verity describes the dm-verity mapping of one root slot.
type Verity struct {
	DataPartUUID string // PARTUUID of the root (squashfs) partition
	HashPartUUID string // PARTUUID of the verity partition
	DataBlocks   uint64 // blocks of DataBlockSize in the root image: computed from the image size, never guessed
	// DataBlockSize and HashBlockSize default to 4096.
	DataBlockSize, HashBlockSize uint32
	// HashStartBlock defaults to 1: the hash partition starts with veritysetup's superblock.
	HashStartBlock uint64
	Algorithm      string // default sha256
	RootHash       string // hex
	Salt           string // hex; "" means none ("-")
	// NoRestartOnCorruption leaves out restart_on_corruption (then corruption only gives I/O errors).
	NoRestartOnCorruption bool
}

var hexRe = regexp.MustCompile(`^[0-9a-f]+$`)

func (v Verity) withDefaults() Verity {
	if v.DataBlockSize == 0 {
		v.DataBlockSize = 4096
	}
	if v.HashBlockSize == 0 {
		v.HashBlockSize = 4096
	}
	if v.HashStartBlock == 0 {
		v.HashStartBlock = 1
	}
	if v.Algorithm == "" {
		v.Algorithm = "sha256"
	}
	v.RootHash = strings.ToLower(v.RootHash)
	v.Salt = strings.ToLower(v.Salt)
	v.DataPartUUID = strings.ToLower(v.DataPartUUID)
	v.HashPartUUID = strings.ToLower(v.HashPartUUID)
	return v
}

// Table returns the dm-verity table line: "0 <sectors> verity 1 PARTUUID=... ...".
func (v Verity) Table() (string, error) {
	v = v.withDefaults()
	if v.DataBlocks == 0 {
		return "", errors.New("verity: data block count is 0; take it from the root image size")
	}
	if v.DataPartUUID == "" || v.HashPartUUID == "" {
		return "", errors.New("verity: the data and hash partition UUIDs are both needed")
	}
	for _, u := range []string{v.DataPartUUID, v.HashPartUUID} {
		if strings.ContainsAny(u, " ,;\"") {
			return "", fmt.Errorf("verity: bad partition UUID %q", u)
		}
	}
	if !hexRe.MatchString(v.RootHash) {
		return "", fmt.Errorf("verity: root hash %q is not hex", v.RootHash)
	}
	salt := v.Salt
	if salt == "" {
		salt = "-"
	} else if !hexRe.MatchString(salt) {
		return "", fmt.Errorf("verity: salt %q is not hex", v.Salt)
	}
	if v.DataBlockSize%512 != 0 {
		return "", fmt.Errorf("verity: data block size %d is not a multiple of 512", v.DataBlockSize)
	}
	sectors := v.DataBlocks * uint64(v.DataBlockSize) / 512
	t := fmt.Sprintf("0 %d verity 1 PARTUUID=%s PARTUUID=%s %d %d %d %d %s %s %s",
		sectors, v.DataPartUUID, v.HashPartUUID, v.DataBlockSize, v.HashBlockSize, v.DataBlocks,
		v.HashStartBlock, v.Algorithm, v.RootHash, salt)
	if !v.NoRestartOnCorruption {
		t += " 1 restart_on_corruption"
	}
	return t, nil
}

// DMCreate returns the dm-mod.create= argument (DM_INIT syntax, Documentation/admin-guide/device-mapper/
// dm-init.rst) that maps the root read-only as device "root". A kernel with CONFIG_DM_INIT parses it itself;
// osbuild's init parses it for kernels without (Debian's).
func (v Verity) DMCreate() (string, error) {
	t, err := v.Table()
	if err != nil {
		return "", err
	}
	return `dm-mod.create="root,,,ro,` + t + `"`, nil
}

// CmdlineOptions are the parts of the kernel command line osbuild sets.
type CmdlineOptions struct {
	Verity Verity
	// Console defaults to ["ttyS0"]; the last console= is /dev/console, where init writes.
	Console []string
	// DataMount is where the data partition is mounted (osbuild.data=); default /var, "none" for no data partition.
	DataMount string
	// Init is the root's init (osbuild.init=); default /sbin/init.
	Init string
	// Extra is appended verbatim (e.g. "quiet").
	Extra []string
}

// Cmdline returns the kernel command line of an entry. panic=10 makes any kernel panic (including init
// dying) a reboot, so that boot counting can fall back to the other slot.
func Cmdline(o CmdlineOptions) (string, error) {
	dm, err := o.Verity.DMCreate()
	if err != nil {
		return "", err
	}
	args := []string{dm, "root=/dev/dm-0", "ro", "panic=10"}
	cons := o.Console
	if len(cons) == 0 {
		cons = []string{"ttyS0"}
	}
	for _, c := range cons {
		args = append(args, "console="+c)
	}
	if o.DataMount != "" && o.DataMount != DefaultDataMount {
		if strings.ContainsAny(o.DataMount, " \"") {
			return "", fmt.Errorf("data mount point %q: spaces and quotes are not allowed", o.DataMount)
		}
		args = append(args, "osbuild.data="+o.DataMount)
	}
	if o.Init != "" && o.Init != DefaultInit {
		if strings.ContainsAny(o.Init, " \"") {
			return "", fmt.Errorf("init %q: spaces and quotes are not allowed", o.Init)
		}
		args = append(args, "osbuild.init="+o.Init)
	}
	args = append(args, o.Extra...)
	return strings.Join(args, " "), nil
}

// Defaults of the osbuild.* command line parameters.
const (
	DefaultDataMount = "/var"
	DefaultInit      = "/sbin/init"
	// DataPartLabel is the GPT partition name of the data partition.
	DataPartLabel = "data"
)

// Entry is a Boot Loader Specification Type 1 entry (loader/entries/*.conf on the ESP).
type Entry struct {
	ID      string // file name without .conf and without the boot counter, e.g. "osbuild-a"
	Title   string
	Version string
	SortKey string
	Linux   string // path on the ESP, e.g. /osbuild/a/vmlinuz
	Initrd  string
	Options string // kernel command line
	// Tries is the boot counter the entry starts with (NAME+Tries.conf); 0 means no counting (NAME.conf).
	Tries int
}

// DefaultTries is how often systemd-boot tries a new slot before it falls back to the other one.
const DefaultTries = 3

var entryIDRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

// FileName is the entry's path relative to the ESP, with the boot counter: loader/entries/ID+3.conf.
func (e Entry) FileName() string {
	if e.Tries > 0 {
		return "loader/entries/" + e.ID + "+" + strconv.Itoa(e.Tries) + ".conf"
	}
	return "loader/entries/" + e.ID + ".conf"
}

// Render returns the entry file's content.
func (e Entry) Render() ([]byte, error) {
	if !entryIDRe.MatchString(e.ID) || strings.Contains(e.ID, "+") {
		return nil, fmt.Errorf("loader entry id %q: use letters, digits, '.', '_' and '-'", e.ID)
	}
	if e.Linux == "" || e.Options == "" {
		return nil, fmt.Errorf("loader entry %s: linux and options are required", e.ID)
	}
	for _, v := range []string{e.Title, e.Version, e.SortKey, e.Linux, e.Initrd, e.Options} {
		if strings.ContainsAny(v, "\n\r") {
			return nil, fmt.Errorf("loader entry %s: values must be single lines", e.ID)
		}
	}
	// One writer of entry files: the agent rewrites them with bootentry too.
	be := bootentry.Entry{Title: e.Title, Version: e.Version, SortKey: e.SortKey, Linux: e.Linux, Options: e.Options}
	if e.Initrd != "" {
		be.Initrd = []string{e.Initrd}
	}
	return be.Marshal(), nil
}

// LoaderConf is loader/loader.conf. No "default": in systemd-boot 252 the entry id includes the +N
// counter, so a default would also match the failed entry and keep booting it. The order comes from
// sort-key and version instead. timeout 0 boots at once (hold a key to get the menu).
func LoaderConf() []byte {
	return []byte("timeout 0\neditor no\nauto-entries no\nauto-firmware no\n")
}

// DMDevice is one device of a dm-mod.create= argument.
type DMDevice struct {
	Name, UUID, Minor string
	ReadOnly          bool
	Tables            []DMTable
}

// DMTable is one line of a device-mapper table.
type DMTable struct {
	Start, Length uint64 // sectors
	Type          string
	Params        string
}

// ParseDMCreate parses the value of dm-mod.create= (quotes already removed):
// name,uuid,minor,flags,table[,table...][;name,uuid,minor,flags,table...].
func ParseDMCreate(s string) ([]DMDevice, error) {
	var devs []DMDevice
	for _, ds := range strings.Split(s, ";") {
		f := strings.Split(ds, ",")
		if len(f) < 5 {
			return nil, fmt.Errorf("dm-mod.create: %q: want name,uuid,minor,flags,table", ds)
		}
		d := DMDevice{Name: f[0], UUID: f[1], Minor: f[2]}
		switch f[3] {
		case "ro":
			d.ReadOnly = true
		case "rw", "":
		default:
			return nil, fmt.Errorf("dm-mod.create: device %s: flags %q: want ro or rw", d.Name, f[3])
		}
		if d.Name == "" {
			return nil, errors.New("dm-mod.create: a device has no name")
		}
		for _, ts := range f[4:] {
			fs := strings.Fields(ts)
			if len(fs) < 3 {
				return nil, fmt.Errorf("dm-mod.create: device %s: table %q: want start length type [args]", d.Name, ts)
			}
			start, err1 := strconv.ParseUint(fs[0], 10, 64)
			length, err2 := strconv.ParseUint(fs[1], 10, 64)
			if err1 != nil || err2 != nil || length == 0 {
				return nil, fmt.Errorf("dm-mod.create: device %s: table %q: bad start or length", d.Name, ts)
			}
			d.Tables = append(d.Tables, DMTable{Start: start, Length: length, Type: fs[2], Params: strings.Join(fs[3:], " ")})
		}
		devs = append(devs, d)
	}
	return devs, nil
}

// ParseCmdline splits a kernel command line into parameters the way the kernel does: whitespace
// separates them except inside double quotes, and the quotes are dropped. Later values win.
func ParseCmdline(s string) map[string]string {
	out := map[string]string{}
	var cur strings.Builder
	inQuote := false
	flush := func() {
		if cur.Len() == 0 {
			return
		}
		k, v, _ := strings.Cut(cur.String(), "=")
		out[k] = v
		cur.Reset()
	}
	for _, r := range s {
		switch {
		case r == '"':
			inQuote = !inQuote
		case !inQuote && (r == ' ' || r == '\t' || r == '\n'):
			flush()
		default:
			cur.WriteRune(r)
		}
	}
	flush()
	return out
}

// SlotParam is the command line parameter naming the slot an entry boots (osbuild.slot=a), so that the
// running system knows which slot it is on.
const SlotParam = "osbuild.slot"

// SlotEntry returns the loader entry of a slot: id "osbuild-<slot>", sort-key "osbuild-<name>" (both slots
// share it, so the higher version boots first), kernel and initrd at /osbuild/<slot>/. tries 0 writes an
// entry without boot counting (a first image, known good); the agent writes DefaultTries.
func SlotEntry(name, version, slot, cmdline string, tries int) Entry {
	title := name
	if version != "" {
		title += " " + version
	}
	return Entry{
		ID:      "osbuild-" + slot,
		Title:   fmt.Sprintf("%s (%s)", title, strings.ToUpper(slot)),
		Version: version,
		SortKey: "osbuild-" + name,
		Linux:   "/osbuild/" + slot + "/vmlinuz",
		Initrd:  "/osbuild/" + slot + "/initrd",
		Options: cmdline,
		Tries:   tries,
	}
}
