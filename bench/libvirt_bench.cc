// SPDX-License-Identifier: GPL-2.0-or-later
// Re-plug through libvirt against relinkd's own QMP replug and hub attach,
// measured as a user sees it, with booted test guests (Debian kernel +
// busybox initramfs under TCG), everything in this run.
//
// Four guests, all managed by one relinkd (at log level debug, for the
// libvirt calls' durations):
//  (a) libvirt: a domain of a real libvirtd (tests/support/libvirt_env.h)
//      whose <interface type='direct'> sits on parent p0; relinkd follows it
//      through [libvirt] and re-plugs it through libvirt
//      (virDomainDetachDeviceAlias -> DEVICE_REMOVED ->
//      virDomainAttachDeviceFlags with the interface's XML; libvirt makes
//      the new macvtap);
//  (b) replug: a QEMU started directly, as a launcher starts one (its NIC on
//      a pcie-root-port of its own, peered with a tap whose fd is a macvtap
//      the launcher made), on parent p1x, attach = "replug";
//  (c) hub: a QEMU started directly with its NIC on hub 0, on parent p2x,
//      attach = "hub";
//  (d) libvirt on-loss: a second domain like (a), on parent p3x, with
//      release = "on-loss" ([libvirt.domain_release]): its NIC is detached
//      as soon as the parent is gone, and the return only attaches it.
// All four run on q35 with 1 vCPU and 256 MiB; libvirt too puts the NIC on
// a pcie-root-port of its own.
//
// Layout. relinkd, libvirtd and the three parents are in one namespace
// (libvirt's domains and relinkd must share it: libvirt makes its macvtaps
// there). Each parent is a veth whose far end p1 is in a peer namespace of
// its own (192.0.2.1, fixed MAC, the guest's MAC as a permanent neighbour;
// every guest is 192.0.2.2): three separate L2 segments, so one guest's
// flap never touches another's path. The four guests run side by side and
// their flaps are interleaved (a, d, b, c, a, d, ...), so that all four see
// the same machine: load from anything else on the host, and the idle cost of
// the other guests, falls on every case alike instead of on whichever
// case happened to run at the time. One flap at a time; the other guests are
// idle meanwhile.
//
// A flap: the guest answers ping (checked), the parent is deleted (its
// far end and every macvtap on it go with it), relinkd reports
// waiting-parent ((d): and the guest has reported its NIC gone), 300 ms of
// quiet, the parent is re-created in-process over
// rtnetlink (time 0), and the peer sends an ICMP echo request every 10 ms
// from a raw socket until the guest answers (the figure); then the binding
// is attached at the next generation, a re-plugged guest has reported its new
// NIC, and 300 ms of quiet.
//
// The split of (a), per flap, from relinkd's status and log:
//   release    last_release_ms: the detach posted -> libvirt's DEVICE_REMOVED
//              (the detach call itself is reported apart, from the log)
//   own        last_own_ms: relinkd's time from the parent's return minus the
//              release; for libvirt essentially the attach job, reported apart
//              from relinkd's debug line "libvirt call took X ms" that follows
//              "DOMAIN: attach device" (lookup + virDomainAttachDeviceFlags +
//              the domain's XML read back)
//   remainder  what the user sees minus last_reattach_ms: the guest's hotplug,
//              link, ARP, the reply, and up to 10 ms of ping granularity
// (b) is split the same way (release: device_del -> DEVICE_DELETED). (d)'s
// release happens while the parent is away: it is reported, but it is not
// part of what the user waits for after the return, which is split into
// libvirt's attach job and the rest.
// The ping, the guest sandbox and the parent's re-creation are replug_bench's.
//
// Usage (root): libvirt_bench [--flaps N] [--help]
// glibc's net/if.h first: linux/icmp.h brings linux/if.h, which steps aside for it.
#include <net/if.h>
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
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <numeric>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "bench_util.h"
#include "guest_net.h"
#include "ctl/control_client.h"
#include "support/harness.h"
#include "support/libvirt_env.h"
#include "util/clock.h"

using namespace relink;
using namespace std::chrono_literals;
using nlohmann::json;

