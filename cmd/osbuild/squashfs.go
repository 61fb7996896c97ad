package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"osbuild.dev/osbuild/builder"
	"osbuild.dev/osbuild/squashfs"
	"osbuild.dev/osbuild/tree"
)

func init() {
	var out, comp, blockSize string
	var level, workers int
	cmd := &cobra.Command{
		Use:   "squashfs SRC -o OUT",
		Short: "Write a tar, a directory or a variant's merged root as a squashfs image",
		Long: `Write SRC as a squashfs 4.0 image the kernel mounts. SRC is a tar (plain, gzip or zstd), a directory
(owners and xattrs kept) or a variant file (its layers are merged first). The output is reproducible: the
same SRC and flags give the same bytes, whatever --workers is. The image time is SOURCE_DATE_EPOCH when
set, otherwise the newest mtime in the tree. OUT is written under a temporary name and renamed when
complete.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if out == "" {
				return fmt.Errorf("squashfs needs -o OUT")
			}
			bs, err := parseSize(blockSize)
			if err != nil {
				return fmt.Errorf("--block-size %q: %w", blockSize, err)
			}
			opts := squashfs.Options{Compression: comp, Level: level, BlockSize: bs, Workers: workers}
			epoch, err := builder.EpochFromEnv()
			if err != nil {
				return err
			}
			if epoch != nil {
				opts.ModTime = time.Unix(*epoch, 0)
			}
			// Interrupted runs must not leave a half image behind, under any name.
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			t, err := builder.OpenSource(ctx, args[0], buildOptions())
			if err != nil {
				return err
			}
			defer t.Close()
			if term.IsTerminal(int(os.Stderr.Fd())) {
				opts.Progress = terminalProgress()
			}
			start := time.Now()
			st, err := writeSquashfs(ctx, out, t, opts)
			if opts.Progress != nil {
				fmt.Fprint(os.Stderr, "\r\033[K")
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "%s: %d bytes, %d inodes, %d files (%d duplicates), %.1f MB of content in %.1fs\n",
				out, st.Bytes, st.Inodes, st.Files, st.Duplicates, float64(st.DataBytes)/1e6, time.Since(start).Seconds())
			if st.XattrsSkipped > 0 {
				fmt.Fprintf(cmd.ErrOrStderr(), "osbuild: warning: %d xattrs outside user., trusted. and security. were not stored (squashfs cannot hold them)\n", st.XattrsSkipped)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVarP(&out, "output", "o", "", "image file to write")
	f.StringVar(&comp, "comp", "zstd", "compression: zstd, gzip, xz or lz4")
	f.IntVar(&level, "level", 0, "compression level (0: the compressor's default; zstd 15, gzip 9, lz4 fast)")
	f.StringVar(&blockSize, "block-size", "128K", "data block size, a power of two from 4K to 1M")
	f.IntVar(&workers, "workers", 0, "compressing goroutines (0: one per CPU)")
	addCommand(cmd)
}

// writeSquashfs writes under a temporary name beside out and renames only a complete, synced image.
func writeSquashfs(ctx context.Context, out string, t *tree.Tree, opts squashfs.Options) (st squashfs.Stats, err error) {
	f, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".tmp-*")
	if err != nil {
		return st, fmt.Errorf("create output: %w; check that the folder exists and is writable", err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if st, err = squashfs.Write(ctx, f, t, opts); err != nil {
		return st, err
	}
	if err = f.Chmod(0o644); err != nil {
		return st, err
	}
	if err = f.Sync(); err != nil {
		return st, fmt.Errorf("write %s: %w", out, err)
	}
	if err = f.Close(); err != nil {
		return st, fmt.Errorf("write %s: %w", out, err)
	}
	if err = os.Rename(f.Name(), out); err != nil {
		return st, err
	}
	return st, nil
}

// parseSize reads 131072, 128K, 128KiB or 1M.
func parseSize(s string) (uint32, error) {
	s = strings.TrimSpace(strings.ToUpper(s))
	mult := uint64(1)
	for suffix, m := range map[string]uint64{"K": 1 << 10, "KB": 1 << 10, "KIB": 1 << 10, "M": 1 << 20, "MB": 1 << 20, "MIB": 1 << 20} {
		if rest, ok := strings.CutSuffix(s, suffix); ok && rest != "" && rest[len(rest)-1] >= '0' && rest[len(rest)-1] <= '9' {
			s, mult = rest, m
			break
		}
	}
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil || n*mult > 1<<31 {
		return 0, fmt.Errorf("want a size such as 131072, 128K or 1M")
	}
	return uint32(n * mult), nil
}

// terminalProgress redraws one status line at most five times a second.
func terminalProgress() func(done, total int64) {
	var last time.Time
	return func(done, total int64) {
		if now := time.Now(); now.Sub(last) > 200*time.Millisecond || done == total {
			last = now
			pct := 100.0
			if total > 0 {
				pct = 100 * float64(done) / float64(total)
			}
			fmt.Fprintf(os.Stderr, "\r\033[Ksquashfs: %5.1f%% of %.1f MB", pct, float64(total)/1e6)
		}
	}
}
