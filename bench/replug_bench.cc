// SPDX-License-Identifier: GPL-2.0-or-later
// Replug attach, measured with booted test guests (Debian kernel + busybox
// initramfs under TCG), everything in this run.
//
// 1. Replug split. One guest on q35 with its NIC on a pcie-root-port of its
//    own, started as a launcher starts it (its macvtap as fd 3). Its parent
//    (a veth) is deleted and re-created in-process over rtnetlink. A replug
//    is timed from the parent's RTM_NEWLINK to QEMU's answer to device_add;
//    the guest's release (device_del sent -> DEVICE_DELETED) is inside that
//    and is the guest's time; the rest is the manager's own. relinkd reports
//    both (last_release_ms, last_own_ms). The floor is a child of this
//    program doing only the unavoidable on the same event, on the same QEMU
//    while relinkd is stopped: device_del, wait for the NIC's DEVICE_DELETED,
//    create + open the macvtap, getfd + netdev_add tap + device_add
//    pipelined, the replies (each step's time is reported); then, off the
//    measured path as relinkd does it, netdev_del of the old tap.
//    Floor and relinkd flaps come in alternating blocks; relinkd adopts what
//    the floor left, as it would a launcher's macvtap.
// 2. What a user sees. Three guests, one hub-wired and two replug-wired
//    (release = "on-return" and "on-loss"), all managed by relinkd, each on
//    its own parent whose far end is in a peer namespace (192.0.2.1, the
//    guest is 192.0.2.2). From the parent's re-creation until the guest
//    answers ping again, the peer sending an ICMP echo request every 10 ms
//    (a raw socket of this program).
//
// Usage (root): replug_bench [--flaps N] [--user-flaps K] [--help]
// glibc's net/if.h first: linux/icmp.h brings linux/if.h, which steps aside for it.
#include <net/if.h>
#include <libmnl/libmnl.h>
#include <linux/icmp.h>
#include <linux/neighbour.h>
#include <linux/rtnetlink.h>
#include <netlink/route/addr.h>
#include <netlink/route/link.h>
#include <netlink/route/link/veth.h>
#include <netlink/route/neighbour.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "ctl/control_client.h"
#include "macvtap/macvtap_factory.h"
#include "netlink/link_parser.h"
#include "bench_util.h"
#include "guest_net.h"
#include "support/harness.h"
#include "support/qmp_sync.h"
#include "util/clock.h"
#include "util/mac.h"

using namespace relink;
using namespace std::chrono_literals;
using nlohmann::json;

namespace {

using namespace bench;
using bench::die;
using bench::Fatal;
using bench::pct;

constexpr uint64_t kAnswerLimitUs = 30'000'000;          // a flap whose guest stays silent longer fails the run
constexpr auto kSettle = 300ms;                          // quiet time before and after every flap
constexpr int kBlocks = 4;                               // part 1 alternates floor and relinkd this often
constexpr const char* kUsage = "usage: replug_bench [--flaps N] [--user-flaps K] [--help]";

void print_help() {
  std::printf(
      "%s   (run as root; the measurement is not part of ctest)\n"
      "\n"
      "Measures attach = \"replug\" with booted test guests (Debian kernel + busybox\n"
      "initramfs under TCG, built by tests/guest/build-guest.sh into BUILD/guest), QEMU 7.2.\n"
      "\n"
      "1. Replug split (--flaps N, default 40). One guest on q35 whose NIC sits on its own\n"
      "   pcie-root-port, started as a launcher does (its macvtap passed as fd 3). Its parent\n"
      "   (a veth) is deleted and re-created in-process over rtnetlink, N times with the floor\n"
      "   and N times with relinkd (attach = \"replug\") managing it, in %d alternating blocks\n"
      "   (floor, relinkd, floor, ...: relinkd is stopped for the floor's blocks and adopts\n"
      "   what the floor left when it starts again). Per flap:\n"
      "     release  device_del sent -> the NIC's DEVICE_DELETED (the guest lets go)\n"
      "     own      parent's RTM_NEWLINK -> device_add acknowledged, minus the release\n"
      "   relinkd's figures are its own last_release_ms and last_own_ms (status --json).\n"
      "   The floor is this program as a minimal client on the same QEMU, relinkd not running:\n"
      "   on the same RTM_NEWLINK, device_del -> wait for DEVICE_DELETED -> macvtap create +\n"
      "   open -> getfd + netdev_add tap + device_add (same driver, id, mac, bus, addr) pipelined\n"
      "   -> the replies; then netdev_del of the old tap, not timed. Reported: release p50/p90, own p50/p90/p99, the\n"
      "   ratio relinkd/floor of the own part's p50. Goals: relinkd's own p50 <= 5 ms and\n"
      "   <= 1.5x the floor's. The floor's own part is also broken down by step.\n"
      "2. What a user sees (--user-flaps K, default 20 per style). Three guests managed by one\n"
      "   relinkd, one hub-wired and two replug-wired, one with release = \"on-return\" (the NIC\n"
      "   is released when the parent returns) and one with release = \"on-loss\" (released as\n"
      "   soon as the parent is gone), each on its own parent whose far end is in a\n"
      "   peer namespace (192.0.2.1, fixed MAC, knows the guest's MAC; the guest is 192.0.2.2).\n"
      "   Time from the parent's re-creation until the guest answers ping again. The ping is\n"
      "   in-bench: a raw ICMP socket in the peer namespace sends an echo request every 10 ms\n"
      "   (not busybox ping), so a figure is late by up to 10 ms. Hub, on-return and on-loss\n"
      "   flaps alternate; an on-loss flap's parent returns once the guest released the NIC.\n"
      "   Reported: p50 and p90 per style (and p99, max); goal: on-loss p50 <= 0.6x on-return's.\n"
      "\n"
      "Every flap is separated by %d ms of quiet. A run with the defaults takes about 2.5 minutes\n"
      "on a 2-core machine (10-30 s of it booting the guests, then about 0.9 s per flap).\n"
      "Everything it creates\n"
      "(namespaces relink-rbench-*, QEMUs, relinkd, macvtaps, /tmp/relink-rbench-*) is removed\n"
      "on exit, on failure and on SIGINT/SIGTERM.\n"
      "\n"
      "Options:\n"
      "  --flaps N        flaps for the floor and again for relinkd in part 1 (default 40)\n"
      "  --user-flaps K   flaps per attach style in part 2 (default 20)\n"
      "  -h, --help       this text\n"
      "Environment: RELINK_BENCH_LOG=LEVEL runs relinkd at that log level (default warn) and\n"
      "keeps its log as /tmp/relink-replug-bench-relinkd.log.\n",
      kUsage, kBlocks, static_cast<int>(kSettle.count()));
}


std::string tail(const std::string& s, size_t n) { return s.size() > n ? s.substr(s.size() - n) : s; }

size_t count_of(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t p = text.find(what); p != std::string::npos; p = text.find(what, p + 1)) ++n;
  return n;
}