namespace {

using namespace bench;
using bench::die;
using bench::Fatal;
using bench::pct;

constexpr uint64_t kAnswerLimitUs = 30'000'000;        // a flap whose guest stays silent longer fails the run
constexpr auto kSettle = 300ms;                        // quiet time before and after every flap
constexpr const char* kUsage = "usage: libvirt_bench [--flaps N] [--help]";

void print_help() {
  std::printf(
      "%s   (run as root; nothing runs without being asked: not part of ctest)\n"
      "\n"
      "Measures, with booted test guests (Debian kernel + busybox initramfs under TCG, built\n"
      "by tests/guest/build-guest.sh into BUILD/guest; q35, 1 vCPU, 256 MiB), the time from a\n"
      "parent's re-creation until the guest answers ping again, for three guests managed by\n"
      "one relinkd (log level debug), each on a parent of its own:\n"
      "  (a) libvirt replug: a domain of a real libvirtd (private to this run, in relinkd's\n"
      "      namespace), <interface type='direct'> on p0; relinkd follows it through\n"
      "      [libvirt] and re-plugs it through libvirt (DetachDeviceAlias, DEVICE_REMOVED,\n"
      "      AttachDeviceFlags with the same XML; libvirt makes the new macvtap)\n"
      "  (b) relinkd's QMP replug (attach = \"replug\") of a QEMU started directly, its NIC\n"
      "      on its own pcie-root-port, peered with a tap on a macvtap the launcher made\n"
      "  (c) hub attach (attach = \"hub\") of a QEMU started directly\n"
      "  (d) as (a), a second domain with release = \"on-loss\" ([libvirt.domain_release]): its\n"
      "      NIC is detached as soon as the parent is gone, the return only attaches it\n"
      "Each parent is a veth whose far end is in a peer namespace of its own (192.0.2.1,\n"
      "fixed MAC, knows the guest's MAC; the guest is 192.0.2.2). The ping is in-bench: a raw\n"
      "ICMP socket in the peer namespace sends an echo request every 10 ms, so a figure is\n"
      "late by up to 10 ms. Flaps of the four cases are interleaved (a, d, b, c, a, ...); before\n"
      "each the guest must answer, and %d ms of quiet precede and follow each ((d): once the\n"
      "guest has reported its NIC gone).\n"
      "\n"
      "Reported: min, p50, p90, max per case, and ratios at p50; the split of (a) (and of (b)):\n"
      "  release    last_release_ms from relinkd's status: the detach -> DEVICE_REMOVED\n"
      "             (device_del -> DEVICE_DELETED for (b)); for (a) also the detach call alone\n"
      "  own        last_own_ms: from the parent's return, minus the release; for (a) also\n"
      "             libvirt's attach job alone (lookup + virDomainAttachDeviceFlags + the XML\n"
      "             read back), from relinkd's debug line \"libvirt call took X ms\"\n"
      "  remainder  what the user sees minus last_reattach_ms: the guest's hotplug, link,\n"
      "             ARP and reply (and the ping's granularity)\n"
      "(d) reports its release (done while the parent is away) and splits what the user sees\n"
      "after the return into libvirt's attach job and the rest. The ratio (d)/(a) at p50 is\n"
      "what release = \"on-loss\" saves a libvirt domain.\n"
      "\n"
      "A run with the defaults takes about 60 s on a 2-core machine (15-20 s starting libvirtd\n"
      "and booting the guests, then about 1 s per flap). Everything it creates\n"
      "(namespaces relink-lvbench-*, libvirtd and its domain, QEMUs, relinkd, macvtaps,\n"
      "/tmp/relink-lvbench-*, /tmp/relink-lv-*) is removed on exit, on failure and on\n"
      "SIGINT/SIGTERM.\n"
      "\n"
      "Options:\n"
      "  --flaps N   flaps per case (default 10)\n"
      "  --help, -h  this text\n"
      "Environment: RELINK_BENCH_KEEP_LOGS=1 keeps relinkd's and libvirtd's logs and the\n"
      "guests' consoles as /tmp/relink-libvirt-bench-{relinkd,libvirtd}.log and\n"
      "/tmp/relink-libvirt-bench-{lv,lvloss,replug,hub}.console.\n",
      kUsage, static_cast<int>(kSettle.count()));
}


std::string tail(const std::string& s, size_t n) { return s.size() > n ? s.substr(s.size() - n) : s; }

size_t count_of(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t p = text.find(what); p != std::string::npos; p = text.find(what, p + 1)) ++n;
  return n;
}

double ms(uint64_t from_us, uint64_t to_us) { return static_cast<double>(to_us - from_us) / 1000.0; }

// ---------------------------------------------------------------- ping
// (as in replug_bench)


// ---------------------------------------------------------------- sandbox

enum class Kind { Libvirt, Replug, Hub };

