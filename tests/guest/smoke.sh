#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# smoke.sh [CACHEDIR] -- boot the relink test guest behind a macvtap, wired the
# way relinkd wires a "hub" NIC, and check that the network works.
#
#   peer netns (192.0.2.1/24 on p1) <-veth-> p0 in netns NS <- mvt0 (macvtap,
#   bridge) <- fd 3 <- QEMU: tap netdev on hubport of hub 0 <-> virtio-net nic0
#
# Checks: the guest prints RELINK-GUEST-READY; the peer can ping it (IPv4
# and IPv6); the guest's TCP service answers RELINK-GUEST-HELLO; the echo
# service echoes; QMP set_link off/on shows up as RELINK-GUEST-CARRIER 0/1 and
# cuts/restores ping.
#
# CACHEDIR (default /var/cache/relink-guest) receives the guest built by
# build-guest.sh. Needs root. Exit 0 on success; non-zero with a message on
# stderr otherwise. Namespaces and QEMU are removed on every exit path.
#
# Environment: RELINK_GUEST_BOOT_TIMEOUT (seconds, default 60),
#              RELINK_GUEST_BZIMAGE=1 boots vmlinuz instead of the PVH vmlinux,
#              RELINK_GUEST_KEEP=1 keeps the work dir (console log) on exit.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${1:-/var/cache/relink-guest}
boot_timeout=${RELINK_GUEST_BOOT_TIMEOUT:-60}

GUEST_IP=192.0.2.2
PEER_IP=192.0.2.1
GUEST_IP6=2001:db8::2
PEER_IP6=2001:db8::1
MAC=52:54:00:12:34:56
SERVE_PORT=8080
ECHO_PORT=7
TAG=smoke

fail() { echo "smoke: FAIL: $*" >&2; exit 1; }
log() { echo "smoke: $*" >&2; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }

[[ $(id -u) -eq 0 ]] || fail "must run as root (namespaces, macvtap, QEMU with a tap fd)"

# ---- packages ----------------------------------------------------------------
apt_updated=0
need_pkgs() {
  local p missing=()
  for p in "$@"; do
    [[ $(dpkg-query -W -f='${Status}' "$p" 2>/dev/null) == "install ok installed" ]] || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  if ((!apt_updated)); then apt-get update -qq >&2 || fail "apt-get update failed"; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2 ||
    fail "apt-get install ${missing[*]} failed"
}
need_pkgs qemu-system-x86 iproute2 socat busybox-static util-linux

timeout 1200 "$here/build-guest.sh" "$cache" || fail "build-guest.sh $cache failed (or took over 20 min)"
# The uncompressed PVH vmlinux boots much faster under TCG than the bzImage.
kernel=$cache/vmlinux
[[ -s $kernel && ${RELINK_GUEST_BZIMAGE:-0} != 1 ]] || kernel=$cache/vmlinuz
initrd=$cache/initramfs.cpio.gz

# ---- leftovers of an earlier run that was SIGKILLed ----------------------------
# Names are relink-g[p]-<pid of smoke.sh>-<random>; reclaim those whose
# smoke.sh is gone (QEMU died with it thanks to --pdeathsig).
for ns in $(ip netns list 2>/dev/null | awk '{print $1}'); do
  [[ $ns =~ ^relink-gp?-([0-9]+)-[0-9]+$ ]] || continue
  owner=${BASH_REMATCH[1]}
  grep -qs smoke.sh "/proc/$owner/cmdline" && continue
  [[ -z $(ip netns pids "$ns" 2>/dev/null) ]] || continue
  log "removing stale namespace $ns"
  ip netns del "$ns" 2>/dev/null || true
done

