#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# relinkd under a real systemd, with the shipped (hardened) unit: a Debian 12
# container (tests/systemd/build-rootfs.sh, cached in /var/cache/relink)
# booted with systemd-nspawn (tests/systemd/container.sh), relinkd installed
# into it from the Debian package (scripts/build-deb.sh, dpkg -i), a QEMU
# (QMP only, no guest) run as uid 1000 with its sockets under
# /run/user/1000, one macvtap binding (hub attach) and one passt
# stream-server binding. First the package's own install: relinkd.service
# enabled and started with the shipped /etc/relinkd/relinkd.toml (which
# manages nothing). Then Type=notify, a config-less start, reloads good and
# bad, the watchdog, stop/start adoption, a macvtap re-attach and a passt
# restart inside the unit's sandbox; NetworkManager (a unit in the same
# container) taking down and re-creating a bridge that a macvtap binding
# sits on, and leaving relinkd's macvtap alone; a persistent tap that is a
# port of that bridge ([bridge.br0], no VM) put back into the re-created
# bridge with its port settings; and dpkg -r.
#
#   systemd_test.sh BUILD_DIR
#
# The .deb is built once per run by scripts/build-deb.sh into BUILD_DIR/deb
# (minutes with a cold ccache, RELINK_SD_DEB=FILE uses FILE instead); the
# container's root filesystem already holds every package it depends on.
# Exit 77 (skipped) when not root or the host tools are missing.
set -euo pipefail

build=$(readlink -f "${1:?usage: systemd_test.sh BUILD_DIR}")
here=$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")
t0=$(date +%s%N)

if [[ $EUID -ne 0 ]]; then echo "SKIP: needs root"; exit 77; fi
for tool in systemd-nspawn debootstrap zstd nsenter jq dpkg-buildpackage dh lintian; do
  command -v "$tool" >/dev/null || { echo "SKIP: $tool is missing (scripts/install-deps.sh)"; exit 77; }
done

# shellcheck source-path=SCRIPTDIR
source "$here/container.sh"

