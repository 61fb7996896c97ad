package update

import (
	"context"
	"crypto"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"osbuild.dev/osbuild/boot"
	"osbuild.dev/osbuild/builder"
	"osbuild.dev/osbuild/partitions"
	"osbuild.dev/osbuild/partitions/bootentry"
	"osbuild.dev/osbuild/verity"
)

// ApplyOptions control an update.
type ApplyOptions struct {
	RegistryOptions
	// From is the release: HOST/REPO[:TAG|@DIGEST] or oci:DIR[:TAG]. Empty means the device's
	// UPDATE_REPOSITORY at Channel.
	From string
	// Channel is the tag used when From names none (default: the device's, else "stable").
	Channel string
	// Key verifies the signature (default: the device's /etc/osbuild/update.pub).
	Key crypto.PublicKey
	// AllowDowngrade installs an older (or the same) version, and boots it once (LoaderEntryOneShot).
	AllowDowngrade bool
	// RetryFailed installs a version that already failed its boot tries on this machine. Without it such a
	// release is refused: applying it again would loop (apply, fail, fall back, apply...) until a newer
	// one is published.
	RetryFailed bool
	// Log receives progress lines; nil is quiet.
	Log io.Writer
	// Progress, when set, is called as bytes of the root and verity layers are written (tests use it to
	// interrupt a download at a chosen point).
	Progress func(layer string, done, total int64)
}

// Applied says what Apply did.
type Applied struct {
	Slot    string `json:"slot"`
	Version string `json:"version"`
	Entry   string `json:"entry"`
	Digest  string `json:"digest"`
	// Resumed is the number of bytes an earlier, interrupted apply had already written.
	Resumed int64 `json:"resumed"`
	// Downloaded is what this run fetched of the root and verity layers.
	Downloaded int64 `json:"downloaded"`
	OneShot    bool  `json:"one_shot,omitempty"`
}

// RefusedError is an update refused before anything was written.
type RefusedError struct{ Reason string }

func (e *RefusedError) Error() string { return "update refused: " + e.Reason }

func refuse(format string, args ...any) error {
	return &RefusedError{Reason: fmt.Sprintf(format, args...)}
}

// state is the progress of an interrupted apply, kept so that the next run resumes the download.
type state struct {
	Digest string           `json:"digest"`
	Disk   string           `json:"disk_guid"`
	Slot   string           `json:"slot"`
	Done   map[string]int64 `json:"done"` // bytes written and synced, by layer digest
}

const (
	copyBuffer      = 1 << 20  // one read/write buffer: memory stays flat whatever the image size
	checkpointBytes = 16 << 20 // sync and record progress this often
)

// Source returns the release reference Apply would use.
func (d *Device) Source(o ApplyOptions) (ref, tag string, err error) {
	tag = o.Channel
	if tag == "" {
		tag = d.Channel
	}
	if tag == "" {
		tag = "stable"
	}
	if o.From != "" {
		return o.From, tag, nil
	}
	if d.Repository == "" {
		return "", "", errors.New("no release to apply: pass --from REF (or oci:DIR); the system has no update.repository in /etc/osbuild/variant.json")
	}
	return d.Repository, tag, nil
}

// PublicKey returns the key releases must be signed with: o.Key, else the device's.
func (d *Device) PublicKey(o ApplyOptions) (crypto.PublicKey, error) {
	if o.Key != nil {
		return o.Key, nil
	}
	if !d.Online {
		return nil, errors.New("no public key: pass --key cosign.pub")
	}
	return LoadPublicKey(filepath.Join(d.opts.Root, builder.UpdateKeyPath))
}

// Check resolves and verifies the release and checks it against the device, writing nothing.
func (d *Device) Check(ctx context.Context, o ApplyOptions) (*Release, error) {
	rel, _, err := d.check(ctx, o)
	return rel, err
}

