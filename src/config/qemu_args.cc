// SPDX-License-Identifier: GPL-2.0-or-later
// Builds the QEMU options of `relinkctl qemu-args VM` from a VM's configured bindings.
#include "config/qemu_args.h"

#include <map>

namespace relink::config {
namespace {

// A value inside a QEMU option string ("path=VALUE,..."): QEMU's option
// parsers (QemuOpts and keyval alike) read ",," as one comma.
std::string opt_value(const std::string& v) {
  std::string out;
  for (char c : v) {
    out += c;
    if (c == ',') out += ',';
  }
  return out;
}

void add(QemuArgs& a, const std::string& opt, const std::string& value) {
  a.args.push_back(opt);
  a.args.push_back(value);
}

void note(QemuArgs& a, std::string text) { a.notes.push_back(std::move(text)); }

void hub_binding(QemuArgs& a, const MacvtapBinding& b) {
  const std::string port = b.nic + ".port";
  add(a, "-netdev", "hubport,id=" + port + ",hubid=" + std::to_string(b.hub));
  add(a, "-device", "virtio-net-pci,netdev=" + port + ",id=" + b.nic + ",mac=" + format_mac(b.mac));
  note(a, b.nic + ": hub attach on hub " + std::to_string(b.hub) +
              ": QEMU starts with no uplink; relinkd adds its own tap on a macvtap over " + b.parent +
              " (netdev ids " + b.nic + ".tapN and " + b.nic + ".uplinkN are relinkd's)");
}

// Replug: the NIC peered directly with a tap whose fds are a macvtap the
// launcher made. relinkd adopts that macvtap when QEMU connects (the NIC's
// tap fd is a live macvtap with the binding's MAC on the parent), so the
// binding is attached at once, with no guest involvement, and later
// re-plugs go through device_del/device_add. The alternatives do not work
// without a running guest: a NIC with no netdev (or a tap that is not a
// macvtap) is not adopted, and relinkd must unplug it first (device_del),
// which only a booted guest with PCI hotplug completes; a VM with no NIC at
// all gives relinkd nothing to read the NIC's template from, so it never
// plugs one in. The launcher's macvtap takes the binding's own `macvtap`
// name: it is unique, not a libvirt-style name, and relinkd deletes it when
// QEMU exits, as it does its own.
//
// The root port: on q35 a NIC on pcie.0 cannot be unplugged at all ("Bus
// 'pcie.0' does not support hotplugging"), so the replug would fail; on
// i440fx (pc) a pcie-root-port is accepted and hotplug through it works too
// (measured with the test guest: the NIC released in 1.6 s, against 0.3 s
// for ACPI hotplug on pc's own bus). The machine type is not in the
// configuration, so the root port is always emitted (correct on both), and a
// note says it may be dropped on pc.
void replug_binding(QemuArgs& a, const MacvtapBinding& b, int& next_fd, unsigned& chassis) {
  const std::string tap = b.nic + ".tap", rp = b.nic + ".rp", mvt = b.macvtap, mac = format_mac(b.mac);
  std::string fds, opens;
  for (unsigned q = 0; q < b.queues; ++q) {
    const std::string fd = std::to_string(next_fd++);
    fds += (q ? ":" : "") + fd;
    opens += (q ? " " : "") + fd + "<>/dev/tap$(cat /sys/class/net/" + mvt + "/ifindex)";
  }
  add(a, "-device", "pcie-root-port,id=" + rp + ",chassis=" + std::to_string(chassis++));
  add(a, "-netdev", std::string("tap,id=") + tap + (b.queues > 1 ? ",fds=" : ",fd=") + fds + ",vhost=off");
  std::string dev = "virtio-net-pci,netdev=" + tap + ",id=" + b.nic + ",mac=" + mac + ",bus=" + rp;
  if (b.queues > 1) dev += ",mq=on,vectors=" + std::to_string(2 * b.queues + 2);
  add(a, "-device", dev);

  note(a, b.nic + ": replug attach: before QEMU starts, as root, make the macvtap that relinkd adopts (and deletes "
              "when QEMU exits):");
  const std::string on = b.parent_mac ? "the interface with MAC " + format_mac(*b.parent_mac) + " (else " + b.parent + ")"
                                      : b.parent;
  note(a, "  ip link del " + mvt + " 2>/dev/null; ip link add link " + b.parent + " name " + mvt + " address " + mac +
              " type macvtap mode " + macvtap::mode_name(b.mode) + " && ip link set " + mvt + " up" +
              (b.parent_mac ? "   (on " + on + ": the parent relinkd follows)" : ""));
  note(a, std::string("  and start QEMU with ") + (b.queues > 1 ? "fds " : "fd ") + fds +
              (b.queues > 1 ? " open on it, one open per queue: " : " open on it: ") + opens);
  note(a, "  (no /dev/tapIFINDEX, e.g. in a network namespace without udev: mknod a node c MAJOR MINOR from /sys/class/net/" +
              mvt + "/macvtap/tapIFINDEX/dev and open that)");
  if (b.mode == macvtap::Mode::Passthru)
    note(a, "  passthru: the kernel gives the macvtap " + b.parent +
                "'s MAC, so relinkd adopts it only if that is the binding's mac; otherwise it re-plugs the NIC at once "
                "(the guest must be up)");
  note(a, "  " + b.nic + " sits on pcie-root-port " + rp +
              ": q35 needs it (a NIC on pcie.0 cannot be unplugged); on pc (i440fx) you may drop the root port and "
              "bus=" + rp + " (the guest then releases the NIC faster); chassis numbers must be unique in the VM");
  note(a, "  after " + b.parent + " comes back, relinkd re-plugs " + b.nic +
              " (device_del, device_add): the guest needs PCI hotplug");
}

void passt_binding(QemuArgs& a, const PasstBinding& p, bool& memory_done) {
  const std::string path = opt_value(p.socket), nic = p.netdev + ".nic";
  switch (p.mode) {
    case passt::Mode::StreamServer:
      add(a, "-netdev", "stream,id=" + p.netdev + ",server=on,addr.type=unix,addr.path=" + path);
      note(a, p.netdev + ": passt (stream-server): QEMU listens on " + p.socket +
                  "; relinkd connects to it and runs passt on the connection (QEMU >= 7.2)");
      break;
    case passt::Mode::StreamClient:
      add(a, "-netdev", "stream,id=" + p.netdev + ",server=off,addr.type=unix,addr.path=" + path + ",reconnect=1");
      note(a, p.netdev + ": passt (stream-client): relinkd's passt listens on " + p.socket +
                  " and QEMU connects, retrying every second: needs QEMU >= 8.0 (QEMU 7.2 has no reconnect= for "
                  "stream and refuses it; without it QEMU never connects again after a passt restart: use mode = "
                  "\"stream-server\" there); from QEMU 9.2 write reconnect-ms=5 (a new passt listens ~20 ms after a crash)");
      break;
    case passt::Mode::VhostUser:
      add(a, "-chardev", "socket,id=" + p.netdev + ".chr,path=" + path + ",reconnect=1");
      add(a, "-netdev", "vhost-user,id=" + p.netdev + ",chardev=" + p.netdev + ".chr");
      note(a, p.netdev + ": passt (vhost-user): needs passt 2025-01 or later with --vhost-user (Debian 12's passt "
                         "2023-03 lacks it, and relinkd refuses the binding); from QEMU 9.2 write reconnect-ms=100");
      // QEMU's vhost-user netdev waits at start (no QMP) until its backend
      // listens; relinkd starts a listening passt as soon as the binding
      // exists (engine::passt_ev::Listen), QEMU or not.
      note(a, "  QEMU does not finish starting until passt listens on " + p.socket +
                  ": start relinkd (or relinkctl add the VM) before QEMU; relinkd starts this passt at once");
      if (!memory_done) {
        memory_done = true;
        add(a, "-object", "memory-backend-memfd,id=mem,size=RAM,share=on");
        add(a, "-numa", "node,memdev=mem");
        note(a, "vhost-user needs the guest's RAM shared with passt: replace RAM in size=RAM with the size given to -m "
                "(e.g. 1G); one backend serves every vhost-user NIC of the VM");
      }
      break;
  }
  add(a, "-device", "virtio-net-pci,netdev=" + p.netdev + ",id=" + nic);
}

}  // namespace

QemuArgs qemu_args(const Vm& vm) {
  QemuArgs a;
  bool all_libvirt = !vm.macvtaps.empty() && vm.passts.empty();
  for (const auto& b : vm.macvtaps)
    if (b.attach != AttachMode::Libvirt) all_libvirt = false;

  if (all_libvirt) {
    note(a, "VM " + vm.name + " is libvirt's: libvirt wires its interfaces, and relinkd never talks to its QEMU");
  } else if (vm.qmp.empty()) {
    note(a, "VM " + vm.name + " has no QMP socket configured: relinkd cannot manage it");
  } else {
    add(a, "-qmp", "unix:" + opt_value(vm.qmp) + ",server=on,wait=off");
    note(a, "QMP: relinkd connects to " + vm.qmp + "; keep it in a directory only root or QEMU's user can write");
  }
  if (vm.macvtaps.empty() && vm.passts.empty()) note(a, "VM " + vm.name + " has no bindings");

  std::map<unsigned, std::string> hubs;  // hub id -> the first NIC on it
  int next_fd = 3;
  unsigned chassis = 1;
  for (const auto& b : vm.macvtaps) {
    switch (b.attach) {
      case AttachMode::Hub:
        if (auto [it, fresh] = hubs.emplace(b.hub, b.nic); !fresh)
          note(a, "warning: " + it->second + " and " + b.nic + " share hub " + std::to_string(b.hub) +
                      ": QEMU forwards frames between all ports of a hub; give each hub binding its own 'hub'");
        hub_binding(a, b);
        break;
      case AttachMode::Replug:
        replug_binding(a, b, next_fd, chassis);
        break;
      case AttachMode::Libvirt:
        note(a, b.nic + ": libvirt wires it (<interface type='direct'>): no QEMU options; relinkd re-plugs it through "
                        "libvirt");
        break;
    }
  }
  bool memory_done = false;
  for (const auto& p : vm.passts) passt_binding(a, p, memory_done);
  return a;
}

std::string shell_quote(const std::string& word) {
  if (word.empty()) return "''";
  bool plain = true;
  for (char c : word) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
                    c == '-' || c == '.' || c == '/' || c == ':' || c == ',' || c == '=' || c == '@' || c == '%' ||
                    c == '+';
    if (!ok) {
      plain = false;
      break;
    }
  }
  if (plain) return word;
  std::string out = "'";
  for (char c : word) {
    if (c == '\'') out += "'\\''";
    else out += c;
  }
  return out + "'";
}

std::string format_qemu_args(const QemuArgs& a) {
  std::string out;
  for (const auto& n : a.notes) {
    // One line each: a newline in a note would end the comment.
    std::string line = n;
    for (char& c : line)
      if (c == '\n' || c == '\r') c = ' ';
    out += "# " + line + "\n";
  }
  for (size_t i = 0; i < a.args.size(); i += 2) {
    out += shell_quote(a.args[i]);
    if (i + 1 < a.args.size()) out += " " + shell_quote(a.args[i + 1]);
    out += " \\\n";
  }
  return out;
}

}  // namespace relink::config
