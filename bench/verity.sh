#!/usr/bin/env bash
# Compare `osbuild verity format` with `veritysetup format` on the same ~1 GB file, page cache warm for both,
# so the figures measure hashing, not the disk. Target: osbuild >= 1.5x veritysetup's throughput.
set -euo pipefail
cd "$(dirname "$0")/.."

SIZE_MB=${VERITY_BENCH_MB:-1024}
[ -x bin/osbuild ] || make build >/dev/null
for t in veritysetup /usr/bin/time; do
	command -v "$t" >/dev/null || { echo "bench/verity.sh: $t is missing (apt-get install cryptsetup-bin time)" >&2; exit 1; }
done

dir=$(mktemp -d "${TMPDIR:-/tmp}/osbuild-verity-bench.XXXXXX")
trap 'rm -rf "$dir"' EXIT
# Random data so no layer can shortcut zero blocks; a fixed key keeps it the same from run to run.
openssl enc -aes-128-ctr -pass pass:osbuild -nosalt -pbkdf2 </dev/zero 2>/dev/null | head -c $((SIZE_MB << 20)) >"$dir/data" ||
	head -c $((SIZE_MB << 20)) /dev/urandom >"$dir/data"
cat "$dir/data" >/dev/null
salt=$(printf 'osbuild-bench' | sha256sum | cut -d' ' -f1)
uuid=01234567-89ab-cdef-0123-456789abcdef

# measure NAME CMD... → sets WALL (s) and RSS (KiB) from GNU time.
measure() {
	local name=$1; shift
	/usr/bin/time -f '%e %M' -o "$dir/time.$name" "$@" >"$dir/out.$name"
	read -r WALL RSS <"$dir/time.$name"
}

measure veritysetup veritysetup format --data-block-size=4096 --hash-block-size=4096 \
	--salt="$salt" --uuid="$uuid" "$dir/data" "$dir/hash.vs"
vs_wall=$WALL vs_rss=$RSS
measure osbuild bin/osbuild verity format --salt="$salt" --uuid="$uuid" "$dir/data" "$dir/hash.ob"
ob_wall=$WALL ob_rss=$RSS

cmp -s "$dir/hash.vs" "$dir/hash.ob" || { echo "bench/verity.sh: hash devices differ" >&2; exit 1; }

awk -v mb="$SIZE_MB" -v vw="$vs_wall" -v vr="$vs_rss" -v ow="$ob_wall" -v or="$ob_rss" -v cpus="$(nproc)" 'BEGIN {
	if (vw <= 0) vw = 0.01; if (ow <= 0) ow = 0.01
	printf "verity format of %d MiB (%d CPUs), identical output\n", mb, cpus
	printf "  %-12s %7.2f s %8.0f MB/s %8.1f MiB peak RSS\n", "veritysetup", vw, mb*1.048576/vw, vr/1024
	printf "  %-12s %7.2f s %8.0f MB/s %8.1f MiB peak RSS\n", "osbuild", ow, mb*1.048576/ow, or/1024
	printf "  speed-up     %.2fx (target >= 1.5x)\n", vw/ow
}'
