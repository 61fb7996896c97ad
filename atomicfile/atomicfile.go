// Package atomicfile writes outputs so that a reader never sees half of one: under a temporary name in the
// same folder, renamed into place only when complete and synced.
package atomicfile

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// Write writes p under a temporary name in the same folder and renames it into place only after
// fill succeeded and the data reached the disk: an interrupted or failed build leaves nothing under the
// final name.
func Write(p string, fill func(io.Writer) error) (err error) {
	f, err := os.CreateTemp(filepath.Dir(p), "."+filepath.Base(p)+".tmp-*")
	if err != nil {
		return fmt.Errorf("create output: %w; check that the folder exists and is writable", err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	bw := bufio.NewWriterSize(f, 1<<20)
	if err = fill(bw); err != nil {
		return err
	}
	if err = bw.Flush(); err != nil {
		return fmt.Errorf("write %s: %w", p, err)
	}
	if err = f.Chmod(0o644); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("write %s: %w", p, err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", p, err)
	}
	return os.Rename(f.Name(), p)
}
