#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# The root filesystems of the container tests, Debian minbase with systemd as
# init, D-Bus and iproute2:
#   bookworm  (tests/systemd/) Debian 12 with relinkd's runtime libraries,
#             QEMU, passt and NetworkManager; relinkd comes in as a .deb.
#   trixie    (tests/trixie/) Debian 13 with QEMU 10, passt 2025, libvirt 11
#             and what relinkd needs to build and run its tests there.
# Kept as a zstd tarball in CACHE_DIR, named after the suite and a hash of
# this script (and so of the package lists in it); built only when that
# tarball is missing.
#
#   build-rootfs.sh [SUITE]          print the tarball's path, building it if needed
#   build-rootfs.sh --path [SUITE]   print the path it would have, build nothing
#
# Needs root, debootstrap and zstd; the mirror is the URIs: line of
# /etc/apt/sources.list.d/debian.sources (RELINK_DEBIAN_MIRROR overrides it).
set -euo pipefail

CACHE_DIR=${RELINK_ROOTFS_CACHE:-/var/cache/relink}
path_only=0
if [[ ${1:-} == --path ]]; then path_only=1; shift; fi
SUITE=${1:-bookworm}
# systemd as pid 1 and its tools; what relinkd and relinkctl link against
# (libtomlplusplus3 is a shared library on Debian 12, not header-only);
# QEMU for a VM (QMP only, no guest) and passt for relinkd to supervise;
# NetworkManager owning a bridge (adduser and libpam-systemd named: debootstrap
# does not pick polkitd's alternatives by itself).
BOOKWORM=(
  systemd systemd-sysv dbus iproute2 procps kmod
  libmnl0 libnl-3-200 libnl-route-3-200 libsystemd0 libspdlog1.10 libfmt9
  libvirt0 libxml2 libtomlplusplus3
  qemu-system-x86 passt
  network-manager adduser libpam-systemd
)
# Debian 13: QEMU 10.0, passt 2025-05 (--vhost-user), libvirt 11.3 (the
# monolithic libvirtd, as the libvirt tests start it; no -system package, so
# no units of libvirt's own start in the booted container); relinkd and its
# tests are built inside from the same -dev packages as on the host, with
# ccache; util-linux for setpriv, jq for the tier's script.
TRIXIE=(
  systemd systemd-sysv dbus iproute2 procps kmod util-linux jq adduser libpam-systemd busybox-static
  qemu-system-x86 passt libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients
  cmake g++ make pkgconf ccache
  libmnl-dev libnl-3-dev libnl-route-3-dev libsystemd-dev
  libspdlog-dev libfmt-dev nlohmann-json3-dev libtomlplusplus-dev libcli11-dev
  libgtest-dev libgmock-dev libvirt-dev libxml2-dev
)
case $SUITE in
  bookworm) PACKAGES=("${BOOKWORM[@]}") ;;
  trixie) PACKAGES=("${TRIXIE[@]}") ;;
  *) echo "build-rootfs.sh: unknown suite '$SUITE' (bookworm or trixie)" >&2; exit 2 ;;
esac

self=$(readlink -f "${BASH_SOURCE[0]}")
# The key: the suite, its packages and the recipe below (not the other
# suite's list, so that changing one does not rebuild the other).
key=$({ echo "$SUITE ${PACKAGES[*]}"; sed -n '/^# --- recipe/,$p' "$self"; } | sha256sum | cut -c1-16)
tarball=$CACHE_DIR/rootfs-$SUITE-$key.tar.zst

if ((path_only)); then
  echo "$tarball"
  exit 0
fi
# One build of a suite at a time: a second caller (scripts/test.sh starts
# the builds early, in the background) waits for the first and takes its
# tarball.
mkdir -p "$CACHE_DIR"
exec 8>"$CACHE_DIR/.rootfs-$SUITE.lock"
flock -w 1800 8 || { echo "build-rootfs.sh: timed out waiting for $CACHE_DIR/.rootfs-$SUITE.lock" >&2; exit 1; }
if [[ -s $tarball ]]; then
  echo "$tarball"
  exit 0
fi

# --- recipe
mirror=${RELINK_DEBIAN_MIRROR:-$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)}
mirror=${mirror:-http://deb.debian.org/debian}
for tool in debootstrap zstd; do
  command -v "$tool" >/dev/null || { echo "build-rootfs.sh: $tool is missing (scripts/install-deps.sh installs it)" >&2; exit 1; }
done

mkdir -p "$CACHE_DIR"
work=$(mktemp -d "$CACHE_DIR/.rootfs-build.XXXXXX")
trap 'rm -rf --one-file-system "$work"' EXIT
start=$(date +%s)
echo "build-rootfs.sh: debootstrap $SUITE from $mirror into $work (a few minutes, once)" >&2
incl=$(IFS=,; echo "${PACKAGES[*]}")
if ! debootstrap --variant=minbase --include="$incl" "$SUITE" "$work/root" "$mirror" >"$work/debootstrap.log" 2>&1; then
  tail -n 30 "$work/debootstrap.log" >&2
  [[ -f $work/root/debootstrap/debootstrap.log ]] && tail -n 30 "$work/root/debootstrap/debootstrap.log" >&2
  echo "build-rootfs.sh: debootstrap failed" >&2
  exit 1
fi
root=$work/root
# A container that boots quickly and quietly: no getty on a console nobody
# reads, no waiting for network, a fixed machine id, no apt caches.
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
echo "relink-$SUITE" > "$root/etc/hostname"
systemd-machine-id-setup --root="$root" >/dev/null 2>&1 || true
ln -sf /dev/null "$root/etc/systemd/system/console-getty.service"
ln -sf /dev/null "$root/etc/systemd/system/getty@.service"
ln -sf /dev/null "$root/etc/systemd/system/systemd-networkd-wait-online.service"
# User 1000 for the VM whose QMP socket is under /run/user/1000.
chroot "$root" useradd -u 1000 -m -s /bin/sh vmuser
tar -C "$root" --numeric-owner --xattrs -cf - . | zstd -q -T2 -3 -o "$work/rootfs.tar.zst"
mv "$work/rootfs.tar.zst" "$tarball"
# Older tarballs of this test are of no more use.
find "$CACHE_DIR" -maxdepth 1 \( -name "rootfs-$SUITE-*.tar.zst" -o -name "systemd-rootfs-$SUITE-*.tar.zst" \) \
  ! -path "$tarball" -delete
echo "build-rootfs.sh: built $tarball in $(( $(date +%s) - start )) s ($(du -h "$tarball" | cut -f1))" >&2
echo "$tarball"
