#!/usr/bin/env bash
# Build time and output sizes of examples/debian (Debian 12 from debootstrap: systemd, kernel, sshd, plus a
# busybox web app and the overlay) by osbuild vs the same work by a pipeline of the standard tools:
# extract the layers, mksquashfs, veritysetup format, sgdisk, mkfs.vfat + mcopy, dd. As in bench/build.sh,
# the pipeline gets osbuild's initramfs for free and runs as root with a real extracted tree (osbuild needs
# neither). Needs examples/debian/mkimages.sh's images (made here when missing: debootstrap, root).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x bin/osbuild ] || make build >/dev/null
ex=examples/debian
if [ ! -f $ex/images/debian/index.json ] || [ ! -f $ex/images/web/index.json ] || [ ! -f $ex/keys/update.pub ]; then
  OSBUILD=$PWD/bin/osbuild $ex/mkimages.sh >/dev/null
fi
export SOURCE_DATE_EPOCH=1700000000
work=$(mktemp -d /var/tmp/osbuild-bench-debian.XXXXXX)
trap 'rm -rf "$work"' EXIT
. bench/lib.bash

# pipeline: the standard-tool build of examples/debian's disk (ESP 128 MiB, slots 512 MiB, 2 GiB disk).
pipeline() {
  local out=$work/pipe root=$work/pipe/root
  rm -rf "$out"; mkdir -p "$root"
  for img in debian web; do
    for l in $(layers_of $ex/images/$img); do tar --numeric-owner --xattrs --xattrs-include='security.*' -xpf "$l" -C "$root"; done
  done
  cp -a $ex/overlay/. "$root/"
  mkdir -p "$root/etc/osbuild"
  cp $ex/keys/update.pub "$root/etc/osbuild/update.pub"; cp bin/osbuild "$root/usr/bin/osbuild"
  mksquashfs "$root" "$out/root.sqfs" -comp zstd -b 131072 -noappend -quiet -no-progress >/dev/null
  veritysetup format "$out/root.sqfs" "$out/verity.img" > "$out/verity.txt"
  truncate -s 2G "$out/disk.raw"
  sgdisk -Z -n1:1M:+128M -t1:ef00 -c1:esp -n2:0:+512M -t2:8304 -c2:root-a -n3:0:+8M -t3:830c -c3:verity-a \
    -n4:0:+512M -t4:8304 -c4:root-b -n5:0:+8M -t5:830c -c5:verity-b -n6:0:0 -t6:8300 -c6:data "$out/disk.raw" >/dev/null
  mkfs.vfat -F 32 -C "$out/esp.img" $((128 * 1024)) >/dev/null
  mmd -i "$out/esp.img" ::/EFI ::/EFI/BOOT ::/loader ::/loader/entries ::/osbuild ::/osbuild/a
  mcopy -i "$out/esp.img" "$root/usr/lib/systemd/boot/efi/systemd-bootx64.efi" ::/EFI/BOOT/BOOTX64.EFI
  mcopy -i "$out/esp.img" "$root"/boot/vmlinuz-* ::/osbuild/a/vmlinuz
  mcopy -i "$out/esp.img" "$ours"/*.initrd ::/osbuild/a/initrd
  printf 'timeout 0\n' > "$out/loader.conf"; mcopy -i "$out/esp.img" "$out/loader.conf" ::/loader/loader.conf
  printf 'title debian\nlinux /osbuild/a/vmlinuz\ninitrd /osbuild/a/initrd\n' > "$out/a.conf"; mcopy -i "$out/esp.img" "$out/a.conf" ::/loader/entries/a.conf
  dd if="$out/esp.img" of="$out/disk.raw" bs=1M seek=1 conv=notrunc,sparse status=none
  dd if="$out/root.sqfs" of="$out/disk.raw" bs=1M seek=129 conv=notrunc,sparse status=none
  dd if="$out/verity.img" of="$out/disk.raw" bs=1M seek=$((129 + 512)) conv=notrunc,sparse status=none
}

report() { # NAME
  printf '%-34s %8s s wall %8s s cpu %7s MiB peak RSS\n' "$1" "$wall" "$(awk "BEGIN{print $user + $sys}")" "$((rss / 1024))"
}

mb() { awk "BEGIN{printf \"%.1f\", $1 / 1e6}"; }

ours=$work/ours; mkdir -p "$ours"
T bin/osbuild build -q --cache "$work/cache" $ex/variant.yaml -o "$ours"; cold=$wall
report "debian: osbuild build (cold cache)"
rm -rf "$ours"; mkdir -p "$ours"
T bin/osbuild build -q --cache "$work/cache" $ex/variant.yaml -o "$ours"; ow=$wall
report "debian: osbuild build (warm cache)"
T bash -c "$(declare -f layers_of pipeline); ex=$ex ours=$ours work=$work; pipeline"; pw=$wall
report "debian: standard-tool pipeline"
printf '%-34s %s (target <= 1.0)\n' "debian: ratio osbuild/pipeline" "$(awk "BEGIN{printf \"%.2f\", $ow / $pw}")"
echo "debian: outputs of osbuild build (MB; raw: allocated of apparent)"
for f in "$ours"/*; do
  case $f in
    *.raw) printf '  %-28s %s of %s\n' "$(basename "$f")" "$(mb "$(du -B1 "$f" | cut -f1)")" "$(mb "$(stat -c %s "$f")")" ;;
    *) printf '  %-28s %s\n' "$(basename "$f")" "$(mb "$(stat -c %s "$f")")" ;;
  esac
done
printf '  %-28s %s (pipeline: root %s, verity %s, raw %s allocated)\n' "standard tools" "" \
  "$(mb "$(stat -c %s "$work/pipe/root.sqfs")")" "$(mb "$(stat -c %s "$work/pipe/verity.img")")" "$(mb "$(du -B1 "$work/pipe/disk.raw" | cut -f1)")"
