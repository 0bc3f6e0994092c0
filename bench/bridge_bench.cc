// SPDX-License-Identifier: GPL-2.0-or-later
// A tap's bridge re-created, measured with booted test guests (Debian kernel
// + busybox initramfs under TCG), next to a macvtap hub attach in the same run.
//
// Two guests, both managed by one relinkd in a throwaway namespace, each
// reached from a peer namespace of its own (192.0.2.1; the guest is
// 192.0.2.2) by an ICMP echo request every 10 ms (a raw socket of this
// program):
//
// 1. "bridged": a hand-started QEMU (-netdev tap,ifname=tapb0) whose tap is
//    a port of bridge br0 ([[vm.tap]]), br0's uplink a veth to the peer. The
//    bridge is deleted and created again in-process over rtnetlink, with its
//    uplink put back, as NetworkManager does: time 0 is the create request.
//    From there until the guest answers ping again; and relinkd's own part
//    (last_rejoin_ms: the batch with the bridge's RTM_NEWLINK read -> the
//    kernel's acknowledgement of the tap's last re-join step).
// 2. "hub": a hub-wired guest on a macvtap whose parent (a veth to its peer)
//    is deleted and created again (time 0 is the create request), until the
//    guest answers again: what a macvtap binding costs on the same machine.
//
// Flaps alternate between the two. Usage (root): bridge_bench [--flaps N] [--help]
#include <net/if.h>
#include <fcntl.h>
#include <netlink/route/link.h>
#include <netlink/route/link/bridge.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "bench_util.h"
#include "ctl/control_client.h"
#include "guest_net.h"
#include "support/harness.h"

namespace relink::bench {
namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;

constexpr uint64_t kAnswerLimitUs = 30'000'000;

void usage() {
  std::cout
      << "usage: bridge_bench [--flaps N] [--help]\n\n"
         "Boots two test guests (Debian kernel + busybox initramfs under TCG, built by\n"
         "tests/guest/build-guest.sh into BUILD/guest) behind one relinkd: one on a tap\n"
         "in bridge br0 ([[vm.tap]]), one on a hub-wired macvtap. Re-creates the bridge\n"
         "(with its uplink put back) and the macvtap's parent N times each (default 20),\n"
         "alternately. Measures, as p50/p90: re-creation -> the guest answers ping\n"
         "again, for both, and relinkd's own part of a re-join (the bridge's RTM_NEWLINK\n"
         "-> the tap back in it with its settings). Root; QEMU 7.2. A run with the\n"
         "defaults takes about 2 minutes, most of it the guests' boot.\n\n"
         "  --flaps N   re-creations of each (default 20)\n"
         "  --help, -h  this text\n";
}

struct Peer {
  std::unique_ptr<test::Netns> ns;
  int ns_fd = -1;
  nl_sock* nl = nullptr;
  std::unique_ptr<Pinger> pinger;
  explicit Peer(uint16_t id_base) {
    ns = std::make_unique<test::Netns>("bbench");
    ns_fd = open(("/run/netns/" + ns->name()).c_str(), O_RDONLY | O_CLOEXEC);
    if (ns_fd < 0) die("open the peer namespace");
    nl = netlink_in(ns->name());
    pinger = std::make_unique<Pinger>(ns->name(), kGuestIp, id_base, "relink-bridge-bench");
  }
  ~Peer() {
    pinger.reset();
    if (nl) nl_socket_free(nl);
    if (ns_fd >= 0) close(ns_fd);
  }
};

struct Sandbox {
  test::Netns ns{"bbench"};
  std::string dir = "/tmp/relink-bbench-" + test::random_suffix();
  std::string guest_dir = test::binary_dir() + "/guest";
  nl_sock* nl = nullptr;
  std::unique_ptr<Peer> bridge_peer, hub_peer;
  std::unique_ptr<test::Child> bridged, hub, relinkd;

