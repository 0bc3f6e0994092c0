#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""The laptop in a box: relinkd on Debian's full kernel, in a host VM.

A host VM booted under TCG (tests/hostvm/build-hostvm.sh: Debian's kernel
and modules, Debian 12 with udev, D-Bus, NetworkManager and QEMU) gets
relinkd and relinkctl from this build over 9p. Inside, relinkd manages five
nested QEMUs (hub attach, on a BIOS that halts) whose macvtaps sit on what a laptop has:
a dock NIC (a virtio-net-pci on its own pcie-root-port, unplugged and
plugged back over the host VM's QMP: a real driver, a permanent MAC, a
slot name from udev), a VLAN that NetworkManager owns on it, a bond of two
NICs and a dummy. This script drives the host VM's hardware over QMP and
runs commands inside over a virtio-serial port (tests/hostvm/init serves
them), and checks, scenario by scenario:

  dock      the dock by name and by permanent MAC: replugged into the same
            slot (same name; both bindings come back) and into another slot
            (a new name; only the parent_mac binding follows, through
            IFLA_PERM_ADDRESS while NetworkManager has set another MAC)
  dummy     a dummy parent deleted and re-created
  frames    (after every event of dock and vlan) frames sent into the dock
            NIC from outside the host VM cross dock -> [VLAN] -> the new
            macvtap -> the nested QEMU's hub, and QEMU holds exactly the
            current macvtap
  vlan      a VLAN that NetworkManager owns: nmcli con down/up, and the dock
            unplugged (NM drops the VLAN) and back (NM re-creates it); NM
            leaves relinkd's macvtap unmanaged
  bond      a bond deleted and re-created; one port unplugged (carrier
            stays), both (carrier goes, the guest link follows)
  bridgevlan a tap on a VLAN-filtering bridge, the bridge re-created: its
            VLANs (PVID, untagged) and port options come back exactly
            (a second relinkd, [bridge.brv]; 3 times at most)

Figures: relinkd's last_reattach_ms after each parent event, p50 per
scenario. Exit 0 when every scenario passed, 1 otherwise, 77 when it cannot
run here (not root, no QEMU).

  hostvm_test.py BUILD_DIR [--scenarios dock,dummy,vlan,bond,bridgevlan] [--reps N] [--keep]
"""
import argparse
import ctypes
import json
import os
import re
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(os.path.dirname(HERE))
T0 = time.monotonic()

# The dock NIC's permanent MAC, and the one NetworkManager gives it instead.
DOCK_MAC = "52:54:00:d0:c0:01"
DOCK_CLONED = "02:00:00:d0:c0:99"
FRAME_SRC = bytes.fromhex("020000fe0001")
VLAN_ID = 100
# Slot names udev gives a NIC on the host VM's root ports rp1..rp4.
SLOT_NAME = {"rp1": "enp1s0", "rp2": "enp2s0", "rp3": "enp3s0", "rp4": "enp4s0"}
# The nested VMs: name -> (binding TOML lines, guest MAC)
VMS = {
    "dockname": ('parent = "enp1s0"', "52:54:00:00:01:01"),
    "dockmac": (f'parent = "dock-by-mac"\nparent_mac = "{DOCK_MAC}"', "52:54:00:00:01:02"),
    "vlan": ('parent = "dock.100"', "52:54:00:00:01:03"),
    "dummy": ('parent = "dummy0"', "52:54:00:00:01:04"),
    "bond": ('parent = "bond0"\nfollow_carrier = true', "52:54:00:00:01:05"),
}


class Failure(Exception):
    pass


class FramesFailure(Failure):
    pass


def say(msg):
    print(f"[{time.monotonic() - T0:7.1f} s] {msg}", flush=True)


def wait_for(what, fn, timeout):
    """fn() until it returns something true; Failure after timeout seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            last = fn()
            if last:
                return last
        except Failure:
            pass
        if time.monotonic() > deadline:
            raise Failure(f"{what}: not after {timeout} s")
        time.sleep(0.05)


def pdeathsig():
    # QEMU dies with this script, whatever kills it (ctest's timeout too).
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)
    os.setpgid(0, 0)


class Lines:
    """Line-oriented reading of a unix stream socket, with timeouts."""

    def __init__(self, path, timeout=60):
        deadline = time.monotonic() + timeout
        while True:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            try:
                self.sock.connect(path)
                break
            except OSError:
                self.sock.close()
                if time.monotonic() > deadline:
                    raise Failure(f"cannot connect to {path}")
                time.sleep(0.05)
        self.buf = b""

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self, done, timeout):
        deadline = time.monotonic() + timeout
        while not done():
            left = deadline - time.monotonic()
            if left <= 0:
                raise Failure("no answer in time")
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                continue
            if not chunk:
                raise Failure("connection closed")
            self.buf += chunk

    def readline(self, timeout):
        self._fill(lambda: b"\n" in self.buf, timeout)
        line, self.buf = self.buf.split(b"\n", 1)
        return line

    def read(self, n, timeout):
        self._fill(lambda: len(self.buf) >= n, timeout)
        data, self.buf = self.buf[:n], self.buf[n:]
        return data


