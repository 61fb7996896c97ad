package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"osbuild.dev/osbuild/builder"
	upd "osbuild.dev/osbuild/update"
	"osbuild.dev/osbuild/variant"
)

func registryOptions() upd.RegistryOptions {
	return upd.RegistryOptions{Insecure: global.insecure}
}

// buildManifestPath finds the build manifest (NAME-VERSION.json) in an output folder, or returns a
// manifest path as given.
func buildManifestPath(arg string) (string, error) {
	st, err := os.Stat(arg)
	if err != nil {
		return "", err
	}
	if !st.IsDir() {
		return arg, nil
	}
	ms, _ := filepath.Glob(filepath.Join(arg, "*.json"))
	var found []string
	for _, m := range ms {
		if _, err := upd.ReadManifest(m); err == nil {
			found = append(found, m)
		}
	}
	sort.Strings(found)
	switch len(found) {
	case 0:
		return "", fmt.Errorf("%s holds no build (NAME-VERSION.json): run osbuild build first", arg)
	case 1:
		return found[0], nil
	}
	return "", fmt.Errorf("%s holds several builds (%s): pass the NAME-VERSION.json to publish", arg, strings.Join(found, ", "))
}

func init() {
	var to, channel, keyPath, outDir string
	cmd := &cobra.Command{
		Use:   "publish OUTDIR|NAME-VERSION.json|VARIANT --to HOST/REPO --key cosign.key",
		Short: "Push a build as a signed update release (OCI artifact) tagged with its version and channel",
		Long: `Push a build as an OCI 1.1 artifact (artifactType application/vnd.osbuild.update.v1): a config
describing the release and the root squashfs, verity tree, kernel and initrd as uncompressed layers. It is
signed the way cosign signs (tag sha256-DIGEST.sig), so that ` + "`cosign verify --key cosign.pub --insecure-ignore-tlog`" + `
accepts it, then tagged with its version and channel (default: the variant's update.channel, else stable).
Given a VARIANT file, it is built first (into -o OUTDIR, default a temporary folder).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if to == "" {
				return fmt.Errorf("publish: --to HOST/REPO is required")
			}
			arg := args[0]
			if st, err := os.Stat(arg); err == nil && !st.IsDir() && (strings.HasSuffix(arg, ".yaml") || strings.HasSuffix(arg, ".yml")) {
				spec, err := variant.Load(arg)
				if err != nil {
					return err
				}
				if channel == "" && spec.Update != nil {
					channel = spec.Update.Channel
				}
				if outDir == "" {
					if outDir, err = os.MkdirTemp("", "osbuild-publish-"); err != nil {
						return err
					}
					defer os.RemoveAll(outDir)
				}
				if err := os.MkdirAll(outDir, 0o755); err != nil {
					return err
				}
				m, err := builder.Build(cmd.Context(), spec, builder.BuildOptions{Options: buildOptions(), OutDir: outDir, Log: os.Stderr})
				if err != nil {
					return err
				}
				arg = filepath.Join(outDir, m.Name+"-"+m.Version+".json")
			}
			mp, err := buildManifestPath(arg)
			if err != nil {
				return fmt.Errorf("publish: %w", err)
			}
			if channel == "" {
				channel = "stable"
			}
			o := upd.PublishOptions{RegistryOptions: registryOptions(), To: to, Channel: channel, Log: os.Stderr}
			if keyPath != "" {
				if o.Signer, err = upd.LoadPrivateKey(keyPath, password); err != nil {
					return err
				}
			} else {
				fmt.Fprintln(os.Stderr, "osbuild: publish: no --key: the release is unsigned and devices will refuse it")
			}
			p, err := upd.Publish(cmd.Context(), mp, o)
			if err != nil {
				return fmt.Errorf("publish: %w", err)
			}
			fmt.Fprintln(cmd.OutOrStdout(), p.Ref)
			return nil
		},
	}
	cmd.Flags().StringVar(&to, "to", "", "registry repository HOST/REPO")
	cmd.Flags().StringVar(&channel, "channel", "", "channel tag besides the version (default the variant's, else stable)")
	cmd.Flags().StringVar(&keyPath, "key", "", "cosign private key (osbuild key generate)")
	cmd.Flags().StringVarP(&outDir, "output", "o", "", "with a VARIANT: where to build it")
	addCommand(cmd)

	var pubPath string
	var asJSON bool
	verify := &cobra.Command{
		Use:   "verify REF --key cosign.pub",
		Short: "Check a release's signature and config offline (REF: HOST/REPO[:TAG|@DIGEST] or oci:DIR[:TAG])",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if pubPath == "" {
				return fmt.Errorf("verify: --key cosign.pub is required")
			}
			key, err := upd.LoadPublicKey(pubPath)
			if err != nil {
				return err
			}
			rel, err := upd.Resolve(cmd.Context(), args[0], "stable", key, registryOptions())
			if err != nil {
				return fmt.Errorf("verify: %w", err)
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(rel)
			}
			c := rel.Config
			fmt.Fprintf(cmd.OutOrStdout(), "%s: signature OK\n  digest %s\n  %s %s (%s), root hash %s\n", args[0], rel.Digest, c.Name, c.Version, c.Arch, c.Verity.RootHash)
			return nil
		},
	}
	verify.Flags().StringVar(&pubPath, "key", "", "cosign public key")
	verify.Flags().BoolVar(&asJSON, "json", false, "print the manifest and config as JSON")
	addCommand(verify)
}
