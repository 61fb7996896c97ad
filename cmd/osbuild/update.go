package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	upd "osbuild.dev/osbuild/update"
)

func init() {
	var (
		disk, from, channel, keyPath, stateDir      string
		allowDowngrade, retryFailed, reboot, asJSON bool
	)
	root := &cobra.Command{
		Use:   "update",
		Short: "The update agent: status, check, apply, mark-good, rollback (A/B with automatic rollback)",
		Long: `The update agent works on the running system's disk (found from the root's PARTUUID), or on --disk
(an image file or block device). Releases come from --from (HOST/REPO[:TAG|@DIGEST] or oci:DIR[:TAG], e.g.
after skopeo copy), else from the system's UPDATE_REPOSITORY at its channel, and must be signed with
/etc/osbuild/update.pub (or --key).

apply writes the slot that is not running and adds its boot entry with 3 tries (NAME+3.conf), last; the
next boot tries it, and mark-good (after the health checks) keeps it. If it never gets marked good,
systemd-boot boots the other slot again by itself.`,
	}
	pf := root.PersistentFlags()
	pf.StringVar(&disk, "disk", "", "disk image or block device (default: the running system's disk)")
	pf.BoolVar(&asJSON, "json", false, "print JSON")

	open := func(readOnly bool) (*upd.Device, error) {
		return upd.OpenDevice(upd.DeviceOptions{Disk: disk, ReadOnly: readOnly, StateDir: stateDir})
	}
	applyOptions := func() (upd.ApplyOptions, error) {
		o := upd.ApplyOptions{RegistryOptions: registryOptions(), From: from, Channel: channel, AllowDowngrade: allowDowngrade, RetryFailed: retryFailed, Log: os.Stderr}
		if keyPath != "" {
			k, err := upd.LoadPublicKey(keyPath)
			if err != nil {
				return o, err
			}
			o.Key = k
		}
		return o, nil
	}
	printJSON := func(w io.Writer, v any) error {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	releaseFlags := func(c *cobra.Command) {
		c.Flags().StringVar(&from, "from", "", "release: HOST/REPO[:TAG|@DIGEST] or oci:DIR[:TAG] (default the system's repository)")
		c.Flags().StringVar(&channel, "channel", "", "tag to use when --from names none (default the system's channel, else stable)")
		c.Flags().StringVar(&keyPath, "key", "", "public key releases must be signed with (default /etc/osbuild/update.pub)")
		c.Flags().BoolVar(&allowDowngrade, "allow-downgrade", false, "install an older or equal version too, and boot it once")
		c.Flags().BoolVar(&retryFailed, "retry-failed", false, "install a version that already failed its boot tries here")
	}

	status := &cobra.Command{
		Use:   "status",
		Short: "Show the running slot and version, the other slot, and staged or failed versions",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			d, err := open(true)
			if err != nil {
				return err
			}
			defer d.Close()
			st, err := d.Status()
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), st)
			}
			w := cmd.OutOrStdout()
			good := "marked good"
			if !st.MarkedGood {
				good = "on trial, not marked good yet"
			}
			fmt.Fprintf(w, "running: %s %s, slot %s (%s)\n", st.Name, st.Running.Version, strings.ToUpper(st.Running.Slot), good)
			other := st.Other.State
			if st.Other.Version != "" {
				other = fmt.Sprintf("%s %s (%s)", st.Other.Version, st.Other.State, st.Other.Entry)
			}
			fmt.Fprintf(w, "other:   slot %s: %s\n", strings.ToUpper(st.Other.Slot), other)
			if st.Staged != "" {
				fmt.Fprintf(w, "staged:  %s (%d tries left): boots next\n", st.Staged, st.Other.TriesLeft)
			}
			if st.Failed != "" {
				fmt.Fprintf(w, "failed:  %s (no tries left; the system rolled back)\n", st.Failed)
			}
			fmt.Fprintf(w, "next boot: %s\n", st.NextBoot)
			return nil
		},
	}

	check := &cobra.Command{
		Use:   "check",
		Short: "Resolve and verify a release against this system, writing nothing (exit 0: an update is available)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			d, err := open(true)
			if err != nil {
				return err
			}
			defer d.Close()
			o, err := applyOptions()
			if err != nil {
				return err
			}
			rel, err := d.Check(cmd.Context(), o)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), rel)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "update available: %s %s → %s (%s)\n", rel.Config.Name, d.Version, rel.Config.Version, rel.Digest)
			return nil
		},
	}
	releaseFlags(check)

	apply := &cobra.Command{
		Use:   "apply",
		Short: "Install a release into the other slot and stage it for the next boot",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			if os.Getenv("GOMEMLIMIT") == "" {
				// The root streams through one 1 MiB buffer, but the ESP code holds a whole kernel or
				// initrd in memory (and grows it by doubling): a soft limit makes the collector return
				// that garbage at once, keeping the agent's peak RSS near 50 MiB on small devices.
				debug.SetMemoryLimit(32 << 20)
			}
			d, err := open(false)
			if err != nil {
				return err
			}
			o, err := applyOptions()
			if err != nil {
				d.Close()
				return err
			}
			res, err := d.Apply(ctx, o)
			if cerr := d.Close(); err == nil && cerr != nil {
				err = fmt.Errorf("sync the disk: %w", cerr)
			}
			if err != nil {
				return err
			}
			if asJSON {
				printJSON(cmd.OutOrStdout(), res)
			} else {
				fmt.Fprintf(cmd.OutOrStdout(), "applied %s to slot %s (%s): it boots next\n", res.Version, strings.ToUpper(res.Slot), res.Entry)
			}
			if reboot {
				if disk != "" {
					return errors.New("--reboot works on the running system only")
				}
				syscall.Sync()
				return syscall.Reboot(syscall.LINUX_REBOOT_CMD_RESTART)
			}
			return nil
		},
	}
	releaseFlags(apply)
	apply.Flags().StringVar(&stateDir, "state-dir", "", "where an interrupted download's progress is kept (default /var/lib/osbuild/update, or the user cache with --disk)")
	apply.Flags().BoolVar(&reboot, "reboot", false, "reboot when the update is staged")

	markGood := &cobra.Command{
		Use:   "mark-good",
		Short: "Run the health checks, then keep this boot's slot (end its boot counting)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			d, err := open(false)
			if err != nil {
				return err
			}
			name, err := d.MarkGood(context.Background(), os.Stderr)
			if cerr := d.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
			if name == "" {
				fmt.Fprintln(cmd.OutOrStdout(), "this boot is not on trial: nothing to mark")
			} else {
				fmt.Fprintf(cmd.OutOrStdout(), "marked good: %s\n", name)
			}
			return nil
		},
	}

	rollback := &cobra.Command{
		Use:   "rollback",
		Short: "Boot the other slot next (and from then on)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			d, err := open(false)
			if err != nil {
				return err
			}
			next, err := d.Rollback()
			if cerr := d.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "rolled back: %s boots next\n", next)
			return nil
		},
	}
	root.AddCommand(status, check, apply, markGood, rollback)
	addCommand(root)
}
