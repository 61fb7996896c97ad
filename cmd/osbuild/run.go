package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"osbuild.dev/osbuild/vm"
)

func init() {
	var (
		memory   string
		timeout  time.Duration
		expect   []string
		cfg      vm.Config
		noNet    bool
		snapshot bool
	)
	c := &cobra.Command{
		Use:   "run [IMAGE]",
		Short: "Boot an image in QEMU (UEFI, serial console on stdout)",
		Long: `Boot an image in QEMU with OVMF, a virtio disk and the serial console on stdout.

The UEFI variables live in IMAGE.vars beside the image, so boot counting state persists between runs.
With --expect, exit 0 as soon as the console has matched every pattern in order (QEMU is then stopped),
and 1 when the timeout passes or QEMU exits first. Without it, run until the guest powers off.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 {
				cfg.Image = args[0]
			}
			if cfg.Image == "" && cfg.Kernel == "" {
				return errors.New("run: give an IMAGE or --kernel")
			}
			mib, err := parseMiB(memory)
			if err != nil {
				return fmt.Errorf("run: --memory %s: %w", memory, err)
			}
			cfg.MemoryMiB = mib
			cfg.Expect = expect
			cfg.Network = !noNet
			cfg.Snapshot = snapshot
			cfg.Console = os.Stdout
			if len(expect) == 0 {
				cfg.Stdin = os.Stdin
			} else if timeout > 0 {
				cfg.Timeout = timeout
			}
			if cfg.Image == "" && !cfg.BIOS && cfg.VarsFile == "" {
				cfg.BIOS = true // nothing to keep UEFI variables beside
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			res, err := vm.Run(ctx, cfg)
			if err != nil {
				return fmt.Errorf("run: %w", err)
			}
			if len(expect) > 0 {
				fmt.Fprintf(os.Stderr, "\nosbuild: run: console matched after %s (%s)\n", res.At[len(res.At)-1].Round(time.Millisecond), res.Accel)
			}
			return nil
		},
	}
	f := c.Flags()
	f.StringVar(&memory, "memory", "256M", "guest memory (M or G suffix)")
	f.DurationVar(&timeout, "timeout", 120*time.Second, "with --expect: give up after this long")
	f.StringArrayVar(&expect, "expect", nil, "regular expression the console must match (repeat for a sequence)")
	f.StringVar(&cfg.Kernel, "kernel", "", "boot this kernel directly instead of the image's boot loader")
	f.StringVar(&cfg.Initrd, "initrd", "", "initramfs for --kernel")
	f.StringVar(&cfg.Append, "append", "", "kernel command line for --kernel")
	f.BoolVar(&cfg.NoReboot, "no-reboot", false, "exit when the guest reboots")
	f.BoolVar(&cfg.BIOS, "bios", false, "boot with SeaBIOS instead of OVMF (direct kernel boot only)")
	f.StringVar(&cfg.VarsFile, "vars", "", "UEFI variables file (default IMAGE.vars)")
	f.StringVar(&cfg.Accel, "accel", "", "kvm or tcg (default: kvm when it works)")
	f.BoolVar(&noNet, "no-network", false, "no network card")
	f.BoolVar(&snapshot, "snapshot", false, "discard writes to the image")
	addCommand(c)
}

func parseMiB(s string) (int, error) {
	mult := 1
	switch {
	case strings.HasSuffix(s, "G"):
		mult, s = 1024, strings.TrimSuffix(s, "G")
	case strings.HasSuffix(s, "M"):
		s = strings.TrimSuffix(s, "M")
	}
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 {
		return 0, errors.New("want a size such as 256M or 1G")
	}
	return n * mult, nil
}
