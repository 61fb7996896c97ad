package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"osbuild.dev/osbuild/partitions"
)

func init() {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "inspect IMAGE",
		Short: "Show an osbuild disk: partitions, slots, boot entries and their root hashes",
		Long: `Show an osbuild disk image or block device: the GPT partitions (number, label, type, start, size,
PARTUUID), what each A/B slot holds, loader.conf, and every loader entry with its boot-counting state
(tries left and done, from the +LEFT-DONE file name suffix), the slot it boots and the verity root hash
from its dm-mod.create= option. Read-only.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			d, err := partitions.Open(args[0], false)
			if err != nil {
				return err
			}
			defer d.Close()
			r, err := partitions.Inspect(d)
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(r)
			}
			printReport(cmd.OutOrStdout(), args[0], r)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON instead of text")
	addCommand(cmd)
}

var typeNames = map[string]string{
	partitions.TypeESP:         "esp",
	partitions.TypeLinuxData:   "linux-data",
	partitions.TypeRootAMD64:   "root-x86-64",
	partitions.TypeVerityAMD64: "root-x86-64-verity",
	partitions.TypeRootARM64:   "root-arm64",
	partitions.TypeVerityARM64: "root-arm64-verity",
}

func printReport(out io.Writer, name string, r *partitions.Report) {
	l := r.Layout
	fmt.Fprintf(out, "Disk %s: %d bytes (%.1f GiB), GUID %s", name, l.DiskSize, float64(l.DiskSize)/(1<<30), l.DiskGUID)
	if l.Arch != "" {
		fmt.Fprintf(out, ", arch %s", l.Arch)
	}
	fmt.Fprintln(out)

	fmt.Fprintln(out, "\nPartitions:")
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  #\tLABEL\tTYPE\tSTART\tSIZE\tPARTUUID")
	for _, p := range l.Partitions {
		t := typeNames[p.Type]
		if t == "" {
			t = p.Type
		}
		fmt.Fprintf(tw, "  %d\t%s\t%s\t%d\t%d (%s)\t%s\n", p.Number, p.Label, t, p.Start, p.Size, mib(p.Size), p.UUID)
	}
	tw.Flush()

	fmt.Fprintln(out, "\nSlots:")
	tw = tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	for _, s := range r.Slots {
		state := "empty (no verity superblock)"
		if s.Formatted {
			state = fmt.Sprintf("%s, %d data blocks, hash uuid %s", s.Algorithm, s.DataBlocks, s.HashUUID)
		}
		entries := "no entry"
		if len(s.Entries) > 0 {
			entries = "entries " + strings.Join(s.Entries, ", ")
		}
		fmt.Fprintf(tw, "  %s\t%s + %s\t%s\t%s\n", s.Name, s.Root, s.Verity, state, entries)
	}
	tw.Flush()

	if r.LoaderConf != "" {
		fmt.Fprintln(out, "\nloader/loader.conf:")
		for _, line := range strings.Split(strings.TrimRight(r.LoaderConf, "\n"), "\n") {
			fmt.Fprintf(out, "  %s\n", line)
		}
	}

	fmt.Fprintln(out, "\nBoot entries (loader/entries):")
	if len(r.Entries) == 0 {
		fmt.Fprintln(out, "  none")
	}
	for _, e := range r.Entries {
		tries := "marked good"
		if e.Counting {
			tries = fmt.Sprintf("%d tries left, %d done", e.TriesLeft, e.TriesDone)
		}
		fmt.Fprintf(out, "  %s  [%s: %s]\n", e.FileName, e.State, tries)
		tw = tabwriter.NewWriter(out, 0, 0, 1, ' ', 0)
		kv := func(k, v string) {
			if v != "" {
				fmt.Fprintf(tw, "    %s\t%s\n", k, v)
			}
		}
		kv("title:", e.Title)
		kv("version:", e.Version)
		kv("sort-key:", e.SortKey)
		kv("linux:", e.Linux)
		kv("initrd:", strings.Join(e.Initrd, " "))
		kv("slot:", e.Slot)
		if e.Verity != nil {
			match := "matches slot " + e.Slot + "'s hash tree"
			if !e.TreeMatches {
				match = "does NOT match slot " + e.Slot + "'s hash tree"
			}
			kv("root hash:", e.Verity.RootHash+" ("+match+")")
			kv("salt:", e.Verity.Salt)
			kv("data blocks:", fmt.Sprint(e.Verity.DataBlocks))
		}
		kv("problem:", e.Error)
		tw.Flush()
	}
	if len(r.Problems) > 0 {
		fmt.Fprintln(out, "\nProblems:")
		for _, p := range r.Problems {
			fmt.Fprintf(out, "  %s\n", p)
		}
	}
}

func mib(n int64) string {
	if n >= 1<<30 {
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	}
	return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
}
