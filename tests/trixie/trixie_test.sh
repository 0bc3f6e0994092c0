#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# The Debian 13 tier: relinkd built and tested on trixie's stack (QEMU 10.0,
# passt 2025-05 with --vhost-user, libvirt 11.3, gcc 14), in a container
# booted with systemd-nspawn (tests/systemd/container.sh) from a trixie
# rootfs (tests/systemd/build-rootfs.sh trixie, cached in /var/cache/relink,
# built when missing). Inside, relinkd, relinkctl and the test binaries are
# built from this source tree with trixie's compiler and -dev packages
# (warnings as errors; ccache in /var/cache/relink/ccache-trixie), and run:
#
#   - relink_stack_tests (tests/stack/): vhost-user and stream-client
#     (reconnect-ms) passt bindings with a booted guest, kill -9 twenty
#     times each; a libvirt domain whose passt libvirt runs itself.
#   - from relink_integration_daemon: the booted-guest end to end tests,
#     replug and hub attach on QEMU 10.0, and the libvirt source's direct
#     interfaces on libvirt 11 (TIER_TESTS below).
#
#   trixie_test.sh SOURCE_DIR HOST_BUILD_DIR [GTEST_FILTER]
#   trixie_test.sh --bench SOURCE_DIR HOST_BUILD_DIR [ARGS...]   the passt recovery bench instead
#
# HOST_BUILD_DIR gives the test guest (HOST_BUILD_DIR/guest, built by
# tests/guest/build-guest.sh there when missing). Everything the tier starts
# lives in the container and goes with it; the container and its directory
# are removed on every exit path. Exit 77 (skipped) when not root or a host
# tool is missing. RELINK_TRIXIE_KEEP=DIR keeps the build directory in DIR
# (faster reruns by hand); RELINK_TRIXIE_TMP=DIR makes DIR the container's
# /tmp (the tests' logs outlive it).
set -euo pipefail

bench=0
if [[ ${1:-} == --bench ]]; then bench=1; shift; fi
src=$(readlink -f "${1:?usage: trixie_test.sh [--bench] SOURCE_DIR HOST_BUILD_DIR [GTEST_FILTER | ARGS...]}")
hostbuild=$(readlink -f "${2:?usage: trixie_test.sh [--bench] SOURCE_DIR HOST_BUILD_DIR [GTEST_FILTER | ARGS...]}")
shift 2
t0=$(date +%s%N)

# The tests of relink_integration_daemon that run in this tier too: the guest
# end to end, replug and hub on QEMU 10 (with the check of QEMU's tap fds),
# qemu-args' wiring, the passt tests, libvirt 11's direct interfaces.
TIER_TESTS='GuestE2E.*:Replug.AdoptsTheLaunchersTapThenReplugsOnQ35RootPort:Replug.AdoptsAndReplugsOnI440fx'
TIER_TESTS+=':Replug.HubAttachedGuestLinkFollowsTheParentsCarrierToo:Reattach.AttachesAtStartAndAfterTwentyParentFlaps'
TIER_TESTS+=':Reattach.RestartedRelinkdAdoptsInsteadOfReattaching:QemuArgsE2E.*:PasstTest.*'
TIER_TESTS+=':LibvirtVms.DomainsAndInterfacesAreFollowedAsTheyComeAndGo:LibvirtVms.GuestComesBackAfterTenParentFlapsOnQ35'
TIER_TESTS+=':LibvirtVms.LibvirtdRestartsAreSurvived:LibvirtVms.WrongTapFromAnotherNamespaceIsFoundAndReplugged'
# (Debian 13's passt has --vhost-user: the refusal of Debian 12 cannot happen)
TIER_TESTS+='-PasstTest.VhostUserIsRefusedWhereThePasstLacksItAndOthersRun'
filter=${1:-}

if [[ $EUID -ne 0 ]]; then echo "SKIP: needs root"; exit 77; fi
for tool in systemd-nspawn debootstrap zstd nsenter; do
  command -v "$tool" >/dev/null || { echo "SKIP: $tool is missing (scripts/install-deps.sh)"; exit 77; }
done

# shellcheck source-path=SCRIPTDIR
source "$src/tests/systemd/container.sh"

