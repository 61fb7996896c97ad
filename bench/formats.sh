#!/usr/bin/env bash
# Compare `osbuild convert` with `qemu-img convert` for every output format on the same 2 GiB disk image
# holding ~500 MB of data (a GPT, then real files from /usr: binaries, text, already-compressed files, so the
# compressed formats see realistic data). Page cache warm, best of N alternating runs.
# Target: osbuild no slower and no larger than qemu-img for each format.
set -euo pipefail
cd "$(dirname "$0")/.."

SIZE_MB=${FORMATS_BENCH_SIZE_MB:-2048}
DATA_MB=${FORMATS_BENCH_DATA_MB:-500}
RUNS=${FORMATS_BENCH_RUNS:-2}
[ -x bin/osbuild ] || make build >/dev/null
bin/osbuild convert --help >/dev/null 2>&1 || { echo "bench/formats.sh: bin/osbuild has no convert command: run make build" >&2; exit 1; }
for t in qemu-img sgdisk /usr/bin/time; do
	command -v "$t" >/dev/null || { echo "bench/formats.sh: $t is missing (apt-get install qemu-utils gdisk time)" >&2; exit 1; }
done

dir=$(mktemp -d "${TMPDIR:-/tmp}/osbuild-formats-bench.XXXXXX")
trap 'rm -rf "$dir"' EXIT
img=$dir/disk.raw
truncate -s "${SIZE_MB}M" "$img"
sgdisk -o -n 1:2048:+100M -t 1:ef00 -n 2:0:0 -t 2:8300 "$img" >/dev/null
# The data: a tar of /usr (sorted, so every run of the benchmark sees the same bytes), written sparsely from
# offset 101 MiB; zero runs inside it stay holes, as in a real image.
(cd / && tar --sort=name -cf - usr 2>/dev/null || true) | head -c "$((DATA_MB << 20))" |
	dd of="$img" bs=1M seek=101 conv=sparse,notrunc iflag=fullblock status=none
cat "$img" >/dev/null
data_bytes=$(du -B1 "$img" | cut -f1)

# measure NAME CMD... → WALL (s) from GNU time.
measure() {
	local name=$1; shift
	/usr/bin/time -f '%e %M' -o "$dir/time" "$@" >/dev/null
	read -r WALL _ <"$dir/time"
}

# label | our args | qemu-img args | output extension | qemu-img -F name for the check
cases=(
	"qcow2|-f qcow2|-O qcow2|qcow2|qcow2"
	"qcow2 compressed|-f qcow2 --compress|-O qcow2 -c|qcow2|qcow2"
	"vmdk streamOptimized|-f vmdk|-O vmdk -o subformat=streamOptimized|vmdk|vmdk"
	"vhd dynamic|-f vhd|-O vpc -o subformat=dynamic|vhd|vpc"
	"vhd fixed|-f vhd-fixed|-O vpc -o subformat=fixed,force_size=on|vhd|vpc"
)

printf 'osbuild convert vs qemu-img convert: %d MiB image, %.0f MB allocated, %d CPUs, best of %d runs\n' \
	"$SIZE_MB" "$(awk -v b="$data_bytes" 'BEGIN { print b / 1e6 }')" "$(nproc)" "$RUNS"
printf '  %-22s %9s %9s %7s   %12s %12s %7s   %s\n' format "osbuild s" "qemu s" speed "osbuild MB" "qemu MB" size check
fail=0
for c in "${cases[@]}"; do
	IFS='|' read -r label ours theirs ext qf <<<"$c"
	ob=999999 qe=999999
	for _ in $(seq "$RUNS"); do
		rm -f "$dir/q.$ext" "$dir/o.$ext"
		# osbuild fsyncs its output before renaming it into place; qemu-img does not sync, so its run ends
		# with `sync FILE` to compare the same work (data on disk).
		measure qemu bash -c "qemu-img convert -f raw $theirs '$img' '$dir/q.$ext' && sync '$dir/q.$ext'"
		qe=$(awk -v a="$qe" -v b="$WALL" 'BEGIN { print (b < a) ? b : a }')
		# shellcheck disable=SC2086
		measure osbuild bin/osbuild convert "$img" $ours -o "$dir/o.$ext"
		ob=$(awk -v a="$ob" -v b="$WALL" 'BEGIN { print (b < a) ? b : a }')
	done
	# Size: bytes allocated on disk (fixed VHDs and raw are sparse; their apparent size is the disk size).
	osz=$(du -B1 "$dir/o.$ext" | cut -f1) qsz=$(du -B1 "$dir/q.$ext" | cut -f1)
	check=ok
	qemu-img compare -q -f raw -F "$qf" "$img" "$dir/o.$ext" || { check="DIFFERS"; fail=1; }
	awk -v l="$label" -v o="$ob" -v q="$qe" -v os="$osz" -v qs="$qsz" -v ck="$check" 'BEGIN {
		if (o <= 0) o = 0.01
		printf "  %-22s %9.2f %9.2f %6.2fx   %12.1f %12.1f %6.3fx   %s\n", l, o, q, q / o, os / 1e6, qs / 1e6, os / qs, ck
	}'
	rm -f "$dir/q.$ext" "$dir/o.$ext"
done
echo "  speed = qemu-img time / osbuild time (>= 1 is the target); size = osbuild / qemu-img allocated bytes (<= 1)"
exit $fail
