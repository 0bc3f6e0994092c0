#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# What a Linux guest's network manager does with the two things a guest sees
# while a re-plugged NIC's parent is away: under release = "on-return" its NIC
# loses its carrier and gets it back; under release = "on-loss" the NIC
# disappears and a new one of the same name appears. NetworkManager and
# systemd-networkd (Debian 12's, in the systemd tier's root filesystem booted
# as a container) each manage a veth "eth1" with a static address; its peer
# sits in a namespace of its own. For each manager and each kind of outage,
# over ROUNDS rounds: whether eth1 keeps its address during the outage, and
# the time from the return (the peer's carrier up, or the new eth1 created)
# until eth1 is up with its address again, checked with a ping from the peer.
#
# Usage: sudo bench/guest_nic_semantics.sh [ROUNDS] [OUTAGE_SECONDS]
# (defaults 5 and 3). Needs the bookworm root filesystem
# (tests/systemd/build-rootfs.sh builds and caches it when it is missing).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
usage() {
  cat <<'EOF'
usage: guest_nic_semantics.sh [--help|-h] [ROUNDS] [OUTAGE_SECONDS]

Measures what NetworkManager and systemd-networkd (Debian 12's, in a
container) do when their NIC loses its carrier (what a guest sees during an
outage with release = "on-return") against when the NIC disappears and a new
one of the same name appears (release = "on-loss"): whether the address is
kept during the outage, and the time from the return until the NIC is up with
its address again. ROUNDS rounds of each (default 5), outages of
OUTAGE_SECONDS (default 3). A run takes about 4 x ROUNDS x (OUTAGE_SECONDS + 1)
seconds plus 10 s of container boot; needs root and busybox.
EOF
}
case ${1:-} in -h | --help) usage; exit 0 ;; esac
rounds=${1:-5}
outage=${2:-3}
[[ $rounds =~ ^[1-9][0-9]*$ && $outage =~ ^[1-9][0-9]*$ ]] || { usage >&2; exit 2; }
[[ $(id -u) == 0 ]] || { echo "guest_nic_semantics.sh: needs root" >&2; exit 1; }
command -v busybox >/dev/null || { echo "guest_nic_semantics.sh: needs busybox (its ping)" >&2; exit 1; }

# shellcheck source=../tests/systemd/container.sh
source "$here/tests/systemd/container.sh"
work=$(mktemp -d /tmp/relink-nicsem.XXXXXX)
name=relink-nicsem-$$
cleanup() {
  ct_stop
  rm -rf --one-file-system "$work"
}
trap cleanup EXIT

tarball=$("$here/tests/systemd/build-rootfs.sh" bookworm)
root=$work/root
mkdir "$root"
zstd -q -d -c "$tarball" | tar -C "$root" --numeric-owner -xf -
mkdir -p "$root/etc/NetworkManager/conf.d" "$root/etc/systemd/network"
# NM makes up no "Wired connection" and leaves the peer alone: eth1's own
# profile is the only one.
printf '[main]\nno-auto-default=*\n' > "$root/etc/NetworkManager/conf.d/nicsem.conf"
ct_boot "$root" "$name" >/dev/null

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
has_addr() { ct ip -4 -o addr show dev eth1 2>/dev/null | grep -q 192.0.2.2/24; }
# The peer's end of eth1, in namespace "peer" inside the container.
make_nic() {
  ct ip link add eth1 type veth peer name peer1 netns peer
  ct ip -n peer addr add 192.0.2.1/24 dev peer1
  ct ip -n peer link set peer1 up
}
# From the return until eth1 is up with its address again (polled every
# 10 ms, 30 s at most), then one ping from the peer to check it carries
# traffic ("no-ping" when it does not).
answered_after() {
  local t0=$1 i ms
  for ((i = 0; i < 3000; i++)); do
    if has_addr && ct ip -o link show dev eth1 2>/dev/null | grep -q 'state UP'; then
      ms=$(( $(now_ms) - t0 ))
      # The host's busybox (minbase has no ping), in the container's peer namespace.
      if nsenter --net="/proc/$CT_LEADER/root/run/netns/peer" busybox ping -c1 -W2 -q 192.0.2.2 >/dev/null 2>&1; then
        echo "$ms"
      else
        echo "no-ping"
      fi
      return 0
    fi
    sleep 0.01
  done
  echo "never"
}
median() { sort -n | awk '{a[NR]=$1} END {if (NR) print a[int((NR+1)/2)]; else print "-"}'; }

# One manager, one kind of outage: prints a line of figures.
measure() {
  local manager=$1 kind=$2 r t0 ms kept=0 times=()
  for ((r = 1; r <= rounds; r++)); do
    answered_after "$(now_ms)" >/dev/null
    if [[ $kind == carrier ]]; then
      ct ip -n peer link set peer1 down
      sleep "$outage"
      has_addr && kept=$((kept + 1))
      t0=$(now_ms)
      ct ip -n peer link set peer1 up
    else
      ct ip link del eth1
      sleep "$outage"
      t0=$(now_ms)
      make_nic
    fi
    ms=$(answered_after "$t0")
    times+=("$ms")
  done
  local p50
  p50=$(printf '%s\n' "${times[@]}" | { grep -E '^[0-9]+$' || true; } | median)
  if [[ $kind == carrier ]]; then
    printf '%-16s %-22s address kept during the outage %d/%d; back -> ping p50 %s ms (each: %s)\n' \
      "$manager" "carrier lost (on-return)" "$kept" "$rounds" "$p50" "${times[*]}"
  else
    printf '%-16s %-22s no NIC during the outage;          back -> ping p50 %s ms (each: %s)\n' \
      "$manager" "NIC gone (on-loss)" "$p50" "${times[*]}"
  fi
}

ct ip netns add peer
make_nic

# NetworkManager: a static profile on eth1, autoconnect (as a guest has it).
ct nmcli con add type ethernet con-name eth1 ifname eth1 ipv4.method manual ipv4.addresses 192.0.2.2/24 \
  ipv6.method disabled >/dev/null
ct nmcli con up eth1 >/dev/null
echo "NetworkManager $(ct NetworkManager --version); $rounds rounds, outages of $outage s"
measure NetworkManager carrier
measure NetworkManager gone

# systemd-networkd: a .network file for eth1, NetworkManager stopped.
ct systemctl stop NetworkManager
ct ip link del eth1
printf '[Match]\nName=eth1\n[Network]\nAddress=192.0.2.2/24\nLinkLocalAddressing=no\nIPv6AcceptRA=no\n' |
  ct tee /etc/systemd/network/50-eth1.network >/dev/null
make_nic
ct systemctl start systemd-networkd
echo "systemd-networkd $(ct networkctl --version | head -1)"
measure systemd-networkd carrier
measure systemd-networkd gone
