# SPDX-License-Identifier: GPL-2.0-or-later
# The demo's libvirt scene (sourced by scripts/demo.sh, which sets build,
# work, host, lan, kernel and `say`): a private libvirtd
# in the demo's host namespace, as the tests start one
# (tests/support/libvirt_env.h), and a domain with one <interface
# type='direct'> (a macvtap on eth1) and one <interface type='bridge'> (a tap
# on br0). relinkd follows it with nothing but its [libvirt] table.

lv=$work/libvirt
lv_uri="qemu:///system?socket=$lv/run/libvirt/libvirt-sock"
lv_cache=$build/libvirt-cache/qemu/capabilities  # shared with the tests
lv_replug_ms=- lv_rejoin_ms=-

lvsh() { virsh -q -c "$lv_uri" "$@"; }

# libvirt opens a macvtap as /dev/tap<ifindex>, and /dev is shared by every
# network namespace: this namespace's ifindexes go past every /dev/tapN there
# is (as the tests' push_ifindex does, and noted the same way for them).
libvirt_push_ifindex() {
  local max=0 n f
  for f in /dev/tap[0-9]*; do
    [ -e "$f" ] || continue
    n=${f#/dev/tap}
    [ "$n" -gt "$max" ] && max=$n
  done
  [ "$max" -gt 0 ] || return 0
  for n in $(seq 1 $(( max / 2 + 40 ))); do echo "link add rlx$n group 4094 type veth peer name rly$n group 4094"; done >"$work/push.batch"
  ip -n "$host" -batch "$work/push.batch" && ip -n "$host" link del group 4094
  ip -n "$host" link set lo alias "relink-ifindex-end=$(( max + 80 ))"
}

libvirt_start() {
  mkdir -p "$lv"/etc/libvirt/qemu "$lv"/run "$lv"/var/lib/libvirt/qemu "$lv"/var/log/libvirt/qemu \
    "$lv"/var/cache/libvirt/qemu/capabilities
  # Nothing of the host's libvirt is read or written: QEMU as root, no
  # virtlogd, no security driver, no cgroups (the tests' configuration).
  cat >"$lv/etc/libvirt/qemu.conf" <<'EOF'
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
stdio_handler = "file"
security_driver = "none"
cgroup_controllers = [ ]
namespaces = [ ]
EOF
  cat >"$lv/etc/libvirt/libvirtd.conf" <<'EOF'
auth_unix_rw = "none"
auth_unix_ro = "none"
log_outputs = "3:file:/var/log/libvirt/libvirtd.log"
EOF
  # A QEMU capabilities cache the tests or an earlier run left: libvirt
  # checks it is still valid, and probes QEMU again (a few seconds) if not.
  cp "$lv_cache"/*.xml "$lv/var/cache/libvirt/qemu/capabilities/" 2>/dev/null || true
  libvirt_push_ifindex
  # libvirtd runs under a child subreaper: the QEMUs it daemonizes are
  # reaped at once when they exit (libvirt waits for that), whatever PID 1
  # is. Pinned to one CPU, or its capabilities cache is often found stale.
  local cpu
  cpu=$(taskset -pc $$ | sed 's/.*: //; s/[,-].*//')
  python3 -c '
import ctypes, os, signal, sys
ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
child = os.fork()
if child == 0:
    os.execvp(sys.argv[1], sys.argv[1:])
signal.signal(signal.SIGTERM, lambda *_: os.kill(child, signal.SIGTERM))
while True:
    try:
        os.wait()
    except ChildProcessError:
        break
' ip netns exec "$host" sh -c "set -e; mount --bind $lv/etc/libvirt /etc/libvirt; mount --bind $lv/run /run;
    mkdir -p /run/libvirt; mount --bind $lv/var/lib/libvirt /var/lib/libvirt;
    mount --bind $lv/var/log/libvirt /var/log/libvirt; mount --bind $lv/var/cache/libvirt /var/cache/libvirt;
    exec taskset -c $cpu /usr/sbin/libvirtd" >"$lv/libvirtd.out" 2>&1 &
  libvirtd_pid=$!
}

libvirt_wait_ready() {
  local i f
  for i in $(seq 1 300); do
    [ -S "$lv/run/libvirt/libvirt-sock" ] && lvsh version >/dev/null 2>&1 && break
    sleep 0.2
  done
  lvsh version >/dev/null 2>&1 || { tail -n 20 "$lv/libvirtd.out" "$lv/var/log/libvirt/libvirtd.log" >&2; echo "demo: libvirtd did not start" >&2; return 1; }
  # What libvirt (re)probed goes back to the shared cache, each file atomically.
  mkdir -p "$lv_cache"
  for f in "$lv"/var/cache/libvirt/qemu/capabilities/*.xml; do
    [ -e "$f" ] && ! cmp -s "$f" "$lv_cache/${f##*/}" && cp "$f" "$lv_cache/.${f##*/}.$$" && mv "$lv_cache/.${f##*/}.$$" "$lv_cache/${f##*/}"
  done
  return 0
}

# eth1: the macvtap's parent (its veth peer lvd in $lan, 192.0.2.33/28).
lv_add_parent() {
  ip -n "$host" link add eth1 type veth peer name lvd netns "$lan"
  ip -n "$host" link set eth1 up
  ip -n "$lan" addr add 192.0.2.33/28 dev lvd
  ip -n "$lan" link set lvd up
}
# br0 with its uplink brup (veth peer lvb in $lan, 192.0.2.49/28), as
# NetworkManager activates a bridge profile: bridge, port, up.
lv_add_bridge() {
  ip -n "$host" link add br0 type bridge
  ip -n "$host" link set brup master br0
  ip -n "$host" link set brup up
  ip -n "$host" link set br0 up
}
# BINDING-KIND FIELD...: the libvirt guest's binding of that kind, from status --json.
lv_binding() {
  local kind=$1; shift
  "$build/relinkctl" --socket "$work/control.sock" status --json 2>/dev/null |
    jq -r --arg k "$kind" --arg f "$*" '.vms[] | select(.name == "demo-libvirt") | .bindings[] | select(.kind == $k)
      | [($f | split(" "))[] as $x | .[$x] | tostring] | join(" ")' 2>/dev/null | head -1
}
lv_wait() {  # KIND "FIELDS" "WANTED"
  local i
  for i in $(seq 1 300); do [ "$(lv_binding "$1" $2)" = "$3" ] && return 0; sleep 0.1; done
  echo "demo: the libvirt guest's $1 binding is '$(lv_binding "$1" $2)' ($2), not '$3'" >&2; return 1
}
lv_ping() {  # ADDRESS
  local i
  for i in $(seq 1 100); do ip netns exec "$lan" busybox ping -c1 -W1 "$1" >/dev/null 2>&1 && return 0; sleep 0.2; done
  return 1
}
lv_answers() {
  lv_ping 192.0.2.34 && echo "  guest answers on its macvtap (192.0.2.34)" || { echo "demo: no answer on the macvtap" >&2; return 1; }
  lv_ping 192.0.2.50 && echo "  guest answers on its bridge tap (192.0.2.50)" || { echo "demo: no answer on the bridge tap" >&2; return 1; }
}
lv_domiflist() { lvsh domiflist demo-libvirt | sed 's/^/  /'; }

libvirt_scene() {
  say "third VM, run by libvirt (a private libvirtd in $host): <interface type='direct'> on eth1, <interface type='bridge'> on br0"
  ip netns add "$lan"
  ip -n "$host" link add brup type veth peer name lvb netns "$lan"
  ip -n "$lan" addr add 192.0.2.49/28 dev lvb
  ip -n "$lan" link set lvb up
  lv_add_parent
  lv_add_bridge
  cat >"$work/demo-libvirt.xml" <<XML
<domain type='qemu'>
  <name>demo-libvirt</name>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
    <kernel>$kernel</kernel>
    <initrd>$build/guest/initramfs.cpio.gz</initrd>
    <cmdline>console=ttyS0 quiet panic=-1 relink.tag=demo-libvirt relink.ip=192.0.2.34/28 relink.eth1.ip=192.0.2.50/28</cmdline>
  </os>
  <features><acpi/><apic/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <interface type='direct'>
      <mac address='52:54:00:12:34:58'/>
      <source dev='eth1' mode='bridge'/>
      <model type='virtio'/>
    </interface>
    <interface type='bridge'>
      <mac address='52:54:00:12:34:59'/>
      <source bridge='br0'/>
      <model type='virtio'/>
    </interface>
    <serial type='file'>
      <source path='$work/console3.log'/>
      <target port='0'/>
    </serial>
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
  </devices>
</domain>
XML
  lvsh create "$work/demo-libvirt.xml" | sed 's/^/  virsh: /'
  lv_wait macvtap "state generation" "attached 1"
  lv_wait bridge "state" "attached"
  local i
  for i in $(seq 1 600); do grep -q RELINK-GUEST-READY "$work/console3.log" 2>/dev/null && break; sleep 0.1; done
  echo "  virsh domiflist demo-libvirt, before:"
  lv_domiflist
  lv_answers

  say "libvirt: deleting eth1 (the kernel deletes libvirt's macvtap with it) and br0 (its tap stays, in no bridge)"
  ip -n "$host" link del eth1
  ip -n "$host" link del br0
  local tap
  tap=$(lv_binding bridge tap)
  echo "  $tap is still there, in no bridge: $(ip -n "$host" -o link show dev "$tap" | grep -o 'master [^ ]*' || echo 'no master')"
  say "libvirt: re-creating eth1, and br0 with its uplink port, as NetworkManager does"
  lv_add_parent
  lv_add_bridge
  lv_wait macvtap "state generation" "attached 2"
  lv_wait bridge "state rejoins" "attached 1"
  lv_replug_ms=$(lv_binding macvtap last_reattach_ms)
  lv_rejoin_ms=$(lv_binding bridge last_rejoin_ms)
  echo "  relinkd re-plugged the direct interface through libvirt (a new macvtap) in $lv_replug_ms ms,"
  echo "  and put the tap back into the new br0 (no call to libvirt) in $lv_rejoin_ms ms"
  echo "  virsh domiflist demo-libvirt, after:"
  lv_domiflist
  lv_answers
}
