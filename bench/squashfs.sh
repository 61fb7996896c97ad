#!/usr/bin/env bash
# osbuild's squashfs writer against mksquashfs and tar2sqfs on a ~500 MB tree of real /usr files,
# same compressor, block size and level. Prints wall time, CPU time, peak RSS and output size, and the
# ratios to mksquashfs. Self-contained: builds bin/osbuild if missing, copies the tree into a temp
# folder and removes it at the end.
#
#   SIZE_MB=500 LEVEL=15 BLOCK_SIZE=131072 MATCH_LEVELS="6 9" bash bench/squashfs.sh
#
# MATCH_LEVELS adds mksquashfs runs at other zstd levels, for comparing with osbuild below level 13, where
# it uses klauspost/compress (about as small as C zstd 6-9) instead of its own optimal-parsing encoder.
set -euo pipefail
cd "$(dirname "$0")/.."

SIZE_MB=${SIZE_MB:-500}
LEVEL=${LEVEL:-15}
BLOCK_SIZE=${BLOCK_SIZE:-131072}
MATCH_LEVELS=${MATCH_LEVELS-}
SOURCES=${SOURCES:-"/usr/bin /usr/include /usr/share/man /usr/lib/python3 /usr/share/locale /usr/sbin /usr/lib/x86_64-linux-gnu"}

[ -x bin/osbuild ] || make build
if [ ! -x /usr/bin/time ]; then
	apt-get install -y -qq time >/dev/null
fi
for tool in mksquashfs tar2sqfs unsquashfs; do
	command -v "$tool" >/dev/null || { echo "squashfs bench: $tool is missing (apt-get install squashfs-tools squashfs-tools-ng)" >&2; exit 1; }
done

work=$(mktemp -d "${TMPDIR:-/var/tmp}/osbuild-bench-squashfs.XXXXXX")
trap 'rm -rf "$work"' EXIT

# The tree: regular files and symlinks from $SOURCES in a fixed order until SIZE_MB, copied through tar
# so that hardlinks, modes and owners survive.
find $SOURCES -xdev \( -type f -o -type l \) -printf '%s\t%p\n' 2>/dev/null | sort -t "$(printf '\t')" -k2 |
	awk -F '\t' -v max=$((SIZE_MB * 1000000)) 'total < max { total += $1; print $2 }' >"$work/list"
mkdir "$work/root"
tar -cf - --no-recursion -T "$work/list" 2>/dev/null | tar -C "$work/root" -xpf -
tar -C "$work/root" --sort=name -cf "$work/root.tar" .
files=$(wc -l <"$work/list")
bytes=$(du -sb --apparent-size "$work/root" | cut -f1)
echo "tree: $files files and symlinks, $((bytes / 1000000)) MB (from $SOURCES)"
echo "zstd level $LEVEL, block size $BLOCK_SIZE, $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)"

# run NAME CMD...: time a command, keep wall, user+sys CPU and max RSS.
run() {
	local name=$1
	shift
	/usr/bin/time -f "%e %U %S %M" -o "$work/$name.time" "$@" >"$work/$name.log" 2>&1 || {
		echo "$name failed:" >&2
		cat "$work/$name.log" >&2
		exit 1
	}
}

run osbuild bin/osbuild squashfs "$work/root" -o "$work/osbuild.sqfs" --comp zstd --level "$LEVEL" --block-size "$BLOCK_SIZE"
run mksquashfs mksquashfs "$work/root" "$work/mksquashfs.sqfs" -comp zstd -Xcompression-level "$LEVEL" -b "$BLOCK_SIZE" -noappend -no-progress -quiet
run tar2sqfs sh -c "tar2sqfs -c zstd -X level=$LEVEL -b $BLOCK_SIZE -j $(nproc) -q -f '$work/tar2sqfs.sqfs' <'$work/root.tar'"
rows="osbuild mksquashfs tar2sqfs"
for l in $MATCH_LEVELS; do
	run "mksquashfs-l$l" mksquashfs "$work/root" "$work/mksquashfs-l$l.sqfs" -comp zstd -Xcompression-level "$l" -b "$BLOCK_SIZE" -noappend -no-progress -quiet
	rows="$rows mksquashfs-l$l"
done

# Same content as mksquashfs sees it: the listings must match, directory sizes aside.
listing() { unsquashfs -lln "$1" | awk '$1 !~ /^d/ { $3 = $3 } $1 ~ /^d/ { $3 = "-" } { print }'; }
if ! diff <(listing "$work/osbuild.sqfs") <(listing "$work/mksquashfs.sqfs") >"$work/listing.diff"; then
	echo "osbuild's image lists differently from mksquashfs's:" >&2
	head -20 "$work/listing.diff" >&2
	exit 1
fi

read -r mk_wall _ _ _ <"$work/mksquashfs.time"
mk_size=$(stat -c %s "$work/mksquashfs.sqfs")
printf '%-16s %8s %8s %9s %12s %10s %10s\n' tool wall_s cpu_s rss_MiB output_B wall/mksq size/mksq
for name in $rows; do
	read -r wall user sys rss <"$work/$name.time"
	size=$(stat -c %s "$work/$name.sqfs")
	awk -v n="$name" -v w="$wall" -v u="$user" -v s="$sys" -v r="$rss" -v z="$size" -v mw="$mk_wall" -v mz="$mk_size" \
		'BEGIN { printf "%-16s %8.1f %8.1f %9.0f %12d %10.2f %10.3f\n", n, w, u + s, r / 1024, z, w / mw, z / mz }'
done
read -r wall _ _ rss <"$work/osbuild.time"
size=$(stat -c %s "$work/osbuild.sqfs")
awk -v w="$wall" -v r="$rss" -v z="$size" -v mw="$mk_wall" -v mz="$mk_size" 'BEGIN {
	printf "targets: wall <= 1.0x mksquashfs: %s (%.2fx); size within 3%%: %s (%+.1f%%); peak RSS <= 256 MiB: %s (%.0f MiB)\n",
		(w <= mw ? "met" : "MISSED"), w / mw, ((z - mz) / mz <= 0.03 ? "met" : "MISSED"), 100 * (z - mz) / mz,
		(r / 1024 <= 256 ? "met" : "MISSED"), r / 1024 }'