class Qmp:
    """The host VM's QMP: its hardware (the dock)."""

    def __init__(self, path):
        self.io = Lines(path)
        self.events = []
        self.io.readline(30)
        self.cmd("qmp_capabilities")

    def _read(self, timeout):
        m = json.loads(self.io.readline(timeout))
        if "event" in m:
            self.events.append(m)
        return m

    def cmd(self, name, **args):
        self.io.send((json.dumps({"execute": name, "arguments": args}) + "\n").encode())
        while True:
            m = self._read(30)
            if "return" in m:
                return m["return"]
            if "error" in m:
                raise Failure(f"QMP {name} {args}: {m['error'].get('desc')}")

    def wait_event(self, name, pred, timeout):
        deadline = time.monotonic() + timeout
        while True:
            for i, e in enumerate(self.events):
                if e["event"] == name and pred(e.get("data", {})):
                    del self.events[: i + 1]
                    return e
            left = deadline - time.monotonic()
            if left <= 0:
                raise Failure(f"no {name} event in {timeout} s")
            try:
                self._read(left)
            except Failure:
                pass


class Agent:
    """Commands in the host VM, over the virtio-serial port tests/hostvm/init serves."""

    def __init__(self, path):
        self.io = Lines(path)
        self.next_id = 0

    def run(self, script, timeout=60, check=True):
        self.next_id += 1
        rid = str(self.next_id)
        data = script.encode()
        self.io.send(f"{rid} {len(data)}\n".encode() + data)
        while True:
            parts = self.io.readline(timeout).decode().split(" ")
            out = self.io.read(int(parts[2]), timeout).decode(errors="replace")
            if parts[0] == rid:
                break
        rc = int(parts[1])
        if check and rc != 0:
            raise Failure(f"in the host VM, `{script.strip()}` exited {rc}: {out.strip()}")
        return out


def mac_bytes(mac):
    return bytes.fromhex(mac.replace(":", ""))


