// Command osbuild builds immutable OS images from OCI images and updates them in place.
// It is a thin layer over the top-level packages: each subcommand parses flags and calls one of them.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"osbuild.dev/osbuild/builder"
	"osbuild.dev/osbuild/layers"
)

var rootCmd = &cobra.Command{
	Use:           "osbuild",
	Short:         "Build immutable, verified A/B OS images from OCI images",
	SilenceUsage:  true,
	SilenceErrors: true,
}

var global struct {
	cache    string
	insecure []string
}

func init() {
	f := rootCmd.PersistentFlags()
	f.StringVar(&global.cache, "cache", "", "blob cache folder (default $XDG_CACHE_HOME/osbuild)")
	f.StringSliceVar(&global.insecure, "insecure-registry", nil, "registry HOST[:PORT] reached over plain HTTP (loopback always is)")
}

// buildOptions are the global flags as the builder takes them.
func buildOptions() builder.Options {
	return builder.Options{CacheDir: global.cache, Insecure: global.insecure, Progress: layers.NewProgress(os.Stderr)}
}

// Subcommands register themselves from their own files with addCommand, so that each stays beside
// the flags it owns.
func addCommand(c *cobra.Command) { rootCmd.AddCommand(c) }

func main() {
	// Ctrl-C cancels the context: stages stop and remove their temporary outputs instead of leaving them.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := rootCmd.ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "osbuild:", err)
		os.Exit(1)
	}
}
