// SPDX-License-Identifier: GPL-2.0-or-later
// Reattach latency of relinkd against a floor, both measured in this run.
//
// Latency = the parent's RTM_NEWLINK received -> QEMU acknowledged `set_link
// on` for the new tap. relinkd reports it per binding (last_reattach_ms); the
// floor is a minimal process that does only the unavoidable work on the same
// event: create + open the macvtap, then getfd, netdev_add tap, netdev_add
// hubport, set_link pipelined on one QMP socket. Same flapper, same QEMU.
//
// Usage (root): reattach_bench [--flaps N] [--vms M] [--fleet-flaps K] [--help]
#include <libmnl/libmnl.h>
#include <netlink/route/link.h>
#include <netlink/route/link/veth.h>
#include <linux/rtnetlink.h>
#include <fcntl.h>
#include <net/if.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <stdexcept>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "ctl/control_client.h"
#include "daemon/qemu_names.h"
#include "macvtap/macvtap_factory.h"
#include "netlink/link_parser.h"
#include "bench_util.h"
#include "support/harness.h"
#include "support/qmp_sync.h"
#include "util/clock.h"

using namespace relink;
using namespace std::chrono_literals;
using nlohmann::json;

namespace {

using bench::die;
using bench::Fatal;
using bench::pct;

// ---------------------------------------------------------------- floor child

// A QMP session that writes commands and reads replies synchronously.
struct RawQmp {
  int fd = -1;
  std::string buf;
  void connect(const std::string& path) {
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::strncpy(a.sun_path, path.c_str(), sizeof a.sun_path - 1);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) < 0) die("floor: connect " + path);
    line();
    send("{\"execute\":\"qmp_capabilities\"}\n", -1);
    reply();
  }
  std::string line() {
    while (true) {
      size_t nl = buf.find('\n');
      if (nl != std::string::npos) {
        std::string l = buf.substr(0, nl);
        buf.erase(0, nl + 1);
        return l;
      }
      char tmp[8192];
      ssize_t n = read(fd, tmp, sizeof tmp);
      if (n <= 0) die("floor: QMP closed");
      buf.append(tmp, static_cast<size_t>(n));
    }
  }
  json reply() {
    while (true) {
      auto j = json::parse(line());
      if (!j.contains("event")) return j;
    }
  }
  void send(const std::string& bytes, int pass_fd) {
    if (!bench::send_with_fd(fd, bytes, pass_fd)) die("floor: sendmsg");
  }
};

// Waits on rtnetlink for `name` to appear with a new ifindex (or disappear).
int wait_link(mnl_socket* nl, const std::string& name, bool want_present, int last_ifindex, uint64_t* t0) {
  std::vector<uint8_t> buf(1 << 16);
  while (true) {
    ssize_t n = mnl_socket_recvfrom(nl, buf.data(), buf.size());
    if (n < 0) die("floor: netlink recv");
    *t0 = monotonic_us();
    auto batch = netlink::parse_link_messages(std::span<const uint8_t>(buf.data(), static_cast<size_t>(n)));
    if (!batch) continue;
    for (const auto& m : batch->links) {
      if (m.link.name != name) continue;
      if (want_present && !m.deleted && m.link.ifindex != last_ifindex) return m.link.ifindex;
      if (!want_present && m.deleted) return 0;
    }
  }
}