class HostVm:
    def __init__(self, build, keep):
        self.build = build
        self.keep = keep
        self.qemu = None
        self.dock_conn = None
        self.work = tempfile.mkdtemp(prefix="relink-hostvm.", dir="/tmp")
        os.chmod(self.work, 0o755)
        self.frame_seq = 0
        self.dock_bus = "rp1"

    # --- life cycle
    def boot(self):
        out = subprocess.run(["bash", os.path.join(HERE, "build-hostvm.sh")], check=True,
                             stdout=subprocess.PIPE, text=True).stdout.strip().splitlines()[-1]
        say(f"host VM image: {out} ({open(os.path.join(out, 'info')).read().strip()})")
        carry = os.path.join(self.work, "carry")
        os.mkdir(carry)
        for b in ("relinkd", "relinkctl"):
            shutil.copy2(os.path.join(self.build, b), carry)
        w = self.work
        args = [
            "qemu-system-x86_64", "-name", f"relink-hostvm-{os.path.basename(w)}",
            "-M", "q35", "-accel", "tcg", "-cpu", "max", "-smp", "2", "-m", "1536",
            "-nodefaults", "-display", "none", "-no-reboot",
            "-kernel", f"{out}/vmlinux", "-initrd", f"{out}/initramfs.cpio.gz",
            "-append", "console=ttyS0 panic=-1 quiet loglevel=4",
            "-serial", f"file:{w}/serial.log",
            "-drive", f"file={out}/root.img,if=virtio,format=raw,snapshot=on",
            "-virtfs", f"local,path={carry},mount_tag=carry,security_model=none,readonly=on",
            "-device", "virtio-serial-pci",
            "-chardev", f"socket,id=ctl,path={w}/ctl.sock,server=on,wait=off",
            "-device", "virtserialport,chardev=ctl,name=relink.ctl",
            "-qmp", f"unix:{w}/qmp.sock,server=on,wait=off",
            # the dock's netdev outlives the NIC: this script writes frames to it
            "-netdev", f"stream,id=docknet,server=on,addr.type=unix,addr.path={w}/dock.sock",
            "-netdev", "hubport,id=b1net,hubid=1", "-netdev", "hubport,id=b2net,hubid=1",
        ]
        for i in range(1, 5):
            args += ["-device", f"pcie-root-port,id=rp{i},chassis={i},slot={i}"]
        args += ["-device", f"virtio-net-pci,id=dock,netdev=docknet,mac={DOCK_MAC},bus=rp1,romfile="]
        args += ["-device", "virtio-net-pci,id=bondport1,netdev=b1net,mac=52:54:00:b0:00:01,bus=rp3,romfile="]
        args += ["-device", "virtio-net-pci,id=bondport2,netdev=b2net,mac=52:54:00:b0:00:02,bus=rp4,romfile="]
        t = time.monotonic()
        self.qemu = subprocess.Popen(args, preexec_fn=pdeathsig, stdin=subprocess.DEVNULL,
                                     stdout=open(f"{w}/qemu.log", "w"), stderr=subprocess.STDOUT)
        self.qmp = Qmp(f"{w}/qmp.sock")
        self.agent = Agent(f"{w}/ctl.sock")
        try:
            self.agent.run("true", timeout=240)
        except Failure as e:
            raise Failure(f"the host VM did not come up: {e}\n{self.serial_tail()}")
        self.boot_s = time.monotonic() - t
        say(f"host VM up in {self.boot_s:.1f} s: {self.agent.run('uname -r').strip()}, "
            f"{self.agent.run('NetworkManager --version').strip()} (NetworkManager), "
            f"{self.agent.run('qemu-system-x86_64 --version | head -n1').strip()}")
        self.dock_conn = Lines(f"{w}/dock.sock")

    def serial_tail(self):
        try:
            return "--- host VM console (last 30 lines)\n" + "".join(open(f"{self.work}/serial.log").readlines()[-30:])
        except OSError:
            return ""

    def close(self):
        if self.qemu and self.qemu.poll() is None:
            try:
                self.qmp.cmd("quit")
                self.qemu.wait(10)
            except Exception:
                pass
            if self.qemu.poll() is None:
                os.killpg(self.qemu.pid, signal.SIGKILL)
                self.qemu.wait()
        if self.keep:
            say(f"kept {self.work}")
        else:
            shutil.rmtree(self.work, ignore_errors=True)

    # --- inside
    def sh(self, script, **kw):
        return self.agent.run(script, **kw)

    def status(self):
        return json.loads(self.sh("/opt/relink/relinkctl --socket /run/relinkd/control.sock status --json"))

    def binding(self, vm):
        for v in self.status()["vms"]:
            if v["name"] == vm:
                return v["bindings"][0]
        raise Failure(f"relinkd has no VM {vm}")

    def snap(self):
        """relinkd's bindings by VM and the interfaces' names by ifindex, in one round trip."""
        out = self.sh("/opt/relink/relinkctl --socket /run/relinkd/control.sock status --json; echo @@; "
                      "for f in /sys/class/net/*/ifindex; do read -r i <$f; f=${f%/ifindex}; echo \"$i ${f##*/}\"; done")
        js, names = out.split("@@\n")
        bindings = {v["name"]: v["bindings"][0] for v in json.loads(js)["vms"]}
        return bindings, {int(l.split()[0]): l.split()[1] for l in names.splitlines()}

    def link(self, name):
        """ip -d -j link show NAME as a dict, or None."""
        out = self.sh(f"ip -d -j link show dev {name} 2>/dev/null || true")
        return json.loads(out)[0] if out.strip() else None

    def ifname(self, ifindex):
        return self.sh(f"grep -lx {ifindex} /sys/class/net/*/ifindex | cut -d/ -f5").strip()

    # --- the dock
    def unplug(self, dev="dock"):
        t = time.monotonic()
        self.qmp.cmd("device_del", id=dev)
        self.qmp.wait_event("DEVICE_DELETED", lambda d: d.get("device") == dev, 30)
        return time.monotonic() - t

    def plug(self, bus, dev="dock", netdev="docknet", mac=DOCK_MAC):
        self.qmp.cmd("device_add", driver="virtio-net-pci", id=dev, netdev=netdev, mac=mac, bus=bus, romfile="")
        if dev == "dock":
            self.dock_bus = bus

    def send_frames(self, dst_mac, vlan=None, count=3):
        """Frames into the dock NIC from outside the host VM; returns their marker."""
        self.frame_seq += 1
        marker = f"relink-hostvm-frame-{self.frame_seq:04d}".encode()
        for _ in range(count):
            f = mac_bytes(dst_mac) + FRAME_SRC
            if vlan is not None:
                f += struct.pack("!HH", 0x8100, vlan)
            f += struct.pack("!H", 0x88B5) + marker
            f = f.ljust(60, b"\0")
            self.dock_conn.send(struct.pack("!I", len(f)) + f)
        return marker.decode()


def p50(xs):
    return statistics.median(xs) if xs else float("nan")


