package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"osbuild.dev/osbuild/builder"
	"osbuild.dev/osbuild/variant"
)

func init() {
	var outDir string
	var quiet bool
	var formatList []string
	cmd := &cobra.Command{
		Use:   "build VARIANT -o OUTDIR",
		Short: "Build a bootable A/B disk image (and its root, verity tree, kernel, initrd and manifest)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			spec, err := variant.Load(args[0])
			if err != nil {
				return err
			}
			if err := os.MkdirAll(outDir, 0o755); err != nil {
				return fmt.Errorf("output folder: %w", err)
			}
			opts := builder.BuildOptions{Options: buildOptions(), OutDir: outDir, Formats: formatList}
			if !quiet {
				opts.Log = os.Stderr
			}
			m, err := builder.Build(cmd.Context(), spec, opts)
			if err != nil {
				return err
			}
			for _, o := range m.Outputs {
				fmt.Fprintln(cmd.OutOrStdout(), filepath.Join(outDir, o.File))
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&outDir, "output", "o", "out", "output folder")
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "print only the output paths")
	cmd.Flags().StringSliceVar(&formatList, "format", nil, "output formats, overriding the variant's outputs: raw, qcow2, vmdk, vhd, vhd-fixed")
	addCommand(cmd)
}
