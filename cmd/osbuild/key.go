package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	upd "osbuild.dev/osbuild/update"
)

// password returns the key password from OSBUILD_PASSWORD or COSIGN_PASSWORD (cosign's own variable,
// so that one CI secret serves both tools), else asks on the terminal.
func password(confirm bool) ([]byte, error) {
	for _, v := range []string{"OSBUILD_PASSWORD", "COSIGN_PASSWORD"} {
		if p, ok := os.LookupEnv(v); ok {
			return []byte(p), nil
		}
	}
	if !term.IsTerminal(int(os.Stdin.Fd())) {
		return nil, errors.New("no password: set OSBUILD_PASSWORD (or COSIGN_PASSWORD), or run on a terminal")
	}
	fmt.Fprint(os.Stderr, "Password for the private key: ")
	p, err := term.ReadPassword(int(os.Stdin.Fd()))
	fmt.Fprintln(os.Stderr)
	if err != nil {
		return nil, err
	}
	if confirm {
		fmt.Fprint(os.Stderr, "Again: ")
		p2, err := term.ReadPassword(int(os.Stdin.Fd()))
		fmt.Fprintln(os.Stderr)
		if err != nil {
			return nil, err
		}
		if string(p) != string(p2) {
			return nil, errors.New("the passwords differ")
		}
	}
	return p, nil
}

func init() {
	key := &cobra.Command{Use: "key", Short: "Signing keys for releases (cosign's format)"}
	var prefix string
	var force bool
	gen := &cobra.Command{
		Use:   "generate",
		Short: "Make PREFIX.key (encrypted private key) and PREFIX.pub, compatible with cosign",
		Long: `Make an ECDSA P-256 key pair in cosign's format: PREFIX.key is the private key, encrypted with the
password (scrypt + nacl/secretbox, "ENCRYPTED SIGSTORE PRIVATE KEY"), PREFIX.pub the public key. The
password comes from OSBUILD_PASSWORD or COSIGN_PASSWORD, or is asked on the terminal. Put PREFIX.pub in the
variant's update.public_key; keep PREFIX.key for osbuild publish (cosign sign --key also reads it).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			privPath, pubPath := prefix+".key", prefix+".pub"
			if !force {
				for _, p := range []string{privPath, pubPath} {
					if _, err := os.Stat(p); err == nil {
						return fmt.Errorf("%s exists: remove it or pass --force", p)
					}
				}
			}
			priv, pub, err := upd.GenerateKeys(password)
			if err != nil {
				return err
			}
			if err := os.WriteFile(privPath, priv, 0o600); err != nil {
				return err
			}
			if err := os.WriteFile(pubPath, pub, 0o644); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Private key written to %s\nPublic key written to %s\n", privPath, pubPath)
			return nil
		},
	}
	gen.Flags().StringVar(&prefix, "output-key-prefix", "cosign", "file name prefix of the key pair")
	gen.Flags().BoolVar(&force, "force", false, "overwrite existing key files")
	key.AddCommand(gen)
	addCommand(key)
}
