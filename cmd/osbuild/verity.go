package main

import (
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"osbuild.dev/osbuild/verity"
)

func init() {
	cmd := &cobra.Command{
		Use:   "verity",
		Short: "Create and check dm-verity hash trees (veritysetup format 1)",
	}

	var saltHex, seed, uuid, alg string
	format := &cobra.Command{
		Use:   "format DATA HASH",
		Short: "Hash DATA and write the hash device (superblock + tree) to HASH; print the root hash",
		Long: `Hash DATA and write the hash device (superblock + tree) to HASH, as veritysetup format does with
4096-byte blocks. Without --salt the salt is derived from --seed, or from the data's size and its first
and last MiB, so two runs give identical bytes. HASH is written under a temporary name and renamed, unless
it is a block device.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts := verity.Options{Hash: alg}
			if cmd.Flags().Changed("salt") {
				if saltHex == "-" {
					opts.Salt = []byte{}
				} else {
					s, err := hex.DecodeString(saltHex)
					if err != nil {
						return fmt.Errorf("--salt %q: want hex digits, or - for no salt: %w", saltHex, err)
					}
					opts.Salt = s
				}
			}
			if cmd.Flags().Changed("seed") {
				opts.Seed = []byte(seed)
			}
			if uuid != "" {
				u, err := verity.ParseUUID(uuid)
				if err != nil {
					return err
				}
				opts.UUID = u
			}
			res, err := verityFormat(args[0], args[1], opts)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if res.DataBlocks*uint64(res.DataBlockSize) != uint64(dataSizeOf(args[0])) {
				fmt.Fprintf(cmd.ErrOrStderr(), "osbuild: note: %s is not a whole number of %d-byte blocks: it was hashed as zero-padded; "+
					"the device the kernel reads must hold zeros up to the block boundary (veritysetup verify needs the padded file)\n",
					args[0], res.DataBlockSize)
			}
			fmt.Fprintf(w, "Root hash:   %s\n", res.RootHashHex())
			fmt.Fprintf(w, "Salt:        %s\n", res.SaltHex())
			fmt.Fprintf(w, "Data blocks: %d\n", res.DataBlocks)
			fmt.Fprintf(w, "Hash size:   %d\n", res.HashSize)
			fmt.Fprintf(w, "Algorithm:   %s\n", res.Algorithm)
			fmt.Fprintf(w, "UUID:        %s\n", verity.FormatUUID(res.UUID))
			return nil
		},
	}
	format.Flags().StringVar(&saltHex, "salt", "", "salt in hex (- for none); default: derived, deterministic")
	format.Flags().StringVar(&seed, "seed", "", "derive the salt from this string (e.g. variant and version)")
	format.Flags().StringVar(&uuid, "uuid", "", "UUID of the hash device; default: derived from the salt")
	format.Flags().StringVar(&alg, "hash", "sha256", "hash algorithm: sha256 or sha512")

	verify := &cobra.Command{
		Use:   "verify DATA HASH ROOTHASH",
		Short: "Check DATA against the hash device and a trusted root hash; name the first bad block",
		Args:  cobra.ExactArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			root, err := hex.DecodeString(args[2])
			if err != nil {
				return fmt.Errorf("root hash %q: want hex digits: %w", args[2], err)
			}
			data, err := os.Open(args[0])
			if err != nil {
				return err
			}
			defer data.Close()
			hash, err := os.Open(args[1])
			if err != nil {
				return err
			}
			defer hash.Close()
			if err := verity.Verify(data, hash, root); err != nil {
				var ce *verity.CorruptionError
				if errors.As(err, &ce) && !ce.HashBlock {
					return fmt.Errorf("%s: %w (byte offset %d)", args[0], err, int64(ce.Block)*verity.BlockSize)
				}
				return fmt.Errorf("%s with %s: %w", args[0], args[1], err)
			}
			fmt.Fprintln(cmd.OutOrStdout(), "Verification OK")
			return nil
		},
	}
	cmd.AddCommand(format, verify)
	addCommand(cmd)
}

func dataSizeOf(path string) int64 {
	f, err := os.Open(path)
	if err != nil {
		return -1
	}
	defer f.Close()
	n, _ := f.Seek(0, io.SeekEnd)
	return n
}

// verityFormat writes the hash device next to its final name and renames it at the end, so an interrupted
// run never leaves a truncated tree under the real name. A block device is written in place.
func verityFormat(dataPath, hashPath string, opts verity.Options) (*verity.Result, error) {
	data, err := os.Open(dataPath)
	if err != nil {
		return nil, err
	}
	defer data.Close()
	// Seek, not Stat: it gives the size of block devices too.
	size, err := data.Seek(0, io.SeekEnd)
	if err != nil {
		return nil, fmt.Errorf("%s: finding the size: %w", dataPath, err)
	}

	if st, err := os.Stat(hashPath); err == nil && st.Mode()&os.ModeDevice != 0 {
		f, err := os.OpenFile(hashPath, os.O_WRONLY, 0)
		if err != nil {
			return nil, err
		}
		res, err := verity.FormatAt(data, size, f, opts)
		if err == nil {
			err = f.Sync()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		return res, err
	}

	tmp, err := os.CreateTemp(filepath.Dir(hashPath), "."+filepath.Base(hashPath)+".tmp-*")
	if err != nil {
		return nil, err
	}
	defer os.Remove(tmp.Name()) // a no-op once renamed
	res, err := verity.FormatAt(data, size, tmp, opts)
	if err == nil {
		err = tmp.Chmod(0o644)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", hashPath, err)
	}
	if err := os.Rename(tmp.Name(), hashPath); err != nil {
		return nil, err
	}
	return res, nil
}
