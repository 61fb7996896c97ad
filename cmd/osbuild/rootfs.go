package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"osbuild.dev/osbuild/atomicfile"
	"osbuild.dev/osbuild/builder"
	"osbuild.dev/osbuild/layers"
	"osbuild.dev/osbuild/variant"
)

func init() {
	addCommand(&cobra.Command{
		Use:   "validate VARIANT",
		Short: "Check a variant spec and print it with defaults filled in",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			spec, err := variant.Load(args[0])
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: ok (%s %s for %s, %d layers, %d files)\n", args[0], spec.Name, spec.Version, spec.Arch, len(spec.Layers), len(spec.Files))
			return nil
		},
	})

	var out, manifest string
	rootfs := &cobra.Command{
		Use:   "rootfs VARIANT -o ROOT.tar",
		Short: "Merge a variant's layers into one root and write it as a reproducible PAX tar",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if out == "" {
				return fmt.Errorf("rootfs needs -o FILE (use -o - for standard output)")
			}
			spec, err := variant.Load(args[0])
			if err != nil {
				return err
			}
			root, err := builder.BuildRoot(cmd.Context(), spec, buildOptions())
			if err != nil {
				return err
			}
			defer root.Close()
			for _, in := range root.Inputs {
				if in.Pinned != "" {
					fmt.Fprintf(os.Stderr, "%s → %s\n", in.Ref, in.Pinned)
				}
			}
			if manifest != "" {
				data, err := json.MarshalIndent(root.Inputs, "", "  ")
				if err != nil {
					return err
				}
				if err := atomicfile.Write(manifest, func(w io.Writer) error { _, err := w.Write(append(data, '\n')); return err }); err != nil {
					return err
				}
			}
			if out == "-" {
				return layers.WriteTar(os.Stdout, root.Tree)
			}
			return atomicfile.Write(out, func(w io.Writer) error { return layers.WriteTar(w, root.Tree) })
		},
	}
	rootfs.Flags().StringVarP(&out, "output", "o", "", "tar file to write (- for standard output)")
	rootfs.Flags().StringVar(&manifest, "manifest", "", "also write the resolved inputs (pinned digests) as JSON to this file")
	addCommand(rootfs)
}
