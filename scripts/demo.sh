#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# relink demo sandbox: a real guest keeps its network while its host parent
# interface is deleted and re-created; a second guest, behind a passt that
# relinkd supervises, stays reachable while passt is killed; a third guest,
# run by a private libvirtd, keeps both its macvtap (<interface
# type='direct'>) and its tap on a bridge (<interface type='bridge'>) while
# the macvtap's parent and the bridge are re-created. Self-contained: it installs what it
# needs, builds relink, and does everything in throwaway network namespaces
# that it removes on exit. Run as root on Debian 12:  scripts/demo.sh
#
# The first run installs packages, builds relinkd and relinkctl (about 7
# minutes on 2 cores) and downloads Debian's kernel package for the guest
# (about 70 MB); later runs reuse all of it and take about a minute.
#
# Environment:
#   RELINK_BUILD_DIR   build directory to use or create (default build/); an
#                      existing one is reused: not configured again, and only
#                      what changed is recompiled
#   RELINK_DEMO_FLAPS  parent flaps and passt kills (default 3)
#   NO_COLOR           set: no bold headings (they are only used on a terminal)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
build=${RELINK_BUILD_DIR:-$root/build}
flaps=${RELINK_DEMO_FLAPS:-3}

if [ "$(id -u)" -ne 0 ]; then echo "demo: run as root (namespaces, macvtap, QEMU)" >&2; exit 1; fi

if [ -t 1 ] && [ -z "${NO_COLOR:-}" ]; then bold=$'\033[1m' plain=$'\033[0m'; else bold= plain=; fi
say() { printf '\n%s== %s%s\n' "$bold" "$*" "$plain"; }
started=$SECONDS
step_start=$SECONDS
took() { printf '%d:%02d' $(( (SECONDS - $1) / 60 )) $(( (SECONDS - $1) % 60 )); }
step_done() { echo "  done in $(took "$step_start")"; }

if [ -f "$build/CMakeCache.txt" ] && [ -s "$build/guest/initramfs.cpio.gz" ]; then
  echo "demo: reusing the build in $build (packages, relink and the guest image were set up by an earlier run)"
else
  echo "demo: the first run installs packages, builds relink (about 7 minutes on 2 cores) and downloads"
  echo "      Debian's kernel package for the guest (about 70 MB); later runs reuse it all and take about a minute."
fi

say "[1/3] dependencies (scripts/install-deps.sh: apt-get only for what is missing)"
step_start=$SECONDS
bash scripts/install-deps.sh
step_done

say "[2/3] building relinkd and relinkctl in $build (full output: $build/demo-build.log)"
step_start=$SECONDS
mkdir -p "$build"
build_log=$build/demo-build.log
: >"$build_log"
if [ -f "$build/CMakeCache.txt" ]; then
  echo "  configured already: reusing it (cmake --build recompiles only what changed)"
else
  echo "  configuring (cmake)"
  cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >>"$build_log" 2>&1 ||
    { tail -n 30 "$build_log" >&2; echo "demo: cmake failed (see $build_log)" >&2; exit 1; }
fi
cmake --build "$build" -j"$(nproc)" --target relinkd relinkctl 2>&1 | tee -a "$build_log" |
  bash scripts/build-progress.sh ||
  { tail -n 30 "$build_log" >&2; echo "demo: the build failed (see $build_log)" >&2; exit 1; }
step_done

say "[3/3] the guest image: Debian's kernel + a busybox initramfs (tests/guest/build-guest.sh)"
step_start=$SECONDS
bash tests/guest/build-guest.sh "$build/guest" 2>&1 | sed -u 's/^build-guest: /  /'
step_done