# ---- cleanup on every exit path --------------------------------------------------
id=$$-$RANDOM
NS=relink-g-$id
PEER=relink-gp-$id
work=$(mktemp -d /tmp/relink-guest-smoke.XXXXXX)
qemu_pid=
# shellcheck disable=SC2317  # invoked by trap
cleanup() {
  local rc=$?
  trap - EXIT INT TERM HUP
  exec 3>&-
  if [[ -n $qemu_pid ]]; then
    kill -9 "$qemu_pid" 2>/dev/null || true
    wait "$qemu_pid" 2>/dev/null || true
  fi
  local ns pid
  for ns in "$NS" "$PEER"; do
    # Anything else left inside our own namespaces is ours too.
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
    ip netns del "$ns" 2>/dev/null || true
  done
  if ((rc != 0)); then
    if [[ -s $work/console.log ]]; then
      echo "smoke: ---- guest console (last 40 lines) ----" >&2
      tail -n 40 "$work/console.log" >&2
    fi
    if [[ -s $work/qemu.err ]]; then
      echo "smoke: ---- qemu stderr ----" >&2
      tail -n 20 "$work/qemu.err" >&2
    fi
  fi
  if [[ ${RELINK_GUEST_KEEP:-0} == 1 ]]; then
    log "work dir kept: $work"
  else
    rm -rf "$work"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'fail "interrupted"' INT TERM HUP
trap 'echo "smoke: FAIL: line $LINENO: $BASH_COMMAND" >&2' ERR

# ---- namespaces, veth, macvtap ---------------------------------------------
ip netns add "$NS" || fail "ip netns add $NS"
ip netns add "$PEER" || fail "ip netns add $PEER"
ip -n "$NS" link set lo up
ip -n "$PEER" link set lo up
ip -n "$NS" link add p0 type veth peer name p1 netns "$PEER" || fail "cannot create veth pair"
ip -n "$PEER" addr add "$PEER_IP/24" dev p1
ip -n "$PEER" addr add "$PEER_IP6/64" dev p1 nodad
ip -n "$PEER" link set p1 up
ip -n "$NS" link set p0 up
# Note: "address" must come before "type macvtap" (after it, ip parses it as
# a macvtap option and fails).
ip -n "$NS" link add link p0 name mvt0 address "$MAC" type macvtap mode bridge ||
  fail "cannot create macvtap on p0 (kernel without macvtap?)"
# allmulticast: a macvtap passes a multicast frame from its lower device only
# if the group is in the macvtap's own (hashed) multicast filter. Nothing
# copies the guest's groups there (libvirt does only with
# trustGuestRxFilters), so IPv6 neighbour solicitations to the guest's
# solicited-node group are dropped and IPv6 fails; IPv4 ARP is broadcast and
# works either way. Verified here: without this the IPv6 ping fails.
ip -n "$NS" link set mvt0 up allmulticast on

# /dev/tap<ifindex> is named by an ifindex that is only unique per namespace,
# so the node in the shared /dev may belong to another namespace's macvtap.
# Take major:minor from this namespace's sysfs and open a private node instead.
devnum=$(ip netns exec "$NS" sh -c 'cat /sys/class/net/mvt0/macvtap/tap*/dev') ||
  fail "no /sys/class/net/mvt0/macvtap/tap*/dev in $NS"
[[ $devnum =~ ^([0-9]+):([0-9]+)$ ]] || fail "unexpected macvtap dev number '$devnum'"
mknod "$work/tap" c "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}"
exec 3<>"$work/tap" || fail "cannot open macvtap char device $devnum"

# ---- boot --------------------------------------------------------------------------
append="console=ttyS0 quiet panic=-1 relink.tag=$TAG relink.ip=$GUEST_IP/24 relink.gw=$PEER_IP"
append+=" relink.ip6=$GUEST_IP6/64 relink.serve=$SERVE_PORT relink.echo=$ECHO_PORT"
# shellcheck disable=SC2054  # commas are QEMU option syntax
qemu_cmd=(qemu-system-x86_64 -accel tcg -M q35 -m 256 -nodefaults -display none -no-reboot
  -serial "file:$work/console.log"
  -kernel "$kernel" -initrd "$initrd" -append "$append"
  -netdev hubport,id=nic0.port,hubid=0
  -device "virtio-net-pci,netdev=nic0.port,id=nic0,mac=$MAC"
  -netdev tap,id=nic0.tap1,fd=3
  -netdev hubport,id=nic0.uplink1,hubid=0,netdev=nic0.tap1
  -qmp "unix:$work/qmp,server=on,wait=off")
log "qemu: ip netns exec $NS ${qemu_cmd[*]}"
t0=$(now_ms)
# --pdeathsig: QEMU dies with this script even if the script is SIGKILLed.
ip netns exec "$NS" setpriv --pdeathsig KILL -- "${qemu_cmd[@]}" </dev/null >"$work/qemu.err" 2>&1 &
qemu_pid=$!
exec 3>&-   # QEMU holds the only reference now

# wait_console PATTERN TIMEOUT_S: wait for an extended regex on the console.
wait_console() {
  local pat=$1 deadline=$(($(now_ms) + $2 * 1000))
  while (($(now_ms) < deadline)); do
    grep -qE "$pat" "$work/console.log" 2>/dev/null && return 0
    kill -0 "$qemu_pid" 2>/dev/null || fail "QEMU exited while waiting for /$pat/"
    sleep 0.05
  done
  return 1
}

wait_console '^RELINK-GUEST-READY ' "$boot_timeout" ||
  fail "no RELINK-GUEST-READY on the console within ${boot_timeout}s"
t_ready=$(now_ms)
ready_line=$(grep -m1 '^RELINK-GUEST-READY ' "$work/console.log")
log "guest ready after $((t_ready - t0)) ms ($(basename "$kernel")): $ready_line"
[[ $ready_line == *" ip=$GUEST_IP/24 "* ]] || fail "guest reports a wrong address: $ready_line"

# ---- checks --------------------------------------------------------------------------
peer() { ip netns exec "$PEER" "$@"; }
ping_ok() {  # up to $1 one-second attempts
  local i
  for ((i = 0; i < $1; i++)); do
    peer busybox ping -c1 -W1 "$GUEST_IP" >/dev/null 2>&1 && return 0
  done
  return 1
}
ping_ok 5 || fail "peer cannot ping the guest at $GUEST_IP"
log "ping from the peer: ok"
for ((i = 0; i < 5; i++)); do
  peer busybox ping6 -c1 -W1 "$GUEST_IP6" >/dev/null 2>&1 && break
done
((i < 5)) || fail "peer cannot ping the guest at $GUEST_IP6"
log "IPv6 ping from the peer: ok"

reply=$(peer timeout 10 bash -c "exec 3<>/dev/tcp/$GUEST_IP/$SERVE_PORT && cat <&3" 2>&1) ||
  fail "TCP service $GUEST_IP:$SERVE_PORT: connect/read failed: $reply"
[[ $reply == "RELINK-GUEST-HELLO tag=$TAG" ]] ||
  fail "TCP service $GUEST_IP:$SERVE_PORT answered '$reply'"
log "TCP service: $reply"

reply=$(peer timeout 10 bash -c "exec 3<>/dev/tcp/$GUEST_IP/$ECHO_PORT && echo relink-echo-$id >&3 && head -n1 <&3" 2>&1) ||
  fail "echo service $GUEST_IP:$ECHO_PORT failed: $reply"
[[ $reply == "relink-echo-$id" ]] || fail "echo service answered '$reply'"
log "echo service: ok"

qmp() {  # qmp JSON: run one command, fail unless it returns success
  local out
  out=$({ echo '{"execute":"qmp_capabilities"}'; echo "$1"; sleep 0.3; } |
    timeout 10 socat -t 1 - "UNIX-CONNECT:$work/qmp" 2>&1) || fail "QMP $1: socat failed: $out"
  [[ $(grep -c '"return"' <<<"$out") -ge 2 ]] || fail "QMP $1 failed: $out"
}

qmp '{"execute":"set_link","arguments":{"name":"nic0","up":false}}'
wait_console '^RELINK-GUEST-CARRIER 0 dev=eth0' 10 || fail "no RELINK-GUEST-CARRIER 0 after set_link off"
if peer busybox ping -c1 -W1 "$GUEST_IP" >/dev/null 2>&1; then
  fail "guest still answers ping with its link set off"
fi
qmp '{"execute":"set_link","arguments":{"name":"nic0","up":true}}'
wait_console '^RELINK-GUEST-CARRIER 1 dev=eth0' 10 || fail "no RELINK-GUEST-CARRIER 1 after set_link on"
ping_ok 5 || fail "guest does not answer ping after set_link on"
log "set_link off/on: carrier markers seen, ping cut and restored"

grep -q '^RELINK-GUEST-ERROR' "$work/console.log" &&
  fail "guest reported an error: $(grep -m1 '^RELINK-GUEST-ERROR' "$work/console.log")"

log "PASS (boot to ready $((t_ready - t0)) ms, total $(($(now_ms) - t0)) ms)"
exit 0