double ms(uint64_t from_us, uint64_t to_us) { return static_cast<double>(to_us - from_us) / 1000.0; }

// ---------------------------------------------------------------- floor child

// A QMP session read with deadlines: replies and events in arrival order.
struct FloorQmp {
  int fd = -1;
  std::string buf;
  ~FloorQmp() {
    if (fd >= 0) close(fd);
  }
  void connect(const std::string& path) {
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::strncpy(a.sun_path, path.c_str(), sizeof a.sun_path - 1);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) < 0) die("floor: connect " + path);
    const uint64_t deadline = monotonic_us() + 10'000'000;
    next(deadline);  // greeting
    send("{\"execute\":\"qmp_capabilities\"}\n");
    if (!reply(deadline).contains("return")) die("floor: qmp_capabilities refused");
  }
  json next(uint64_t deadline_us) {
    while (true) {
      const size_t nl = buf.find('\n');
      if (nl != std::string::npos) {
        json j = json::parse(buf.substr(0, nl), nullptr, false);
        buf.erase(0, nl + 1);
        if (j.is_discarded()) die("floor: QMP sent something that is not JSON");
        return j;
      }
      const uint64_t now = monotonic_us();
      if (now >= deadline_us) die("floor: QEMU did not answer in time");
      pollfd p{fd, POLLIN, 0};
      if (poll(&p, 1, static_cast<int>((deadline_us - now) / 1000 + 1)) <= 0) continue;
      char tmp[8192];
      const ssize_t n = read(fd, tmp, sizeof tmp);
      if (n <= 0) die("floor: QMP closed");
      buf.append(tmp, static_cast<size_t>(n));
    }
  }
  json reply(uint64_t deadline_us) {
    while (true) {
      json j = next(deadline_us);
      if (!j.contains("event")) return j;
    }
  }
  void send(const std::string& bytes, int pass_fd = -1) {
    if (!bench::send_with_fd(fd, bytes, pass_fd)) die("floor: sendmsg");
  }
};

std::string cmd(const std::string& name, const json& args) {
  return json{{"execute", name}, {"arguments", args}}.dump() + "\n";
}

// Waits on rtnetlink for `name` to appear with an ifindex other than `last`;
// *t0 is when the message was received.
int wait_new_link(mnl_socket* nl, const std::string& name, int last, uint64_t* t0) {
  std::vector<uint8_t> buf(1 << 16);
  while (true) {
    const ssize_t n = mnl_socket_recvfrom(nl, buf.data(), buf.size());
    if (n < 0) die(std::string("floor: netlink recv: ") + std::strerror(errno));
    *t0 = monotonic_us();
    auto batch = netlink::parse_link_messages(std::span<const uint8_t>(buf.data(), static_cast<size_t>(n)));
    if (!batch) continue;
    for (const auto& m : batch->links)
      if (m.link.name == name && !m.deleted && m.link.ifindex != last) return m.link.ifindex;
  }
}