  Sandbox() {
    std::filesystem::create_directories(dir);
    chmod(dir.c_str(), 0700);
    nl = netlink_in(ns.name());
    bridge_peer = std::make_unique<Peer>(static_cast<uint16_t>(getpid() * 3));
    hub_peer = std::make_unique<Peer>(static_cast<uint16_t>(getpid() * 5));
  }
  ~Sandbox() {
    relinkd.reset();
    bridged.reset();
    hub.reset();
    bridge_peer.reset();
    hub_peer.reset();
    if (nl) nl_socket_free(nl);
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
  std::string control() const { return dir + "/control.sock"; }

  std::unique_ptr<test::Child> boot(const std::string& name, const std::vector<std::string>& net) {
    const std::string kernel = guest_dir + (std::filesystem::exists(guest_dir + "/vmlinux") ? "/vmlinux" : "/vmlinuz");
    std::vector<std::string> argv = {"ip", "netns", "exec", ns.name(), "qemu-system-x86_64", "-nodefaults",
                                     "-display", "none", "-machine", "q35", "-accel", "tcg", "-m", "256", "-qmp",
                                     "unix:" + dir + "/" + name + ".qmp,server=on,wait=off"};
    argv.insert(argv.end(), net.begin(), net.end());
    argv.insert(argv.end(), {"-no-reboot", "-serial", "file:" + dir + "/" + name + ".console", "-kernel", kernel,
                             "-initrd", guest_dir + "/initramfs.cpio.gz", "-append",
                             "console=ttyS0 quiet panic=-1 relink.tag=" + name + " relink.ip=" + kGuestIp +
                                 "/24 relink.poll=0.05"});
    return std::make_unique<test::Child>(argv, test::Child::Options{"", dir + "/" + name + ".qemu.log", {}});
  }
  void wait_booted(const std::string& name, test::Child& q) {
    if (!wait_for([&] { return test::read_file(dir + "/" + name + ".console").find("RELINK-GUEST-READY") !=
                                   std::string::npos || !q.running(); },
                  180s, 100ms) ||
        !q.running())
      die("guest " + name + " did not boot:\n" + test::read_file(dir + "/" + name + ".console"));
  }

  void setup() {
    // The bridge and its uplink, the far end with the peer's address and the
    // guest as a permanent neighbour (no ARP timer is measured).
    ns.ip("link add br0 type bridge");
    ns.ip("link set br0 up");
    ns.ip("link add up0 type veth peer name p1 netns " + bridge_peer->ns->name());
    ns.ip("link set up0 master br0");
    ns.ip("link set up0 up");
    bridge_peer->ns->ip("addr add " + std::string(kPeerIp) + "/24 dev p1");
    bridge_peer->ns->ip("link set p1 up");
    bridge_peer->ns->ip("neigh replace " + std::string(kGuestIp) + " lladdr 52:54:00:00:0b:01 dev p1 nud permanent");
    bench::parent_up(nl, hub_peer->nl, hub_peer->ns_fd, "p0", "52:54:00:00:0b:02");
    bridged = boot("bridged", {"-netdev", "tap,id=net0,ifname=tapb0,script=no,downscript=no", "-device",
                               "virtio-net-pci,netdev=net0,id=nic0,mac=52:54:00:00:0b:01"});
    hub = boot("hub", {"-netdev", "hubport,id=nic0.port,hubid=0", "-device",
                       "virtio-net-pci,netdev=nic0.port,id=nic0,mac=52:54:00:00:0b:02"});
    if (!wait_for([&] { return ns.ifindex("tapb0") != 0; }, 10s)) die("QEMU made no tap tapb0");
    ns.ip("link set tapb0 master br0");
    ns.ip("link set tapb0 up");
    const char* level = getenv("RELINK_BENCH_LOG");
    std::ofstream(dir + "/relinkd.toml")
        << "[daemon]\ncontrol_socket = \"" << control() << "\"\nstate_dir = \"" << dir << "/state\"\nnode_dir = \""
        << dir << "/dev\"\nlog_level = \"" << (level ? level : "warn") << "\"\n\n[[vm]]\nname = \"bridged\"\nqmp = \""
        << dir << "/bridged.qmp\"\n[[vm.tap]]\ntap = \"tapb0\"\nbridge = \"br0\"\n\n[[vm]]\nname = \"hub\"\nqmp = \""
        << dir << "/hub.qmp\"\n[[vm.macvtap]]\nnic = \"nic0\"\nparent = \"p0\"\nmac = \"52:54:00:00:0b:02\"\nhub = 0\n";
    relinkd = std::make_unique<test::Child>(
        std::vector<std::string>{test::binary_dir() + "/relinkd", "--config", dir + "/relinkd.toml"},
        test::Child::Options{ns.name(), dir + "/relinkd.log", {}});
    wait_booted("bridged", *bridged);
    wait_booted("hub", *hub);
    wait_binding("hub", "attached", 1);
    wait_binding("bridged", "attached", 0);
    for (Peer* p : {bridge_peer.get(), hub_peer.get()})
      if (!p->pinger->first_answer(monotonic_us() + kAnswerLimitUs)) die("a guest does not answer before any flap");
  }

  json binding(const std::string& vm) {
    auto r = ctl::control_request(control(), {{"command", "status"}}, 2000);
    if (!r || !r->value("ok", false)) return nullptr;
    for (const auto& v : (*r)["result"]["vms"])
      if (v.value("name", "") == vm && !v["bindings"].empty()) return v["bindings"][0];
    return nullptr;
  }
  json wait_binding(const std::string& vm, const std::string& state, uint64_t gen) {
    json b;
    if (!wait_for(
            [&] {
              b = binding(vm);
              return b.is_object() && b.value("state", "") == state && b.value("generation", uint64_t{0}) >= gen;
            },
            30s, 10ms))
      die("relinkd: " + vm + " not " + state + " at generation " + std::to_string(gen) + ": " + b.dump() +
          "\nrelinkd log:\n" + test::read_file(dir + "/relinkd.log"));
    return b;
  }

  // The bridge deleted and created again with its uplink, as NetworkManager
  // does it; returns time 0 (the create request).
  uint64_t recreate_bridge() {
    rtnl_link* l = rtnl_link_alloc();
    rtnl_link_set_name(l, "br0");
    if (int err = rtnl_link_delete(nl, l); err < 0) die(std::string("delete br0: ") + nl_geterror(err));
    rtnl_link_put(l);
    const uint64_t t0 = monotonic_us();
    if (int err = rtnl_link_bridge_add(nl, "br0"); err < 0) die(std::string("create br0: ") + nl_geterror(err));
    set_up(nl, "br0");
    rtnl_link *br = nullptr, *up = nullptr;
    if (rtnl_link_get_kernel(nl, 0, "br0", &br) < 0 || rtnl_link_get_kernel(nl, 0, "up0", &up) < 0)
      die("look up br0/up0");
    if (int err = rtnl_link_enslave(nl, br, up); err < 0) die(std::string("up0 into br0: ") + nl_geterror(err));
    rtnl_link_put(br);
    rtnl_link_put(up);
    return t0;
  }
};

double ms_since(uint64_t t0, uint64_t t) { return static_cast<double>(t - t0) / 1000.0; }

void line(const char* what, const std::vector<double>& v) {
  std::printf("  %-52s p50 %8.2f ms   p90 %8.2f ms   (n=%zu)\n", what, pct(v, 50), pct(v, 90), v.size());
}

int run(int flaps) {
  Sandbox sb;
  sb.setup();
  std::vector<double> bridge_ping, relinkd_part, hub_ping;
  for (int i = 1; i <= flaps; ++i) {
    const uint64_t t0 = sb.recreate_bridge();
    auto answered = sb.bridge_peer->pinger->first_answer(t0 + kAnswerLimitUs);
    if (!answered) die("bridged guest does not answer after re-creation " + std::to_string(i));
    bridge_ping.push_back(ms_since(t0, *answered));
    const json b = sb.wait_binding("bridged", "attached", static_cast<uint64_t>(i));
    if (b["last_rejoin_ms"].is_number()) relinkd_part.push_back(b["last_rejoin_ms"].get<double>());

    parent_down(sb.nl, "p0");
    const uint64_t h0 = bench::parent_up(sb.nl, sb.hub_peer->nl, sb.hub_peer->ns_fd, "p0", "52:54:00:00:0b:02");
    auto hub_answered = sb.hub_peer->pinger->first_answer(h0 + kAnswerLimitUs);
    if (!hub_answered) die("hub guest does not answer after re-creation " + std::to_string(i));
    hub_ping.push_back(ms_since(h0, *hub_answered));
    sb.wait_binding("hub", "attached", static_cast<uint64_t>(i) + 1);
    pause_for(100ms);
  }
  std::printf("bridge_bench: %d re-creations each, alternating (TCG guests, QEMU 7.2)\n", flaps);
  line("bridge re-created -> bridged guest answers ping", bridge_ping);
  line("  relinkd's part: bridge's RTM_NEWLINK -> tap re-joined", relinkd_part);
  line("macvtap parent re-created -> hub guest answers ping", hub_ping);
  std::printf("  ratio bridge/hub (p50): %.2f\n", pct(hub_ping, 50) > 0 ? pct(bridge_ping, 50) / pct(hub_ping, 50) : 0);
  return 0;
}

}  // namespace
}  // namespace relink::bench

int main(int argc, char** argv) {
  int flaps = 20;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      relink::bench::usage();
      return 0;
    }
    if (a == "--flaps" && i + 1 < argc) {
      flaps = std::atoi(argv[++i]);
      if (flaps < 1) flaps = 1;
      continue;
    }
    std::cerr << "bridge_bench: unknown argument " << a << "\n";
    relink::bench::usage();
    return 2;
  }
  if (geteuid() != 0) {
    std::cerr << "bridge_bench: needs root (namespaces, bridges, QEMU)\n";
    return 1;
  }
  signal(SIGINT, relink::bench::on_interrupt);
  signal(SIGTERM, relink::bench::on_interrupt);
  try {
    return relink::bench::run(flaps);
  } catch (const relink::bench::Fatal& e) {
    std::cerr << "bridge_bench: " << e.what() << "\n";
    return 1;
  }
}
