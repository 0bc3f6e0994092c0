// SPDX-License-Identifier: GPL-2.0-or-later
// config::qemu_args: the QEMU options each kind of binding needs, exactly, for
// configurations parsed from text; and their formatting for a shell.
#include "config/qemu_args.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <sys/wait.h>

namespace relink::config {
namespace {

using Args = std::vector<std::string>;

Vm vm_of(const std::string& bindings, const std::string& qmp = "/run/qemu/web1.qmp") {
  Config c = load_string("[[vm]]\nname = \"web1\"\nqmp = \"" + qmp + "\"\n" + bindings, "t.toml");
  return c.vms.at(0);
}

const std::string kQmpNote =
    "QMP: relinkd connects to /run/qemu/web1.qmp; keep it in a directory only root or QEMU's user can write";

TEST(QemuArgs, HubBinding) {
  Vm vm = vm_of("[[vm.macvtap]]\nnic = \"nic0\"\nparent = \"eth0\"\nmac = \"52:54:00:12:34:56\"\nhub = 2\n");
  QemuArgs a = qemu_args(vm);
  EXPECT_EQ(a.args, (Args{"-qmp", "unix:/run/qemu/web1.qmp,server=on,wait=off", "-netdev",
                          "hubport,id=nic0.port,hubid=2", "-device",
                          "virtio-net-pci,netdev=nic0.port,id=nic0,mac=52:54:00:12:34:56"}));
  EXPECT_EQ(format_qemu_args(a),
            "# " + kQmpNote +
                "\n"
                "# nic0: hub attach on hub 2: QEMU starts with no uplink; relinkd adds its own tap on a macvtap over "
                "eth0 (netdev ids nic0.tapN and nic0.uplinkN are relinkd's)\n"
                "-qmp unix:/run/qemu/web1.qmp,server=on,wait=off \\\n"
                "-netdev hubport,id=nic0.port,hubid=2 \\\n"
                "-device virtio-net-pci,netdev=nic0.port,id=nic0,mac=52:54:00:12:34:56 \\\n");
}

TEST(QemuArgs, TwoHubBindingsOnOneHubAreWarnedAbout) {
  Vm vm = vm_of(
      "[[vm.macvtap]]\nnic = \"a\"\nparent = \"eth0\"\nmac = \"52:54:00:00:00:01\"\n"
      "[[vm.macvtap]]\nnic = \"b\"\nparent = \"eth1\"\nmac = \"52:54:00:00:00:02\"\n");
  QemuArgs a = qemu_args(vm);
  ASSERT_EQ(a.notes.size(), 4u);
  EXPECT_EQ(a.notes[2],
            "warning: a and b share hub 0: QEMU forwards frames between all ports of a hub; give each hub binding its "
            "own 'hub'");
}

TEST(QemuArgs, ReplugBindingWithTheLaunchersMacvtapOnFd3) {
  Vm vm = vm_of(
      "[[vm.macvtap]]\nnic = \"net0\"\nparent = \"eth0\"\nmac = \"52:54:00:12:34:57\"\nattach = \"replug\"\n"
      "macvtap = \"mvnet0\"\nmode = \"vepa\"\n");
  QemuArgs a = qemu_args(vm);
  EXPECT_EQ(a.args, (Args{"-qmp", "unix:/run/qemu/web1.qmp,server=on,wait=off", "-device",
                          "pcie-root-port,id=net0.rp,chassis=1", "-netdev", "tap,id=net0.tap,fd=3,vhost=off", "-device",
                          "virtio-net-pci,netdev=net0.tap,id=net0,mac=52:54:00:12:34:57,bus=net0.rp"}));
  EXPECT_EQ(a.notes,
            (Args{kQmpNote,
                  "net0: replug attach: before QEMU starts, as root, make the macvtap that relinkd adopts (and deletes "
                  "when QEMU exits):",
                  "  ip link del mvnet0 2>/dev/null; ip link add link eth0 name mvnet0 address 52:54:00:12:34:57 type "
                  "macvtap mode vepa && ip link set mvnet0 up",
                  "  and start QEMU with fd 3 open on it: 3<>/dev/tap$(cat /sys/class/net/mvnet0/ifindex)",
                  "  (no /dev/tapIFINDEX, e.g. in a network namespace without udev: mknod a node c MAJOR MINOR from "
                  "/sys/class/net/mvnet0/macvtap/tapIFINDEX/dev and open that)",
                  "  net0 sits on pcie-root-port net0.rp: q35 needs it (a NIC on pcie.0 cannot be unplugged); on pc "
                  "(i440fx) you may drop the root port and bus=net0.rp (the guest then releases the NIC faster); "
                  "chassis numbers must be unique in the VM",
                  "  after eth0 comes back, relinkd re-plugs net0 (device_del, device_add): the guest needs PCI "
                  "hotplug"}));
}

TEST(QemuArgs, ReplugMultiqueueNumbersFdsAndRootPortsAcrossBindings) {
  Vm vm = vm_of(
      "[[vm.macvtap]]\nnic = \"net0\"\nparent = \"eth0\"\nmac = \"52:54:00:00:00:01\"\nattach = \"replug\"\n"
      "queues = 4\nmacvtap = \"mv0\"\n"
      "[[vm.macvtap]]\nnic = \"net1\"\nparent = \"eth1\"\nmac = \"52:54:00:00:00:02\"\nattach = \"replug\"\n"
      "macvtap = \"mv1\"\nmode = \"passthru\"\n");
  QemuArgs a = qemu_args(vm);
  EXPECT_EQ(a.args, (Args{"-qmp", "unix:/run/qemu/web1.qmp,server=on,wait=off",
                          "-device", "pcie-root-port,id=net0.rp,chassis=1",
                          "-netdev", "tap,id=net0.tap,fds=3:4:5:6,vhost=off",
                          "-device", "virtio-net-pci,netdev=net0.tap,id=net0,mac=52:54:00:00:00:01,bus=net0.rp,mq=on,vectors=10",
                          "-device", "pcie-root-port,id=net1.rp,chassis=2",
                          "-netdev", "tap,id=net1.tap,fd=7,vhost=off",
                          "-device", "virtio-net-pci,netdev=net1.tap,id=net1,mac=52:54:00:00:00:02,bus=net1.rp"}));
  EXPECT_EQ(a.notes.at(3),
            "  and start QEMU with fds 3:4:5:6 open on it, one open per queue: 3<>/dev/tap$(cat "
            "/sys/class/net/mv0/ifindex) 4<>/dev/tap$(cat /sys/class/net/mv0/ifindex) 5<>/dev/tap$(cat "
            "/sys/class/net/mv0/ifindex) 6<>/dev/tap$(cat /sys/class/net/mv0/ifindex)");
  EXPECT_EQ(a.notes.at(9), "  and start QEMU with fd 7 open on it: 7<>/dev/tap$(cat /sys/class/net/mv1/ifindex)");
  EXPECT_EQ(a.notes.at(8), "  ip link del mv1 2>/dev/null; ip link add link eth1 name mv1 address 52:54:00:00:00:02 "
                           "type macvtap mode passthru && ip link set mv1 up");
  EXPECT_EQ(a.notes.at(11),
            "  passthru: the kernel gives the macvtap eth1's MAC, so relinkd adopts it only if that is the binding's "
            "mac; otherwise it re-plugs the NIC at once (the guest must be up)");
}

TEST(QemuArgs, ReplugParentByMacSaysWhichInterface) {
  Vm vm = vm_of(
      "[[vm.macvtap]]\nnic = \"net0\"\nparent = \"eth0\"\nparent_mac = \"a0:36:9f:00:00:01\"\n"
      "mac = \"52:54:00:00:00:01\"\nattach = \"replug\"\nmacvtap = \"mv0\"\n");
  EXPECT_EQ(qemu_args(vm).notes.at(2),
            "  ip link del mv0 2>/dev/null; ip link add link eth0 name mv0 address 52:54:00:00:00:01 type macvtap "
            "mode bridge && ip link set mv0 up   (on the interface with MAC a0:36:9f:00:00:01 (else eth0): the parent "
            "relinkd follows)");
}

TEST(QemuArgs, PasstStreamServer) {
  Vm vm = vm_of("[[vm.passt]]\nnetdev = \"net1\"\nsocket = \"/run/relinkd/web1-net1.sock\"\n");
  QemuArgs a = qemu_args(vm);
  EXPECT_EQ(format_qemu_args(a),
            "# " + kQmpNote +
                "\n"
                "# net1: passt (stream-server): QEMU listens on /run/relinkd/web1-net1.sock; relinkd connects to it "
                "and runs passt on the connection (QEMU >= 7.2)\n"
                "-qmp unix:/run/qemu/web1.qmp,server=on,wait=off \\\n"
                "-netdev stream,id=net1,server=on,addr.type=unix,addr.path=/run/relinkd/web1-net1.sock \\\n"
                "-device virtio-net-pci,netdev=net1,id=net1.nic \\\n");
}

TEST(QemuArgs, PasstStreamClient) {
  Vm vm = vm_of("[[vm.passt]]\nnetdev = \"net1\"\nmode = \"stream-client\"\nsocket = \"/run/passt/net1.sock\"\n");
  QemuArgs a = qemu_args(vm);
  EXPECT_EQ(a.args, (Args{"-qmp", "unix:/run/qemu/web1.qmp,server=on,wait=off", "-netdev",
                          "stream,id=net1,server=off,addr.type=unix,addr.path=/run/passt/net1.sock,reconnect=1",
                          "-device", "virtio-net-pci,netdev=net1,id=net1.nic"}));
  EXPECT_EQ(a.notes, (Args{kQmpNote,
                           "net1: passt (stream-client): relinkd's passt listens on /run/passt/net1.sock and QEMU "
                           "connects, retrying every second: needs QEMU >= 8.0 (QEMU 7.2 has no reconnect= for stream "
                           "and refuses it; without it QEMU never connects again after a passt restart: use mode = "
                           "\"stream-server\" there); from QEMU 9.2 write reconnect-ms=5 (a new passt listens ~20 ms after a crash)"}));
}

TEST(QemuArgs, PasstVhostUserSharesOneMemoryBackend) {
  Vm vm = vm_of(
      "[[vm.passt]]\nnetdev = \"v0\"\nmode = \"vhost-user\"\nsocket = \"/run/passt/v0.sock\"\n"
      "[[vm.passt]]\nnetdev = \"v1\"\nmode = \"vhost-user\"\nsocket = \"/run/passt/v1.sock\"\n");
  QemuArgs a = qemu_args(vm);
  EXPECT_EQ(a.args, (Args{"-qmp", "unix:/run/qemu/web1.qmp,server=on,wait=off",
                          "-chardev", "socket,id=v0.chr,path=/run/passt/v0.sock,reconnect=1",
                          "-netdev", "vhost-user,id=v0,chardev=v0.chr",
                          "-object", "memory-backend-memfd,id=mem,size=RAM,share=on",
                          "-numa", "node,memdev=mem",
                          "-device", "virtio-net-pci,netdev=v0,id=v0.nic",
                          "-chardev", "socket,id=v1.chr,path=/run/passt/v1.sock,reconnect=1",
                          "-netdev", "vhost-user,id=v1,chardev=v1.chr",
                          "-device", "virtio-net-pci,netdev=v1,id=v1.nic"}));
  ASSERT_EQ(a.notes.size(), 6u);
  EXPECT_EQ(a.notes[1],
            "v0: passt (vhost-user): needs passt 2025-01 or later with --vhost-user (Debian 12's passt 2023-03 lacks "
            "it, and relinkd refuses the binding); from QEMU 9.2 write reconnect-ms=100");
  EXPECT_EQ(a.notes[2],
            "  QEMU does not finish starting until passt listens on /run/passt/v0.sock: start relinkd (or relinkctl add "
            "the VM) before QEMU; relinkd starts this passt at once");
  EXPECT_EQ(a.notes[3],
            "vhost-user needs the guest's RAM shared with passt: replace RAM in size=RAM with the size given to -m "
            "(e.g. 1G); one backend serves every vhost-user NIC of the VM");
}

TEST(QemuArgs, LibvirtBindingsHaveNoQemuArgs) {
  Vm vm;
  vm.name = "win11";
  MacvtapBinding b;
  b.nic = "net0";
  b.parent = "enx00e04c680001";
  b.attach = AttachMode::Libvirt;
  vm.macvtaps.push_back(b);
  QemuArgs a = qemu_args(vm);
  EXPECT_TRUE(a.args.empty());
  EXPECT_EQ(a.notes,
            (Args{"VM win11 is libvirt's: libvirt wires its interfaces, and relinkd never talks to its QEMU",
                  "net0: libvirt wires it (<interface type='direct'>): no QEMU options; relinkd re-plugs it through "
                  "libvirt"}));
  EXPECT_EQ(format_qemu_args(a),
            "# VM win11 is libvirt's: libvirt wires its interfaces, and relinkd never talks to its QEMU\n"
            "# net0: libvirt wires it (<interface type='direct'>): no QEMU options; relinkd re-plugs it through "
            "libvirt\n");
}

TEST(QemuArgs, VmWithoutBindingsGetsQmpOnly) {
  QemuArgs a = qemu_args(vm_of(""));
  EXPECT_EQ(a.args, (Args{"-qmp", "unix:/run/qemu/web1.qmp,server=on,wait=off"}));
  EXPECT_EQ(a.notes, (Args{kQmpNote, "VM web1 has no bindings"}));
}

TEST(QemuArgs, PathsWithSpacesAreShellQuotedAndCommasDoubledForQemu) {
  Vm vm = vm_of("[[vm.passt]]\nnetdev = \"net1\"\nsocket = \"/run/my vms/web,1's.sock\"\n", "/run/my vms/web 1.qmp");
  QemuArgs a = qemu_args(vm);
  EXPECT_EQ(a.args.at(1), "unix:/run/my vms/web 1.qmp,server=on,wait=off");
  EXPECT_EQ(a.args.at(3), "stream,id=net1,server=on,addr.type=unix,addr.path=/run/my vms/web,,1's.sock");
  const std::string text = format_qemu_args(a);
  EXPECT_NE(text.find("\n-qmp 'unix:/run/my vms/web 1.qmp,server=on,wait=off' \\\n"), std::string::npos) << text;
  EXPECT_NE(text.find("\n-netdev 'stream,id=net1,server=on,addr.type=unix,addr.path=/run/my vms/web,,1'\\''s.sock' "
                      "\\\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("# QMP: relinkd connects to /run/my vms/web 1.qmp;"), std::string::npos) << text;

  // A shell reads the lines back as exactly the args.
  std::string script = "set -- \\\n";
  for (size_t p = 0; p < text.size();) {
    const size_t nl = text.find('\n', p);
    const std::string line = text.substr(p, nl - p);
    if (line.rfind('#', 0) != 0) script += line + "\n";
    p = nl + 1;
  }
  script += "\nprintf '%s\\n' \"$@\"\n";
  const std::string path = ::testing::TempDir() + "qemu_args_test.sh";
  std::ofstream(path) << script;
  FILE* p = popen(("sh " + path).c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string out;
  char buf[256];
  for (size_t n; (n = fread(buf, 1, sizeof buf, p)) > 0;) out.append(buf, n);
  ASSERT_EQ(WEXITSTATUS(pclose(p)), 0) << script;
  std::remove(path.c_str());
  std::string want;
  for (const auto& w : a.args) want += w + "\n";
  EXPECT_EQ(out, want) << script;
}

TEST(QemuArgs, ShellQuote) {
  EXPECT_EQ(shell_quote("virtio-net-pci,netdev=n.port,id=n,mac=52:54:00:12:34:56"),
            "virtio-net-pci,netdev=n.port,id=n,mac=52:54:00:12:34:56");
  EXPECT_EQ(shell_quote(""), "''");
  EXPECT_EQ(shell_quote("a b"), "'a b'");
  EXPECT_EQ(shell_quote("it's"), "'it'\\''s'");
  EXPECT_EQ(shell_quote("$HOME"), "'$HOME'");
  EXPECT_EQ(shell_quote("a*"), "'a*'");
}

TEST(QemuArgs, NotesStayOnOneLine) {
  QemuArgs a;
  a.notes = {"one\ntwo"};
  a.args = {"-S"};
  EXPECT_EQ(format_qemu_args(a), "# one two\n-S \\\n");
}

}  // namespace
}  // namespace relink::config