// The floor: on each return of the parent, the least a manager can do to get
// the NIC onto a new macvtap. Prints "flap TOTAL_MS RELEASE_MS ..." per replug.
// args: QMP PARENT NODE_DIR NIC MAC BUS ADDR TAG (its taps are "flr<TAG>.tapN")
int floor_child(const std::vector<std::string>& a) {
  const std::string &qmp_path = a[0], &parent = a[1], &node_dir = a[2], &nic = a[3], &mac_text = a[4],
                    &bus = a[5], &addr = a[6], &tag = a[7];
  const auto mac = parse_mac(mac_text);
  if (!mac) die("floor: bad MAC " + mac_text);
  mnl_socket* nl = mnl_socket_open2(NETLINK_ROUTE, SOCK_CLOEXEC);
  if (!nl || mnl_socket_bind(nl, RTMGRP_LINK, MNL_SOCKET_AUTOPID) < 0) die("floor: netlink");
  int rcv = 8 << 20;
  setsockopt(mnl_socket_get_fd(nl), SOL_SOCKET, SO_RCVBUFFORCE, &rcv, sizeof rcv);
  macvtap::RtnlMacvtapFactory factory(node_dir);
  FloorQmp q;
  q.connect(qmp_path);
  // The NIC's backend now (the launcher's, or relinkd's last tap): deleted at the first replug.
  q.send(cmd("qom-get", {{"path", "/machine/peripheral/" + nic}, {"property", "netdev"}}));
  const json backend = q.reply(monotonic_us() + 10'000'000);
  if (!backend.contains("return") || !backend["return"].is_string() || backend["return"] == "")
    die("floor: the NIC has no backend: " + backend.dump());
  std::string old_netdev = backend["return"].get<std::string>();
  // The parent there now is not "new": its deletion sends a last RTM_NEWLINK.
  int last = static_cast<int>(if_nametoindex(parent.c_str()));
  std::cout << "ready" << std::endl;
  for (uint64_t gen = 1;; ++gen) {
    uint64_t t0 = 0;
    last = wait_new_link(nl, parent, last, &t0);
    // 1. The guest lets go of the NIC.
    q.send(cmd("device_del", {{"id", nic}}));
    const uint64_t t_del = monotonic_us(), deadline = t_del + 20'000'000;
    bool replied = false;
    uint64_t t_gone = 0;
    while (!replied || !t_gone) {
      json m = q.next(deadline);
      if (m.contains("event")) {
        if (m["event"] == "DEVICE_DELETED" && m.contains("data") && m["data"].is_object() &&
            m["data"].value("device", "") == nic)
          t_gone = monotonic_us();
      } else if (m.contains("error")) {
        die("floor: device_del: " + m["error"].dump());
      } else {
        replied = true;
      }
    }
    // 2. New macvtap, fd + tap + NIC in one go; the old backend out after the
    //    NIC is in (its close blocks QEMU for milliseconds: not on the path).
    const std::string tap = "flr" + tag + ".tap" + std::to_string(gen), fdn = "flr-fd" + std::to_string(gen);
    auto mvt = factory.create(macvtap::MacvtapSpec{"flrmvt0", last, macvtap::Mode::Bridge, *mac, 1});
    if (!mvt) die("floor: macvtap: " + mvt.error().message);
    q.send(cmd("getfd", {{"fdname", fdn}}), mvt->fds[0].get());
    q.send(cmd("netdev_add", {{"type", "tap"}, {"id", tap}, {"fd", fdn}}) +
           cmd("device_add",
               {{"driver", "virtio-net-pci"}, {"id", nic}, {"netdev", tap}, {"mac", mac_text}, {"bus", bus}, {"addr", addr}}));
    const uint64_t t_made = monotonic_us();
    const char* steps[] = {"netdev_del", "getfd", "netdev_add", "device_add"};
    uint64_t t_reply[4] = {};
    for (size_t i = 1; i < 4; ++i) {
      json r = q.reply(deadline);
      t_reply[i] = monotonic_us();
      if (!r.contains("return")) die(std::string("floor: ") + steps[i] + ": " + r.dump());
    }
    const uint64_t t1 = t_reply[3];
    q.send(cmd("netdev_del", {{"id", old_netdev}}));
    if (json r = q.reply(deadline); !r.contains("return")) die("floor: netdev_del: " + r.dump());
    t_reply[0] = monotonic_us();
    old_netdev = tap;
    // Where the own part goes, from DEVICE_DELETED: macvtap made, then each reply.
    std::printf("flap %.3f %.3f %.3f %.3f %.3f %.3f %.3f\n", ms(t0, t1), ms(t_del, t_gone), ms(t_gone, t_made),
                ms(t_gone, t_reply[0]), ms(t_gone, t_reply[1]), ms(t_gone, t_reply[2]), ms(t_gone, t1));
    std::fflush(stdout);
  }
}

