package main

import (
	"errors"

	"github.com/spf13/cobra"

	"osbuild.dev/osbuild/sysinit"
)

// The kernel starts the initramfs /init with no arguments, so it cannot go through a subcommand. This runs
// before main (package init functions do) and never returns when osbuild is the initramfs init.
func init() {
	if sysinit.IsInit() {
		sysinit.Main()
	}
	addCommand(&cobra.Command{
		Use:    "init",
		Short:  "Run as the initramfs /init (PID 1 only)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			if !sysinit.IsPID1() {
				return errors.New("init: only runs as PID 1 inside osbuild's initramfs")
			}
			sysinit.Main()
			return nil
		},
	})
}
