#!/usr/bin/env bash
# The update agent's apply of a large release from a local registry: a root of ~500 MB (random data, so
# squashfs cannot shrink it) streamed into slot B of a v1 disk, hashed, verity-checked and committed.
# Prints throughput and the agent's peak RSS. Target: peak RSS <= 64 MiB whatever the image size.
set -euo pipefail
cd "$(dirname "$0")/.."

SIZE_MB=${UPDATE_BENCH_MB:-500}
[ -x bin/osbuild ] || make build >/dev/null
for t in docker-registry /usr/bin/time; do
	command -v "$t" >/dev/null || { echo "bench/update.sh: $t is missing (apt-get install docker-registry time)" >&2; exit 1; }
done
[ -f examples/minimal/images/base/index.json ] || examples/minimal/mkimages.sh >/dev/null
ex=$(pwd)/examples/minimal
bin=$(pwd)/bin/osbuild

dir=$(mktemp -d "${TMPDIR:-/tmp}/osbuild-update-bench.XXXXXX")
reg_pid=
cleanup() { [ -n "$reg_pid" ] && kill "$reg_pid" 2>/dev/null; rm -rf "$dir"; }
trap cleanup EXIT

# A registry of our own on a free loopback port.
port=
for p in $(shuf -i 20000-60000 -n 20); do
	if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then port=$p; break; fi
done
[ -n "$port" ] || { echo "bench/update.sh: no free port" >&2; exit 1; }
cat >"$dir/registry.yml" <<YML
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: $dir/registry
http:
  addr: 127.0.0.1:$port
YML
OTEL_TRACES_EXPORTER=none docker-registry serve "$dir/registry.yml" >"$dir/registry.log" 2>&1 &
reg_pid=$!
for _ in $(seq 50); do curl -fs "http://127.0.0.1:$port/v2/" >/dev/null 2>&1 && break; sleep 0.2; done

export OSBUILD_PASSWORD=bench SOURCE_DATE_EPOCH=1700000000
(cd "$dir" && "$bin" key generate >/dev/null)
mkdir -p "$dir/big/opt"
head -c $((SIZE_MB << 20)) /dev/urandom >"$dir/big/opt/payload"
slot_mib=$(( SIZE_MB + SIZE_MB / 4 + 64 ))

# variant VERSION EXTRA-LAYER
variant() {
	cat <<YML
name: bench
version: $1
arch: amd64
layers:
  - image: oci:$ex/images/base:v1
  - image: oci:$ex/images/kernel:v1
  - image: oci:$ex/images/systemd-boot:v1
$2
disk:
  esp: 64MiB
  slot: ${slot_mib}MiB
update:
  repository: 127.0.0.1:$port/bench
  public_key: $dir/cosign.pub
YML
}
variant 1.0.0 "" >"$dir/v1.yaml"
variant 2.0.0 "  - dir: $dir/big" >"$dir/v2.yaml"
echo "building v1 (small) and v2 (+${SIZE_MB} MB of random data)..." >&2
"$bin" build -q --cache "$dir/cache" "$dir/v1.yaml" -o "$dir/v1" >/dev/null
"$bin" build -q --cache "$dir/cache" "$dir/v2.yaml" -o "$dir/v2" >/dev/null
"$bin" publish "$dir/v2" --to "127.0.0.1:$port/bench" --key "$dir/cosign.key" 2>/dev/null >/dev/null
root=$(stat -c %s "$dir/v2/bench-2.0.0.root.squashfs")

/usr/bin/time -f '%e %M' -o "$dir/time" "$bin" update apply --disk "$dir/v1/bench-1.0.0.raw" \
	--from "127.0.0.1:$port/bench:2.0.0" --key "$dir/cosign.pub" --state-dir "$dir/state" >/dev/null 2>"$dir/apply.log" ||
	{ cat "$dir/apply.log" >&2; exit 1; }
read -r wall rss <"$dir/time"
rss_mib=$(awk -v r="$rss" 'BEGIN { printf "%.1f", r / 1024 }')
mbs=$(awk -v b="$root" -v w="$wall" 'BEGIN { printf "%.0f", b / 1e6 / (w > 0 ? w : 0.01) }')
printf 'update apply: root %.0f MB from a local registry in %ss: %s MB/s (download, hash, write, verity check), peak RSS %s MiB\n' \
	"$(awk -v b="$root" 'BEGIN { print b / 1e6 }')" "$wall" "$mbs" "$rss_mib"
if awk -v r="$rss" 'BEGIN { exit !(r > 64 * 1024) }'; then
	echo "bench/update.sh: peak RSS ${rss_mib} MiB is over the 64 MiB target" >&2
	exit 1
fi