// ---------------------------------------------------------------- ping


// ---------------------------------------------------------------- sandbox

struct Guest {
  std::string name;    // relinkd's VM name: "replug" or "hub"
  std::string parent;  // the parent's name in the host namespace
  std::string nic;     // the NIC's QEMU id
  std::string mac;
  bool replug = false;
  bool on_loss = false;  // replug: release = "on-loss"
  std::string console, qmp, test_qmp, qemu_log;
  std::unique_ptr<test::Netns> peer;
  int peer_ns_fd = -1;
  nl_sock* peer_nl = nullptr;  // rtnetlink in the peer namespace
  std::unique_ptr<Pinger> pinger;
  std::unique_ptr<test::Child> qemu;

  ~Guest() {
    qemu.reset();
    pinger.reset();
    if (peer_nl) nl_socket_free(peer_nl);
    if (peer_ns_fd >= 0) close(peer_ns_fd);
    peer.reset();  // deletes the namespace, and with it the parent's far end
  }
  std::string read_console() const { return test::read_file(console); }
  size_t ifups() const { return count_of(read_console(), "RELINK-GUEST-IFUP"); }
  std::string explain() const {
    return "guest " + name + " console (tail):\n" + tail(read_console(), 1500) + "\nQEMU log (tail):\n" +
           tail(test::read_file(qemu_log), 600);
  }
};


bool netns_exists(const test::Netns& ns) { return std::filesystem::exists("/run/netns/" + ns.name()); }

struct Sandbox {
  test::Netns ns{"rbench"};
  std::string dir = "/tmp/relink-rbench-" + test::random_suffix();
  nl_sock* nl = nullptr;  // rtnetlink in the host namespace
  std::vector<std::unique_ptr<Guest>> guests;
  std::unique_ptr<test::Child> relinkd;
  std::string guest_dir = test::binary_dir() + "/guest";

