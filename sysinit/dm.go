//go:build linux

package sysinit

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"

	"osbuild.dev/osbuild/boot"
)

// Device-mapper ioctl ABI (include/uapi/linux/dm-ioctl.h, interface version 4).
const (
	dmIoctlSize      = 312 // struct dm_ioctl
	dmTargetSpecSize = 40  // struct dm_target_spec
	dmNameLen        = 128
	dmUUIDLen        = 129
	dmMaxTypeName    = 16

	dmReadonlyFlag = 1 << 0

	// _IOWR(0xfd, nr, struct dm_ioctl)
	dmIoctlBase  = 3<<30 | dmIoctlSize<<16 | 0xfd<<8
	dmDevCreate  = dmIoctlBase | 3
	dmDevSuspend = dmIoctlBase | 6
	dmDevStatus  = dmIoctlBase | 7
	dmTableLoad  = dmIoctlBase | 9
)

type dmControl struct{ f *os.File }

func openDMControl() (*dmControl, error) {
	const p = "/dev/mapper/control"
	if _, err := os.Stat(p); err != nil {
		// devtmpfs normally creates it when dm-mod registers; make it from sysfs otherwise.
		b, err2 := os.ReadFile("/sys/class/misc/device-mapper/dev")
		if err2 != nil {
			return nil, fmt.Errorf("device-mapper is not available (is the dm-mod module in the initramfs?): %w", err)
		}
		var maj, min uint32
		if _, err := fmt.Sscanf(strings.TrimSpace(string(b)), "%d:%d", &maj, &min); err != nil {
			return nil, fmt.Errorf("device-mapper: bad dev %q", b)
		}
		_ = os.MkdirAll("/dev/mapper", 0o755)
		if err := unix.Mknod(p, unix.S_IFCHR|0o600, int(unix.Mkdev(maj, min))); err != nil && !errors.Is(err, unix.EEXIST) {
			return nil, fmt.Errorf("mknod %s: %w", p, err)
		}
	}
	f, err := os.OpenFile(p, os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("device-mapper: %w", err)
	}
	return &dmControl{f: f}, nil
}

func (c *dmControl) Close() error { return c.f.Close() }

// ioctl sends one dm_ioctl with payload after it and returns the dev field of the reply.
func (c *dmControl) ioctl(cmd uintptr, name, uuid string, flags, targets uint32, payload []byte) (uint64, error) {
	if len(name) >= dmNameLen || len(uuid) >= dmUUIDLen {
		return 0, fmt.Errorf("device-mapper: name %q or uuid too long", name)
	}
	// Room for the kernel's reply beyond what we send.
	buf := make([]byte, dmIoctlSize+len(payload)+4096)
	le := binary.LittleEndian
	le.PutUint32(buf[0:], 4) // version 4.0.0: the kernel accepts any older minor
	le.PutUint32(buf[12:], uint32(len(buf)))
	le.PutUint32(buf[16:], dmIoctlSize)
	le.PutUint32(buf[20:], targets)
	le.PutUint32(buf[28:], flags)
	copy(buf[48:48+dmNameLen], name)
	copy(buf[176:176+dmUUIDLen], uuid)
	copy(buf[dmIoctlSize:], payload)
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, c.f.Fd(), cmd, uintptr(unsafe.Pointer(&buf[0])))
	runtime.KeepAlive(buf)
	if errno != 0 {
		return 0, errno
	}
	return le.Uint64(buf[40:]), nil
}

// tablePayload encodes the dm_target_spec list of DM_TABLE_LOAD: each spec is followed by its
// NUL-terminated parameters, padded to 8 bytes; next is the distance to the following spec.
func tablePayload(tables []boot.DMTable) ([]byte, error) {
	var out []byte
	le := binary.LittleEndian
	for _, t := range tables {
		if len(t.Type) >= dmMaxTypeName {
			return nil, fmt.Errorf("device-mapper: target type %q too long", t.Type)
		}
		n := dmTargetSpecSize + len(t.Params) + 1
		n = (n + 7) &^ 7
		spec := make([]byte, n)
		le.PutUint64(spec[0:], t.Start)
		le.PutUint64(spec[8:], t.Length)
		le.PutUint32(spec[20:], uint32(n))
		copy(spec[24:24+dmMaxTypeName], t.Type)
		copy(spec[dmTargetSpecSize:], t.Params)
		out = append(out, spec...)
	}
	return out, nil
}

// createDevice makes, loads and resumes one mapped device and returns its device number. A device that
// already exists under the name (a kernel with CONFIG_DM_INIT made it from the same command line) is
// reused as is.
func createDevice(c *dmControl, d boot.DMDevice) (uint64, error) {
	// A requested minor is not honoured: nothing in osbuild's boot chain names devices by number.
	if _, err := c.ioctl(dmDevCreate, d.Name, d.UUID, 0, 0, nil); err != nil {
		if errors.Is(err, unix.EBUSY) {
			dev, err := c.ioctl(dmDevStatus, d.Name, "", 0, 0, nil)
			if err != nil {
				return 0, fmt.Errorf("device-mapper: %s exists but its status fails: %w", d.Name, err)
			}
			return dev, nil
		}
		return 0, fmt.Errorf("device-mapper: create %s: %w", d.Name, err)
	}
	payload, err := tablePayload(d.Tables)
	if err != nil {
		return 0, err
	}
	var flags uint32
	if d.ReadOnly {
		flags |= dmReadonlyFlag
	}
	if _, err := c.ioctl(dmTableLoad, d.Name, "", flags, uint32(len(d.Tables)), payload); err != nil {
		return 0, fmt.Errorf("device-mapper: load table of %s (see the kernel messages above for the reason): %w", d.Name, err)
	}
	// DM_DEV_SUSPEND without DM_SUSPEND_FLAG resumes: it makes the loaded table live.
	dev, err := c.ioctl(dmDevSuspend, d.Name, "", 0, 0, nil)
	if err != nil {
		return 0, fmt.Errorf("device-mapper: resume %s: %w", d.Name, err)
	}
	return dev, nil
}