// The floor: on each return of the parent, create one macvtap per VM, then
// pipeline the four commands to every QEMU and wait for all replies. Prints
// the time until the last VM is done.
int floor_child(const std::string& qmp_paths, const std::string& parent, const std::string& node_dir) {
  mnl_socket* nl = mnl_socket_open2(NETLINK_ROUTE, SOCK_CLOEXEC);
  if (!nl || mnl_socket_bind(nl, RTMGRP_LINK, MNL_SOCKET_AUTOPID) < 0) die("floor: netlink");
  int rcv = 8 << 20;
  setsockopt(mnl_socket_get_fd(nl), SOL_SOCKET, SO_RCVBUFFORCE, &rcv, sizeof rcv);
  macvtap::RtnlMacvtapFactory factory(node_dir);
  std::vector<std::unique_ptr<RawQmp>> qs;
  for (size_t pos = 0; pos <= qmp_paths.size();) {
    size_t comma = qmp_paths.find(',', pos);
    if (comma == std::string::npos) comma = qmp_paths.size();
    qs.push_back(std::make_unique<RawQmp>());
    qs.back()->connect(qmp_paths.substr(pos, comma - pos));
    pos = comma + 1;
  }
  std::cout << "ready" << std::endl;
  int last = 0;
  for (uint64_t gen = 1;; ++gen) {
    uint64_t t0 = 0;
    last = wait_link(nl, parent, true, last, &t0);
    const std::string fdn = daemon::fd_name("nic0", gen), tap = daemon::tap_id("nic0", gen),
                      up = daemon::uplink_id("nic0", gen);
    std::vector<macvtap::Macvtap> mvts;
    for (size_t i = 0; i < qs.size(); ++i) {
      macvtap::MacvtapSpec spec{"floor" + std::to_string(i), last, macvtap::Mode::Bridge,
                                {0x52, 0x54, 0, 0x12, static_cast<uint8_t>(i >> 8), static_cast<uint8_t>(i)}, 1};
      auto m = factory.create(spec);
      if (!m) die("floor: " + m.error().message);
      mvts.push_back(std::move(m.value()));
    }
    for (size_t i = 0; i < qs.size(); ++i) {
      // The fd rides on the getfd command's own sendmsg; the rest follows at once.
      qs[i]->send(json{{"execute", "getfd"}, {"arguments", {{"fdname", fdn}}}}.dump() + "\n", mvts[i].fds[0].get());
      qs[i]->send(json{{"execute", "netdev_add"}, {"arguments", {{"type", "tap"}, {"id", tap}, {"fd", fdn}}}}.dump() +
                      "\n" +
                      json{{"execute", "netdev_add"},
                           {"arguments", {{"type", "hubport"}, {"id", up}, {"hubid", 0}, {"netdev", tap}}}}
                          .dump() +
                      "\n" + json{{"execute", "set_link"}, {"arguments", {{"name", "nic0"}, {"up", true}}}}.dump() +
                      "\n",
                  -1);
    }
    for (auto& q : qs)
      for (int i = 0; i < 4; ++i)
        if (!q->reply().contains("return")) die("floor: QMP command failed");
    const uint64_t t1 = monotonic_us();
    mvts.clear();
    std::cout << "latency " << static_cast<double>(t1 - t0) / 1000.0 << std::endl;
    uint64_t ignored;
    wait_link(nl, parent, false, 0, &ignored);
    for (auto& q : qs) {
      q->send(json{{"execute", "netdev_del"}, {"arguments", {{"id", up}}}}.dump() + "\n" +
                  json{{"execute", "netdev_del"}, {"arguments", {{"id", tap}}}}.dump() + "\n",
              -1);
      q->reply();
      q->reply();
    }
    std::cout << "clean" << std::endl;
  }
}

// ---------------------------------------------------------------- bench driver