  Sandbox() {
    if (!netns_exists(ns)) die("cannot create a network namespace");
    std::filesystem::create_directories(dir);
    chmod(dir.c_str(), 0700);
    nl = netlink_in(ns.name());
  }
  ~Sandbox() {
    relinkd.reset();
    guests.clear();
    if (nl) nl_socket_free(nl);
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
  std::string control() const { return dir + "/control.sock"; }
  std::string relinkd_log() const { return dir + "/relinkd.log"; }

  Guest& add_guest(const std::string& name, const std::string& parent, const std::string& nic, const std::string& mac,
                   bool replug) {
    auto g = std::make_unique<Guest>();
    g->name = name;
    g->parent = parent;
    g->nic = nic;
    g->mac = mac;
    g->replug = replug;
    g->console = dir + "/" + name + ".console";
    g->qmp = dir + "/" + name + ".qmp";
    g->test_qmp = dir + "/" + name + ".test.qmp";
    g->qemu_log = dir + "/" + name + ".qemu.log";
    g->peer = std::make_unique<test::Netns>("rbench");
    if (!netns_exists(*g->peer)) die("cannot create a network namespace");
    g->peer_ns_fd = open(("/run/netns/" + g->peer->name()).c_str(), O_RDONLY | O_CLOEXEC);
    if (g->peer_ns_fd < 0) die("open the peer namespace");
    g->peer_nl = netlink_in(g->peer->name());
    g->pinger = std::make_unique<Pinger>(g->peer->name(), kGuestIp, static_cast<uint16_t>(getpid() * 7),
                                         "relink-replug-bench");
    guests.push_back(std::move(g));
    return *guests.back();
  }

  // The guest's parent, re-created (returns time 0 of a flap) and deleted.
  uint64_t parent_up(Guest& g) { return bench::parent_up(nl, g.peer_nl, g.peer_ns_fd, g.parent, g.mac); }
  void parent_down(Guest& g) { bench::parent_down(nl, g.parent); }

  // Boots the guest: replug-wired as a launcher starts it (its own macvtap
  // lmv<parent> on the parent, opened as fd 3, the NIC on a root port of its own),
  // or hub-wired as DaemonEnv::start_qemu does (no tap until relinkd adds one).
  void start_guest(Guest& g) {
    const std::string kernel = guest_dir + (std::filesystem::exists(guest_dir + "/vmlinux") ? "/vmlinux" : "/vmlinuz");
    std::vector<std::string> argv, net;
    if (g.replug) {
      const std::string lmv = "lmv" + g.parent;  // the launcher's macvtap
      ns.ip("link add link " + g.parent + " name " + lmv + " address " + g.mac + " type macvtap mode bridge");
      ns.ip("link set " + lmv + " up");
      const int ifindex = ns.ifindex(lmv);
      const std::string devno =
          ns.run("cat /sys/class/net/" + lmv + "/macvtap/tap" + std::to_string(ifindex) + "/dev").out;
      unsigned maj = 0, min = 0;
      if (ifindex <= 0 || sscanf(devno.c_str(), "%u:%u", &maj, &min) != 2) die("launcher macvtap: " + devno);
      const std::string node = dir + "/" + lmv + ".node";
      if (mknod(node.c_str(), S_IFCHR | 0600, makedev(maj, min)) != 0) die("mknod " + node);
      argv = {"sh", "-c", "exec 3<>" + node + "; exec \"$0\" \"$@\""};
      net = {"-device", "pcie-root-port,id=rp1,chassis=1,slot=1", "-netdev", "tap,id=hostnet0,fd=3,vhost=off",
             "-device", "virtio-net-pci,id=" + g.nic + ",mac=" + g.mac + ",bus=rp1,netdev=hostnet0"};
    } else {
      net = {"-netdev", "hubport,id=" + g.nic + ".port,hubid=0", "-device",
             "virtio-net-pci,netdev=" + g.nic + ".port,id=" + g.nic + ",mac=" + g.mac};
    }
    argv.insert(argv.end(), {"qemu-system-x86_64", "-nodefaults", "-display", "none", "-machine", "q35", "-accel",
                             "tcg", "-m", "256", "-qmp", "unix:" + g.qmp + ",server=on,wait=off", "-qmp",
                             "unix:" + g.test_qmp + ",server=on,wait=off"});
    argv.insert(argv.end(), net.begin(), net.end());
    argv.insert(argv.end(), {"-no-reboot", "-serial", "file:" + g.console, "-kernel", kernel, "-initrd",
                             guest_dir + "/initramfs.cpio.gz", "-append",
                             "console=ttyS0 quiet panic=-1 relink.tag=" + g.name + " relink.ip=" +
                                 std::string(kGuestIp) + "/24 relink.poll=0.05"});
    g.qemu = std::make_unique<test::Child>(argv, test::Child::Options{"", g.qemu_log, {}});
  }
  void wait_booted(Guest& g) {
    if (!wait_for([&] { return g.read_console().find("RELINK-GUEST-READY") != std::string::npos || !g.qemu->running(); },
                  180s, 100ms) ||
        !g.qemu->running())
      die("guest " + g.name + " did not boot\n" + g.explain());
  }

  void start_relinkd() {
    const char* level = getenv("RELINK_BENCH_LOG");
    std::string cfg = "[daemon]\ncontrol_socket = \"" + control() + "\"\nstate_dir = \"" + dir +
                      "/state\"\nnode_dir = \"" + dir + "/dev\"\nlog_level = \"" + (level ? level : "warn") + "\"\n";
    for (const auto& g : guests) {
      cfg += "\n[[vm]]\nname = \"" + g->name + "\"\nqmp = \"" + g->qmp + "\"\n[[vm.macvtap]]\nnic = \"" + g->nic +
             "\"\nparent = \"" + g->parent + "\"\nmode = \"bridge\"\nmac = \"" + g->mac + "\"\n";
      cfg += g->replug ? "attach = \"replug\"\nqueues = 1\n" : "hub = 0\n";
      if (g->replug) cfg += g->on_loss ? "release = \"on-loss\"\n" : "release = \"on-return\"\n";
    }
    std::ofstream(dir + "/relinkd.toml") << cfg;
    relinkd.reset();
    relinkd = std::make_unique<test::Child>(
        std::vector<std::string>{test::binary_dir() + "/relinkd", "--config", dir + "/relinkd.toml"},
        test::Child::Options{ns.name(), relinkd_log(), {}});
  }
  void stop_relinkd() {
    // relinkd leaves its attachments as they are when it exits (and adopts them when it starts).
    if (relinkd && relinkd->stop(SIGTERM, 10s) == -1) die("relinkd did not exit on SIGTERM");
    relinkd.reset();
  }
  void keep_relinkd_log() {
    if (getenv("RELINK_BENCH_LOG"))
      std::filesystem::copy_file(relinkd_log(), "/tmp/relink-replug-bench-relinkd.log",
                                 std::filesystem::copy_options::overwrite_existing);
  }
  // The guest's binding as relinkd's status shows it (null if none).
  json binding(const Guest& g) {
    auto r = ctl::control_request(control(), {{"command", "status"}}, 2000);
    if (!r || !r->value("ok", false)) return nullptr;
    for (const auto& vm : (*r)["result"]["vms"])
      if (vm.value("name", "") == g.name && !vm["bindings"].empty()) return vm["bindings"][0];
    return nullptr;
  }
  // Waits until the binding is in `state` at generation >= gen.
  json wait_binding(const Guest& g, const std::string& state, uint64_t gen, std::chrono::milliseconds timeout) {
    json b;
    if (!wait_for(
            [&] {
              b = binding(g);
              return b.is_object() && b.value("state", "") == state && b.value("generation", uint64_t{0}) >= gen;
            },
            timeout, 10ms)) {
      keep_relinkd_log();
      die("relinkd: " + g.name + " not " + state + " (generation " + std::to_string(gen) + ") in time: " + b.dump() +
          "\nrelinkd log (tail):\n" + tail(test::read_file(relinkd_log()), 2000) + "\n" + g.explain());
    }
    return b;
  }
  void expect_answers(Guest& g, const std::string& when) {
    if (!g.pinger->first_answer(monotonic_us() + kAnswerLimitUs))
      die("guest " + g.name + " does not answer ping " + when + "\n" + g.explain());
  }
};

// What identifies the NIC to the guest, read on the test's own QMP socket.
json nic_identity(const Guest& g) {
  test::QmpSync q;
  if (!q.connect(g.test_qmp)) die("cannot connect to " + g.test_qmp);
  json id;
  for (const char* prop : {"type", "mac", "addr", "parent_bus"}) {
    auto r = q.execute("qom-get", {{"path", "/machine/peripheral/" + g.nic}, {"property", prop}});
    id[prop] = r.contains("return") ? r["return"] : json(nullptr);
  }
  return id;
}

// ---------------------------------------------------------------- phases

struct Split {
  std::vector<double> total, release, own;
  // Floor only, each from DEVICE_DELETED: macvtap made, then each reply.
  std::vector<double> made, netdev_del, getfd, netdev_add, device_add;
  void add(double t, double r) {
    total.push_back(t);
    release.push_back(r);
    own.push_back(t - r);
  }
  void append(const Split& o) {
    for (auto [mine, theirs] : {std::pair{&total, &o.total}, {&release, &o.release}, {&own, &o.own}, {&made, &o.made},
                                {&netdev_del, &o.netdev_del}, {&getfd, &o.getfd}, {&netdev_add, &o.netdev_add},
                                {&device_add, &o.device_add}})
      mine->insert(mine->end(), theirs->begin(), theirs->end());
  }
};

// Part 1, floor: this program's floor child on the replug guest's QEMU
// (relinkd not running).
Split run_floor(Sandbox& sb, Guest& g, const char* self, int flaps, int block) {
  int pipefd[2];
  if (pipe2(pipefd, O_CLOEXEC) < 0) die("pipe");
  Split out;
  {
    const std::string out_path = "/proc/self/fd/" + std::to_string(pipefd[1]);
    test::Child child({self, "--floor-child", g.qmp, g.parent, sb.dir + "/floor-dev", g.nic, g.mac, "rp1", "0.0",
                       std::to_string(block)},
                      test::Child::Options{sb.ns.name(), out_path, {}});
    close(pipefd[1]);
    FILE* in = fdopen(pipefd[0], "r");
    std::unique_ptr<FILE, int (*)(FILE*)> closer(in, fclose);
    char line[512];
    auto expect = [&](const char* what) -> std::string {
      if (!fgets(line, sizeof line, in)) {
        check_interrupted();
        die(std::string("floor child died waiting for ") + what + "\n" + g.explain());
      }
      if (std::strncmp(line, what, std::strlen(what)) != 0) die(std::string("floor child: ") + line);
      return line;
    };
    expect("ready");
    for (int i = 1; i <= flaps; ++i) {
      const size_t ifups = g.ifups();
      sb.parent_down(g);
      pause_for(kSettle);
      sb.parent_up(g);
      double v[7] = {};
      if (std::sscanf(expect("flap").c_str(), "flap %lf %lf %lf %lf %lf %lf %lf", &v[0], &v[1], &v[2], &v[3], &v[4],
                      &v[5], &v[6]) != 7)
        die("floor child: bad line");
      out.add(v[0], v[1]);
      out.made.push_back(v[2]);
      out.netdev_del.push_back(v[3]);
      out.getfd.push_back(v[4]);
      out.netdev_add.push_back(v[5]);
      out.device_add.push_back(v[6]);
      if (!wait_for([&] { return g.ifups() > ifups; }, 30s, 20ms))
        die("floor: the guest did not configure its new NIC (replug " + std::to_string(i) + ")\n" + g.explain());
      pause_for(kSettle);
    }
    sb.expect_answers(g, "after the floor's replugs");
  }  // the floor child is killed here: its QMP session closes before relinkd connects
  return out;
}

// Part 1, relinkd: the same flaps, relinkd replugging (it is started here,
// adopts what the floor left, and keeps running).
Split run_relinkd_split(Sandbox& sb, Guest& g, int flaps) {
  Split out;
  sb.start_relinkd();
  sb.wait_binding(g, "attached", 0, 20s);
  for (const auto& other : sb.guests)
    if (other.get() != &g) sb.wait_binding(*other, "attached", 0, 20s);
  uint64_t gen = sb.binding(g).value("generation", uint64_t{0});
  for (int i = 1; i <= flaps; ++i) {
    const size_t ifups = g.ifups();
    sb.parent_down(g);
    sb.wait_binding(g, "waiting-parent", 0, 10s);
    pause_for(kSettle);
    sb.parent_up(g);
    // Watching the console, not relinkd's socket, while relinkd works.
    if (!wait_for([&] { return g.ifups() > ifups; }, 30s, 20ms))
      die("relinkd: the guest did not configure its new NIC (replug " + std::to_string(i) + ")\n" + g.explain() +
          "\nrelinkd log (tail):\n" + tail(test::read_file(sb.relinkd_log()), 2000));
    json b = sb.wait_binding(g, "attached", ++gen, 10s);
    if (b.value("generation", uint64_t{0}) != gen || !b["last_reattach_ms"].is_number() ||
        !b["last_release_ms"].is_number() || !b["last_own_ms"].is_number())
      die("relinkd: unexpected status after replug " + std::to_string(i) + ": " + b.dump());
    out.total.push_back(b["last_reattach_ms"].get<double>());
    out.release.push_back(b["last_release_ms"].get<double>());
    out.own.push_back(b["last_own_ms"].get<double>());
    pause_for(kSettle);
  }
  return out;
}

// Part 2: parent re-created -> the guest answers; returns ms.
double user_flap(Sandbox& sb, Guest& g) {
  const uint64_t gen = sb.binding(g).value("generation", uint64_t{0});
  const size_t ifups = g.ifups();
  sb.parent_down(g);
  // on-loss: waiting-parent comes once the guest released the NIC.
  const json b = sb.wait_binding(g, "waiting-parent", 0, 10s);
  if (g.on_loss && b["nic_present"] != false) die("on-loss: waiting for the parent with the NIC in: " + b.dump());
  pause_for(kSettle);
  const uint64_t t0 = sb.parent_up(g);
  auto t = g.pinger->first_answer(t0 + kAnswerLimitUs);
  if (!t) die("guest " + g.name + " did not answer within 30 s of its parent's return\n" + g.explain());
  sb.wait_binding(g, "attached", gen + 1, 10s);
  if (g.replug && !wait_for([&] { return g.ifups() > ifups; }, 30s, 20ms))
    die("the replug guest answered but never reported its new NIC\n" + g.explain());
  pause_for(kSettle);
  return ms(t0, *t);
}

void row(const char* name, const std::vector<double>& v) {
  std::printf("  %-40s n=%-3zu p50 %8.3f  p90 %8.3f  p99 %8.3f  max %8.3f ms\n", name, v.size(), pct(v, 50),
              pct(v, 90), pct(v, 99), v.empty() ? 0 : *std::max_element(v.begin(), v.end()));
}

std::string loadavg() {
  std::string s = test::read_file("/proc/loadavg");
  return s.substr(0, s.find(' ', s.find(' ', s.find(' ') + 1) + 1));
}

}  // namespace

