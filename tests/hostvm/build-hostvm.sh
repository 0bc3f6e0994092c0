#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# The host VM of the hostvm tier (tests/hostvm/hostvm_test.py): Debian's
# kernel with its modules and Debian 12's root filesystem, booted under TCG.
#
#   OUT/vmlinux           the kernel as an ELF for PVH boot (much faster under TCG)
#   OUT/initramfs.cpio.gz busybox, virtio_blk and ext4: mounts OUT/root.img, switch_root
#   OUT/root.img          ext4: tests/systemd/build-rootfs.sh's bookworm tree
#                         (systemd, udev, D-Bus, NetworkManager, QEMU, relinkd's
#                         runtime libraries) with the kernel's modules for
#                         8021q, bonding, dummy, macvtap, tun, veth, 9p and
#                         virtio, and tests/hostvm/init as /sbin/relink-hostvm-init
#
# OUT is /var/cache/relink/hostvm-KEY, KEY a hash of the rootfs tarball's
# name, the kernel package and these scripts; built once (about 30 s with
# the rootfs tarball cached) and read-only after: the tier boots root.img
# with snapshot=on. relinkd itself is not in it (the tier carries the
# build's binaries in over 9p).
#
#   build-hostvm.sh          print OUT, building it if needed
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
src=$(cd "$here/../.." && pwd)
CACHE_DIR=${RELINK_ROOTFS_CACHE:-/var/cache/relink}
die() { echo "build-hostvm: error: $*" >&2; exit 1; }
log() { echo "build-hostvm: $*" >&2; }

[[ $EUID -eq 0 ]] || die "needs root"
for tool in debootstrap zstd mkfs.ext4 depmod modprobe cpio busybox; do
  command -v "$tool" >/dev/null || die "$tool is missing (scripts/install-deps.sh installs it)"
done

tarball=$("$src/tests/systemd/build-rootfs.sh" bookworm)
kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null |
  awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9].*-amd64$/ { print $2; exit }' || true)
if [[ -z $kpkg ]]; then
  apt-get update -qq >&2
  kpkg=$(apt-cache depends linux-image-amd64 | awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9].*-amd64$/ { print $2; exit }')
fi
[[ -n $kpkg ]] || die "cannot resolve the kernel package behind linux-image-amd64"
kver=$(apt-cache policy "$kpkg" | awk '/Candidate:/ { print $2; exit }')
key=$({ echo "${tarball##*/} $kpkg $kver"; cat "$here/build-hostvm.sh" "$here/init"; } | sha256sum | cut -c1-16)
out=$CACHE_DIR/hostvm-$key
if [[ -s $out/root.img ]]; then echo "$out"; exit 0; fi

mkdir -p "$CACHE_DIR"
exec 9>"$CACHE_DIR/.hostvm.lock"
flock -w 900 9 || die "timed out waiting for $CACHE_DIR/.hostvm.lock"
if [[ -s $out/root.img ]]; then echo "$out"; exit 0; fi

start=$(date +%s)
tmp=$(mktemp -d "$CACHE_DIR/.hostvm-build.XXXXXX")
trap 'rm -rf --one-file-system "$tmp"' EXIT
chmod 755 "$tmp"

# --- the kernel: the same package as the test guest's; its vmlinux comes
# from tests/guest/build-guest.sh, given this .deb
mkdir "$tmp/deb"
chown _apt "$tmp/deb" 2>/dev/null || true  # apt-get download runs as _apt
log "downloading $kpkg $kver"
(cd "$tmp/deb" && apt-get download -qq "$kpkg" >&2) ||
  { apt-get update -qq >&2; (cd "$tmp/deb" && apt-get download -qq "$kpkg" >&2); } || die "apt-get download $kpkg failed"
deb=$(compgen -G "$tmp/deb/${kpkg}_*.deb" | head -n1)
RELINK_GUEST_KERNEL_DEB=$deb bash "$src/tests/guest/build-guest.sh" "$tmp/guest" 2>/dev/null ||
  die "tests/guest/build-guest.sh could not use $deb"
