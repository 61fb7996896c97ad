package update

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"unicode/utf16"

	"golang.org/x/sys/unix"
)

// loaderGUID is systemd-boot's vendor GUID for its EFI variables (LoaderBootCountPath, LoaderEntryOneShot).
const loaderGUID = "4a67b082-0a4c-41cf-b6c7-440b29bb8c4f"

const defaultEFIVars = "/sys/firmware/efi/efivars"

// mountEFIVars mounts efivarfs when the system has EFI but nobody mounted it (the minimal images don't).
func mountEFIVars(dir string) {
	if dir != defaultEFIVars {
		return // a test's folder: never mount over it
	}
	if _, err := os.Stat(filepath.Dir(dir)); err != nil {
		return // no EFI at all
	}
	if ents, err := os.ReadDir(dir); err == nil && len(ents) > 0 {
		return
	}
	_ = unix.Mount("efivarfs", dir, "efivarfs", 0, "")
}

// readEFIString reads a UTF-16 string variable of systemd-boot: efivarfs files start with 4 bytes of
// attributes.
func readEFIString(dir, name string) (string, error) {
	mountEFIVars(dir)
	b, err := os.ReadFile(filepath.Join(dir, name+"-"+loaderGUID))
	if err != nil {
		return "", err
	}
	if len(b) < 4 {
		return "", fmt.Errorf("EFI variable %s is truncated", name)
	}
	b = b[4:]
	u := make([]uint16, 0, len(b)/2)
	for i := 0; i+1 < len(b); i += 2 {
		c := binary.LittleEndian.Uint16(b[i:])
		if c == 0 {
			break
		}
		u = append(u, c)
	}
	return string(utf16.Decode(u)), nil
}

// writeEFIString sets a volatile-free (non-volatile, boot and runtime) UTF-16 string variable.
func writeEFIString(dir, name, value string) error {
	mountEFIVars(dir)
	p := filepath.Join(dir, name+"-"+loaderGUID)
	u := utf16.Encode([]rune(value + "\x00"))
	b := make([]byte, 4+2*len(u))
	binary.LittleEndian.PutUint32(b, 0x7) // EFI_VARIABLE_NON_VOLATILE | BOOTSERVICE_ACCESS | RUNTIME_ACCESS
	for i, c := range u {
		binary.LittleEndian.PutUint16(b[4+2*i:], c)
	}
	// efivarfs marks existing variables immutable; clear that first, as efivar and systemd do.
	if f, err := os.Open(p); err == nil {
		if flags, err := unix.IoctlGetInt(int(f.Fd()), unix.FS_IOC_GETFLAGS); err == nil && flags&fsImmutable != 0 {
			_ = unix.IoctlSetPointerInt(int(f.Fd()), unix.FS_IOC_SETFLAGS, flags&^fsImmutable)
		}
		f.Close()
	}
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	// efivarfs wants the whole variable in one write.
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// bootCountEntry turns LoaderBootCountPath ("\loader\entries\osbuild-b+2-1.conf") into an ESP path.
func bootCountEntry(v string) (string, error) {
	p := strings.TrimPrefix(strings.ReplaceAll(v, `\`, "/"), "/")
	if !strings.HasPrefix(strings.ToLower(p), "loader/entries/") || strings.Contains(p, "..") {
		return "", errors.New("LoaderBootCountPath " + v + " is not a loader entry")
	}
	return p, nil
}

// fsImmutable is FS_IMMUTABLE_FL from linux/fs.h.
const fsImmutable = 0x10

// oneShotID is the id systemd-boot gives a loader entry file, for LoaderEntryOneShot: in 252 (Debian 12)
// the lower-cased file name, boot counter and ".conf" included. (systemd 258 strips the counter; a
// variant shipping a newer systemd-boot needs the id without it.)
func oneShotID(fileName string) string { return strings.ToLower(fileName) }