struct Guest {
  Kind kind = Kind::Hub;
  std::string label;   // "(a) libvirt replug", ...
  std::string name;    // relinkd's VM name (the libvirt domain's name for (a))
  std::string parent;  // the parent's name in relinkd's namespace
  std::string nic;     // the NIC's QEMU id (libvirt's alias for (a))
  std::string mac;
  std::string console, qmp, test_qmp, qemu_log;
  std::unique_ptr<test::Netns> peer;
  int peer_ns_fd = -1;
  nl_sock* peer_nl = nullptr;  // rtnetlink in the peer namespace
  std::unique_ptr<Pinger> pinger;
  std::unique_ptr<test::Child> qemu;  // (b), (c); libvirt runs (a)'s and (d)'s
  const test::LibvirtEnv* lv = nullptr;  // (a), (d)
  bool on_loss = false;                  // (d): release = "on-loss"

  ~Guest() {
    qemu.reset();
    pinger.reset();
    if (peer_nl) nl_socket_free(peer_nl);
    if (peer_ns_fd >= 0) close(peer_ns_fd);
    peer.reset();  // deletes the namespace, and with it the parent's far end
  }
  std::string read_console() const { return test::read_file(console); }
  size_t ifups() const { return count_of(read_console(), "RELINK-GUEST-IFUP"); }
  size_t nics_gone() const { return count_of(read_console(), "RELINK-GUEST-LINK-GONE"); }
  std::string explain() const {
    std::string s = "guest " + name + " console (tail):\n" + tail(read_console(), 1500);
    if (lv)
      s += "\ndomain's QEMU log (tail):\n" + tail(lv->qemu_log(name), 1000) + "\n" + lv->log();
    else
      s += "\nQEMU log (tail):\n" + tail(test::read_file(qemu_log), 600);
    return s;
  }
};


bool netns_exists(const test::Netns& ns) { return std::filesystem::exists("/run/netns/" + ns.name()); }

struct Sandbox {
  // Declared first, destroyed last: libvirtd, relinkd and the parents live in it.
  test::Netns ns{"lvbench"};
  std::string dir = "/tmp/relink-lvbench-" + test::random_suffix();
  nl_sock* nl = nullptr;  // rtnetlink in relinkd's namespace
  std::unique_ptr<test::LibvirtEnv> lv;
  std::vector<std::unique_ptr<Guest>> guests;
  std::unique_ptr<test::Child> relinkd;
  std::string guest_dir = test::binary_dir() + "/guest";

