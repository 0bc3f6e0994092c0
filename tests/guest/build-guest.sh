#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# build-guest.sh OUTDIR -- build the relink test guest (kernel + initramfs).
#
# Produces OUTDIR/vmlinuz (bzImage), OUTDIR/vmlinux (the same kernel as an
# uncompressed ELF for PVH boot, much faster under TCG; absent if the kernel
# cannot do PVH), OUTDIR/initramfs.cpio.gz and OUTDIR/guest.info.
# Idempotent: does nothing when both exist and are newer than this script,
# tests/guest/init and tests/guest/udhcpc.script. The Debian kernel is fetched
# once with `apt-get download` (into a temp dir, never the repo) and the few
# files needed are kept in OUTDIR/kernel/ so a rebuild after editing /init does
# not download again.
#
# Environment:
#   RELINK_GUEST_REFRESH=1       fetch the kernel again (newest linux-image-amd64)
#   RELINK_GUEST_KERNEL_DEB=FILE use this linux-image-*.deb instead of downloading
#
# Needs root only to install missing packages (busybox-static, cpio) and to
# create /dev/console in the image (without it the guest still works).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
die() { echo "build-guest: error: $*" >&2; exit 1; }
log() { echo "build-guest: $*" >&2; }

[[ $# -eq 1 && -n $1 ]] || die "usage: $0 OUTDIR"
mkdir -p "$1"
out=$(cd "$1" && pwd)

inputs=("$here/build-guest.sh" "$here/init" "$here/udhcpc.script")
up_to_date() {
  local f i
  for f in vmlinuz initramfs.cpio.gz; do
    [[ -s $out/$f ]] || return 1
    for i in "${inputs[@]}"; do
      [[ $out/$f -nt $i ]] || return 1
    done
  done
  [[ ${RELINK_GUEST_REFRESH:-0} != 1 ]]
}

if up_to_date; then
  log "$out is up to date"
  exit 0
fi

# One builder at a time per OUTDIR; a waiter re-checks after the lock.
exec 9>"$out/.lock"
flock -w 900 9 || die "timed out waiting for the lock on $out/.lock"
if up_to_date; then
  log "$out is up to date"
  exit 0
fi

# ---- packages --------------------------------------------------------------
apt_updated=0
apt_update_once() {
  ((apt_updated)) && return 0
  log "apt-get update"
  apt-get update -qq >&2 || die "apt-get update failed"
  apt_updated=1
}
installed() {
  [[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null) == "install ok installed" ]]
}
need_pkgs() {
  local p missing=()
  for p in "$@"; do installed "$p" || missing+=("$p"); done
  ((${#missing[@]})) || return 0
  [[ $(id -u) -eq 0 ]] || die "missing packages ${missing[*]} (run as root to install them)"
  apt_update_once
  log "installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >&2 || die "apt-get install ${missing[*]} failed"
}
need_pkgs busybox-static cpio gzip xz-utils
busybox=/bin/busybox
[[ -x $busybox ]] || die "$busybox missing after installing busybox-static"

tmp=$(mktemp -d /tmp/relink-guest-build.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
chmod 755 "$tmp"  # apt-get download runs as _apt and must reach $tmp/deb

# Modules needed for a virtio-net NIC; their dependencies are added and ordered
# from each module's own "depends=" field, built-ins are skipped.
ROOT_MODULES=(virtio_pci virtio_net)

# ---- kernel: vmlinuz + the modules, cached in OUTDIR/kernel ----------------
kdir=$out/kernel
fetch_kernel() {
  local deb x kpkg ver
  if [[ -n ${RELINK_GUEST_KERNEL_DEB:-} ]]; then
    deb=$RELINK_GUEST_KERNEL_DEB
    [[ -f $deb ]] || die "RELINK_GUEST_KERNEL_DEB=$deb: no such file"
  else
    kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null |
      awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9].*-amd64$/ { print $2; exit }' || true)
    if [[ -z $kpkg ]]; then
      apt_update_once
      kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null |
        awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9].*-amd64$/ { print $2; exit }' || true)
    fi
    [[ -n $kpkg ]] || die "cannot resolve the kernel package behind linux-image-amd64"
    mkdir -p "$tmp/deb"
    # apt drops privileges to _apt for downloads; let it write here.
    chown _apt "$tmp/deb" 2>/dev/null || true
    log "downloading $kpkg"
    if ! (cd "$tmp/deb" && apt-get download -qq "$kpkg" >&2); then
      # Stale package lists point at a version the mirror no longer has.
      apt_update_once
      (cd "$tmp/deb" && apt-get download -qq "$kpkg" >&2) || die "apt-get download $kpkg failed"
    fi
    deb=$(compgen -G "$tmp/deb/${kpkg}_*.deb" || true)
    deb=${deb%%$'\n'*}
    [[ -n $deb ]] || die "apt-get download $kpkg produced no .deb"
  fi
  x=$tmp/x
  log "extracting $(basename "$deb")"
  dpkg -x "$deb" "$x" || die "dpkg -x $deb failed"
  ver=$(compgen -G "$x/lib/modules/*" || true)
  ver=${ver%%$'\n'*}
  ver=${ver##*/}
  [[ -n $ver && -f $x/boot/vmlinuz-$ver ]] || die "$deb has no /boot/vmlinuz-* and /lib/modules/*"

  local new=$tmp/kernel m
  mkdir -p "$new/modules"
  : >"$new/builtin"
  cp "$x/boot/vmlinuz-$ver" "$new/vmlinuz"
  cp "$x/boot/config-$ver" "$new/config" 2>/dev/null || true
  echo "$ver" >"$new/version"
  basename "$deb" >"$new/source"

  # Resolve modules, dependencies first.
  local -A seen=()
  local order=()
  find_ko() {  # path of module $1 (accepts _ or - in the file name)
    local n=$1 alt=${1//_/-}
    find "$x/lib/modules/$ver" \( -name "$n.ko" -o -name "$n.ko.*" -o -name "$alt.ko" -o -name "$alt.ko.*" \) \
      -print -quit
  }
  is_builtin() {
    grep -qE "/(${1}|${1//_/-})\.ko$" "$x/lib/modules/$ver/modules.builtin" 2>/dev/null
  }
  unpack_ko() {  # $1 = .ko[.xz|.zst|.gz], $2 = plain .ko output
    case $1 in
      *.ko) cp "$1" "$2" ;;
      *.ko.xz) xz -dc "$1" >"$2" ;;  # busybox insmod cannot load compressed modules
      *.ko.gz) gzip -dc "$1" >"$2" ;;
      *.ko.zst) need_pkgs zstd; zstd -qdc "$1" >"$2" ;;
      *) die "unknown module format: $1" ;;
    esac
  }
  add_module() {
    local m=$1 f deps d
    [[ -n ${seen[$m]:-} ]] && return 0
    seen[$m]=1
    if is_builtin "$m"; then
      log "module $m is built in"
      echo "$m" >>"$new/builtin"
      return 0
    fi
    f=$(find_ko "$m")
    [[ -n $f ]] || die "module $m is neither built in nor in $deb"
    [[ $f == *.ko.xz ]] && need_pkgs xz-utils
    unpack_ko "$f" "$new/modules/$m.ko"
    deps=$(tr '\0' '\n' <"$new/modules/$m.ko" | sed -n 's/^depends=//p')
    deps=${deps%%$'\n'*}
    for d in ${deps//,/ }; do add_module "$d"; done
    order+=("$m")
  }
  for m in "${ROOT_MODULES[@]}"; do add_module "$m"; done
  printf '%s\n' "${order[@]}" >"$new/modules/load-order"
  log "module load order: ${order[*]}"

  rm -rf "$kdir.new" "$kdir"
  mv "$new" "$kdir.new"
  mv "$kdir.new" "$kdir"
}

if [[ ${RELINK_GUEST_REFRESH:-0} == 1 || ! -s $kdir/vmlinuz || ! -s $kdir/modules/load-order ]]; then
  fetch_kernel
else
  log "using cached kernel $(cat "$kdir/version") from $kdir"
fi

# ---- vmlinux: the uncompressed ELF kernel, for PVH boot ------------------------
# QEMU boots an ELF vmlinux that carries the PVH note (CONFIG_PVH=y) directly,
# skipping the bzImage real-mode setup and the in-guest XZ decompression, which
# are slow under TCG (measured here: READY after ~5-6 s instead of 11-26 s on a
# loaded 2-core machine). The bzImage header says where the compressed payload
# is: setup_sects at 0x1f1, payload_offset at 0x248, payload_length at 0x24c;
# the payload ends with the uncompressed size (le32).
le32() { od -An -tu4 -j "$2" -N4 "$1" | tr -d ' '; }
extract_vmlinux() {  # $1 bzImage, $2 output ELF; returns 1 if not possible
  local bz=$1 setup off len magic want got
  setup=$(od -An -tu1 -j $((0x1f1)) -N1 "$bz" | tr -d ' ')
  off=$(( (setup + 1) * 512 + $(le32 "$bz" $((0x248))) ))
  len=$(le32 "$bz" $((0x24c)))
  [[ $len -gt 4 ]] || return 1
  want=$(le32 "$bz" $((off + len - 4)))
  magic=$(od -An -tx1 -j "$off" -N4 "$bz" | tr -d ' ')
  payload() { dd if="$bz" iflag=skip_bytes,count_bytes skip="$off" count="$1" bs=64K status=none; }
  case $magic in
    fd377a58) payload "$len" | xz -dc --single-stream >"$2" 2>/dev/null || return 1 ;;
    28b52ffd) need_pkgs zstd; payload $((len - 4)) | zstd -qdc >"$2" 2>/dev/null || return 1 ;;
    1f8b*) payload "$len" | gzip -dc >"$2" 2>/dev/null || true ;;  # trailing size: "garbage"
    *) return 1 ;;
  esac
  got=$(stat -c %s "$2")
  [[ $got == "$want" && $(od -An -c -j1 -N3 "$2" | tr -d ' ') == ELF ]]
}
pvh=no
if [[ -s $out/vmlinux && $out/vmlinux -nt $kdir/vmlinuz ]]; then
  pvh=yes
