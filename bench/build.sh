#!/usr/bin/env bash
# Full build of a variant by osbuild vs the same work by a pipeline of the standard tools, in one run:
# extract the layers, mksquashfs, veritysetup format, sgdisk, mkfs.vfat + mcopy, dd. The pipeline gets
# osbuild's initramfs for free (there is no standard tool that makes the same one), and runs as root
# with a real extracted tree, which osbuild needs neither of.
# Two variants: examples/minimal, and the same plus a ~500 MB layer of /usr files.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x bin/osbuild ] || make build >/dev/null
[ -f examples/minimal/images/base/index.json ] || examples/minimal/mkimages.sh >/dev/null
export SOURCE_DATE_EPOCH=1700000000
work=$(mktemp -d /var/tmp/osbuild-bench-build.XXXXXX)
trap 'rm -rf "$work"' EXIT
. bench/lib.bash

# pipeline VARIANT_DIR EXTRA_TAR: the standard-tool build of examples/minimal (+ an extra tar layer).
pipeline() {
  local out=$work/pipe root=$work/pipe/root extra=${1:-}
  rm -rf "$out"; mkdir -p "$root"
  for img in base kernel systemd-boot; do
    for l in $(layers_of examples/minimal/images/$img); do tar -xf "$l" -C "$root"; done
  done
  [ -z "$extra" ] || tar -xf "$extra" -C "$root"
  mkdir -p "$root/etc/osbuild" "$root/var"
  mksquashfs "$root" "$out/root.sqfs" -comp zstd -b 131072 -noappend -quiet -no-progress -all-root >/dev/null
  veritysetup format "$out/root.sqfs" "$out/verity.img" > "$out/verity.txt"
  local rootsz=$(( ($(stat -c %s "$out/root.sqfs") + 1048575) / 1048576 + 64 ))
  truncate -s $((64 + 2 * (rootsz + 8) + 64 + 2))M "$out/disk.raw"
  sgdisk -Z -n1:1M:+64M -t1:ef00 -c1:esp -n2:0:+${rootsz}M -t2:8304 -c2:root-a -n3:0:+8M -t3:830c -c3:verity-a \
    -n4:0:+${rootsz}M -t4:8304 -c4:root-b -n5:0:+8M -t5:830c -c5:verity-b -n6:0:0 -t6:8300 -c6:data "$out/disk.raw" >/dev/null
  mkfs.vfat -F 32 -C "$out/esp.img" $((64 * 1024)) >/dev/null
  mmd -i "$out/esp.img" ::/EFI ::/EFI/BOOT ::/loader ::/loader/entries ::/osbuild ::/osbuild/a
  mcopy -i "$out/esp.img" "$root/usr/lib/systemd/boot/efi/systemd-bootx64.efi" ::/EFI/BOOT/BOOTX64.EFI
  mcopy -i "$out/esp.img" "$root"/boot/vmlinuz-* ::/osbuild/a/vmlinuz
  mcopy -i "$out/esp.img" "$ours"/*.initrd ::/osbuild/a/initrd
  printf 'timeout 0\n' > "$out/loader.conf"; mcopy -i "$out/esp.img" "$out/loader.conf" ::/loader/loader.conf
  printf 'title minimal\nlinux /osbuild/a/vmlinuz\ninitrd /osbuild/a/initrd\n' > "$out/a.conf"; mcopy -i "$out/esp.img" "$out/a.conf" ::/loader/entries/a.conf
  dd if="$out/esp.img" of="$out/disk.raw" bs=1M seek=1 conv=notrunc,sparse status=none
  dd if="$out/root.sqfs" of="$out/disk.raw" bs=1M seek=65 conv=notrunc,sparse status=none
  dd if="$out/verity.img" of="$out/disk.raw" bs=1M seek=$((65 + rootsz)) conv=notrunc,sparse status=none
}

report() { # NAME
  printf '%-34s %8s s wall %8s s cpu %7s MiB peak RSS\n' "$1" "$wall" "$(awk "BEGIN{print $user + $sys}")" "$((rss / 1024))"
}

run_case() { # LABEL VARIANT EXTRA_TAR
  local label=$1 variant=$2 extra=${3:-}
  rm -rf "$work/ours"; mkdir -p "$work/ours"; ours=$work/ours
  # Warm the blob cache so that both sides read local layers.
  bin/osbuild rootfs --cache "$work/cache" "$variant" -o /dev/null 2>/dev/null
  T bin/osbuild build -q --cache "$work/cache" "$variant" -o "$ours"; local ow=$wall
  report "$label: osbuild build"
  T bash -c "$(declare -f layers_of pipeline); ours=$ours work=$work; pipeline $extra"; local pw=$wall
  report "$label: standard-tool pipeline"
  printf '%-34s %s (target <= 1.0)\n' "$label: ratio osbuild/pipeline" "$(awk "BEGIN{printf \"%.2f\", $ow / $pw}")"
  printf '%-34s raw %s MB, root %s MB (pipeline root %s MB)\n' "$label: sizes" \
    "$(( $(du -B1 "$ours"/*.raw | cut -f1) / 1000000 ))" "$(( $(stat -c %s "$ours"/*.root.squashfs) / 1000000 ))" \
    "$(( $(stat -c %s "$work/pipe/root.sqfs") / 1000000 ))"
}

run_case minimal examples/minimal/variant.yaml

# 500 MB of real files from /usr, as one more tar layer.
big=$work/usr.tar
find /usr -xdev -type f -size -16M -printf '%s %P\n' 2>/dev/null | sort -k2 |
  awk '{ sum += $1; print "usr/" $2; if (sum > 500e6) exit }' > "$work/files" || true
tar --sort=name --owner=0 --group=0 --numeric-owner -cf "$big" -C / -T "$work/files"
echo "500MB case: layer of $(( $(stat -c %s "$big") / 1000000 )) MB from /usr"
sed -e "s#oci:images/#oci:$PWD/examples/minimal/images/#" -e 's/^name: minimal/name: big/' -e 's/slot: 256MiB/slot: 1GiB/' \
  examples/minimal/variant.yaml > "$work/big.yaml"
printf '  - tar: %s\n' "$big" > "$work/layer"
sed -i "/systemd-boot:v1/r $work/layer" "$work/big.yaml"
run_case 500MB "$work/big.yaml" "$big"
