#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Installs what relink needs to build, test and run its demo on Debian 12.
# Idempotent: installs only what is missing, and runs `apt-get update` only then.
set -euo pipefail

packages=(
  # build
  cmake g++ make pkg-config
  libmnl-dev libnl-3-dev libnl-route-3-dev libsystemd-dev
  libspdlog-dev libfmt-dev nlohmann-json3-dev libtomlplusplus-dev libcli11-dev
  libgtest-dev libgmock-dev
  # libvirt VMs: libvirt's C library and an XML parser for their live XML
  libvirt-dev libxml2-dev
  # fuzzing (libFuzzer with ASan+UBSan; llvm for llvm-symbolizer's readable stacks)
  clang libclang-rt-14-dev llvm
  # tests and demo: namespaces, a real QEMU, a real guest (kernel + busybox initramfs)
  iproute2 procps util-linux kmod qemu-system-x86 busybox-static cpio gzip xz-utils zstd
  passt
  # tests: a real libvirtd (run in each test's own namespace) and virsh
  libvirt-daemon-system libvirt-clients libvirt-daemon-driver-qemu
  # man pages (scdoc builds them; man-db and groff check they render) and
  # bash completion's install directory (its pkg-config file)
  scdoc man-db groff-base bash-completion
  # tests: relinkctl metrics read back by Prometheus' own text parser; ccache
  # keeps compiled objects between runs on the same machine
  python3 python3-prometheus-client ccache
  # tests/systemd: a Debian rootfs booted under systemd-nspawn, status read with jq
  debootstrap systemd-container jq
  # tests/hostvm: the host VM's root filesystem as an ext4 image
  e2fsprogs
  # the Debian package (scripts/build-deb.sh, debian/) and its lint
  dpkg-dev debhelper fakeroot lintian
)

if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: run as root (it uses apt-get)" >&2
  exit 1
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-deps: done"