work=$(mktemp -d /var/tmp/relink-trixie.XXXXXX)
name=relink-trixie-${work##*.}
cleanup() {
  local rc=$?
  ct_stop
  rm -rf --one-file-system "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

elapsed() { local ms=$(( ($(date +%s%N) - t0) / 1000000 )); printf '%d.%d s' $((ms / 1000)) $((ms % 1000 / 100)); }
step() { printf '\n== %s (%s)\n' "$*" "$(elapsed)"; }

step "trixie rootfs"
tarball=$("$src/tests/systemd/build-rootfs.sh" trixie)
mkdir "$work/root"
zstd -dc "$tarball" | tar -x --numeric-owner -C "$work/root"

step "test guest"
bash "$src/tests/guest/build-guest.sh" "$hostbuild/guest" >/dev/null
build=${RELINK_TRIXIE_KEEP:-$work/build}
mkdir -p "$build/guest"
# Copies keep their times: build-guest.sh in the container finds them newer
# than its inputs and builds nothing.
cp -p "$hostbuild/guest/vmlinux" "$hostbuild/guest/vmlinuz" "$hostbuild/guest/initramfs.cpio.gz" "$build/guest/" 2>/dev/null ||
  cp -p "$hostbuild/guest/vmlinuz" "$hostbuild/guest/initramfs.cpio.gz" "$build/guest/"

ccache_dir=/var/cache/relink/ccache-trixie
mkdir -p "$ccache_dir"

step "boot the container"
CT_EXTRA_ARGS=(--bind-ro="$src:/src" --bind="$build:/build" --bind="$ccache_dir:/ccache")
# RELINK_TRIXIE_TMP=DIR: the container's /tmp is DIR, so that the tests'
# directories (kept with RELINK_KEEP_LOGS=1 on failure) outlive it.
[[ -n ${RELINK_TRIXIE_TMP:-} ]] && CT_EXTRA_ARGS+=(--bind="$RELINK_TRIXIE_TMP:/tmp")
ct_boot "$work/root" "$name"
ct sh -c 'echo "$(. /etc/os-release; echo "$PRETTY_NAME"); $(qemu-system-x86_64 --version | head -n1); libvirtd $(libvirtd --version | cut -d" " -f3); passt $(dpkg-query -W -f="\${Version}" passt)"'
# nspawn mounts /tmp nodev; the tests keep relinkd's device nodes (node_dir)
# under /tmp, as a host's /tmp allows.
ct mount -o remount,dev /tmp

step "build relinkd and its tests with trixie's toolchain"
bstart=$(date +%s)
targets=(relinkd relinkctl relink_integration_daemon relink_stack_tests)
((bench)) && targets=(relinkd relinkctl passt_recovery_bench)
ct env CCACHE_DIR=/ccache CCACHE_BASEDIR=/src CCACHE_NOHASHDIR=1 CCACHE_MAXSIZE=3G sh -c '
  set -e
  cmake -S /src -B /build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DRELINK_WERROR=ON -DRELINK_MAN=OFF \
    -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O2 -g1 -DNDEBUG" -DCMAKE_CXX_COMPILER_LAUNCHER=ccache >/build/cmake.log 2>&1 ||
    { tail -n 40 /build/cmake.log; exit 1; }
  cmake --build /build -j"$(nproc)" --target "$@" >/build/build.log 2>&1 || { grep -E -B2 -A12 "error|warning" /build/build.log | head -n 150; exit 1; }
  ccache -s 2>/dev/null | grep -m1 -E "^ *Hits" | tr -s " " || true
' build "${targets[@]}"
echo "built in $(( $(date +%s) - bstart )) s"

# The tests see /dev as on a host: the kernel's devtmpfs, mounted in a mount
# namespace of their own (nothing is written to it). nspawn's /dev is a
# tmpfs with no udev, where libvirt's /dev/tap<ifindex> would never appear.
# The container's hugepages and mqueue mounts are dropped first (libvirt
# checks every hugetlbfs mount it finds listed, covered or not); its pts and
# shm are put back where devtmpfs has their directories.
host_dev() {
  ct unshare -m sh -c '
    for m in hugepages mqueue; do if mountpoint -q "/dev/$m"; then umount -l "/dev/$m"; fi; done
    mkdir -p /run/relink-ctdev && mount --rbind /dev /run/relink-ctdev && mount -t devtmpfs devtmpfs /dev || exit 1
    for m in pts shm; do
      if mountpoint -q "/run/relink-ctdev/$m" && [ -d "/dev/$m" ]; then mount --rbind "/run/relink-ctdev/$m" "/dev/$m"; fi
    done
    exec "$@"' sh "$@"
}
if ((bench)); then
  step "passt recovery bench"
  host_dev /build/bench/passt_recovery_bench "$@"
  step "done"
  exit 0
fi

# A GTEST_FILTER given on the command line applies to both binaries.
rc=0
step "relink_stack_tests${filter:+: $filter}"
host_dev /build/tests/relink_stack_tests --gtest_color=no ${filter:+--gtest_filter="$filter"} || rc=1
step "relink_integration_daemon: ${filter:-$TIER_TESTS}"
host_dev /build/tests/relink_integration_daemon --gtest_color=no --gtest_filter="${filter:-$TIER_TESTS}" || rc=1
step "done"
exit "$rc"