work=$(mktemp -d /var/tmp/relink-sd.XXXXXX)
name=relink-sd-${work##*.}
cleanup() {
  local rc=$?
  ct_stop
  rm -rf --one-file-system "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

deb_s=-
rootfs_s=-
elapsed() { local ms=$(( ($(date +%s%N) - t0) / 1000000 )); printf '%d.%d s' $((ms / 1000)) $((ms % 1000 / 100)); }
step() { printf '\n== %s (%s)\n' "$*" "$(elapsed)"; }
fail() {
  echo "FAIL: $*"
  if [[ -n ${CT_LEADER:-} ]]; then
    echo "--- systemctl status relinkd"
    ct systemctl status --no-pager -n 0 relinkd || true
    echo "--- journalctl -u relinkd (last 60 lines)"
    ct journalctl --no-pager -o short-monotonic -u relinkd -n 60 || true
    echo "--- relinkctl status"
    ct relinkctl status || true
    if [[ -n ${RELINK_SD_DEBUG:-} ]]; then
      echo "container leader $CT_LEADER kept for $RELINK_SD_DEBUG s"
      sleep "$RELINK_SD_DEBUG"
    fi
  fi
  exit 1
}
# wait_for SECONDS CMD...: CMD succeeds within SECONDS.
wait_for() {
  local deadline=$(( $(date +%s%N) + ${1%.*} * 1000000000 ))
  shift
  until "$@"; do
    (( $(date +%s%N) < deadline )) || return 1
    sleep 0.05
  done
}
prop() { ct systemctl show -P "$2" "$1"; }
# The unit's journal, read whole: a grep -q or -m1 straight on journalctl's
# output would make it die of SIGPIPE, which pipefail counts as a failure.
journal() { ct journalctl --no-pager -u relinkd; }
# The socket named: relinkctl would warn while the file is broken on purpose.
status_json() { ct relinkctl --socket /run/relinkd/control.sock status --json; }
# binding VM NAME FIELD: FIELD of the binding NAME (nic or netdev) of VM.
binding() {
  status_json | jq -r --arg vm "$1" --arg b "$2" --arg f "$3" \
    '.vms[] | select(.name == $vm) | .bindings[] | select(.nic == $b or .netdev == $b) | .[$f] // "null"'
}
binding_is() { [[ $(binding "$1" "$2" "$3" 2>/dev/null) == "$4" ]]; }

# --- the package, the root filesystem, and the package copied into it
if [[ -n ${RELINK_SD_DEB:-} ]]; then
  deb=$(readlink -f "$RELINK_SD_DEB")
else
  step "build the Debian package (scripts/build-deb.sh)"
  b0=$(date +%s)
  deb=$("$here/../../scripts/build-deb.sh" "$build/deb") || fail "scripts/build-deb.sh"
  deb_s=$(( $(date +%s) - b0 ))
  echo "built $deb in $deb_s s"
fi
[[ -s $deb ]] || fail "no package at $deb"
# Errors and warnings fail (lintian's own note about running as root aside).
lintian_rc=0
lintian_out=$(lintian --fail-on error,warning "$deb" 2>&1) || lintian_rc=$?
lintian_out=$(grep -v 'running with root privileges' <<<"$lintian_out" || true)
(( lintian_rc == 0 )) || { echo "$lintian_out"; fail "lintian ${deb##*/} exited $lintian_rc"; }
echo "ok: lintian: ${lintian_out:-no errors or warnings}"

step "root filesystem"
tarball=$("$here/build-rootfs.sh" --path)
if [[ ! -s $tarball ]]; then
  b0=$(date +%s)
  "$here/build-rootfs.sh" >/dev/null
  rootfs_s=$(( $(date +%s) - b0 ))
  echo "built the container's root filesystem in $rootfs_s s: $tarball"
fi
root=$work/root
mkdir "$root"
zstd -q -d -c "$tarball" | tar -C "$root" --numeric-owner -xf -

# The package goes in with dpkg -i once the container runs (no network
# there: the root filesystem has its dependencies already).
cp "$deb" "$root/var/tmp/"
deb_in_ct=/var/tmp/${deb##*/}

mkdir -p "$root/etc/systemd/system/relinkd.service.d"
# NetworkManager (a unit of the rootfs) owns only what the test gives it
# (br0 and its port): the test's own veths are unmanaged (NM would otherwise
# take up0's address and route from under the test, or run DHCP on them),
# and no "Wired connection" is made up for a new device. Nothing marks
# relinkd's macvtaps unmanaged: NM has to leave them alone by itself.
mkdir -p "$root/etc/NetworkManager/conf.d"
cat > "$root/etc/NetworkManager/conf.d/relink-test.conf" <<'NM'
[main]
no-auto-default=*
[keyfile]
unmanaged-devices=interface-name:p0;interface-name:p0peer;interface-name:up0;interface-name:up1
NM
# RELINK_SD_DROPIN: [Service] lines to try against the shipped unit (e.g.
# "ProtectProc=default"), in a drop-in of their own.
if [[ -n ${RELINK_SD_DROPIN:-} ]]; then
  printf '[Service]\n%s\n' "$RELINK_SD_DROPIN" > "$root/etc/systemd/system/relinkd.service.d/try.conf"
fi

# --- boot
step "boot the container"
ct_boot "$root" "$name" || fail "boot"
echo "booted: $(ct systemctl is-system-running || true), leader pid $CT_LEADER"

# --- the package: installed, enabled and started with its own config
step "dpkg -i ${deb##*/}"
ct dpkg -i "$deb_in_ct" >"$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log"; fail "dpkg -i $deb_in_ct"; }
sed 's/^/    /' "$work/dpkg.log"
ct grep -q '^ExecStart=/usr/sbin/relinkd ' /lib/systemd/system/relinkd.service ||
  fail "the installed unit does not run /usr/sbin/relinkd"
# shellcheck disable=SC2016 # dpkg-query's own ${field}
conffiles=$(ct dpkg-query -W -f='${Conffiles}\n' relink)
grep -q ' /etc/relinkd/relinkd.toml ' <<<"$conffiles" ||
  fail "/etc/relinkd/relinkd.toml is not a conffile"
[[ $(ct systemctl is-enabled relinkd) == enabled ]] || fail "relinkd.service is not enabled after dpkg -i"
[[ $(prop relinkd ActiveState)/$(prop relinkd SubState) == active/running ]] ||
  fail "relinkd is $(prop relinkd ActiveState)/$(prop relinkd SubState) after dpkg -i"
sleep 1
[[ $(prop relinkd NRestarts) == 0 && $(prop relinkd ActiveState) == active ]] || fail "relinkd did not stay up with the shipped config"
[[ $(status_json | jq '.vms | length') == 0 ]] || fail "the shipped config manages something"
echo "ok: enabled, active/running, NRestarts=0, no VMs (the shipped config)"
ct systemctl stop relinkd
ct rm /etc/relinkd/relinkd.toml

# --- the installed unit as this systemd reads it: no unknown or bad setting
# (minbase has no man: its Documentation= lookups are not checked here).
step "systemd-analyze verify relinkd.service"
verify=$(ct systemd-analyze verify relinkd.service 2>&1 | grep -v "Command 'man " || true)
[[ -z $verify ]] || fail "systemd-analyze verify: $verify"
echo "ok: no complaint"

# --- no configuration (removed): a clean skip, no restart loop
step "no /etc/relinkd/relinkd.toml: systemctl start is a clean skip"
ct systemctl start relinkd || fail "systemctl start relinkd without a config exited $?"
[[ $(prop relinkd ActiveState) == inactive ]] || fail "relinkd is $(prop relinkd ActiveState) without a config"
[[ $(prop relinkd ConditionResult) == no ]] || fail "ConditionResult is not no"
sleep 1.2
[[ $(prop relinkd NRestarts) == 0 && $(prop relinkd ActiveState) == inactive ]] || fail "restarted without a config"
# systemctl status says so until the inactive unit is unloaded; the
# journal keeps it.
skipped() { grep -m1 -o 'skipped because of an unmet condition check.*' <<<"$(journal)"; }
wait_for 5 skipped >/dev/null || fail "the journal does not say why relinkd was not started"
skipped=$(skipped)
echo "ok: inactive, ConditionResult=no, NRestarts=0; journal: $skipped"

# --- the host's links in the container's own network namespace, and the VM
step "links, and a QEMU (uid 1000, sockets in /run/user/1000)"
ct ip link set lo up
ct ip link add p0 type veth peer name p0peer
ct ip link set p0 up
ct ip link set p0peer up
# passt copies the host's addresses and routes and refuses to start without
# a routable interface.
ct ip link add up0 type veth peer name up1
ct ip addr add 192.0.2.1/24 dev up0
ct ip link set up0 up
ct ip link set up1 up
ct ip route add default via 192.0.2.254 dev up0
ct install -d -o 1000 -g 1000 -m 0700 /run/user/1000
ct systemd-run --quiet --unit=vm1 -p User=1000 -p Group=1000 \
  qemu-system-x86_64 -nodefaults -display none -machine q35 -accel tcg -m 64 -S \
  -qmp unix:/run/user/1000/vm1.qmp,server=on,wait=off \
  -netdev hubport,id=nic0.port,hubid=0 \
  -device virtio-net-pci,netdev=nic0.port,id=nic0,mac=52:54:00:12:34:56 \
  -netdev stream,id=net1,server=on,addr.type=unix,addr.path=/run/user/1000/vm1-net1.sock \
  -device virtio-net-pci,netdev=net1,id=nic1
wait_for 10 ct test -S /run/user/1000/vm1.qmp || { ct journalctl --no-pager -u vm1; fail "QEMU did not start"; }

config() {
  cat <<TOML
[daemon]
log_level = "debug"

[[vm]]
name = "vm1"
qmp = "/run/user/1000/vm1.qmp"
qemu_user = "vmuser"
[[vm.macvtap]]
nic = "nic0"
parent = "p0"
mode = "bridge"
mac = "52:54:00:12:34:56"
hub = 0
[[vm.passt]]
netdev = "net1"
mode = "stream-server"
socket = "/run/user/1000/vm1-net1.sock"
args = ["-t", "10001"]
TOML
}
put_config() { ct sh -c 'mkdir -p /etc/relinkd && cat > /etc/relinkd/relinkd.toml.new && mv /etc/relinkd/relinkd.toml.new /etc/relinkd/relinkd.toml'; }
config | put_config

# --- start: Type=notify, READY, attached and running
step "systemctl start relinkd"
ct systemctl start relinkd || fail "systemctl start relinkd"
[[ $(prop relinkd ActiveState)/$(prop relinkd SubState) == active/running ]] || fail "not active/running"
main=$(prop relinkd MainPID)
wait_for 10 binding_is vm1 nic0 state attached || fail "nic0 is not attached"
wait_for 10 binding_is vm1 net1 state running || fail "net1's passt is not running"
gen=$(binding vm1 nic0 generation)
passt=$(binding vm1 net1 pid)
echo "ok: active (Type=notify: start returned once READY=1), nic0 attached (generation $gen), passt pid $passt"
ct relinkctl status
# The sandbox is the unit's: bounding set, seccomp, no new privileges.
st=$(ct cat "/proc/$main/status")
grep -q '^NoNewPrivs:[[:space:]]*1' <<<"$st" || fail "NoNewPrivs is not set"
grep -q '^Seccomp:[[:space:]]*2' <<<"$st" || fail "no seccomp filter"
capbnd=$(awk '/^CapBnd:/ {print $2}' <<<"$st")
# CHOWN 0, DAC_OVERRIDE 1, FOWNER 3, KILL 5, SETGID 6, SETUID 7, NET_ADMIN 12,
# SYS_PTRACE 19, SYS_ADMIN 21, MKNOD 27.
want=0
for bit in 0 1 3 5 6 7 12 19 21 27; do want=$((want | 1 << bit)); done
(( 16#$capbnd == want )) || fail "CapBnd $capbnd, want $(printf %016x $want)"
echo "ok: NoNewPrivs, seccomp filter, CapBnd $capbnd"
# The mounts relinkd (and passt) see: /run/user writable under a read-only
# /home and /usr (ReadOnlyPaths=, ProtectSystem=strict).
mount_opts() { ct nsenter -t "$main" -m findmnt -n -o OPTIONS -T "$1" | cut -d, -f1; }
for want in /usr:ro /home:ro /etc:ro /run/user/1000:rw /run/relinkd:rw /tmp:rw /dev:rw; do
  [[ $(mount_opts "${want%:*}") == "${want#*:}" ]] || fail "${want%:*} is $(mount_opts "${want%:*}") for relinkd, want ${want#*:}"
done
echo "ok: for relinkd /usr, /home and /etc are read-only; /run/user/1000, /run/relinkd, /tmp and /dev writable"
# passt runs unprivileged.
[[ $(ct stat -c %u "/proc/$passt") != 0 ]] || fail "passt runs as root"

# --- watchdog
step "watchdog"
wd=$(prop relinkd WatchdogUSec)
[[ -n $wd && $wd != 0 && $wd != infinity ]] || fail "WatchdogUSec is $wd"
echo "ok: WatchdogUSec=$wd"

# --- reload: a change, then a broken file, then one relinkd refuses
step "systemctl reload with a good change"
{ config; printf '\n[[vm]]\nname = "vm2"\nqmp = "/run/user/1000/vm2.qmp"\nqemu_user = "vmuser"\n[[vm.macvtap]]\nnic = "nic0"\nparent = "p0"\nmac = "52:54:00:12:34:57"\n'; } | put_config
ct systemctl reload relinkd || fail "systemctl reload with a good config exited $?"
status_json | jq -e '.vms[] | select(.name == "vm2")' >/dev/null || fail "vm2 is not there after the reload"
# What relinkctl printed (ExecReload=) reaches the journal a moment later.
reloaded() { grep -o 'reloaded: .*' <<<"$(journal)" | tail -1 | grep .; }
wait_for 5 reloaded >/dev/null || fail "the journal does not show what the reload changed"
echo "ok: $(reloaded)"

step "systemctl reload with a broken config fails, the old one keeps running"
{ config; echo '[[vm'; } | put_config
if ct systemctl reload relinkd; then fail "systemctl reload succeeded with a broken config"; fi
[[ $(prop relinkd ActiveState) == active && $(prop relinkd MainPID) == "$main" ]] || fail "relinkd did not keep running"
status_json | jq -e '.vms[] | select(.name == "vm2")' >/dev/null || fail "the running configuration changed"
echo "ok: reload failed, relinkd (pid $main) runs the old configuration"

step "systemctl reload that relinkd itself refuses fails"
ct relinkctl --socket /run/relinkd/control.sock add rt1 --qmp /run/user/1000/rt1.qmp --qemu-user vmuser --macvtap nic=nic0,parent=p9,mac=52:54:00:12:34:99 >/dev/null ||
  fail "relinkctl add rt1"
{ config; printf '\n[[vm]]\nname = "rt1"\nqmp = "/run/user/1000/rt1.qmp"\nqemu_user = "vmuser"\n[[vm.macvtap]]\nnic = "nic0"\nparent = "p9"\nmac = "52:54:00:12:34:99"\n'; } | put_config
ct relinkd --check-config /etc/relinkd/relinkd.toml >/dev/null 2>&1 || fail "the conflicting config does not pass --check-config"
if ct systemctl reload relinkd; then fail "systemctl reload succeeded though relinkd refused the config"; fi
status_json | jq -e '.vms[] | select(.name == "vm2")' >/dev/null || fail "the running configuration changed"
ct relinkctl --socket /run/relinkd/control.sock remove rt1 >/dev/null || fail "relinkctl remove rt1"
config | put_config
ct systemctl reload relinkd || fail "systemctl reload back to the first config"
# journald takes relinkd's stderr a moment later.
refusal() { grep -m1 -o 'refused, keeping the running configuration.*' <<<"$(journal)"; }
wait_for 5 refusal >/dev/null || fail "relinkd's refusal is not in the journal"
refusal=$(refusal)
echo "ok: reload failed; relinkd $refusal"
echo "ok: back to the first config"

# --- stop leaves everything in place; start adopts
step "systemctl stop: passt keeps running, the macvtap stays"
ct systemctl stop relinkd
[[ $(prop relinkd ActiveState) == inactive ]] || fail "relinkd did not stop"
ct kill -0 "$passt" || fail "passt $passt died with relinkd"
mvt=$(ct ip -o link show type macvtap | grep -c '@p0' || true)
[[ $mvt == 1 ]] || fail "$mvt macvtaps on p0 after the stop"
# QEMU still has the tap on the NIC's hub (relinkd is gone: its QMP socket
# is free to ask).
qemu_network=$(python3 - "/proc/$CT_LEADER/root/run/user/1000/vm1.qmp" <<'PY'
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(5)
s.connect(sys.argv[1])
f = s.makefile("rw")
def call(cmd, **args):
    f.write(json.dumps({"execute": cmd, "arguments": args}) + "\n")
    f.flush()
    while True:
        m = json.loads(f.readline())
        if "return" in m or "error" in m:
            return m
json.loads(f.readline())  # greeting
call("qmp_capabilities")
print(call("human-monitor-command", **{"command-line": "info network"}).get("return", ""))
PY
) || fail "cannot ask QEMU for its network"
grep -q 'type=tap' <<<"$qemu_network" || { echo "$qemu_network"; fail "QEMU has no tap after relinkd stopped"; }
echo "ok: passt $passt alive, macvtap on p0 still there, QEMU's hub still has its tap:"
grep -E 'hub|tap' <<<"$qemu_network" | sed 's/^/    /'
step "systemctl start: adopts"
ct systemctl start relinkd || fail "systemctl start relinkd (again)"
main=$(prop relinkd MainPID)
wait_for 10 binding_is vm1 nic0 state attached || fail "nic0 not attached after the restart"
wait_for 10 binding_is vm1 net1 state running || fail "net1 not running after the restart"
[[ $(binding vm1 nic0 generation) == "$gen" ]] || fail "nic0 generation $(binding vm1 nic0 generation), was $gen: not adopted"
[[ $(binding vm1 net1 pid) == "$passt" ]] || fail "passt pid $(binding vm1 net1 pid), was $passt: not adopted"
echo "ok: generation $gen and passt pid $passt adopted"

# --- the parent goes and comes back; passt is killed
step "ip link del p0, re-created: re-attached"
ct ip link del p0
wait_for 10 binding_is vm1 nic0 state waiting-parent || fail "nic0 not waiting-parent after p0 went"
ct ip link add p0 type veth peer name p0peer
ct ip link set p0peer up
ct ip link set p0 up
wait_for 10 binding_is vm1 nic0 state attached || fail "nic0 not re-attached"
[[ $(binding vm1 nic0 generation) == $((gen + 1)) ]] || fail "generation $(binding vm1 nic0 generation), want $((gen + 1))"
echo "ok: attached at generation $((gen + 1)) in $(binding vm1 nic0 last_reattach_ms) ms"

step "kill -9 passt: a new one"
ct kill -9 "$passt"
passt_replaced() { local p; p=$(binding vm1 net1 pid); [[ $p != "$passt" && $p != null ]]; }
wait_for 10 passt_replaced || fail "no new passt"
wait_for 10 binding_is vm1 net1 state running || fail "net1 not running after the kill"
newpid=$(binding vm1 net1 pid)
[[ $newpid != "$passt" && $newpid != null ]] || fail "passt pid still $newpid"
(( $(binding vm1 net1 restarts) >= 1 )) || fail "restarts $(binding vm1 net1 restarts)"
echo "ok: passt $newpid running, restarts $(binding vm1 net1 restarts)"
passt=$newpid

# --- NetworkManager owns br0 (a bridge with a veth port): when NM takes it
# down and up again (a new br0, a new ifindex), relinkd re-attaches its
# macvtap on it, and NM leaves that macvtap alone.
step "NetworkManager: br0 with a veth port, vm3's macvtap on it"
ct systemctl is-active --quiet NetworkManager || fail "NetworkManager is not running"
ct nmcli con add type bridge con-name br0 ifname br0 bridge.mac-address 02:00:00:00:0b:01 \
  bridge.stp no ipv4.method disabled ipv6.method disabled >/dev/null || fail "nmcli con add br0"
ct nmcli con add type veth con-name br0-port ifname v0 veth.peer v0p master br0 slave-type bridge >/dev/null ||
  fail "nmcli con add br0-port"
ct nmcli con up br0 >/dev/null || fail "nmcli con up br0"
ct nmcli con up br0-port >/dev/null || fail "nmcli con up br0-port"
ct systemd-run --quiet --unit=vm3 -p User=1000 -p Group=1000 \
  qemu-system-x86_64 -nodefaults -display none -machine q35 -accel tcg -m 64 -S \
  -qmp unix:/run/user/1000/vm3.qmp,server=on,wait=off \
  -netdev hubport,id=nic0.port,hubid=0 \
  -device virtio-net-pci,netdev=nic0.port,id=nic0,mac=52:54:00:12:34:58
wait_for 10 ct test -S /run/user/1000/vm3.qmp || { ct journalctl --no-pager -u vm3; fail "vm3's QEMU did not start"; }
ct relinkctl --socket /run/relinkd/control.sock add vm3 --qmp /run/user/1000/vm3.qmp --qemu-user vmuser \
  --macvtap nic=nic0,parent=br0,mac=52:54:00:12:34:58,macvtap=rl-vm3 >/dev/null || fail "relinkctl add vm3"
wait_for 10 binding_is vm3 nic0 state attached || fail "vm3/nic0 is not attached on br0"
gen3=$(binding vm3 nic0 generation)
ifindex() { ct cat "/sys/class/net/$1/ifindex"; }
br_before=$(ifindex br0)
echo "ok: vm3/nic0 attached on br0 (ifindex $br_before), generation $gen3"
ct nmcli dev status

step "nmcli con down br0; nmcli con up br0: re-attached"
ct nmcli con down br0 >/dev/null || fail "nmcli con down br0"
wait_for 10 binding_is vm3 nic0 state waiting-parent || fail "vm3/nic0 not waiting-parent after br0 went"
ct nmcli con up br0 >/dev/null || fail "nmcli con up br0"
wait_for 10 binding_is vm3 nic0 state attached || fail "vm3/nic0 not re-attached on the new br0"
[[ $(binding vm3 nic0 generation) == $((gen3 + 1)) ]] || fail "vm3/nic0 generation $(binding vm3 nic0 generation), want $((gen3 + 1))"
br_after=$(ifindex br0)
[[ $br_after != "$br_before" ]] || fail "br0 kept ifindex $br_before: NM did not re-create it"
echo "ok: br0 re-created (ifindex $br_before -> $br_after), vm3/nic0 attached at generation $((gen3 + 1)) in $(binding vm3 nic0 last_reattach_ms) ms"
# NM leaves relinkd's macvtap alone: not managed, up, no IPv4 or global address.
sleep 1
nm_state=$(ct nmcli -g DEVICE,STATE dev status | awk -F: '$1 == "rl-vm3" {print $2}')
[[ $nm_state == unmanaged || $nm_state == *externally* ]] || fail "NetworkManager has rl-vm3 as '$nm_state'"
ct ip link show rl-vm3 | grep -q '[<,]UP[,>]' || fail "rl-vm3 was set down"
addrs=$(ct ip -o addr show dev rl-vm3 scope global)
[[ -z $addrs ]] || fail "rl-vm3 got an address: $addrs"
echo "ok: NetworkManager has rl-vm3 as '$nm_state': up, no global address"
ct relinkctl --socket /run/relinkd/control.sock remove vm3 >/dev/null || fail "relinkctl remove vm3"

# --- a taps-only bridge ([bridge.br0]: no VM, no libvirt) on NetworkManager's
# br0: a persistent tap that is a port of it (with a cost and hairpin of its
# own) is put back into the br0 NM creates again, with those settings.
step "[bridge.br0]: a tap on NetworkManager's br0 re-joins after nmcli con down/up"
ct ip tuntap add dev tap0 mode tap user 1000 || fail "ip tuntap add tap0"
ct ip link set tap0 master br0 || fail "ip link set tap0 master br0"
ct ip link set tap0 up
ct bridge link set dev tap0 cost 7 hairpin on || fail "bridge link set dev tap0"
{ config; printf '\n[bridge.br0]\n'; } | put_config
ct systemctl reload relinkd || fail "systemctl reload with [bridge.br0]"
# tap FIELD: FIELD of tap0's binding in the bridge's VM.
tap() {
  status_json | jq -r --arg f "$1" '.vms[] | select(.name == "bridge:br0") | .bindings[] | select(.tap == "tap0") | .[$f] // "null"'
}
tap_is() { [[ $(tap "$1" 2>/dev/null) == "$2" ]]; }
wait_for 10 tap_is state attached || fail "tap0 is not followed as a port of br0 (state $(tap state))"
br_before=$(ifindex br0)
ct nmcli con down br0 >/dev/null || fail "nmcli con down br0"
wait_for 10 tap_is state waiting-bridge || fail "tap0 is $(tap state) after br0 went, not waiting-bridge"
ct nmcli con up br0 >/dev/null || fail "nmcli con up br0"
wait_for 10 tap_is rejoins 1 || fail "tap0 did not re-join the new br0 (state $(tap state), rejoins $(tap rejoins))"
br_after=$(ifindex br0)
[[ $br_after != "$br_before" ]] || fail "br0 kept ifindex $br_before: NM did not re-create it"
master=$(ct readlink /sys/class/net/tap0/master) || fail "tap0 has no master"
[[ ${master##*/} == br0 ]] || fail "tap0's master is ${master##*/}, not br0"
port=$(ct bridge -d link show dev tap0)
grep -q 'cost 7 ' <<<"$port" && grep -q 'hairpin on ' <<<"$port" || fail "tap0's port settings were not restored: $port"
ct ip link show tap0 | grep -q '[<,]UP[,>]' || fail "tap0 is not up"
echo "ok: br0 re-created by NM (ifindex $br_before -> $br_after), tap0 back in it with cost 7 and hairpin on in $(tap last_rejoin_ms) ms"
ct ip link del tap0

# --- a stalled relinkd is killed by the watchdog
step "watchdog: a stopped relinkd is killed (WatchdogSec=2 drop-in)"
ct sh -c 'printf "[Service]\nWatchdogSec=2\n" > /etc/systemd/system/relinkd.service.d/watchdog.conf'
ct systemctl daemon-reload
ct systemctl restart relinkd
main=$(prop relinkd MainPID)
[[ $(prop relinkd WatchdogUSec) == 2s ]] || fail "WatchdogUSec $(prop relinkd WatchdogUSec) with the drop-in"
ct kill -STOP "$main"
watchdog_failed() { grep -q "Failed with result 'watchdog'" <<<"$(journal)"; }
wait_for 15 watchdog_failed ||
  fail "no watchdog failure in the journal"
echo "ok: $(grep -m1 -o 'Watchdog timeout.*' <<<"$(journal)")"
restarted() { [[ $(prop relinkd SubState) == running && $(prop relinkd MainPID) != "$main" ]]; }
wait_for 15 restarted ||
  fail "relinkd was not restarted after the watchdog"
wait_for 10 binding_is vm1 net1 state running || fail "net1 not running after the watchdog restart"
[[ $(binding vm1 net1 pid) == "$passt" ]] || fail "passt was replaced across the watchdog restart"
echo "ok: restarted (NRestarts=$(prop relinkd NRestarts)), passt $passt adopted"

# --- the unit's log has nothing that reads as a sandbox denial
if grep -E 'Operation not permitted|Permission denied|Read-only file system|Bad system call|cannot raise the soft fd limit' <<<"$(journal)"; then
  fail "a denial in relinkd's journal"
fi

# --- the package goes: relinkd stopped, the edited conffile kept
step "dpkg -r relink"
ct dpkg -r relink >"$work/dpkg-r.log" 2>&1 || { cat "$work/dpkg-r.log"; fail "dpkg -r relink"; }
[[ $(prop relinkd ActiveState) != active ]] || fail "relinkd still active after dpkg -r"
ct test -f /etc/relinkd/relinkd.toml || fail "dpkg -r removed the conffile"
ct test ! -e /usr/sbin/relinkd || fail "/usr/sbin/relinkd still there after dpkg -r"
echo "ok: relinkd stopped and removed, /etc/relinkd/relinkd.toml kept"

step "done"
total_s=$(( ($(date +%s%N) - t0) / 1000000000 ))
echo "timings: deb build ${deb_s} s, rootfs build ${rootfs_s} s (- : cached or given)," \
  "container test $(( total_s - ${deb_s/-/0} - ${rootfs_s/-/0} )) s, total $total_s s"
echo "PASS ($(elapsed))"
