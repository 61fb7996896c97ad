#!/usr/bin/env bash
# Builds the cosign CLI that the interop tests run (cosign verify must accept osbuild's signatures), once:
# the binary is cached under $(go env GOPATH)/bin, and a cold build from the module proxy takes ~5 minutes.
# Prints the binary's path. The tests find it there (or through $OSBUILD_COSIGN / PATH).
set -euo pipefail
version=${COSIGN_VERSION:-v2.6.5}
bindir=${OSBUILD_COSIGN_DIR:-$(go env GOPATH)/bin}
bin=$bindir/cosign
if [ -x "$bin" ] && "$bin" version 2>/dev/null | grep -q "${version#v}"; then
  echo "$bin"
  exit 0
fi
mkdir -p "$bindir"
# A temporary module cache would make every CI run cold: use the normal one. CGO off gives a static binary.
CGO_ENABLED=0 GOBIN="$bindir" GOFLAGS=-trimpath go install "github.com/sigstore/cosign/v2/cmd/cosign@$version" >&2
"$bin" version >/dev/null
echo "$bin"