  // Not in the constructor: whatever fails here throws with the destructor
  // still to run (it copes with a half-made sandbox).
  void init() {
    if (!netns_exists(ns)) die("cannot create a network namespace");
    std::filesystem::create_directories(dir);
    chmod(dir.c_str(), 0700);
    nl = netlink_in(ns.name());
    // libvirt opens a macvtap as /dev/tap<ifindex>, and /dev is shared: keep
    // this namespace's ifindexes clear of other namespaces'.
    test::push_ifindex(ns);
    lv = std::make_unique<test::LibvirtEnv>(ns);
    lv->start();
    if (!lv->running()) die("libvirtd did not start\n" + lv->log());
  }
  ~Sandbox() {
    // relinkd first (it would otherwise see the domain go); then libvirt's
    // domain and libvirtd; then the QEMUs and peer namespaces; the namespace
    // last, with whatever is left in it.
    relinkd.reset();
    lv.reset();
    guests.clear();
    if (nl) nl_socket_free(nl);
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
  std::string control() const { return dir + "/control.sock"; }
  std::string relinkd_log() const { return dir + "/relinkd.log"; }

  Guest& add_guest(Kind kind, const std::string& label, const std::string& name, const std::string& parent,
                   const std::string& nic, const std::string& mac) {
    auto g = std::make_unique<Guest>();
    g->kind = kind;
    g->label = label;
    g->name = name;
    g->parent = parent;
    g->nic = nic;
    g->mac = mac;
    g->console = dir + "/" + name + ".console";
    g->qmp = dir + "/" + name + ".qmp";
    g->test_qmp = dir + "/" + name + ".test.qmp";
    g->qemu_log = dir + "/" + name + ".qemu.log";
    if (kind == Kind::Libvirt) g->lv = lv.get();
    g->peer = std::make_unique<test::Netns>("lvbench");
    if (!netns_exists(*g->peer)) die("cannot create a network namespace");
    g->peer_ns_fd = open(("/run/netns/" + g->peer->name()).c_str(), O_RDONLY | O_CLOEXEC);
    if (g->peer_ns_fd < 0) die("open the peer namespace");
    g->peer_nl = netlink_in(g->peer->name());
    g->pinger = std::make_unique<Pinger>(g->peer->name(), kGuestIp,
                                         static_cast<uint16_t>(getpid() * 7 + guests.size() * 4096),
                                         "relink-libvirt-bench");
    guests.push_back(std::move(g));
    return *guests.back();
  }

  // The guest's parent, re-created (returns time 0 of a flap) and deleted.
  uint64_t parent_up(Guest& g) { return bench::parent_up(nl, g.peer_nl, g.peer_ns_fd, g.parent, g.mac); }
  void parent_down(Guest& g) { bench::parent_down(nl, g.parent); }

  std::string kernel() const {
    return guest_dir + (std::filesystem::exists(guest_dir + "/vmlinux") ? "/vmlinux" : "/vmlinuz");
  }
  // The guest's address, and its link watch polling every 50 ms.
  static std::string cmdline_extra() { return std::string("relink.ip=") + kGuestIp + "/24 relink.poll=0.05"; }

  // (b) and (c), as replug_bench starts them: replug-wired as a launcher
  // starts it (its own macvtap lmv0 on the parent, opened as fd 3, the NIC on
  // a root port of its own), or hub-wired (no tap until relinkd adds one).
  void start_qemu_guest(Guest& g) {
    std::vector<std::string> argv, net;
    if (g.kind == Kind::Replug) {
      if (ns.run("ip link add link " + g.parent + " name lmv0 address " + g.mac + " type macvtap mode bridge && " +
                 "ip link set lmv0 up")
              .status != 0)
        die("launcher macvtap lmv0 on " + g.parent);
      const int ifindex = ns.ifindex("lmv0");
      const std::string devno = ns.run("cat /sys/class/net/lmv0/macvtap/tap" + std::to_string(ifindex) + "/dev").out;
      unsigned maj = 0, min = 0;
      if (ifindex <= 0 || sscanf(devno.c_str(), "%u:%u", &maj, &min) != 2) die("launcher macvtap: " + devno);
      const std::string node = dir + "/lmv0.node";
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
    argv.insert(argv.end(), {"-no-reboot", "-serial", "file:" + g.console, "-kernel", kernel(), "-initrd",
                             guest_dir + "/initramfs.cpio.gz", "-append",
                             "console=ttyS0 quiet panic=-1 relink.tag=" + g.name + " " + cmdline_extra()});
    g.qemu = std::make_unique<test::Child>(argv, test::Child::Options{"", g.qemu_log, {}});
  }
  // (a): a transient libvirt domain, its direct interface on the parent
  // (libvirt picks a pcie-root-port of its own for it on q35).
  void start_libvirt_guest(Guest& g) {
    test::DomainSpec d;
    d.name = g.name;
    d.machine = "q35";
    d.nics.push_back(test::DirectNic{g.mac, g.parent});
    d.guest_dir = guest_dir;
    d.cmdline_extra = cmdline_extra();
    d.serial_log = g.console;
    if (!lv->create(test::domain_xml(d))) die("libvirt could not start domain " + g.name + "\n" + g.explain());
  }
  bool guest_running(const Guest& g) const {
    return g.kind == Kind::Libvirt ? lv->qemu_pid(g.name) > 0 : g.qemu->running();
  }
  void wait_booted(Guest& g) {
    if (!wait_for(
            [&] { return g.read_console().find("RELINK-GUEST-READY") != std::string::npos || !guest_running(g); },
            180s, 100ms) ||
        !guest_running(g))
      die("guest " + g.name + " did not boot\n" + g.explain());
  }

  // One relinkd for all three: (b) and (c) in its config file, (a) through
  // [libvirt]. At debug level: its libvirt thread logs each call's duration.
  void start_relinkd() {
    std::string cfg = "[daemon]\ncontrol_socket = \"" + control() + "\"\nstate_dir = \"" + dir +
                      "/state\"\nnode_dir = \"" + dir + "/dev\"\nlog_level = \"debug\"\n";
    for (const auto& g : guests) {
      if (g->kind == Kind::Libvirt) continue;
      cfg += "\n[[vm]]\nname = \"" + g->name + "\"\nqmp = \"" + g->qmp + "\"\n[[vm.macvtap]]\nnic = \"" + g->nic +
             "\"\nparent = \"" + g->parent + "\"\nmode = \"bridge\"\nmac = \"" + g->mac + "\"\n";
      cfg += g->kind == Kind::Replug ? "attach = \"replug\"\nqueues = 1\n" : "attach = \"hub\"\nhub = 0\n";
    }
    cfg += "\n[libvirt]\nuri = \"" + lv->uri() + "\"\npid_dir = \"" + lv->pid_dir() + "\"\n";
    cfg += "[libvirt.domain_release]\n";
    for (const auto& g : guests)
      if (g->kind == Kind::Libvirt) cfg += g->name + " = \"" + (g->on_loss ? "on-loss" : "on-return") + "\"\n";
    std::ofstream(dir + "/relinkd.toml") << cfg;
    relinkd = std::make_unique<test::Child>(
        std::vector<std::string>{test::binary_dir() + "/relinkd", "--config", dir + "/relinkd.toml"},
        test::Child::Options{ns.name(), relinkd_log(), {}});
  }
  void keep_logs() {
    if (!getenv("RELINK_BENCH_KEEP_LOGS")) return;
    std::error_code ec;
    std::filesystem::copy_file(relinkd_log(), "/tmp/relink-libvirt-bench-relinkd.log",
                               std::filesystem::copy_options::overwrite_existing, ec);
    std::filesystem::copy_file(lv->dir() + "/var/log/libvirt/libvirtd.log", "/tmp/relink-libvirt-bench-libvirtd.log",
                               std::filesystem::copy_options::overwrite_existing, ec);
    for (const auto& g : guests)
      std::filesystem::copy_file(g->console, "/tmp/relink-libvirt-bench-" + g->name + ".console",
                                 std::filesystem::copy_options::overwrite_existing, ec);
  }
  // The guest's binding as relinkd's status shows it (null if none).
  json binding(const Guest& g) {
    auto r = ctl::control_request(control(), {{"command", "status"}}, 2000);
    if (!r || !r->value("ok", false)) return nullptr;
    for (const auto& vm : (*r)["result"]["vms"])
      if (vm.value("name", "") == g.name && !vm["bindings"].empty()) return vm["bindings"][0];
    return nullptr;
  }
  std::string relinkd_tail() { return "relinkd log (tail):\n" + tail(test::read_file(relinkd_log()), 2500); }
  // Waits until the binding is in `state` at generation >= gen.
  json wait_binding(const Guest& g, const std::string& state, uint64_t gen, std::chrono::milliseconds timeout) {
    json b;
    if (!wait_for(
            [&] {
              b = binding(g);
              return b.is_object() && b.value("state", "") == state && b.value("generation", uint64_t{0}) >= gen;
            },
            timeout, 10ms)) {
      keep_logs();
      die("relinkd: " + g.name + " not " + state + " (generation " + std::to_string(gen) + ") in time: " + b.dump() +
          "\n" + relinkd_tail() + "\n" + g.explain());
    }
    return b;
  }
  void expect_answers(Guest& g, const std::string& when) {
    if (!g.pinger->first_answer(monotonic_us() + kAnswerLimitUs)) {
      keep_logs();
      die("guest " + g.name + " does not answer ping " + when + "\n" + relinkd_tail() + "\n" + g.explain());
    }
  }
};

// ---------------------------------------------------------------- libvirt calls in relinkd's log

// The durations of the libvirt thread's jobs for `domain` in `log`: the
// "libvirt call took X ms" that follows "DOMAIN: attach device" (resp.
// "DOMAIN: detach ALIAS") is that job's (the thread runs one job at a time
// and logs its duration when it is done).
struct LibvirtCalls {
  std::vector<double> attach, detach;
};
LibvirtCalls libvirt_calls(const std::string& log, const std::string& domain, const std::string& alias) {
  LibvirtCalls out;
  const std::string attach = " libvirt: " + domain + ": attach device", detach = " libvirt: " + domain + ": detach " + alias,
                    took = " libvirt call took ";
  std::vector<double>* pending = nullptr;
  std::istringstream in(log);
  for (std::string line; std::getline(in, line);) {
    if (line.find(attach) != std::string::npos) {
      pending = &out.attach;
    } else if (line.find(detach) != std::string::npos) {
      pending = &out.detach;
    } else if (size_t at = line.find(took); at != std::string::npos) {
      if (pending) pending->push_back(std::atof(line.c_str() + at + took.size()));
      pending = nullptr;
    }
  }
  return out;
}

// Lines of relinkd's log at level warning or above ("DATE TIME LEVEL name: ...").
size_t warnings_in(const std::string& log) {
  size_t n = 0;
  std::istringstream in(log);
  for (std::string line; std::getline(in, line);) {
    std::istringstream f(line);
    std::string date, time, level;
    if (f >> date >> time >> level && (level == "warning" || level == "error" || level == "critical")) ++n;
  }
  return n;
}

// ---------------------------------------------------------------- flaps

struct Figures {
  std::vector<double> user;       // parent re-created -> the guest answers
  std::vector<double> reattach;   // last_reattach_ms
  std::vector<double> release;    // last_release_ms (replugs)
  std::vector<double> own;        // last_own_ms (replugs)
  std::vector<double> remainder;  // user - reattach
  std::vector<double> attach_call, detach_call;  // (a): libvirt jobs, from the log
  std::vector<double> own_rest;                   // (a): own - attach_call
  std::vector<double> after_attach_call;          // (d): user - attach_call
};

void flap(Sandbox& sb, Guest& g, Figures& f, int i) {
  const std::string which = g.label + ", flap " + std::to_string(i);
  sb.expect_answers(g, "before " + which);
  const json before = sb.binding(g);
  if (!before.is_object() || before.value("state", "") != "attached")
    die("relinkd: " + g.name + " not attached before " + which + ": " + before.dump());
  const uint64_t gen = before.value("generation", uint64_t{0});
  const size_t ifups = g.ifups(), gone = g.nics_gone();
  // From before the loss: an on-loss binding's detach happens during it.
  const size_t log_from = test::read_file(sb.relinkd_log()).size();
  sb.parent_down(g);
  sb.wait_binding(g, "waiting-parent", 0, 10s);
  if (g.on_loss && !wait_for([&] { return g.nics_gone() > gone; }, 10s, 20ms))
    die("the guest did not report its NIC gone while the parent was away (" + which + ")\n" + sb.relinkd_tail() +
        "\n" + g.explain());
  if (g.on_loss) sb.wait_binding(g, "waiting-parent", 0, 10s);
  pause_for(kSettle);

  const uint64_t t0 = sb.parent_up(g);
  const auto t = g.pinger->first_answer(t0 + kAnswerLimitUs);
  if (!t) {
    sb.keep_logs();
    die("guest " + g.name + " did not answer within 30 s of its parent's return (" + which + ")\n" + sb.relinkd_tail() +
        "\n" + g.explain());
  }

  const json b = sb.wait_binding(g, "attached", gen + 1, 10s);
  if (b.value("generation", uint64_t{0}) != gen + 1)
    die("relinkd: " + g.name + " attached more than once in " + which + ": " + b.dump() + "\n" + sb.relinkd_tail());
  if (g.kind != Kind::Hub && !wait_for([&] { return g.ifups() > ifups; }, 30s, 20ms))
    die("the guest answered but never reported its new NIC (" + which + ")\n" + g.explain());
  if (!b["last_reattach_ms"].is_number()) die("relinkd: no last_reattach_ms after " + which + ": " + b.dump());
  const double user = ms(t0, *t), reattach = b["last_reattach_ms"].get<double>();
  f.user.push_back(user);
  f.reattach.push_back(reattach);
  f.remainder.push_back(user - reattach);
  if (g.kind != Kind::Hub) {
    if (!b["last_release_ms"].is_number() || !b["last_own_ms"].is_number())
      die("relinkd: no release/own figures after " + which + ": " + b.dump());
    f.release.push_back(b["last_release_ms"].get<double>());
    f.own.push_back(b["last_own_ms"].get<double>());
  }
  if (g.kind == Kind::Libvirt) {
    // The job's duration is logged just after its result is posted: allow
    // for the line to be written.
    LibvirtCalls calls;
    wait_for(
        [&] {
          calls = libvirt_calls(test::read_file(sb.relinkd_log()).substr(log_from), g.name, g.nic);
          return !calls.attach.empty() && !calls.detach.empty();
        },
        2s, 10ms);
    if (calls.attach.size() != 1 || calls.detach.size() != 1)
      die("relinkd's log shows " + std::to_string(calls.attach.size()) + " attach and " +
          std::to_string(calls.detach.size()) + " detach calls of " + g.name + " in " + which +
          " (one each expected; is it at debug level?)\n" + sb.relinkd_tail());
    f.attach_call.push_back(calls.attach[0]);
    f.detach_call.push_back(calls.detach[0]);
    f.own_rest.push_back(f.own.back() - calls.attach[0]);
    f.after_attach_call.push_back(user - calls.attach[0]);
  }
  pause_for(kSettle);
}

// ---------------------------------------------------------------- report

void row(const std::string& name, const std::vector<double>& v) {
  std::printf("  %-62s n=%-3zu min %8.1f  p50 %8.1f  p90 %8.1f  max %8.1f ms\n", name.c_str(), v.size(),
              v.empty() ? 0 : *std::min_element(v.begin(), v.end()), pct(v, 50), pct(v, 90),
              v.empty() ? 0 : *std::max_element(v.begin(), v.end()));
}

double sum(const std::vector<double>& v) { return std::accumulate(v.begin(), v.end(), 0.0); }

// Share of `part` in `whole`, over all flaps (sums, so that the shares add up).
void share(const char* name, const std::vector<double>& part, const std::vector<double>& whole) {
  const double w = sum(whole);
  std::printf("    %-60s %5.1f %%\n", name, w > 0 ? 100.0 * sum(part) / w : 0.0);
}

void ratio(const std::string& name, const std::vector<double>& a, const std::vector<double>& b) {
  const double pb = pct(b, 50);
  std::printf("  %-62s %6.2fx  (%.1f / %.1f ms)\n", name.c_str(), pb > 0 ? pct(a, 50) / pb : 0.0, pct(a, 50), pb);
}

std::string loadavg() {
  std::string s = test::read_file("/proc/loadavg");
  return s.substr(0, s.find(' ', s.find(' ', s.find(' ') + 1) + 1));
}

int run(int argc, char** argv) {
  int flaps = 10;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      print_help();
      return 0;
    }
    if (a == "--flaps" && i + 1 < argc) {
      char* end = nullptr;
      const long n = std::strtol(argv[++i], &end, 10);
      if (!end || *end || n < 1 || n > 10000) die(kUsage);
      flaps = static_cast<int>(n);
    } else {
      die(kUsage);
    }
  }
  if (!test::is_root()) die("needs root (namespaces, macvtap, libvirtd, QEMU); see --help");
  signal(SIGPIPE, SIG_IGN);
  struct sigaction sa {};
  sa.sa_handler = on_interrupt;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);

  const uint64_t started = monotonic_us();
  std::printf("libvirt_bench: %d flaps per case, interleaved (libvirt, libvirt on-loss, replug, hub); load %s\n", flaps,
              loadavg().c_str());
  std::fflush(stdout);
  auto built = test::sh("bash " + test::source_dir() + "/tests/guest/build-guest.sh " + test::binary_dir() + "/guest");
  if (built.status != 0) die("building the test guest failed:\n" + built.out);

  Sandbox sb;
  sb.init();
  std::printf("  libvirtd ready in %.1f s (%s QEMU capabilities)\n", sb.lv->last_start_seconds(),
              sb.lv->last_start_used_cache() ? "cached" : "probed");
  std::fflush(stdout);
  Guest& lg = sb.add_guest(Kind::Libvirt, "(a) libvirt replug", "lv", "p0", "net0", "52:54:00:12:34:58");
  Guest& rg = sb.add_guest(Kind::Replug, "(b) relinkd QMP replug", "replug", "p1x", "net0", "52:54:00:12:34:56");
  Guest& hg = sb.add_guest(Kind::Hub, "(c) hub attach", "hub", "p2x", "nic0", "52:54:00:12:34:57");
  Guest& dg = sb.add_guest(Kind::Libvirt, "(d) libvirt on-loss", "lvloss", "p3x", "net0", "52:54:00:12:34:59");
  dg.on_loss = true;
  const std::vector<Guest*> all = {&lg, &dg, &rg, &hg};
  for (Guest* g : all) sb.parent_up(*g);
  sb.start_libvirt_guest(lg);
  sb.start_libvirt_guest(dg);
  sb.start_qemu_guest(rg);
  sb.start_qemu_guest(hg);
  for (Guest* g : all) sb.wait_booted(*g);
  std::printf("  guests booted after %.1f s\n", ms(started, monotonic_us()) / 1000.0);
  std::fflush(stdout);

  sb.start_relinkd();
  if (!wait_for([&] { return std::filesystem::exists(sb.control()); }, 10s))
    die("relinkd did not create its control socket\n" + sb.relinkd_tail());
  // (a), (d) and (b) are adopted as they are, (c) gets its first tap.
  for (Guest* g : all) sb.wait_binding(*g, "attached", 0, 30s);
  for (Guest* g : {&lg, &dg})
    if (const json b = sb.binding(*g); b.value("attach", "") != "libvirt")
      die("relinkd does not follow domain " + g->name + " through libvirt: " + b.dump());
  for (Guest* g : all) sb.expect_answers(*g, "before the first flap");

  Figures fa, fb, fc, fd;
  for (int i = 1; i <= flaps; ++i) {
    flap(sb, lg, fa, i);
    flap(sb, dg, fd, i);
    flap(sb, rg, fb, i);
    flap(sb, hg, fc, i);
    std::printf("  flaps %2d: (a) %6.1f ms (release %5.1f, attach job %4.1f, remainder %5.1f)  (d) %6.1f ms (attach "
                "job %4.1f, the rest %5.1f)  (b) %6.1f ms (release %5.1f, own %4.1f, remainder %5.1f)  (c) %6.1f ms\n",
                i, fa.user.back(), fa.release.back(), fa.attach_call.back(), fa.remainder.back(), fd.user.back(),
                fd.attach_call.back(), fd.after_attach_call.back(), fb.user.back(), fb.release.back(), fb.own.back(),
                fb.remainder.back(), fc.user.back());
    std::fflush(stdout);
  }
  sb.keep_logs();
  const std::string log_text = test::read_file(sb.relinkd_log());
  const size_t lv_taints =
      count_of(sb.lv->qemu_log(lg.name), "custom-monitor") + count_of(sb.lv->qemu_log(dg.name), "custom-monitor");

  std::printf("\nparent re-created -> the guest answers ping again (echo every %d ms; %d flaps each, interleaved)\n",
              static_cast<int>(kPingStepUs / 1000), flaps);
  row("(a) libvirt replug", fa.user);
  row("(d) libvirt replug, release = \"on-loss\"", fd.user);
  row("(b) relinkd QMP replug", fb.user);
  row("(c) hub attach", fc.user);

  std::printf("\nsplit of (a), libvirt replug\n");
  row("release: detach -> DEVICE_REMOVED (last_release_ms)", fa.release);
  row("  of which the detach call (DetachDeviceAlias job)", fa.detach_call);
  row("own: from the parent's return, minus release (last_own_ms)", fa.own);
  row("  of which libvirt's attach job (AttachDeviceFlags+XML)", fa.attach_call);
  row("  the rest of own (relinkd, libvirt thread's queue)", fa.own_rest);
  row("relinkd's total (last_reattach_ms = release + own)", fa.reattach);
  row("remainder: guest hotplug, link, ARP, reply (user - reattach)", fa.remainder);
  std::printf("  shares of (a)'s time, all flaps summed:\n");
  share("guest's release (incl. the detach call)", fa.release, fa.user);
  share("libvirt's attach job", fa.attach_call, fa.user);
  share("rest of relinkd's own part", fa.own_rest, fa.user);
  share("remainder (guest link/ARP/ping detection)", fa.remainder, fa.user);

  std::printf("\nsplit of (d), libvirt replug with release = \"on-loss\"\n");
  row("release while the parent is away (last_release_ms)", fd.release);
  row("  of which the detach call (DetachDeviceAlias job)", fd.detach_call);
  row("libvirt's attach job after the return (AttachDeviceFlags+XML)", fd.attach_call);
  row("the rest: relinkd, guest hotplug, link, ARP (user - attach job)", fd.after_attach_call);

  std::printf("\nsplit of (b), relinkd QMP replug\n");
  row("release: device_del -> DEVICE_DELETED (last_release_ms)", fb.release);
  row("own: from the parent's return, minus release (last_own_ms)", fb.own);
  row("relinkd's total (last_reattach_ms = release + own)", fb.reattach);
  row("remainder: guest hotplug, link, ARP, reply (user - reattach)", fb.remainder);
  std::printf("\nsplit of (c), hub attach\n");
  row("relinkd's total (last_reattach_ms)", fc.reattach);
  row("remainder: link on, ARP, reply (user - reattach)", fc.remainder);

  std::printf("\nratios at p50\n");
  ratio("what a user sees: (d) libvirt on-loss / (a) libvirt (goal <= 0.6)", fd.user, fa.user);
  ratio("what a user sees: (a) libvirt / (b) QMP replug", fa.user, fb.user);
  ratio("what a user sees: (a) libvirt / (c) hub", fa.user, fc.user);
  ratio("what a user sees: (b) QMP replug / (c) hub", fb.user, fc.user);
  ratio("release: (a) libvirt / (b) QMP replug", fa.release, fb.release);
  ratio("own: (a) libvirt / (b) QMP replug", fa.own, fb.own);
  ratio("remainder: (a) libvirt / (b) QMP replug", fa.remainder, fb.remainder);
  ratio("(a) libvirt's attach job / (a) own", fa.attach_call, fa.own);

  std::printf("\n  relinkd warnings/errors logged: %zu; the libvirt domains %s; run took %.0f s; load %s\n",
              warnings_in(log_text), lv_taints ? "was TAINTED (custom-monitor)" : "untainted",
              ms(started, monotonic_us()) / 1000.0, loadavg().c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  // Everything is torn down by destructors while the exception unwinds:
  // nothing here calls exit().
  try {
    return run(argc, argv);
  } catch (const Fatal& e) {
    std::cerr << "libvirt_bench: " << e.what() << "\n";
  } catch (const std::exception& e) {
    std::cerr << "libvirt_bench: unexpected error: " << e.what() << "\n";
  }
  return 1;
}