int run(int argc, char** argv);

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const Fatal& e) {
    std::cerr << "replug_bench: " << e.what() << "\n";
    return 1;
  }
}

int run(int argc, char** argv) {
  if (argc == 10 && std::string(argv[1]) == "--floor-child")
    return floor_child(std::vector<std::string>(argv + 2, argv + 10));
  int flaps = 40, user_flaps = 20;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      print_help();
      return 0;
    }
    if (i + 1 >= argc) die(kUsage);
    if (a == "--flaps") flaps = std::atoi(argv[++i]);
    else if (a == "--user-flaps") user_flaps = std::atoi(argv[++i]);
    else die(kUsage);
  }
  if (flaps < 1 || user_flaps < 1) die(kUsage);
  if (!test::is_root()) die("needs root (namespaces, macvtap, QEMU); see --help");
  signal(SIGPIPE, SIG_IGN);
  struct sigaction sa {};
  sa.sa_handler = on_interrupt;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);

  const uint64_t started = monotonic_us();
  std::printf("replug_bench: %d replugs with the floor, %d with relinkd (%d alternating blocks), then %d flaps per "
              "attach style; load %s\n",
              flaps, flaps, std::min(kBlocks, flaps), user_flaps, loadavg().c_str());
  std::fflush(stdout);
  auto built = test::sh("bash " + test::source_dir() + "/tests/guest/build-guest.sh " + test::binary_dir() + "/guest");
  if (built.status != 0) die("building the test guest failed:\n" + built.out);

  Sandbox sb;
  Guest& rg = sb.add_guest("replug", "pb", "net0", "52:54:00:12:34:56", true);
  Guest& hg = sb.add_guest("hub", "pa", "nic0", "52:54:00:12:34:57", false);
  Guest& lg = sb.add_guest("onloss", "pc", "net0", "52:54:00:12:34:58", true);
  lg.on_loss = true;
  for (Guest* g : {&rg, &hg, &lg}) {
    sb.parent_up(*g);
    sb.start_guest(*g);
  }
  for (Guest* g : {&rg, &hg, &lg}) sb.wait_booted(*g);
  const json identity = nic_identity(rg);
  std::printf("  guests booted in %.1f s\n", ms(started, monotonic_us()) / 1000.0);
  std::fflush(stdout);

  // Part 1: blocks of floor flaps (relinkd stopped) and relinkd flaps
  // (relinkd adopts what the floor left, as it would a launcher's macvtap),
  // alternating, so that both see the same machine.
  Split floor, daemon;
  const int blocks = std::min(kBlocks, flaps);
  for (int b = 0; b < blocks; ++b) {
    const int n = flaps / blocks + (b < flaps % blocks ? 1 : 0);
    sb.stop_relinkd();
    floor.append(run_floor(sb, rg, argv[0], n, b));
    daemon.append(run_relinkd_split(sb, rg, n));
    if (b == 0) sb.expect_answers(hg, "through its first macvtap");
  }
  std::printf("  part 1 done after %.1f s\n", ms(started, monotonic_us()) / 1000.0);
  std::fflush(stdout);

  // Part 2: hub, on-return and on-loss flaps interleaved, so that all see the same machine.
  std::vector<double> user_hub, user_replug, user_on_loss;
  for (int i = 0; i < user_flaps; ++i) {
    user_hub.push_back(user_flap(sb, hg));
    user_replug.push_back(user_flap(sb, rg));
    user_on_loss.push_back(user_flap(sb, lg));
  }
  if (nic_identity(rg) != identity) die("the replugged NIC came back different: " + nic_identity(rg).dump());
  sb.keep_relinkd_log();
  const std::string log_text = test::read_file(sb.relinkd_log());

  std::printf("\n1. replug split (booted TCG guest, q35, NIC on its own pcie-root-port, QEMU 7.2)\n");
  std::printf("   release: device_del sent -> the NIC's DEVICE_DELETED (the guest's time)\n");
  std::printf("   own:     parent's RTM_NEWLINK -> device_add acknowledged, minus the release\n");
  row("floor: release", floor.release);
  row("relinkd: release (last_release_ms)", daemon.release);
  row("floor: own", floor.own);
  row("relinkd: own (last_own_ms)", daemon.own);
  row("floor: total", floor.total);
  row("relinkd: total (last_reattach_ms)", daemon.total);
  std::printf("   the floor's own part, each from DEVICE_DELETED received:\n");
  row("floor: macvtap created + opened", floor.made);
  row("floor: netdev_del (old tap, after) answered", floor.netdev_del);
  row("floor: getfd answered", floor.getfd);
  row("floor: netdev_add answered", floor.netdev_add);
  row("floor: device_add answered", floor.device_add);

  std::printf("\n2. what a user sees: parent re-created -> the guest answers ping (echo every %d ms)\n",
              static_cast<int>(kPingStepUs / 1000));
  row("hub attach", user_hub);
  row("replug attach, release on-return", user_replug);
  row("replug attach, release on-loss", user_on_loss);

  const double own50 = pct(daemon.own, 50), ratio = own50 / pct(floor.own, 50);
  std::printf("\nratios and goals\n");
  std::printf("  own p50 relinkd / own p50 floor  %5.2fx     (goal <= 1.5x)  %s\n", ratio,
              ratio <= 1.5 ? "ok" : "MISSED");
  std::printf("  own p50 relinkd                %7.3f ms   (goal <= 5 ms)  %s\n", own50, own50 <= 5 ? "ok" : "MISSED");
  std::printf("  replug / hub, what a user sees  %5.1fx at p50\n", pct(user_replug, 50) / pct(user_hub, 50));
  const double loss_ratio = pct(user_on_loss, 50) / pct(user_replug, 50);
  std::printf("  on-loss / on-return at p50       %5.2fx     (goal <= 0.6x)  %s\n", loss_ratio,
              loss_ratio <= 0.6 ? "ok" : "MISSED");
  std::printf("\n  relinkd warnings/errors logged: %zu; run took %.0f s; load %s\n",
              count_of(log_text, " warning ") + count_of(log_text, " error "), ms(started, monotonic_us()) / 1000.0,
              loadavg().c_str());
  return 0;
}
