package update

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"osbuild.dev/osbuild/partitions"
	"osbuild.dev/osbuild/partitions/bootentry"
)

// SlotStatus is one slot's entry, as the boot loader sees it.
type SlotStatus struct {
	Slot    string `json:"slot"`
	Version string `json:"version,omitempty"`
	Entry   string `json:"entry,omitempty"`
	// State is "good", "trial" (staged or being tried: tries left), "failed" (no tries left) or "empty".
	State     string `json:"state"`
	TriesLeft int    `json:"tries_left,omitempty"`
}

// Status is what `osbuild update status` shows.
type Status struct {
	Disk    string     `json:"disk"`
	Name    string     `json:"name"`
	Running SlotStatus `json:"running"`
	Other   SlotStatus `json:"other"`
	// NextBoot is the entry systemd-boot boots next (without a one-shot variable).
	NextBoot string `json:"next_boot,omitempty"`
	// Staged and Failed are the other slot's version when it waits to be tried, or failed its tries.
	Staged string `json:"staged,omitempty"`
	Failed string `json:"failed,omitempty"`
	// MarkedGood is false while the running boot is on trial.
	MarkedGood bool `json:"marked_good"`
}

func slotStatus(es []*bootentry.Entry, slot string) SlotStatus {
	s := SlotStatus{Slot: slot, State: "empty"}
	for _, e := range BootOrder(slotEntries(es, slot)) {
		s.Version, s.Entry, s.State = e.Version, e.FileName, "good"
		if e.Counting {
			s.State, s.TriesLeft = "trial", e.TriesLeft
			if e.TriesLeft == 0 {
				s.State = "failed"
			}
		}
		break
	}
	return s
}

// Status reports both slots.
func (d *Device) Status() (*Status, error) {
	es, err := d.Entries()
	if err != nil {
		return nil, err
	}
	st := &Status{Disk: d.Path, Name: d.Name, Running: slotStatus(es, d.Running), Other: slotStatus(es, d.Other())}
	if d.Version != "" {
		st.Running.Version = d.Version
	}
	if order := BootOrder(es); len(order) > 0 {
		st.NextBoot = order[0].FileName
	}
	_, trial := d.onTrial()
	st.MarkedGood = !trial
	if !d.Online && st.Running.State == "trial" && st.Other.State == "good" {
		// Offline, "running" is the slot that boots next; an update that waits for its first try is
		// better told as staged beside the good slot it will fall back to.
		st.Running, st.Other, st.MarkedGood = st.Other, st.Running, true
	}
	switch st.Other.State {
	case "trial":
		st.Staged = st.Other.Version
	case "failed":
		st.Failed = st.Other.Version
	}
	return st, nil
}

// RunHealthChecks runs the running system's health checks (the variant's health: list, from
// /etc/osbuild/variant.json); none is a pass.
func (d *Device) RunHealthChecks(ctx context.Context, log io.Writer) error {
	for _, c := range d.Settings.Health {
		timeout := 60 * time.Second
		if c.Timeout != "" {
			if t, err := time.ParseDuration(c.Timeout); err == nil {
				timeout = t
			}
		}
		cctx, cancel := context.WithTimeout(ctx, timeout)
		cmd := exec.CommandContext(cctx, "/bin/sh", "-c", c.Command)
		out, err := cmd.CombinedOutput()
		cancel()
		label := c.Name
		if label == "" {
			label = c.Command
		}
		if err != nil {
			return fmt.Errorf("health check %q failed: %w\n%s", label, err, strings.TrimSpace(string(out)))
		}
		if log != nil {
			fmt.Fprintf(log, "health: %s: ok\n", label)
		}
	}
	return nil
}

// MarkGood ends the running boot's trial: after the health checks pass, the counted entry
// (LoaderBootCountPath, e.g. osbuild-b+2-1.conf) is renamed to osbuild-b.conf, which systemd-boot never
// counts down again. Offline (--disk) it marks the entry that boots next. It returns the new name, or ""
// when the boot was not on trial.
func (d *Device) MarkGood(ctx context.Context, log io.Writer) (string, error) {
	if err := d.RunHealthChecks(ctx, log); err != nil {
		return "", fmt.Errorf("%w; not marking this boot good: after its tries, systemd-boot falls back to the other slot", err)
	}
	var p string
	if d.Online {
		v, err := readEFIString(d.opts.EFIVars, "LoaderBootCountPath")
		if errors.Is(err, fs.ErrNotExist) || err == nil && v == "" {
			return "", nil // not a counted boot: nothing to do
		} else if err != nil {
			return "", fmt.Errorf("read LoaderBootCountPath: %w", err)
		}
		if p, err = bootCountEntry(v); err != nil {
			return "", err
		}
	} else {
		es, err := d.Entries()
		if err != nil {
			return "", err
		}
		order := BootOrder(es)
		if len(order) == 0 || !order[0].Counting {
			return "", nil
		}
		p = partitions.EntriesDir + "/" + order[0].FileName
	}
	id, counting, _, _, err := bootentry.ParseFileName(filepath.Base(p))
	if err != nil {
		return "", err
	}
	if !counting {
		return "", nil
	}
	dst := partitions.EntriesDir + "/" + bootentry.FileName(id, false, 0, 0)
	if _, err := d.ESP.Stat(p); err != nil {
		if _, err2 := d.ESP.Stat(dst); err2 == nil {
			return "", nil // marked already
		}
		return "", fmt.Errorf("the booted entry %s is gone: %w", p, err)
	}
	if _, err := d.ESP.Stat(dst); err == nil {
		if err := d.ESP.Remove(dst); err != nil {
			return "", err
		}
	}
	if err := d.ESP.Rename(p, dst); err != nil {
		return "", fmt.Errorf("mark %s good: %w", p, err)
	}
	if err := d.ESP.Sync(); err != nil {
		return "", err
	}
	return dst, nil
}

// Rollback makes the other slot boot next, and from then on: the running slot's entry is given zero
// tries left (as if it had failed), so systemd-boot sorts it last. Its files stay; a later apply reuses
// the slot.
func (d *Device) Rollback() (string, error) {
	es, err := d.Entries()
	if err != nil {
		return "", err
	}
	other := slotStatus(es, d.Other())
	switch other.State {
	case "empty":
		return "", fmt.Errorf("slot %s has no entry: nothing to roll back to", strings.ToUpper(d.Other()))
	case "failed":
		return "", fmt.Errorf("slot %s (%s) failed its boot tries: rolling back to it would not boot", strings.ToUpper(d.Other()), other.Version)
	}
	for _, e := range slotEntries(es, d.Running) {
		dst := bootentry.FileName(e.ID, true, 0, e.TriesDone)
		if dst == e.FileName {
			continue
		}
		if err := d.ESP.Rename(partitions.EntriesDir+"/"+e.FileName, partitions.EntriesDir+"/"+dst); err != nil {
			return "", fmt.Errorf("roll back: %w", err)
		}
	}
	if err := d.ESP.Sync(); err != nil {
		return "", err
	}
	return other.Entry, nil
}
