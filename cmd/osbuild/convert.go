package main

import (
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"osbuild.dev/osbuild/formats"
)

func init() {
	var formatList []string
	var out string
	var compress bool
	var level, workers int
	cmd := &cobra.Command{
		Use:   "convert IMAGE.raw --format qcow2[,vmdk,vhd,vhd-fixed,raw] [-o OUT]",
		Short: "Convert a raw disk image to qcow2, VMDK (streamOptimized) or VHD (dynamic, or fixed for Azure)",
		Long: `Convert a raw disk image, as osbuild build writes it, to the formats hypervisors and clouds take:
  qcow2      qcow2 v3 (QEMU, OpenStack); --compress stores deflate-compressed clusters
  vmdk       VMDK streamOptimized (VMware, OVA, AWS VM import)
  vhd        VHD dynamic (Hyper-V)
  vhd-fixed  VHD fixed, size rounded up to a whole MiB (Azure)
  raw        a sparse copy
Holes and all-zero clusters are left out. With one format, OUT is the output file (default: IMAGE with the
format's extension; an existing folder takes IMAGE's name); with several it is a folder (default: IMAGE's).
Each output is written under a temporary name and renamed when complete. SOURCE_DATE_EPOCH sets the header
timestamps; UUIDs derive from the content: the same image gives the same bytes.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			src := args[0]
			var list []string
			for _, f := range formatList {
				f = strings.ToLower(strings.TrimSpace(f))
				if f == "" {
					continue
				}
				if f == "vpc" { // qemu-img's name for VHD
					f = formats.VHD
				}
				if !slices.Contains(formats.Names, f) {
					return &formats.UnknownFormatError{Format: f}
				}
				if !slices.Contains(list, f) {
					list = append(list, f)
				}
			}
			if len(list) == 0 {
				return fmt.Errorf("no --format given: use one or more of %s", strings.Join(formats.Names, ","))
			}
			epoch, err := formats.EpochFromEnv()
			if err != nil {
				return err
			}
			targets, err := formats.OutputPaths(src, list, out)
			if err != nil {
				return err
			}
			// On Ctrl-C or SIGTERM the conversion stops and its temporary file is removed.
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			for i, f := range list {
				opts := formats.Options{SourceDateEpoch: epoch, Compress: compress, Level: level, Workers: workers,
					Name: filepath.Base(targets[i])}
				if err := formats.ConvertFile(ctx, src, f, targets[i], opts); err != nil {
					return err
				}
				fmt.Fprintln(cmd.OutOrStdout(), targets[i])
			}
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringSliceVarP(&formatList, "format", "f", nil, "output formats, comma-separated: "+strings.Join(formats.Names, ","))
	fl.StringVarP(&out, "output", "o", "", "output file (one format) or folder (several)")
	fl.BoolVar(&compress, "compress", false, "qcow2: store deflate-compressed clusters (smaller, slower to write and to read)")
	fl.IntVar(&level, "level", 0, "deflate level 1-9 for compressed qcow2 and VMDK (default 6)")
	fl.IntVar(&workers, "workers", 0, "parallel compression workers (default: one per CPU)")
	addCommand(cmd)
}