class Tier:
    def __init__(self, vm, reps):
        self.vm = vm
        self.reps = reps
        self.figures = {}  # scenario -> list of last_reattach_ms
        self.frame_checks = 0
        self.events = []  # relinkctl monitor --json
        self.mon_off = 0

    # --- setup inside the host VM
    def setup(self):
        vm = self.vm
        say("NetworkManager: connection 'dock' on the NIC with MAC "
            f"{DOCK_MAC} (it sets the NIC's MAC to {DOCK_CLONED}), connection 'dockvlan' (VLAN {VLAN_ID} on 'dock', "
            "device dock.100), both autoconnect")
        vm.sh(f"""
          nmcli -w 30 general >/dev/null
          nmcli con add type ethernet con-name dock ethernet.mac-address {DOCK_MAC} \
            ethernet.cloned-mac-address {DOCK_CLONED} ipv4.method disabled ipv6.method disabled >/dev/null
          uuid=$(nmcli -g connection.uuid con show dock)
          nmcli con add type vlan con-name dockvlan ifname dock.100 vlan.parent "$uuid" vlan.id {VLAN_ID} \
            ipv4.method manual ipv4.addresses 192.0.2.1/24 ipv6.method disabled >/dev/null
        """)
        wait_for("NetworkManager activates 'dock' and 'dockvlan'",
                 lambda: vm.link("dock.100") and "dockvlan" in vm.sh("nmcli -g NAME con show --active"), 60)
        say("ip: dummy0 (a dummy, up), bond0 (active-backup, miimon 100) over enp3s0 and enp4s0")
        vm.sh("""
          ip link add dummy0 type dummy && ip link set dummy0 up
          ip link add bond0 type bond mode active-backup miimon 100
          for p in enp3s0 enp4s0; do ip link set $p down; ip link set $p master bond0; done
          ip link set bond0 up
        """)
        say("five nested QEMUs (hub attach), each with a second port on its NIC's hub whose frames QEMU's "
            "filter-dump writes to a pcap file; their firmware is one instruction, hlt")
        # QEMU moves no frame while a VM is stopped (qemu_can_send_packet is
        # 0 unless the run state is running): the VMs run, but on a BIOS
        # whose reset vector is cli; hlt, so that they cost no CPU.
        vm.sh("""
          mkdir -p /run/hostvm
          head -c 65520 /dev/zero >/run/hostvm/halt.bin
          printf '\\372\\364\\353\\375' >>/run/hostvm/halt.bin
          head -c 12 /dev/zero >>/run/hostvm/halt.bin
        """)
        port = 7000
        script = ""
        for name, (_, mac) in VMS.items():
            port += 1
            script += f"""
              qemu-system-x86_64 -name {name} -M q35 -accel tcg -nodefaults -display none -m 32 -bios /run/hostvm/halt.bin \
                -qmp unix:/run/hostvm/{name}.qmp,server=on,wait=off \
                -netdev hubport,id=nic0.port,hubid=0 -device virtio-net-pci,netdev=nic0.port,id=nic0,mac={mac},romfile= \
                -netdev socket,id=probe,udp=127.0.0.1:9,localaddr=127.0.0.1:{port} \
                -netdev hubport,id=probe.port,hubid=0,netdev=probe \
                -object filter-dump,id=probe.dump,netdev=probe,file=/run/hostvm/{name}.pcap \
                -daemonize -pidfile /run/hostvm/{name}.pid &
            """
        vm.sh(script + "wait")
        conf = ["[daemon]", 'log_level = "debug"']
        for name, (lines, mac) in VMS.items():
            conf += ["", "[[vm]]", f'name = "{name}"', f'qmp = "/run/hostvm/{name}.qmp"', "[[vm.macvtap]]",
                     'nic = "nic0"', lines, 'mode = "bridge"', f'mac = "{mac}"', 'attach = "hub"', "hub = 0"]
        vm.sh("cat > /run/hostvm/relinkd.toml <<'EOF'\n" + "\n".join(conf) + "\nEOF\n"
              "/opt/relink/relinkd --check-config /run/hostvm/relinkd.toml\n"
              "setsid /opt/relink/relinkd --config /run/hostvm/relinkd.toml >/run/hostvm/relinkd.log 2>&1 &\n"
              "for i in $(seq 300); do [ -S /run/relinkd/control.sock ] && break; sleep 0.1; done\n"
              "setsid /opt/relink/relinkctl --socket /run/relinkd/control.sock monitor --json "
              ">/run/hostvm/monitor.jsonl 2>/run/hostvm/monitor.err &")
        say("relinkd started with one binding per nested VM; relinkctl monitor --json follows its state changes")
        wait_for("all bindings attached",
                 lambda: all(v["bindings"][0]["state"] == "attached" for v in vm.status()["vms"]), 60)
        say("all five bindings attached")

    # --- checks
    def poll_monitor(self):
        """New lines of relinkctl monitor --json (started in setup)."""
        out = self.vm.sh(f"tail -c +{self.mon_off + 1} /run/hostvm/monitor.jsonl")
        done = out[: out.rfind("\n") + 1]
        self.mon_off += len(done.encode())
        self.events += [json.loads(l) for l in done.splitlines() if l.startswith("{")]

    def wait_event(self, what, pred, timeout):
        """A state change of relinkctl monitor that pred accepts."""
        def seen():
            return any(e.get("event") == "state" and pred(e) for e in self.events)
        if not seen():
            wait_for(what, lambda: self.poll_monitor() or seen(), timeout)

    def wait_state(self, name, state, gen, timeout=30):
        """name's binding went to state in generation gen."""
        self.wait_event(f"{name} is {state}", lambda e: e["vm"] == name and e["state"] == state and e["generation"] == gen,
                        timeout)

    def wait_reattached(self, name, gen, timeout=60):
        """name's binding is attached in a generation after gen."""
        self.wait_event(f"{name} attached again (generation > {gen})",
                        lambda e: e["vm"] == name and e["state"] == "attached" and e["generation"] > gen, timeout)

    # QEMU holds exactly one macvtap fd, and it is the current macvtap's (by
    # device number). Prints "macvtap NAME MAJ:MIN" then "fd N MAJ:MIN" per
    # macvtap fd QEMU holds.
    FDS = """
      mvi=$(/opt/relink/relinkctl --socket /run/relinkd/control.sock status --json {name} |
            grep -o '"macvtap_ifindex": *[0-9]*' | grep -o '[0-9]*$')
      pid=$(cat /run/hostvm/{name}.pid)
      major=$(awk '$2 == "macvtap" {{print $1}}' /proc/devices)
      mvt=$(grep -lx "$mvi" /sys/class/net/*/ifindex | cut -d/ -f5)
      echo "macvtap $mvt $(cat /sys/class/net/$mvt/macvtap/tap*/dev)"
      for fd in /proc/$pid/fd/*; do
        [ -c "$fd" ] || continue
        set -- $(stat -L -c '%t %T' "$fd")
        [ $((0x$1)) = "$major" ] && echo "fd ${{fd##*/}} $((0x$1)):$((0x$2))"
      done; true
    """

    def check_fds(self, name, out):
        lines = [l for l in out.strip().splitlines() if l.startswith(("macvtap ", "fd "))]
        _, mvt, dev = lines[0].split()
        fds = [l.split()[2] for l in lines[1:]]
        if fds != [dev]:
            raise Failure(f"{name}: QEMU holds macvtap fds {fds}, the current macvtap {mvt} is {dev}")
        return mvt, dev

    def holds_current_macvtap(self, name):
        return self.check_fds(name, self.vm.sh(self.FDS.format(name=name)))

    def frames_cross(self, name, vlan=None):
        """Frames sent into the dock reach name's hub; QEMU holds only the current macvtap."""
        mac = VMS[name][1]
        marker = self.vm.send_frames(mac, vlan)
        pcap = f"/run/hostvm/{name}.pcap"
        out = self.vm.sh(f"""
          for i in $(seq 100); do grep -q -a {marker} {pcap} && break; sleep 0.1; done
          grep -q -a {marker} {pcap} && echo "frames seen" || echo "frames not seen"
        """ + self.FDS.format(name=name))
        try:
            if "frames seen" not in out:
                raise Failure(f"frames {marker} did not reach {name}'s hub in 10 s")
            mvt, dev = self.check_fds(name, out)
        except Failure as e:
            raise FramesFailure(str(e))
        self.frame_checks += 1
        return f"{marker} crossed into {name}'s hub through {mvt}; QEMU holds only that macvtap ({dev})"

    def note(self, scenario, ms):
        self.figures.setdefault(scenario, []).append(ms)

    # --- scenarios
    def dock(self):
        vm = self.vm
        l = vm.link("enp1s0")
        if not l or l["address"] != DOCK_CLONED or l.get("permaddr") != DOCK_MAC:
            raise Failure(f"enp1s0 should have MAC {DOCK_CLONED} and permaddr {DOCK_MAC}: {l}")
        b = vm.binding("dockmac")
        if vm.ifname(b["parent_ifindex"]) != "enp1s0":
            raise Failure(f"dockmac's parent is not enp1s0: {b}")
        say(f"ok: relinkd found dockmac's parent (parent_mac {DOCK_MAC}, no interface named 'dock-by-mac') as "
            f"enp1s0, whose current MAC is {DOCK_CLONED}: by IFLA_PERM_ADDRESS")
        say("ok: " + self.frames_cross("dockmac"))
        snap, names = vm.snap()
        for i in range(self.reps):
            g1, g2 = snap["dockname"]["generation"], snap["dockmac"]["generation"]
            s = vm.unplug()
            self.wait_state("dockname", "waiting-parent", g1)
            self.wait_state("dockmac", "waiting-parent", g2)
            t = time.monotonic()
            vm.plug("rp1")
            self.wait_reattached("dockname", g1)
            self.wait_reattached("dockmac", g2)
            wall = time.monotonic() - t
            snap, names = vm.snap()
            b1, b2 = snap["dockname"], snap["dockmac"]
            name1, name2 = names.get(b1["parent_ifindex"]), names.get(b2["parent_ifindex"])
            if name1 != "enp1s0" or name2 != "enp1s0" or b1["parent_name"] != name1 or b2["parent_name"] != name2:
                raise Failure(f"after a replug into the same slot the parents are {name1} and {name2} "
                              f"(relinkd: {b1['parent_name']}, {b2['parent_name']})")
            self.note("dock: replug, same slot (by name)", b1["last_reattach_ms"])
            self.note("dock: replug, same slot (by permanent MAC)", b2["last_reattach_ms"])
            say(f"replug {i + 1}/{self.reps}: dock unplugged (DEVICE_DELETED after {s:.2f} s), both bindings "
                f"waiting-parent; plugged back into the same slot: enp1s0 again, dockname and dockmac attached "
                f"(relinkd: {b1['last_reattach_ms']:.1f} ms and {b2['last_reattach_ms']:.1f} ms; {wall:.1f} s "
                f"from device_add as polled here)")
            if i in (0, self.reps - 1):
                say("ok: " + self.frames_cross("dockname"))
                say("ok: " + self.frames_cross("dockmac"))
        for rep in range(2):
            g1, g2 = vm.binding("dockname")["generation"], vm.binding("dockmac")["generation"]
            vm.unplug()
            self.wait_state("dockmac", "waiting-parent", g2)
            vm.plug("rp2")
            self.wait_reattached("dockmac", g2)
            snap, names = vm.snap()
            b2 = snap["dockmac"]
            new = names.get(b2["parent_ifindex"])
            if new != "enp2s0" or b2["parent_name"] != new:
                raise Failure(f"the dock in the other slot: parent {new} (relinkd: {b2['parent_name']})")
            self.note("dock: other slot, new name (by permanent MAC)", b2["last_reattach_ms"])
            say(f"dock unplugged and plugged into another slot: udev names it {new}; dockmac followed it by its "
                f"permanent MAC ({b2['last_reattach_ms']:.1f} ms)")
            # NetworkManager activates 'dock' on the NIC whatever its name, and
            # gives it the cloned MAC: the binding must stay where it is.
            wait_for(f"NetworkManager sets {new}'s MAC to {DOCK_CLONED}",
                     lambda: (lambda l: l and l["address"] == DOCK_CLONED and l.get("permaddr") == DOCK_MAC)(
                         vm.link(new)), 30)
            time.sleep(1)
            b = vm.binding("dockmac")
            if b["state"] != "attached" or b["generation"] != b2["generation"]:
                raise Failure(f"dockmac moved when {new}'s MAC changed: {b}")
            say(f"ok: NetworkManager then set {new}'s MAC to {DOCK_CLONED} (permaddr {DOCK_MAC}); dockmac stays "
                f"attached, same generation")
            b1 = vm.binding("dockname")
            if b1["state"] != "waiting-parent" or b1["generation"] != g1:
                raise Failure(f"dockname (parent enp1s0) should still wait: {b1}")
            say("ok: dockname (parent = \"enp1s0\") still waits: no interface has that name")
            say("ok: " + self.frames_cross("dockmac"))
            vm.unplug()
            self.wait_state("dockmac", "waiting-parent", b2["generation"])
            vm.plug("rp1")
            self.wait_reattached("dockname", g1)
            self.wait_reattached("dockmac", b2["generation"])
            say("dock back in its first slot: enp1s0, both bindings attached again")

    def dummy(self):
        vm = self.vm
        b = vm.binding("dummy")
        for i in range(self.reps):
            vm.sh("ip link del dummy0")
            self.wait_state("dummy", "waiting-parent", b["generation"])
            vm.sh("ip link add dummy0 type dummy && ip link set dummy0 up")
            self.wait_reattached("dummy", b["generation"])
            nb = vm.binding("dummy")
            if nb["parent_ifindex"] == b["parent_ifindex"]:
                raise Failure("the re-created dummy0 has the old ifindex")
            self.note("dummy: deleted and re-created", nb["last_reattach_ms"])
            say(f"dummy0 deleted (binding waiting-parent) and re-created as ifindex {nb['parent_ifindex']}: "
                f"attached again ({nb['last_reattach_ms']:.1f} ms)")
            b = nb
        mvt, dev = self.holds_current_macvtap("dummy")
        say(f"ok: QEMU holds only the current macvtap {mvt} ({dev})")

    def vlan(self):
        vm = self.vm
        # The dock scenario unplugs the dock every second or so, faster than
        # NM re-creates dock.100 (2-5 s after the dock is back): NM may have
        # used up dockvlan's autoconnect retries by now. Bring it up by hand
        # then; relinkd attaches the VLAN binding once dock.100 exists.
        try:
            wait_for("NM re-creates dock.100", lambda: vm.link("dock.100"), 10)
        except Failure:
            say("NetworkManager has not re-created dock.100 after the dock scenario's rapid replugs (dockvlan's "
                "autoconnect retries used up): nmcli con up dockvlan")
            vm.sh("nmcli con up dockvlan >/dev/null")
        b = wait_for("vlan attached", lambda: (lambda b: b if b["state"] == "attached" else None)(vm.binding("vlan")),
                     60)
        mvt = vm.ifname(b["macvtap_ifindex"])
        self.nm_leaves_alone(mvt)
        say("ok: " + self.frames_cross("vlan", VLAN_ID))
        g = b["generation"]
        for i in range(self.reps):
            vm.sh("nmcli con down dockvlan >/dev/null")
            self.wait_state("vlan", "waiting-parent", g)
            if vm.link("dock.100"):
                raise Failure("dock.100 is still there after nmcli con down")
            vm.sh("nmcli con up dockvlan >/dev/null")
            self.wait_reattached("vlan", g)
            nb = vm.binding("vlan")
            g = nb["generation"]
            self.note("vlan: nmcli con down/up", nb["last_reattach_ms"])
            say(f"nmcli con down dockvlan: NM deleted dock.100, binding waiting-parent; nmcli con up: NM "
                f"re-created dock.100 (ifindex {nb['parent_ifindex']}), attached again "
                f"({nb['last_reattach_ms']:.1f} ms)")
            if i in (0, self.reps - 1):
                say("ok: " + self.frames_cross("vlan", VLAN_ID))
        for i in range(max(3, self.reps // 3)):
            vm.unplug()
            self.wait_state("vlan", "waiting-parent", g)
            wait_for("NM sees dockvlan go", lambda: "dockvlan" not in vm.sh("nmcli -g NAME con show --active"), 30)
            t = time.monotonic()
            vm.plug("rp1")
            self.wait_reattached("vlan", g, timeout=90)
            nb = vm.binding("vlan")
            g = nb["generation"]
            wall = time.monotonic() - t
            self.note("vlan: dock replugged, NM re-creates the VLAN", nb["last_reattach_ms"])
            say(f"dock unplugged: dock.100 gone with it, NM dropped dockvlan; dock back: NM activated dock and "
                f"re-created dock.100, relinkd attached vlan ({nb['last_reattach_ms']:.1f} ms; "
                f"{wall:.1f} s from device_add)")
            say("ok: " + self.frames_cross("vlan", VLAN_ID))
        self.nm_leaves_alone(vm.ifname(vm.binding("vlan")["macvtap_ifindex"]))

    def nm_leaves_alone(self, mvt):
        vm = self.vm
        state = vm.sh(f"nmcli -g GENERAL.STATE device show {mvt}").strip()
        l = vm.link(mvt)
        addrs = vm.sh(f"ip -j addr show dev {mvt}")
        if "unmanaged" not in state or "UP" not in l["flags"] or json.loads(addrs)[0].get("addr_info"):
            raise Failure(f"NetworkManager should leave {mvt} unmanaged, up, without addresses: {state}, {l['flags']}, {addrs}")
        say(f"ok: NetworkManager leaves relinkd's macvtap {mvt} alone: {state}, up, no address")

    def bond(self):
        vm = self.vm
        b = vm.binding("bond")
        for i in range(self.reps):
            vm.sh("""
              ip link del bond0
              ip link add bond0 type bond mode active-backup miimon 100
              for p in enp3s0 enp4s0; do ip link set $p down; ip link set $p master bond0; done
              ip link set bond0 up
            """)
            self.wait_reattached("bond", b["generation"])
            nb = wait_for("bond carrier", lambda: (lambda b: b if b["link"] == "up" else None)(vm.binding("bond")), 10)
            self.note("bond: deleted and re-created", nb["last_reattach_ms"])
            say(f"bond0 deleted and re-created over enp3s0 and enp4s0: attached again ({nb['last_reattach_ms']:.1f} ms)")
            b = nb
        g = b["generation"]
        vm.unplug("bondport1")
        wait_for("enp3s0 gone", lambda: vm.link("enp3s0") is None, 10)
        time.sleep(1)
        b = vm.binding("bond")
        if b["state"] != "attached" or b["generation"] != g or not b["carrier"] or b["link"] != "up":
            raise Failure(f"one bond port unplugged: the binding should not move: {b}")
        say("ok: one bond port unplugged (enp3s0 gone): bond0 keeps its carrier, binding attached, guest link up, "
            "same generation")
        vm.unplug("bondport2")
        b = wait_for("bond carrier lost, guest link down",
                     lambda: (lambda b: b if b["carrier"] is False and b["link"] == "down" else None)(vm.binding("bond")), 15)
        say(f"ok: both ports unplugged: bond0 lost its carrier, relinkd set the guest's link down (state {b['state']})")
        vm.plug("rp3", "bondport1", "b1net", "52:54:00:b0:00:01")
        vm.plug("rp4", "bondport2", "b2net", "52:54:00:b0:00:02")
        wait_for("enp3s0 and enp4s0 back", lambda: vm.link("enp3s0") and vm.link("enp4s0"), 30)
        vm.sh("for p in enp3s0 enp4s0; do ip link set $p down; ip link set $p master bond0; done")
        b = wait_for("bond carrier back, guest link up",
                     lambda: (lambda b: b if b["carrier"] and b["link"] == "up" else None)(vm.binding("bond")), 15)
        say(f"ok: ports plugged back and enslaved: carrier back, guest link up (generation {b['generation']})")

    def bridgevlan(self):
        """A tap on a VLAN-filtering bridge (Debian's kernel has bridge VLAN
        filtering; the CI host's may not): the bridge deleted and re-created,
        the tap's VLANs, PVID, untagged flags and port options come back
        exactly. A relinkd of its own ([bridge.brv]), beside the first."""
        vm = self.vm
        vm.sh("""
          ip link add brv type bridge vlan_filtering 1 && ip link set brv up
          ip tuntap add dev tapv0 mode tap && ip link set tapv0 master brv && ip link set tapv0 up
          bridge vlan add dev tapv0 vid 10 pvid untagged && bridge vlan del dev tapv0 vid 1
          bridge vlan add dev tapv0 vid 20-22 && bridge vlan add dev tapv0 vid 30 untagged
          bridge link set dev tapv0 isolated on hairpin on learning off cost 42
          mkdir -p /run/hostvm/brv
          printf '[daemon]\ncontrol_socket = "/run/hostvm/brv/control.sock"\nstate_dir = "/run/hostvm/brv/state"\n'\
'log_level = "debug"\n\n[bridge.brv]\n' >/run/hostvm/brv/relinkd.toml
          setsid /opt/relink/relinkd --config /run/hostvm/brv/relinkd.toml >/run/hostvm/brv/relinkd.log 2>&1 &
          echo $! >/run/hostvm/brv/pid
          for i in $(seq 300); do [ -S /run/hostvm/brv/control.sock ] && break; sleep 0.1; done
        """)
        ctl = "/opt/relink/relinkctl --socket /run/hostvm/brv/control.sock status --json"

        def tap(gen):
            for v in json.loads(vm.sh(ctl))["vms"]:
                for b in v["bindings"]:
                    if b["tap"] == "tapv0" and b["state"] == "attached" and b["generation"] == gen:
                        return b
            return None

        def port():
            vlans = json.loads(vm.sh("bridge -d -j vlan show dev tapv0"))
            link = json.loads(vm.sh("bridge -d -j link show dev tapv0"))[0]
            link.pop("ifindex", None)
            return vlans, link

        try:
            wait_for("relinkd follows tapv0", lambda: tap(0), 30)
            before = port()
            say(f"tapv0 in brv: {json.dumps(before[0])}")
            for gen in range(1, min(self.reps, 3) + 1):  # each takes a few seconds of shell round trips
                vm.sh("ip link del brv && ip link add brv type bridge vlan_filtering 1 && ip link set brv up")
                b = wait_for(f"tapv0 back in brv (generation {gen})", lambda: tap(gen), 30)
                after = port()
                if after != before:
                    raise Failure(f"tapv0 after re-creation {gen}: {after}, before: {before}")
                self.note("bridgevlan: bridge re-created, tap re-joined", b["last_rejoin_ms"])
                say(f"brv re-created: tapv0 back with the same VLANs and options ({b['last_rejoin_ms']:.2f} ms)")
        finally:
            print(vm.sh("tail -n 20 /run/hostvm/brv/relinkd.log; kill $(cat /run/hostvm/brv/pid); true",
                        check=False), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("build")
    ap.add_argument("--scenarios", default="dock,dummy,vlan,bond,bridgevlan")
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    a = ap.parse_args()
    if os.geteuid() != 0:
        print("SKIP: needs root")
        return 77
    if not shutil.which("qemu-system-x86_64"):
        print("SKIP: qemu-system-x86_64 is missing (scripts/install-deps.sh)")
        return 77
    build = os.path.abspath(a.build)
    vm = HostVm(build, a.keep)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    results = {}
    tier = Tier(vm, a.reps)
    try:
        vm.boot()
        tier.setup()
        for s in a.scenarios.split(","):
            print(f"\n== {s}", flush=True)
            try:
                getattr(tier, s)()
                results[s] = "passed"
            except FramesFailure as e:
                results[s] = results["frames"] = f"FAILED: {e}"
                say(f"FAIL: {e}")
            except Exception as e:  # a bug here fails one scenario, not the cleanup
                if not isinstance(e, Failure):
                    traceback.print_exc()
                results[s] = f"FAILED: {e}"
                say(f"FAIL: {e}")
                print(vm.sh("tail -n 40 /run/hostvm/relinkd.log", check=False), flush=True)
    except Failure as e:
        say(f"FAIL: {e}")
        try:
            print(vm.sh("tail -n 40 /run/hostvm/relinkd.log; tail -n 20 /run/NetworkManager.log", check=False,
                        timeout=10))
        except Exception:
            pass
        print(vm.serial_tail())
        results["setup"] = f"FAILED: {e}"
    finally:
        vm.close()
    if tier.frame_checks and "frames" not in results:
        results["frames"] = f"passed ({tier.frame_checks} checks after dock and VLAN events)"
    print("\n== figures: parent event -> relinkd's last_reattach_ms in the host VM")
    for k, xs in tier.figures.items():
        print(f"  {k:52} p50 {p50(xs):7.1f} ms  max {max(xs):7.1f} ms  (n={len(xs)})")
    print("\n== results")
    for k, r in results.items():
        print(f"  {k}: {r}")
    print(f"tier took {time.monotonic() - T0:.0f} s")
    return 0 if results and all(r.startswith("passed") for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
