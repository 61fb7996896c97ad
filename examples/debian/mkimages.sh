#!/usr/bin/env bash
# Makes the two OCI images examples/debian is built from, as OCI image layouts under images/, without docker:
#   images/debian  Debian 12 (bookworm) from debootstrap --variant=minbase: systemd, udev, dbus, the cloud
#                  kernel, systemd-boot, systemd-resolved and networkd, openssh-server; cleaned up for a
#                  read-only root (no machine-id, no SSH host keys, no apt caches, an empty /var).
#   images/web     the application: busybox-static's httpd serving /srv/www on port 8080, as a unit.
# The osbuild integration (units, scripts, drop-ins) is not baked in: it is the variant's overlay/ layer.
# Needs root (debootstrap). The package download is cached as a debootstrap tarball and the finished base
# layer as a tar, both under $OSBUILD_DEBIAN_CACHE (default ~/.cache/osbuild-examples/debian): a rerun
# with nothing changed takes seconds, a change to this script rebuilds the layer from the tarball (~3 min).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/images}
cache=${OSBUILD_DEBIAN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/osbuild-examples/debian}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
suite=bookworm
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1700000000}
pkgs=systemd,systemd-sysv,udev,dbus,kmod,linux-image-cloud-amd64,systemd-boot,systemd-boot-efi,systemd-resolved,openssh-server,e2fsprogs
export PATH=$PATH:/usr/sbin:/sbin
mkdir -p "$cache" "$out"
work=$(mktemp -d)
cleanup() {
  # debootstrap leaves API filesystems mounted in the target when it fails half way.
  for m in proc sys dev/pts dev; do umount "$work/root/$m" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

. "$here/../oci-layout.bash"

reprotar() { # DIR OUT: a reproducible tar of DIR's contents, owned as in DIR (numeric), mtimes clamped
  tar --sort=name --mtime="@$SOURCE_DATE_EPOCH" --clamp-mtime --numeric-owner --format=pax \
    --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime --xattrs --xattrs-include='security.*' \
    -C "$1" -cf "$2" .
}

# 1. The packages, downloaded once: a debootstrap tarball named by what it holds.
key=$(printf '%s %s %s' "$suite" "$mirror" "$pkgs" | sha256sum | cut -c1-12)
tgz="$cache/$suite-minbase-$key.tgz"
if [ ! -s "$tgz" ]; then
  echo "debootstrap: downloading $suite ($pkgs) into $tgz" >&2
  debootstrap --variant=minbase --arch=amd64 --include="$pkgs" --make-tarball="$tgz.tmp" \
    "$suite" "$work/dl" "$mirror" >&2
  mv "$tgz.tmp" "$tgz"
fi

# 2. The base layer: unpacked and configured by debootstrap (dpkg runs the maintainer scripts, so
# depmod, ldconfig, users and alternatives are done), then cleaned for a read-only root by customize.
customize() {
  local root=$1
  # Per-machine state must not ship in an image that thousands of machines boot: the machine-id (the
  # variant makes /etc/machine-id a link into /var), the SSH host keys (made on first boot into /var/lib/ssh).
  rm -f "$root/etc/machine-id" "$root/var/lib/dbus/machine-id" "$root"/etc/ssh/ssh_host_*
  # The osbuild initramfs boots the root; initramfs-tools' image would only take space.
  rm -f "$root"/boot/initrd.img* "$root"/boot/System.map-*
  # No package management on a read-only root: apt's timers would only fail. e2scrub needs LVM.
  rm -f "$root"/etc/systemd/system/timers.target.wants/{apt-daily.timer,apt-daily-upgrade.timer,dpkg-db-backup.timer,e2scrub_all.timer} \
    "$root/etc/systemd/system/multi-user.target.wants/e2scrub_reap.service"
  # Keep what was installed (an SBOM of sorts) where it stays visible: /var is the data partition.
  mkdir -p "$root/usr/share/osbuild"
  cp "$root/var/lib/dpkg/status" "$root/usr/share/osbuild/dpkg-status"
  # /var is hidden by the data partition at boot: ship it empty; systemd-tmpfiles fills a new one.
  find "$root/var" -mindepth 1 -delete
  rm -rf "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/lintian
  find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
  rm -rf "$root"/tmp/* "$root"/root/.cache
  # Where systemd-bless-boot finds the ESP (etc/fstab in the overlay mounts it on demand).
  mkdir -p "$root/efi"
  # ConditionNeedsUpdate=/etc compares /etc/.updated with /usr: both get the same clamped mtime, so
  # ldconfig, hwdb and sysusers do not try to write the read-only /etc at every boot.
  touch "$root/etc/.updated"
  echo "debian" > "$root/etc/hostname"
  chmod 0755 "$root"
}
# Cached by the tarball's name (the packages) and customize's text.
layerkey=$({ echo "$tgz"; declare -f customize; } | sha256sum | cut -c1-12)
base="$cache/debian-base-$layerkey.tar"
if [ ! -s "$base" ]; then
  root="$work/root"
  echo "debootstrap: installing into $root (about 3 minutes)" >&2
  debootstrap --variant=minbase --arch=amd64 --include="$pkgs" --unpack-tarball="$tgz" \
    "$suite" "$root" "$mirror" > "$work/debootstrap.log" 2>&1 || { tail -n 30 "$work/debootstrap.log" >&2; exit 1; }
  for m in proc sys dev/pts dev; do umount "$root/$m" 2>/dev/null || true; done
  customize "$root"
  reprotar "$root" "$base.tmp"
  mv "$base.tmp" "$base"
fi
image debian "$base"

# 3. The application image: busybox's httpd (from busybox-static, so it needs nothing from the base) and
# its unit, in one layer of its own.
debs="$cache/debs"
mkdir -p "$debs"
bb=$(ls "$debs"/busybox-static_*.deb 2>/dev/null | head -n1 || true)
if [ -z "$bb" ]; then
  (cd "$debs" && { apt-get download -q busybox-static >&2 || { apt-get update -qq >&2 && apt-get download -q busybox-static >&2; }; })
  bb=$(ls "$debs"/busybox-static_*.deb | head -n1)
fi
app="$work/app"
dpkg-deb -x "$bb" "$work/bb"
mkdir -p "$app/opt/web/bin" "$app/srv/www" "$app/etc/systemd/system/multi-user.target.wants"
cp "$work/bb/bin/busybox" "$app/opt/web/bin/busybox"
cp -r "$here/app/." "$app/"
ln -s ../web.service "$app/etc/systemd/system/multi-user.target.wants/web.service"
chmod -R u=rwX,go=rX "$app"
reprotar "$app" "$work/web.tar"
image web "$work/web.tar"

# 4. An example signing key for update releases (keys/update.pub goes into the image, keys/update.key
# signs `osbuild publish`), made with osbuild itself when it is at hand. Example only: the password is
# OSBUILD_PASSWORD, default "osbuild-example".
osbuild=${OSBUILD:-$here/../../bin/osbuild}
[ -x "$osbuild" ] || osbuild=$(command -v osbuild || true)
if [ ! -s "$here/keys/update.pub" ]; then
  if [ -n "$osbuild" ]; then
    mkdir -p "$here/keys"
    OSBUILD_PASSWORD=${OSBUILD_PASSWORD:-osbuild-example} "$osbuild" key generate --output-key-prefix "$here/keys/update" >&2
  else
    echo "no osbuild binary (make build): make keys/update.{key,pub} with osbuild key generate" >&2
  fi
fi
