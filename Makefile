# Every target works on a fresh Debian 12 machine after `.ci/setup` (which .ci/run calls).
GO      ?= go
BIN     := bin/osbuild
export CGO_ENABLED := 0

.PHONY: build test test-short fuzz bench demo clean
build:
	$(GO) build -trimpath -ldflags='-s -w' -o $(BIN) ./cmd/osbuild

# The full suite: real registry, real tools, QEMU boots. -short skips those for a quick edit loop.
test: build
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 75m ./...
	$(MAKE) fuzz

# A short run of each fuzz target beyond its seeds (one package per go test -fuzz call). Minimizing each
# new interesting input may take 60 s by default, which would eat the whole run: cap it by count.
FUZZTIME ?= 20s
FUZZ    = $(GO) test -run '^$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 50x
fuzz:
	$(FUZZ) -fuzz '^FuzzWrite$$' ./squashfs
	$(FUZZ) -fuzz '^FuzzEncode$$' ./internal/zstd
	$(FUZZ) -fuzz '^FuzzEncode$$' ./internal/deflate

test-short:
	$(GO) test -short ./...

bench: build
	@for b in bench/*.sh; do echo "== $$b"; bash $$b || exit 1; done

clean:
	rm -rf bin

# Build examples/minimal from Debian packages and boot it in QEMU until its init says it booted.
demo: build
	@[ -f examples/minimal/images/base/index.json ] || examples/minimal/mkimages.sh
	bin/osbuild build examples/minimal/variant.yaml -o out/minimal
	bin/osbuild run out/minimal/minimal-1.0.0.raw --timeout 180s --expect 'osbuild: booted 1.0.0 slot a'
