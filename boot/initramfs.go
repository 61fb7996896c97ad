package boot

import (
	"bytes"
	"compress/gzip"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"

	"github.com/klauspost/compress/zstd"
)

// Paths inside the initramfs that sysinit reads.
const (
	// ModulesListPath lists the modules to load, one absolute initramfs path per line, in load order.
	ModulesListPath = "/etc/osbuild/modules"
	// NewRootPath is where the init mounts the root before switching to it.
	NewRootPath = "/newroot"
)

// Compression of the initramfs.
type Compression string

const (
	// Zstd is the default: at the same size as gzip -9 it decompresses several times faster in the
	// kernel, which is on the boot path of every start, and it compresses faster here too.
	Zstd Compression = "zstd"
	Gzip Compression = "gzip"
	None Compression = "none"
)

// InitramfsOptions says what goes into an initramfs besides the modules.
type InitramfsOptions struct {
	// Init is the host path of the static osbuild binary that becomes /init (normally os.Executable()).
	Init string
	// Compression defaults to Zstd.
	Compression Compression
	// ModTime is every entry's mtime (seconds); pass SOURCE_DATE_EPOCH for reproducible builds. Default 0.
	ModTime int64
}

// WriteInitramfs writes a compressed newc cpio archive holding Init as /init, the modules of mods
// (decompressed, at /lib/modules/<kver>/<path>) and ModulesListPath. The same inputs give the same bytes.
func WriteInitramfs(w io.Writer, mods *ModuleSet, opt InitramfsOptions) error {
	if opt.Init == "" {
		return errors.New("initramfs: no init binary given")
	}
	fi, err := os.Stat(opt.Init)
	if err != nil {
		return fmt.Errorf("initramfs: init binary: %w", err)
	}
	if err := checkStatic(opt.Init); err != nil {
		return err
	}

	entries := []cpioEntry{
		{Name: "dev", Mode: sIFDIR | 0o755},
		// The kernel opens /dev/console for init's stdin/out/err before devtmpfs is mounted: without this
		// node the init starts with no console and its errors are lost.
		{Name: "dev/console", Mode: sIFCHR | 0o600, RdevMaj: 5, RdevMin: 1},
		{Name: "proc", Mode: sIFDIR | 0o755},
		{Name: "sys", Mode: sIFDIR | 0o755},
		{Name: "run", Mode: sIFDIR | 0o755},
		{Name: strings.TrimPrefix(NewRootPath, "/"), Mode: sIFDIR | 0o755},
		{Name: "init", Mode: sIFREG | 0o755, Size: fi.Size(), Open: func() (io.ReadCloser, error) { return os.Open(opt.Init) }},
	}
	dirs := map[string]bool{"dev": true, "proc": true, "sys": true, "run": true, strings.TrimPrefix(NewRootPath, "/"): true}
	addDirs := func(p string) {
		for d := path.Dir(p); d != "." && !dirs[d]; d = path.Dir(d) {
			dirs[d] = true
			entries = append(entries, cpioEntry{Name: d, Mode: sIFDIR | 0o755})
		}
	}

	var list strings.Builder
	if mods != nil {
		for i := range mods.Modules {
			m := &mods.Modules[i]
			data, err := m.content()
			if err != nil {
				return fmt.Errorf("initramfs: module %s: %w", m.Path, err)
			}
			rel := m.Path
			for _, s := range []string{".xz", ".zst", ".gz"} {
				rel = strings.TrimSuffix(rel, s)
			}
			name := "lib/modules/" + mods.Kernel + "/" + rel
			addDirs(name)
			entries = append(entries, cpioEntry{Name: name, Mode: sIFREG | 0o644, Contents: data})
			list.WriteString("/" + name + "\n")
		}
	}
	listName := strings.TrimPrefix(ModulesListPath, "/")
	addDirs(listName)
	entries = append(entries, cpioEntry{Name: listName, Mode: sIFREG | 0o644, Contents: []byte(list.String())})

	var cw io.WriteCloser
	switch opt.Compression {
	case Zstd, "":
		// One encoder goroutine: the output of the concurrent encoder depends on scheduling.
		cw, err = zstd.NewWriter(w, zstd.WithEncoderLevel(zstd.SpeedBestCompression), zstd.WithEncoderConcurrency(1))
		if err != nil {
			return fmt.Errorf("initramfs: zstd: %w", err)
		}
	case Gzip:
		cw, _ = gzip.NewWriterLevel(w, gzip.BestCompression)
	case None:
		cw = nopWriteCloser{w}
	default:
		return fmt.Errorf("initramfs: unknown compression %q: use zstd, gzip or none", opt.Compression)
	}
	if err := writeCPIO(cw, entries, opt.ModTime); err != nil {
		cw.Close()
		return err
	}
	if err := cw.Close(); err != nil {
		return fmt.Errorf("initramfs: %w", err)
	}
	return nil
}

// BuildInitramfs returns WriteInitramfs' output in memory (an initramfs is a few MB).
func BuildInitramfs(mods *ModuleSet, opt InitramfsOptions) ([]byte, error) {
	var b bytes.Buffer
	if err := WriteInitramfs(&b, mods, opt); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

type nopWriteCloser struct{ io.Writer }

func (nopWriteCloser) Close() error { return nil }

// checkStatic refuses a dynamically linked /init: the initramfs has no loader or libc, and the kernel
// would only say "Failed to execute /init (error -2)".
func checkStatic(p string) error {
	f, err := elf.Open(p)
	if err != nil {
		return fmt.Errorf("initramfs: init binary %s is not an ELF executable: %w", p, err)
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			return fmt.Errorf("initramfs: init binary %s is dynamically linked; build osbuild with CGO_ENABLED=0", p)
		}
	}
	if f.Machine != elf.EM_X86_64 && f.Machine != elf.EM_AARCH64 {
		return fmt.Errorf("initramfs: init binary %s is for %s, not x86-64 or arm64", p, f.Machine)
	}
	return nil
}
