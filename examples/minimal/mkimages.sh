#!/usr/bin/env bash
# Makes the three OCI images examples/minimal is built from, as OCI image layouts under images/, from
# Debian 12 packages and without docker: the kernel (linux-image-cloud-amd64), the boot loader
# (systemd-boot-efi) and a busybox root. Needs apt-get (run as root); the .debs are cached.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/images}
debs=${OSBUILD_DEB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/osbuild-examples/debs}
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1700000000}
mkdir -p "$debs" "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# fetch PKG: download the .deb of PKG (following a metapackage to the real kernel) into the cache.
fetch() {
  local pkg=$1
  if [ "$pkg" = linux-image-cloud-amd64 ]; then
    pkg=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
  fi
  local f
  f=$(ls "$debs"/"${pkg}"_*.deb 2>/dev/null | head -n1 || true)
  if [ -z "$f" ]; then
    (cd "$debs" && apt-get download -q "$pkg" >&2 || { apt-get update -qq >&2 && apt-get download -q "$pkg" >&2; })
    f=$(ls "$debs"/"${pkg}"_*.deb | head -n1)
  fi
  echo "$f"
}

. "$here/../oci-layout.bash"

reprotar() { # DIR OUT: a reproducible tar of DIR's contents, owned by root
  tar --sort=name --mtime="@$SOURCE_DATE_EPOCH" --owner=0 --group=0 --numeric-owner --format=pax \
    --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime -C "$1" -cf "$2" .
}

# The kernel and its modules, and systemd-boot: the packages' own file trees.
dpkg-deb --fsys-tarfile "$(fetch linux-image-cloud-amd64)" > "$work/kernel.tar"
dpkg-deb --fsys-tarfile "$(fetch systemd-boot-efi)" > "$work/systemd-boot.tar"
image kernel "$work/kernel.tar"
image systemd-boot "$work/systemd-boot.tar"

# A busybox root: the static binary, a link per applet, and an init that prints the boot marker.
root="$work/root"
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc/osbuild,proc,sys,dev,run,tmp,var,root}
dpkg-deb -x "$(fetch busybox-static)" "$work/bb"
cp "$work/bb/bin/busybox" "$root/bin/busybox"
for applet in $("$root/bin/busybox" --list-full); do
  [ -e "$root/$applet" ] || ln -s /bin/busybox "$root/$applet"
done
rm -f "$root/sbin/init"
cp "$here/base/init" "$root/sbin/init"
chmod 1777 "$root/tmp"
printf 'root:x:0:0:root:/root:/bin/sh\n' > "$root/etc/passwd"
printf 'root:x:0:\n' > "$root/etc/group"
reprotar "$root" "$work/base.tar"
image base "$work/base.tar"