func (d *Device) check(ctx context.Context, o ApplyOptions) (*Release, source, error) {
	ref, tag, err := d.Source(o)
	if err != nil {
		return nil, nil, err
	}
	key, err := d.PublicKey(o)
	if err != nil {
		return nil, nil, err
	}
	rel, src, err := resolve(ctx, ref, tag, key, o.RegistryOptions)
	if err != nil {
		return nil, nil, err
	}
	c := rel.Config
	if d.Arch != "" && c.Arch != d.Arch {
		return nil, nil, refuse("%s is for %s, this system is %s", rel.Ref, c.Arch, d.Arch)
	}
	if c.Name != d.Name {
		return nil, nil, refuse("%s is variant %q, this system runs %q", rel.Ref, c.Name, d.Name)
	}
	if cmp := CompareVersions(c.Version, d.Version); cmp <= 0 && !o.AllowDowngrade {
		if cmp == 0 {
			return nil, nil, refuse("version %s is already running", c.Version)
		}
		return nil, nil, refuse("version %s is older than the running %s (use --allow-downgrade to install it anyway)", c.Version, d.Version)
	}
	if err := d.runningGood(); err != nil {
		return nil, nil, err
	}
	if !o.RetryFailed {
		es, err := d.Entries()
		if err != nil {
			return nil, nil, err
		}
		if other := slotStatus(es, d.Other()); other.State == "failed" && other.Version == c.Version {
			return nil, nil, refuse("%s failed its boot tries on this machine: not installing it again (publish a newer release, or pass --retry-failed)", c.Version)
		}
	}
	t := d.Other()
	for _, p := range []struct {
		label string
		need  int64
	}{{"root-" + t, c.Slot.RootSize}, {"verity-" + t, c.Slot.VeritySize}} {
		part, err := d.Disk.Partition(p.label)
		if err != nil {
			return nil, nil, err
		}
		if p.need > part.Size {
			return nil, nil, refuse("%s needs %d bytes in %s, which holds %d: the slot cannot grow, so this release cannot be installed on this disk", rel.Ref, p.need, p.label, part.Size)
		}
	}
	return rel, src, nil
}

// runningGood refuses an update while the running slot is still on trial: installing over the other
// slot would remove the fallback.
func (d *Device) runningGood() error {
	if p, ok := d.onTrial(); ok {
		return refuse("the running slot %s is still on trial (%s): run `osbuild update mark-good` first", strings.ToUpper(d.Running), p)
	}
	return nil
}

// onTrial says whether the running slot's boot is still counted: on the running system, the entry
// systemd-boot counted (LoaderBootCountPath) still has its counter; offline, the running slot's entry has.
// The variable stays set for the whole boot, so the file on the ESP is what tells.
func (d *Device) onTrial() (string, bool) {
	if d.Online {
		if v, err := readEFIString(d.opts.EFIVars, "LoaderBootCountPath"); err == nil && v != "" {
			if p, err := bootCountEntry(v); err == nil {
				if _, err := d.ESP.Stat(p); err == nil {
					return p, true
				}
			}
		}
	}
	es, err := d.Entries()
	if err != nil {
		return "", false
	}
	for _, e := range slotEntries(es, d.Running) {
		if e.Counting {
			return e.FileName, true
		}
	}
	return "", false
}