struct Sandbox {
  test::Netns ns{"bench"};
  std::string dir = "/tmp/relink-bench-" + test::random_suffix();
  std::vector<std::unique_ptr<test::Child>> qemus;
  Sandbox() { std::filesystem::create_directories(dir); }
  std::string qmp(int i) const { return dir + "/vm" + std::to_string(i) + ".qmp"; }
  void start_qemu(int i) {
    char mac[32];
    std::snprintf(mac, sizeof mac, "52:54:00:12:%02x:%02x", (i >> 8) & 0xff, i & 0xff);
    qemus.push_back(std::make_unique<test::Child>(
        std::vector<std::string>{"qemu-system-x86_64", "-S", "-nodefaults", "-display", "none", "-machine", "q35",
                                 "-accel", "tcg", "-m", "32", "-qmp", "unix:" + qmp(i) + ",server=on,wait=off",
                                 "-netdev", "hubport,id=nic0.port,hubid=0", "-device",
                                 std::string("virtio-net-pci,netdev=nic0.port,id=nic0,mac=") + mac},
        test::Child::Options{}));
    if (!test::wait_until([&] { return std::filesystem::exists(qmp(i)); }, 20s)) die("QEMU did not start");
  }
  // The parent is flapped in-process, one rtnetlink request each way (veth
  // pair created up), so no `ip` process competes for the CPU and the rtnl
  // lock while the latency is being measured.
  nl_sock* nl = nullptr;
  void open_netlink() {
    test::ScopedNetnsEnter in(ns.name());
    if (!in.ok()) die("cannot enter " + ns.name());
    nl = nl_socket_alloc();
    if (!nl || nl_connect(nl, NETLINK_ROUTE) < 0) die("libnl connect");
  }
  void parent_up() {
    if (!nl) open_netlink();
    // The kernel refuses a veth created up (ENOTCONN): create, then set up.
    rtnl_link* veth = rtnl_link_veth_alloc();
    rtnl_link_set_name(veth, "p0");
    rtnl_link_set_name(rtnl_link_veth_get_peer(veth), "p0peer");
    int created = rtnl_link_add(nl, veth, NLM_F_CREATE | NLM_F_EXCL);
    rtnl_link_veth_release(veth);
    if (created < 0) die(std::string("create parent: ") + nl_geterror(created));
    for (const char* name : {"p0peer", "p0"}) {
      rtnl_link* l = nullptr;
      if (rtnl_link_get_kernel(nl, 0, name, &l) < 0) die(std::string("look up ") + name);
      rtnl_link* up = rtnl_link_alloc();
      rtnl_link_set_flags(up, IFF_UP);
      int err = rtnl_link_change(nl, l, up, 0);
      rtnl_link_put(up);
      rtnl_link_put(l);
      if (err < 0) die(std::string("set up ") + name + ": " + nl_geterror(err));
    }
  }
  void parent_down() {
    rtnl_link* l = rtnl_link_alloc();
    rtnl_link_set_name(l, "p0");
    int err = rtnl_link_delete(nl, l);
    rtnl_link_put(l);
    if (err < 0) die(std::string("delete parent: ") + nl_geterror(err));
  }
  ~Sandbox() {
    if (nl) nl_socket_free(nl);
    qemus.clear();
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
};

json daemon_status(const std::string& sock) {
  auto r = ctl::control_request(sock, {{"command", "status"}});
  if (!r || !r->value("ok", false)) return nullptr;
  return (*r)["result"];
}

// Every binding at generation >= gen and attached; returns their latencies.
bool all_attached(const json& st, uint64_t gen, std::vector<double>* lat) {
  if (!st.is_object()) return false;
  std::vector<double> l;
  for (const auto& vm : st["vms"])
    for (const auto& b : vm["bindings"]) {
      if (b["state"] != "attached" || b["generation"].get<uint64_t>() < gen) return false;
      l.push_back(b["last_reattach_ms"].get<double>());
    }
  if (lat) *lat = l;
  return true;
}
bool all_waiting(const json& st) {
  if (!st.is_object()) return false;
  for (const auto& vm : st["vms"])
    for (const auto& b : vm["bindings"])
      if (b["state"] != "waiting-parent") return false;
  return true;
}

// Runs relinkd for `vms` VMs on parent p0 and flaps it; returns, per flap,
// every binding's latency.
std::vector<std::vector<double>> run_daemon(int vms, int flaps) {
  Sandbox sb;
  for (int i = 0; i < vms; ++i) sb.start_qemu(i);
  const std::string sock = sb.dir + "/control.sock";
  std::string cfg = "[daemon]\ncontrol_socket = \"" + sock + "\"\nstate_dir = \"" + sb.dir +
                    "/state\"\nnode_dir = \"" + sb.dir + "/dev\"\nlog_level = \"" +
                    (getenv("RELINK_BENCH_LOG") ? getenv("RELINK_BENCH_LOG") : "warn") + "\"\n";
  for (int i = 0; i < vms; ++i) {
    char mac[32];
    std::snprintf(mac, sizeof mac, "52:54:00:12:%02x:%02x", (i >> 8) & 0xff, i & 0xff);
    cfg += "[[vm]]\nname = \"vm" + std::to_string(i) + "\"\nqmp = \"" + sb.qmp(i) +
           "\"\n[[vm.macvtap]]\nnic = \"nic0\"\nparent = \"p0\"\nmac = \"" + mac + "\"\n";
  }
  std::ofstream(sb.dir + "/relinkd.toml") << cfg;
  test::Child relinkd({test::binary_dir() + "/relinkd", "--config", sb.dir + "/relinkd.toml"},
                      test::Child::Options{sb.ns.name(), sb.dir + "/relinkd.log", {}});
  if (!test::wait_until([&] { return all_waiting(daemon_status(sock)) ; }, 30s))
    die("relinkd did not come up:\n" + test::read_file(sb.dir + "/relinkd.log"));
  std::vector<std::vector<double>> out;
  for (int i = 1; i <= flaps; ++i) {
    sb.parent_up();
    std::vector<double> lat;
    // relinkd timestamps the reattach itself; polling only tells us it is done,
    // so poll gently: every status request is work for the daemon's one thread.
    const auto poll = std::chrono::milliseconds(vms > 1 ? 50 : 10);
    if (!test::wait_until([&] { return all_attached(daemon_status(sock), static_cast<uint64_t>(i), &lat); }, 10s,
                          poll))
      die("relinkd did not reattach:\n" + test::read_file(sb.dir + "/relinkd.log"));
    out.push_back(lat);
    if (getenv("RELINK_BENCH_LOG") && i == flaps)
      std::filesystem::copy_file(sb.dir + "/relinkd.log", "/tmp/relink-bench-relinkd.log",
                                 std::filesystem::copy_options::overwrite_existing);
    sb.parent_down();
    if (!test::wait_until([&] { return all_waiting(daemon_status(sock)); }, 10s, poll)) die("relinkd did not detach");
  }
  return out;
}

std::vector<double> run_floor(const char* self, int flaps, int vms = 1) {
  Sandbox sb;
  std::string paths;
  for (int i = 0; i < vms; ++i) {
    sb.start_qemu(i);
    paths += (i ? "," : "") + sb.qmp(i);
  }
  int pipefd[2];
  if (pipe2(pipefd, O_CLOEXEC) < 0) die("pipe");
  std::vector<double> lat;
  {
    // The floor child writes its lines into the pipe (its stdout).
    const std::string out_path = "/proc/self/fd/" + std::to_string(pipefd[1]);
    test::Child child({self, "--floor-child", paths, "p0", sb.dir + "/dev"},
                      test::Child::Options{sb.ns.name(), out_path, {}});
    close(pipefd[1]);
    FILE* in = fdopen(pipefd[0], "r");
    char line[256];
    auto expect = [&](const char* what) -> std::string {
      if (!fgets(line, sizeof line, in)) die(std::string("floor child died waiting for ") + what);
      if (std::strncmp(line, what, std::strlen(what)) != 0) die(std::string("floor child: ") + line);
      return line;
    };
    expect("ready");
    for (int i = 0; i < flaps; ++i) {
      sb.parent_up();
      lat.push_back(std::stod(expect("latency").substr(8)));
      sb.parent_down();
      expect("clean");
    }
    fclose(in);
  }
  return lat;
}

constexpr const char* kUsage = "usage: reattach_bench [--flaps N] [--vms M] [--fleet-flaps K] [--help]";

void print_help() {
  std::printf(
      "%s   (run as root; the measurement is not part of ctest)\n"
      "\n"
      "Measures how long relinkd takes to give a VM's NIC a new macvtap after its parent\n"
      "returns: from the parent's RTM_NEWLINK (received) to QEMU acknowledging set_link on\n"
      "for the new tap (relinkd's own last_reattach_ms). QEMU 7.2 runs stopped (-S, TCG),\n"
      "wired for hub attach; the parent is a veth deleted and re-created in-process over\n"
      "rtnetlink, in a throwaway namespace (relink-bench-*).\n"
      "\n"
      "Next to relinkd it measures a floor in the same run, on the same events and the same\n"
      "QEMU: a child of this program that only creates and opens the macvtap and sends\n"
      "getfd, netdev_add tap, netdev_add hubport and set_link pipelined on one QMP socket.\n"
      "\n"
      "1. One VM: N flaps with the floor, then N with relinkd (--flaps N, default 200).\n"
      "2. A fleet: M VMs on one parent (--vms M, default 32), K flaps each for the floor\n"
      "   and for relinkd (--fleet-flaps K, default 20); per flap, the last VM to be\n"
      "   attached counts.\n"
      "Reported: p50, p99 and max of each, the ratio relinkd/floor, and the goals\n"
      "(p50 <= 1.25x the floor, p99 <= 10 ms, all M VMs attached within 100 ms).\n"
      "\n"
      "A run with the defaults takes about 30 seconds on a 2-core machine (the one VM's\n"
      "flaps about 10 s, the fleet's about 15 s). Run it on an otherwise idle machine.\n"
      "Its namespaces, QEMUs, relinkd and /tmp/relink-bench-* are removed when it ends or\n"
      "fails; after a SIGINT or SIGKILL, remove the relink-bench-* namespaces with ip netns del.\n"
      "\n"
      "Options:\n"
      "  --flaps N          flaps of the one VM's parent, for the floor and for relinkd (default 200)\n"
      "  --vms M            VMs in the fleet (default 32)\n"
      "  --fleet-flaps K    flaps of the fleet's parent, for each (default 20)\n"
      "  -h, --help         this text\n"
      "Environment: RELINK_BENCH_LOG=LEVEL runs relinkd at that log level (default warn) and\n"
      "keeps its log of the last run as /tmp/relink-bench-relinkd.log.\n",
      kUsage);
}

void row(const char* name, const std::vector<double>& v) {
  std::printf("  %-34s n=%-4zu p50 %7.3f ms   p99 %7.3f ms   max %7.3f ms\n", name, v.size(), pct(v, 50), pct(v, 99),
              v.empty() ? 0 : *std::max_element(v.begin(), v.end()));
}

}  // namespace