tag=$(head -c4 /dev/urandom | od -An -tx1 | tr -d ' \n')
host=relink-demo-$tag      # where the parent interface and relinkd live
peer=relink-demopeer-$tag  # the network on the other end of the parent
lan=relink-demolan-$tag    # the libvirt guest's two networks
work=$(mktemp -d /tmp/relink-demo.XXXXXX)
qemu_pid= qemu2_pid= relinkd_pid= libvirtd_pid=
cleanup() {
  set +e
  [ -n "$relinkd_pid" ] && kill "$relinkd_pid" 2>/dev/null && wait "$relinkd_pid" 2>/dev/null
  [ -n "$relinkd_pid" ] && echo "  relinkd stopped (it leaves attachments in place for the next relinkd to adopt)"
  [ -n "$qemu_pid" ] && kill -9 "$qemu_pid" 2>/dev/null && wait "$qemu_pid" 2>/dev/null
  [ -n "$qemu2_pid" ] && kill -9 "$qemu2_pid" 2>/dev/null && wait "$qemu2_pid" 2>/dev/null
  if [ -n "$libvirtd_pid" ]; then
    virsh -q -c "$lv_uri" destroy demo-libvirt >/dev/null 2>&1
    kill "$libvirtd_pid" 2>/dev/null
    for _ in $(seq 1 50); do kill -0 "$libvirtd_pid" 2>/dev/null || break; sleep 0.1; done
  fi
  for ns in "$host" "$peer" "$lan"; do
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$p"; done
    ip netns del "$ns" 2>/dev/null
  done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

add_parent() {
  ip -n "$host" link add eth0 type veth peer name uplink netns "$peer"
  ip -n "$host" link set eth0 up
  ip -n "$peer" addr add 192.0.2.1/24 dev uplink
  ip -n "$peer" link set uplink up
}
ping_guest() {
  for _ in $(seq 1 50); do
    if ip netns exec "$peer" busybox ping -c1 -W1 192.0.2.2 >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  return 1
}
state() { "$build/relinkctl" --socket "$work/control.sock" status --json 2>/dev/null | sed -n 's/.*"state": "\([a-z-]*\)".*/\1/p' | head -1; }
# STATE and pid of the passt binding (VM demo-passt, netdev net1).
passt_field() {
  "$build/relinkctl" --socket "$work/control.sock" status 2>/dev/null |
    awk -v f="$1" '$1 == "demo-passt" && $5 == "net1" { if (f == "state") print $6; else for (i = 1; i <= NF; i++) if ($i ~ /^pid=/) print substr($i, 5) }'
}
wait_passt() {
  for _ in $(seq 1 200); do [ "$(passt_field state)" = "$1" ] && return 0; sleep 0.05; done
  echo "demo: the passt binding did not reach '$1'" >&2; return 1
}
wait_state() {
  for _ in $(seq 1 200); do [ "$(state)" = "$1" ] && return 0; sleep 0.05; done
  echo "demo: relinkd did not reach '$1'" >&2; return 1
}

say "sandbox: namespace $host (host side, parent eth0) and $peer (the LAN, 192.0.2.1)"
ip netns add "$host"
ip netns add "$peer"
ip -n "$host" link set lo up
add_parent

# The third guest's libvirtd starts now (its first start probes QEMU for a
# few seconds) and is ready by the time its scene comes.
source scripts/demo-libvirt.sh
libvirt_start

cat >"$work/relinkd.toml" <<TOML
[daemon]
control_socket = "$work/control.sock"
state_dir = "$work/state"

[[vm]]
name = "demo"
qmp = "$work/demo.qmp"

[[vm.macvtap]]
nic = "nic0"
parent = "eth0"
mode = "bridge"
mac = "52:54:00:12:34:56"
attach = "hub"
hub = 0

[[vm]]
name = "demo-passt"
qmp = "$work/demo-passt.qmp"

[[vm.passt]]
netdev = "net1"
mode = "stream-server"
socket = "$work/demo-passt.sock"
args = ["--tcp-ports", "18080:8080"]

[libvirt]
uri = "$lv_uri"
pid_dir = "$lv/run/libvirt/qemu"
TOML

# The uncompressed kernel boots faster (PVH); build-guest.sh makes it when it can.
kernel="$build/guest/vmlinux"
[ -f "$kernel" ] || kernel="$build/guest/vmlinuz"

say "starting a VM (Debian kernel + busybox, TCG) wired for hub attach, no network of its own yet"
qemu-system-x86_64 -accel tcg -machine q35 -m 256 -nodefaults -display none -no-reboot \
  -serial "file:$work/console.log" -kernel "$kernel" -initrd "$build/guest/initramfs.cpio.gz" \
  -append "console=ttyS0 quiet panic=-1 relink.tag=demo relink.ip=192.0.2.2/24 relink.serve=8080" \
  -qmp "unix:$work/demo.qmp,server=on,wait=off" \
  -netdev hubport,id=nic0.port,hubid=0 -device virtio-net-pci,netdev=nic0.port,id=nic0,mac=52:54:00:12:34:56 \
  2>"$work/qemu.log" &
qemu_pid=$!

libvirt_wait_ready
say "starting relinkd in $host"
# relinkd's own pid in $! (not a pipeline's last command), so cleanup can stop it.
ip netns exec "$host" "$build/relinkd" --config "$work/relinkd.toml" > >(sed -u 's/^/  relinkd | /') 2>&1 &
relinkd_pid=$!
wait_state attached
for _ in $(seq 1 600); do grep -q RELINK-GUEST-READY "$work/console.log" 2>/dev/null && break; sleep 0.1; done
ping_guest && echo "  guest 192.0.2.2 answers ping from the LAN" || { echo "demo: guest unreachable" >&2; exit 1; }

# Each binding's last_reattach_ms (macvtap) or last_recovery_ms (passt), from
# status --json; the macvtap binding comes first.
field_ms() {
  "$build/relinkctl" --socket "$work/control.sock" status --json | sed -n "s/.*\"$1\": \([0-9.]*\).*/\1/p" | head -1
}
# "median M ms (min A, max B, N samples)" of the arguments.
spread() {
  printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END {
    m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
    printf "median %.2f ms (min %.2f, max %.2f, %d samples)", m, v[1], v[NR], NR }'
}
reattach_ms=() recovery_ms=()

for i in $(seq 1 "$flaps"); do
  say "flap $i/$flaps: deleting eth0 (the kernel deletes the VM's macvtap with it)"
  ip -n "$host" link del eth0
  wait_state waiting-parent
  if ip netns exec "$peer" busybox ping -c1 -W1 192.0.2.2 >/dev/null 2>&1; then echo "  (unexpected: guest still reachable)"; else echo "  guest unreachable, as expected"; fi
  say "flap $i/$flaps: re-creating eth0"
  add_parent
  wait_state attached
  reattach_ms+=("$(field_ms last_reattach_ms)")
  echo "  relinkd reattached the NIC in ${reattach_ms[-1]} ms"
  ping_guest && echo "  guest answers ping again" || { echo "demo: guest unreachable after reattach" >&2; exit 1; }
  echo "  and its TCP service: $(ip netns exec "$peer" busybox nc -w 3 192.0.2.2 8080 </dev/null)"
done

say "second VM: its network is a passt that relinkd runs (as nobody) and supervises"
# passt copies the host's address and needs a default route.
ip -n "$host" addr add 192.0.2.10/24 dev eth0
ip -n "$host" route add default via 192.0.2.1 dev eth0
qemu-system-x86_64 -accel tcg -machine q35 -m 256 -nodefaults -display none -no-reboot \
  -serial "file:$work/console2.log" -kernel "$kernel" -initrd "$build/guest/initramfs.cpio.gz" \
  -append "console=ttyS0 quiet panic=-1 relink.tag=demo-passt relink.dhcp=1 relink.serve=8080" \
  -qmp "unix:$work/demo-passt.qmp,server=on,wait=off" \
  -netdev "stream,id=net1,server=on,addr.type=unix,addr.path=$work/demo-passt.sock" \
  -device virtio-net-pci,netdev=net1,id=nic0,mac=52:54:00:12:34:57 \
  2>"$work/qemu2.log" &
qemu2_pid=$!
wait_passt running
for _ in $(seq 1 600); do grep -q RELINK-GUEST-READY "$work/console2.log" 2>/dev/null && break; sleep 0.1; done
echo "  guest lease from passt: $(grep -m1 'RELINK-GUEST-DHCP event=bound' "$work/console2.log" | sed 's/.*ip=/ip=/')"
hello_passt() {
  for _ in $(seq 1 100); do
    out=$(ip netns exec "$host" busybox nc -w 2 127.0.0.1 18080 </dev/null 2>/dev/null) && [ -n "$out" ] && { echo "$out"; return 0; }
    sleep 0.2
  done
  return 1
}
echo "  host port 18080, forwarded by passt: $(hello_passt)"
for i in $(seq 1 "$flaps"); do
  pid=$(passt_field pid)
  sleep 1.1  # a passt that ran for a second is restarted at once (one that dies sooner backs off)
  say "kill $i/$flaps: kill -9 passt (pid $pid)"
  kill -9 "$pid"
  wait_passt running
  recovery_ms+=("$(field_ms last_recovery_ms)")
  echo "  new passt pid $(passt_field pid): QEMU's stream connected again ${recovery_ms[-1]} ms after the old one died"
  echo "  through it again: $(hello_passt || echo 'NO ANSWER')"
done

libvirt_scene

say "relinkctl status"
"$build/relinkctl" --socket "$work/control.sock" status
say "done in $(took "$started")"
echo "  reattach, from the parent's return to the NIC's link up on the new tap: $(spread "${reattach_ms[@]}")"
echo "  passt recovery, from its death to QEMU's stream connected again:       $(spread "${recovery_ms[@]}")"
echo "  libvirt: the macvtap re-plugged through libvirt in ${lv_replug_ms} ms; the tap back in the new bridge in ${lv_rejoin_ms} ms"
echo "  (single samples vary with the machine's load; the benchmarks take hundreds: docs/operations.md#benchmarks)"