[[ -s $tmp/guest/vmlinux ]] || die "no PVH vmlinux from $deb"
dpkg -x "$deb" "$tmp/k"
ver=$(cat "$tmp/guest/kernel/version")
kmods=$tmp/k/lib/modules/$ver
[[ -d $kmods ]] || die "$deb has no /lib/modules/$ver"
depmod -b "$tmp/k" "$ver"  # a .deb carries no modules.dep: its postinst makes it

# modules NAME...: the paths of NAME and their dependencies, dependencies first
modules() {
  local m deps
  for m in "$@"; do
    deps=$(modprobe -d "$tmp/k" -S "$ver" --show-depends "$m") || die "no module $m in $deb"
    awk '$1 == "insmod" { print $2 }' <<<"$deps"
  done | awk '!seen[$0]++'
}

# --- the root filesystem
log "unpacking ${tarball##*/}"
root=$tmp/root
mkdir "$root"
zstd -q -d -c "$tarball" | tar -C "$root" --numeric-owner -xf -
# What the tests stack on the dock NIC, and what udev, NetworkManager and a
# nested QEMU load by themselves.
ROOT_MODULES=(virtio_pci virtio_net virtio_blk virtio_console ext4 8021q bonding dummy macvlan macvtap tap tun
  veth bridge 9p 9pnet_virtio af_packet)
mods=$(modules "${ROOT_MODULES[@]}")
for f in $mods; do
  rel=${f#"$tmp/k"}
  mkdir -p "$root$(dirname "$rel")"
  cp "$f" "$root$rel"
done
cp "$kmods"/modules.builtin* "$kmods"/modules.order "$root/lib/modules/$ver/"
depmod -b "$root" "$ver"
install -m 755 "$here/init" "$root/sbin/relink-hostvm-init"
mkdir -p "$root/opt/relink"
# NetworkManager owns only what a test gives it a connection for; it makes
# up no "Wired connection" for a NIC, and leaves the bond tests' devices
# (theirs, made with ip) alone.
cat >"$root/etc/NetworkManager/conf.d/relink-hostvm.conf" <<'NM'
[main]
no-auto-default=*
[keyfile]
unmanaged-devices=interface-name:bond*;interface-name:dummy*;interface-name:enp3s0;interface-name:enp4s0
NM
echo relink-hostvm >"$root/etc/hostname"
size=$(( $(du -sm "$root" | cut -f1) + 256 ))
log "mkfs.ext4 -d (${size} MiB)"
mkfs.ext4 -q -F -L relink-hostvm -E root_owner=0:0 -d "$root" "$tmp/root.img" "${size}M" >&2

# --- the initramfs: just enough to mount root.img
ir=$tmp/ir
mkdir -p "$ir"/{bin,dev,proc,sys,newroot,mods}
cp "$(command -v busybox)" "$ir/bin/busybox"
for a in sh mount insmod switch_root sleep echo cat mkdir; do ln -s busybox "$ir/bin/$a"; done
mods=$(modules virtio_pci virtio_blk ext4)
for f in $mods; do
  cp "$f" "$ir/mods/"
  echo "${f##*/}" >>"$ir/mods/load-order"
done
cat >"$ir/init" <<'INIT'
#!/bin/sh
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev
for m in $(cat /mods/load-order); do insmod "/mods/$m" 2>/dev/null; done
for i in $(seq 100); do [ -b /dev/vda ] && break; sleep 0.05; done
mount -t ext4 /dev/vda /newroot || { echo "hostvm: cannot mount /dev/vda"; sleep 5; exit 1; }
mount --move /dev /newroot/dev; mount --move /proc /newroot/proc; mount --move /sys /newroot/sys
exec switch_root /newroot /sbin/relink-hostvm-init
INIT
chmod 755 "$ir/init"
(cd "$ir" && find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) | gzip -1 >"$tmp/initramfs.cpio.gz"

mkdir "$tmp/out"
mv "$tmp/guest/vmlinux" "$tmp/initramfs.cpio.gz" "$tmp/root.img" "$tmp/out/"
echo "$kpkg $kver ($ver); rootfs ${tarball##*/}" >"$tmp/out/info"
chmod -R a+rX,a-w "$tmp/out"
mv "$tmp/out" "$out"
find "$CACHE_DIR" -maxdepth 1 -name 'hostvm-*' ! -path "$out" -exec rm -rf {} +
log "built $out in $(( $(date +%s) - start )) s"
echo "$out"