int run(int argc, char** argv);

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const Fatal& e) {
    std::cerr << "reattach_bench: " << e.what() << "\n";
    return 1;
  }
}

int run(int argc, char** argv) {
  if (argc == 5 && std::string(argv[1]) == "--floor-child") return floor_child(argv[2], argv[3], argv[4]);
  int flaps = 200, vms = 32, fleet_flaps = 20;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      print_help();
      return 0;
    }
    if (i + 1 >= argc) die(kUsage);
    if (a == "--flaps") flaps = std::atoi(argv[++i]);
    else if (a == "--vms") vms = std::atoi(argv[++i]);
    else if (a == "--fleet-flaps") fleet_flaps = std::atoi(argv[++i]);
    else die(kUsage);
  }
  if (flaps < 1 || vms < 1 || fleet_flaps < 1) die(kUsage);
  if (!test::is_root()) die("needs root (namespaces, macvtap, QEMU); see --help");

  std::printf("reattach_bench: %d flaps of one VM's parent, then %d flaps with %d VMs on one parent\n", flaps,
              fleet_flaps, vms);
  std::fflush(stdout);
  auto floor = run_floor(argv[0], flaps);
  std::vector<double> one;
  for (auto& f : run_daemon(1, flaps)) one.insert(one.end(), f.begin(), f.end());
  auto fleet_floor = run_floor(argv[0], fleet_flaps, vms);
  std::vector<double> fleet_all, fleet_last;
  for (auto& f : run_daemon(vms, fleet_flaps)) {
    fleet_all.insert(fleet_all.end(), f.begin(), f.end());
    fleet_last.push_back(*std::max_element(f.begin(), f.end()));
  }

  std::printf("\nparent RTM_NEWLINK received -> set_link on acknowledged by QEMU 7.2\n");
  row("floor (create+open+4 QMP, no logic)", floor);
  row("relinkd, 1 VM", one);
  row(("relinkd, " + std::to_string(vms) + " VMs: each binding").c_str(), fleet_all);
  row(("relinkd, " + std::to_string(vms) + " VMs: last of each flap").c_str(), fleet_last);
  row(("floor, " + std::to_string(vms) + " VMs: last of each flap").c_str(), fleet_floor);
  const double ratio = pct(one, 50) / pct(floor, 50);
  std::printf("\nratios and goals\n");
  std::printf("  p50 relinkd / p50 floor       %5.2fx   (goal <= 1.25x)  %s\n", ratio, ratio <= 1.25 ? "ok" : "MISSED");
  std::printf("  p99 relinkd, 1 VM           %7.3f ms (goal <= 10 ms)   %s\n", pct(one, 99),
              pct(one, 99) <= 10 ? "ok" : "MISSED");
  const double worst = fleet_last.empty() ? 0 : *std::max_element(fleet_last.begin(), fleet_last.end());
  std::printf("  %d VMs all attached, worst  %7.3f ms (goal <= 100 ms)  %s\n", vms, worst,
              worst <= 100 ? "ok" : "MISSED");
  std::printf("  %d VMs, p50 relinkd / p50 floor %5.2fx\n", vms, pct(fleet_last, 50) / pct(fleet_floor, 50));
  return 0;
}