// Apply installs a release into the slot that is not running, in DESIGN.md's order of writes, so that a
// power loss at any point leaves a system that boots: the running slot and its entry are never touched,
// and the new entry appears last, in one rename.
func (d *Device) Apply(ctx context.Context, o ApplyOptions) (*Applied, error) {
	logf := func(format string, args ...any) {
		if o.Log != nil {
			fmt.Fprintf(o.Log, format+"\n", args...)
		}
	}
	// 1: resolve, verify the signature and the config.
	rel, src, err := d.check(ctx, o)
	if err != nil {
		return nil, err
	}
	c, t := rel.Config, d.Other()
	logf("update: %s %s (%s) → slot %s", c.Name, c.Version, rel.Digest, strings.ToUpper(t))
	res := &Applied{Slot: t, Version: c.Version, Digest: rel.Digest}

	st, statePath := d.loadState(rel.Digest, t)

	// 2: the target slot's entry goes first: from here on, nothing boots the slot being overwritten.
	if err := d.removeSlotEntries(t); err != nil {
		return nil, err
	}

	// 3: stream root and verity into the target partitions, hashing as they go.
	for _, l := range []struct{ label, digest string }{{"root-" + t, c.Layers.Root}, {"verity-" + t, c.Layers.Verity}} {
		desc, _ := rel.layer(l.digest, map[bool]string{true: RootMediaType, false: VerityMediaType}[strings.HasPrefix(l.label, "root")])
		resumed, fetched, err := d.writeLayer(ctx, src, desc, l.label, st, statePath, o)
		res.Resumed += resumed
		res.Downloaded += fetched
		if err != nil {
			return res, err
		}
		logf("update: %s: %d bytes written (%d resumed)", l.label, desc.Size, resumed)
	}

	// 4: recompute the verity tree over what is on disk and compare with the signed root hash.
	if err := d.verifySlot(t, c); err != nil {
		d.dropState(statePath)
		return res, err
	}
	logf("update: slot %s verified against root hash %s", strings.ToUpper(t), c.Verity.RootHash)

	// 5: kernel and initrd, then the entry, last, through a temporary name.
	for _, f := range []struct{ digest, mt, path string }{
		{c.Layers.Kernel, KernelMediaType, "osbuild/" + t + "/vmlinuz"},
		{c.Layers.Initrd, InitrdMediaType, "osbuild/" + t + "/initrd"},
	} {
		desc, err := rel.layer(f.digest, f.mt)
		if err != nil {
			return res, err
		}
		if err := d.writeESPFile(ctx, src, desc, f.path); err != nil {
			return res, err
		}
	}
	cmdline, err := d.cmdline(t, c)
	if err != nil {
		return res, err
	}
	entry := boot.SlotEntry(c.Name, c.Version, t, cmdline, boot.DefaultTries)
	data, err := entry.Render()
	if err != nil {
		return res, err
	}
	final := entry.FileName()
	tmp := final + ".tmp"
	if err := d.ESP.WriteFile(tmp, data); err != nil {
		return res, fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := d.ESP.Sync(); err != nil {
		return res, err
	}
	if err := d.ESP.Rename(tmp, final); err != nil {
		return res, fmt.Errorf("rename %s: %w", tmp, err)
	}
	if err := d.ESP.Sync(); err != nil {
		return res, err
	}
	res.Entry = final
	d.dropState(statePath)
	logf("update: wrote %s", final)

	if CompareVersions(c.Version, d.Version) <= 0 {
		// An older entry sorts after the running one and would never be tried: boot it once by name.
		if !d.Online {
			logf("update: %s is not newer than %s: on the device, run `osbuild update rollback` or boot it from the menu (no EFI variables offline)", c.Version, d.Version)
		} else {
			id := oneShotID(filepath.Base(final))
			if err := writeEFIString(d.opts.EFIVars, "LoaderEntryOneShot", id); err != nil {
				return res, fmt.Errorf("set LoaderEntryOneShot: %w; the update is installed but the next boot keeps %s", err, d.Version)
			}
			res.OneShot = true
			logf("update: the next boot (only) starts %s", id)
		}
	}
	return res, nil
}

// cmdline makes the target slot's kernel command line the way the build makes slot A's: boot.Cmdline
// with the slot's own PARTUUIDs and the variant's parts from the signed config.
func (d *Device) cmdline(t string, c *Config) (string, error) {
	root, err := d.Disk.Partition("root-" + t)
	if err != nil {
		return "", err
	}
	ver, err := d.Disk.Partition("verity-" + t)
	if err != nil {
		return "", err
	}
	return boot.Cmdline(boot.CmdlineOptions{
		Verity: boot.Verity{
			DataPartUUID: root.UUID, HashPartUUID: ver.UUID, DataBlocks: c.Verity.DataBlocks,
			DataBlockSize: c.Verity.DataBlockSize, HashBlockSize: c.Verity.HashBlockSize,
			Algorithm: c.Verity.Algorithm, RootHash: c.Verity.RootHash, Salt: c.Verity.Salt,
		},
		DataMount: c.Cmdline.DataMount,
		Init:      c.Cmdline.Init,
		Extra:     append([]string{boot.SlotParam + "=" + t}, c.Cmdline.Extra...),
	})
}

func (d *Device) removeSlotEntries(slot string) error {
	es, err := d.ESP.ReadDir(partitions.EntriesDir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	removed := false
	for _, de := range es {
		n := de.Name()
		id, _, _, _, err := bootentry.ParseFileName(strings.TrimSuffix(n, ".tmp"))
		if err != nil || id != "osbuild-"+slot {
			continue
		}
		if err := d.ESP.Remove(partitions.EntriesDir + "/" + n); err != nil {
			return fmt.Errorf("remove the old entry %s: %w", n, err)
		}
		removed = true
	}
	if removed {
		return d.ESP.Sync()
	}
	return nil
}

// writeLayer streams one layer into a partition from where an earlier run stopped. What is already on
// disk is read back into the hash, so the final digest check covers every byte of the partition.
func (d *Device) writeLayer(ctx context.Context, src source, desc Descriptor, label string, st *state, statePath string, o ApplyOptions) (resumed, fetched int64, err error) {
	part, err := d.Disk.Partition(label)
	if err != nil {
		return 0, 0, err
	}
	if desc.Size > part.Size {
		return 0, 0, refuse("%s: %d bytes do not fit %s (%d)", desc.Digest, desc.Size, label, part.Size)
	}
	f := d.Disk.File()
	h := sha256.New()
	done := st.Done[desc.Digest]
	if done < 0 || done > desc.Size {
		done = 0
	}
	if done > 0 {
		if _, err := io.CopyBuffer(h, io.NewSectionReader(f, part.Start, done), make([]byte, copyBuffer)); err != nil {
			return 0, 0, fmt.Errorf("re-read %s: %w", label, err)
		}
	}
	resumed = done
	if done < desc.Size {
		rc, err := src.blob(ctx, desc.Digest, done)
		if err != nil {
			return resumed, 0, fmt.Errorf("%w; run apply again to resume", err)
		}
		defer rc.Close()
		buf := make([]byte, copyBuffer)
		sinceSync := int64(0)
		for done < desc.Size {
			n, rerr := io.ReadFull(rc, buf[:min(int64(len(buf)), desc.Size-done)])
			if n > 0 {
				if _, err := f.WriteAt(buf[:n], part.Start+done); err != nil {
					return resumed, fetched, fmt.Errorf("write %s: %w", label, err)
				}
				h.Write(buf[:n])
				done += int64(n)
				fetched += int64(n)
				sinceSync += int64(n)
				if o.Progress != nil {
					o.Progress(label, done, desc.Size)
				}
				if sinceSync >= checkpointBytes {
					sinceSync = 0
					d.checkpoint(st, statePath, desc.Digest, done)
				}
			}
			if rerr != nil && done < desc.Size {
				d.checkpoint(st, statePath, desc.Digest, done)
				return resumed, fetched, fmt.Errorf("download %s into %s stopped at %d of %d bytes: %w; run apply again to resume", desc.Digest, label, done, desc.Size, rerr)
			}
			if err := ctx.Err(); err != nil {
				d.checkpoint(st, statePath, desc.Digest, done)
				return resumed, fetched, err
			}
		}
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != desc.Digest {
		d.dropState(statePath)
		return resumed, fetched, fmt.Errorf("%s: what was written hashes to %s, not %s (corrupt download or disk): run apply again to start over", label, got, desc.Digest)
	}
	// Zero the rest of the last 4 KiB block: verity hashes a partial block as zero-padded, and an older,
	// longer image may have left bytes there.
	if pad := (4096 - desc.Size%4096) % 4096; pad > 0 {
		if _, err := f.WriteAt(make([]byte, pad), part.Start+desc.Size); err != nil {
			return resumed, fetched, err
		}
	}
	d.checkpoint(st, statePath, desc.Digest, desc.Size)
	return resumed, fetched, nil
}

// verifySlot recomputes the hash tree over the slot as it is on disk and compares it with the signed
// root hash, and checks the superblock's parameters against the config.
func (d *Device) verifySlot(t string, c *Config) error {
	rootR, err := d.Disk.Reader("root-" + t)
	if err != nil {
		return err
	}
	verR, err := d.Disk.Reader("verity-" + t)
	if err != nil {
		return err
	}
	sb, err := verity.ReadSuperblock(verR)
	if err != nil {
		return fmt.Errorf("slot %s: verity superblock: %w", t, err)
	}
	if sb.DataBlocks != c.Verity.DataBlocks || hex.EncodeToString(sb.Salt) != strings.ToLower(c.Verity.Salt) && !(c.Verity.Salt == "-" && len(sb.Salt) == 0) {
		return fmt.Errorf("slot %s: the verity superblock (%d blocks) does not match the release config (%d blocks)", t, sb.DataBlocks, c.Verity.DataBlocks)
	}
	rh, err := hex.DecodeString(c.Verity.RootHash)
	if err != nil {
		return fmt.Errorf("config root hash: %w", err)
	}
	bs := int64(sb.DataBlockSize)
	if err := verity.VerifyWorkers(io.NewSectionReader(rootR, 0, int64(sb.DataBlocks)*bs), verR, rh, 1); err != nil {
		return fmt.Errorf("slot %s does not verify against the release's root hash: %w; run apply again", t, err)
	}
	return nil
}

// writeESPFile copies a small layer (kernel, initrd) to the ESP and checks its digest on the way.
func (d *Device) writeESPFile(ctx context.Context, src source, desc Descriptor, p string) error {
	rc, err := src.blob(ctx, desc.Digest, 0)
	if err != nil {
		return fmt.Errorf("%w; run apply again", err)
	}
	defer rc.Close()
	// A file left by an interrupted run may be half-allocated: remove it rather than write over it, so that
	// the new file gets a fresh cluster chain.
	if _, err := d.ESP.Stat(p); err == nil {
		if err := d.ESP.Remove(p); err != nil {
			return fmt.Errorf("remove the old %s: %w", p, err)
		}
	}
	h := sha256.New()
	lr := &io.LimitedReader{R: rc, N: desc.Size}
	if err := d.ESP.WriteFileFrom(p, io.TeeReader(lr, h)); err != nil {
		return fmt.Errorf("write %s to the ESP: %w", p, err)
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != desc.Digest || lr.N != 0 {
		d.ESP.Remove(p)
		return fmt.Errorf("%s: download does not match %s: run apply again", p, desc.Digest)
	}
	if err := d.ESP.Sync(); err != nil {
		return err
	}
	// Read it back through the file system: the firmware will, and a kernel or initrd it cannot read
	// must never get an entry.
	back, err := d.ESP.ReadFile(p)
	if err != nil || sha256Digest(back) != desc.Digest {
		return fmt.Errorf("%s on the ESP does not read back as written (%v): run apply again", p, err)
	}
	return nil
}

func (d *Device) stateDir() string {
	if d.opts.StateDir != "" {
		return d.opts.StateDir
	}
	if d.Online {
		return filepath.Join(d.opts.Root, StateDir)
	}
	if c, err := os.UserCacheDir(); err == nil {
		return filepath.Join(c, "osbuild", "update")
	}
	return filepath.Join(os.TempDir(), "osbuild-update")
}

// loadState returns the progress of an earlier apply of the same release into the same slot of the
// same disk, or a fresh state.
func (d *Device) loadState(digest, slot string) (*state, string) {
	p := filepath.Join(d.stateDir(), "state-"+d.Disk.Layout.DiskGUID+".json")
	fresh := &state{Digest: digest, Disk: d.Disk.Layout.DiskGUID, Slot: slot, Done: map[string]int64{}}
	data, err := os.ReadFile(p)
	if err != nil {
		return fresh, p
	}
	var st state
	if json.Unmarshal(data, &st) != nil || st.Digest != digest || st.Slot != slot || st.Disk != d.Disk.Layout.DiskGUID || st.Done == nil {
		return fresh, p
	}
	return &st, p
}

// checkpoint makes the written bytes durable, then records them: the state never claims more than
// the disk holds.
func (d *Device) checkpoint(st *state, p, digest string, done int64) {
	if err := d.Disk.File().Sync(); err != nil {
		return
	}
	st.Done[digest] = done
	data, _ := json.Marshal(st)
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return
	}
	tmp := p + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	f.Close()
	if err == nil {
		os.Rename(tmp, p)
	}
}

func (d *Device) dropState(p string) { os.Remove(p) }
