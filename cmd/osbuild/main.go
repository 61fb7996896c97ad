// Command osbuild builds immutable OS images from OCI images and updates them in place.
// It is a thin layer over the top-level packages: each subcommand parses flags and calls one of them.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

var rootCmd = &cobra.Command{
	Use:           "osbuild",
	Short:         "Build immutable, verified A/B OS images from OCI images",
	SilenceUsage:  true,
	SilenceErrors: true,
}

// Subcommands register themselves from their own files with addCommand, so that each stays beside
// the flags it owns.
func addCommand(c *cobra.Command) { rootCmd.AddCommand(c) }

func main() {
	if err := rootCmd.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "osbuild:", err)
		os.Exit(1)
	}
}