elif grep -q '^CONFIG_PVH=y' "$kdir/config" 2>/dev/null; then
  need_pkgs xz-utils
  log "extracting the uncompressed kernel for PVH boot"
  if extract_vmlinux "$kdir/vmlinuz" "$out/vmlinux.new"; then
    mv -f "$out/vmlinux.new" "$out/vmlinux"
    pvh=yes
  else
    log "warning: could not extract vmlinux from vmlinuz; only the bzImage is available"
    rm -f "$out/vmlinux.new" "$out/vmlinux"
  fi
else
  log "kernel lacks CONFIG_PVH; no vmlinux (boot the bzImage)"
  rm -f "$out/vmlinux"
fi

# ---- initramfs ---------------------------------------------------------------
root=$tmp/root
mkdir -p "$root"/{bin,dev,proc,sys,run,tmp,etc/udhcpc,lib/modules}
ln -s bin "$root/sbin"
cp "$busybox" "$root/bin/busybox"
for a in $("$root/bin/busybox" --list); do
  [[ $a == busybox || -e $root/bin/$a ]] || ln -s busybox "$root/bin/$a"
done
install -m 755 "$here/init" "$root/init"
install -m 755 "$here/udhcpc.script" "$root/etc/udhcpc/default.script"
cp "$kdir"/modules/*.ko "$kdir/modules/load-order" "$root/lib/modules/"
# The kernel opens /dev/console on the initramfs before /init runs; without
# the node /init starts with no stdio (it reopens the console after mounting
# devtmpfs, but early errors would be lost).
if [[ $(id -u) -eq 0 ]]; then
  mknod -m 600 "$root/dev/console" c 5 1
  mknod -m 666 "$root/dev/null" c 1 3
fi
: >"$root/etc/resolv.conf"

(cd "$root" && find . -mindepth 1 | LC_ALL=C sort |
  cpio -o -H newc -R 0:0 --reproducible --quiet) | gzip -9n >"$tmp/initramfs.cpio.gz" ||
  die "creating the initramfs failed"

{
  echo "kernel=$(cat "$kdir/version")"
  echo "kernel_source=$(cat "$kdir/source")"
  echo "modules=$(tr '\n' ' ' <"$kdir/modules/load-order" | sed 's/ $//')"
  echo "builtin=$(tr '\n' ' ' <"$kdir/builtin" | sed 's/ $//')"
  echo "busybox=$("$busybox" 2>&1 | head -n1 || true)"
  echo "pvh_vmlinux=$pvh"
  echo "initramfs_bytes=$(stat -c %s "$tmp/initramfs.cpio.gz")"
} >"$tmp/guest.info"

# Install atomically: vmlinuz first, initramfs last (it is the "done" mark
# together with the timestamps checked by up_to_date).
cp "$kdir/vmlinuz" "$out/vmlinuz.new" && mv -f "$out/vmlinuz.new" "$out/vmlinuz"
touch "$out/vmlinuz"
cp "$tmp/guest.info" "$out/guest.info.new" && mv -f "$out/guest.info.new" "$out/guest.info"
cp "$tmp/initramfs.cpio.gz" "$out/initramfs.cpio.gz.new"
mv -f "$out/initramfs.cpio.gz.new" "$out/initramfs.cpio.gz"
log "built $out: vmlinuz, $([[ $pvh == yes ]] && echo "vmlinux (PVH), ")initramfs.cpio.gz ($(stat -c %s "$out/initramfs.cpio.gz") bytes)"
