// SPDX-License-Identifier: GPL-2.0-or-later
// What relinkd costs while nothing happens: wakeups per minute, CPU and RSS,
// with N VMs attached and with N VMs offline (no QEMU listening), next to
// baselines measured in the same run:
//  - relinkd with no VM at all (the daemon's own floor);
//  - a poller doing what a client without inotify must do for N offline VMs
//    at a 5 s reconnect cap (relinkd's cap before it waited on inotify): one
//    connect attempt per VM every 5 s, the VMs' timers out of phase.
// Wakeups are context switches of every thread of the process
// (/proc/PID/task/*/status), counted over the measuring window.
//
// Usage (root): idle_bench [--vms N] [--seconds S]
// Takes about 3 * S + 40 s (default S = 30, N = 32): QEMUs start, relinkd
// settles (an offline VM's backoff reaches its cap after about 7 s), then
// each scenario is measured for S seconds.
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "bench_util.h"
#include "ctl/control_client.h"
#include "support/harness.h"

using namespace relink;
using namespace std::chrono_literals;
using nlohmann::json;

namespace {

using bench::die;
using bench::Fatal;

struct Usage {
  uint64_t switches = 0;  // voluntary + involuntary, all threads
  uint64_t cpu_ticks = 0;  // utime + stime
  uint64_t rss_kib = 0;
};

uint64_t status_field(const std::string& text, const std::string& key) {
  size_t at = text.find(key + ":");
  return at == std::string::npos ? 0 : std::strtoull(text.c_str() + at + key.size() + 1, nullptr, 10);
}

Usage usage(pid_t pid) {
  Usage u;
  const std::string dir = "/proc/" + std::to_string(pid);
  for (const auto& t : std::filesystem::directory_iterator(dir + "/task")) {
    const std::string st = test::read_file(t.path().string() + "/status");
    u.switches += status_field(st, "voluntary_ctxt_switches") + status_field(st, "nonvoluntary_ctxt_switches");
  }
  const std::string stat = test::read_file(dir + "/stat");
  std::istringstream fields(stat.substr(stat.rfind(')') + 2));
  std::string f;
  for (int i = 3; i <= 15 && fields >> f; ++i)
    if (i == 14 || i == 15) u.cpu_ticks += std::stoull(f);
  u.rss_kib = status_field(test::read_file(dir + "/status"), "VmRSS");
  return u;
}

struct Figure {
  std::string what;
  double wakeups_per_min = 0;
  double cpu_ms_per_min = 0;
  uint64_t rss_kib = 0;
};

Figure measure(const std::string& what, pid_t pid, int seconds) {
  const Usage a = usage(pid);
  std::this_thread::sleep_for(std::chrono::seconds(seconds));
  const Usage b = usage(pid);
  const double per_min = 60.0 / seconds;
  const double tick_ms = 1000.0 / static_cast<double>(sysconf(_SC_CLK_TCK));
  return Figure{what, static_cast<double>(b.switches - a.switches) * per_min,
                static_cast<double>(b.cpu_ticks - a.cpu_ticks) * tick_ms * per_min, b.rss_kib};
}

struct Sandbox {
  test::Netns ns{"idle"};
  std::string dir = "/tmp/relink-ibench-" + test::random_suffix();
  std::vector<std::unique_ptr<test::Child>> qemus;
  std::unique_ptr<test::Child> relinkd;
  Sandbox() {
    std::filesystem::create_directories(dir);
    std::filesystem::permissions(dir, std::filesystem::perms::owner_all);
  }
  ~Sandbox() {
    relinkd.reset();
    qemus.clear();
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
  std::string qmp(int i) const { return dir + "/vm" + std::to_string(i) + ".qmp"; }
  std::string control() const { return dir + "/control.sock"; }
  void start_qemu(int i, const std::string& mac) {
    qemus.push_back(std::make_unique<test::Child>(
        std::vector<std::string>{"qemu-system-x86_64", "-S", "-nodefaults", "-display", "none", "-machine", "q35",
                                 "-accel", "tcg", "-m", "32", "-qmp", "unix:" + qmp(i) + ",server=on,wait=off",
                                 "-netdev", "hubport,id=nic0.port,hubid=0", "-device",
                                 "virtio-net-pci,netdev=nic0.port,id=nic0,mac=" + mac},
        test::Child::Options{}));
    if (!test::wait_until([&] { return std::filesystem::exists(qmp(i)); }, 20s)) die("QEMU did not start");
  }
  void start_relinkd(int vms) {
    std::string cfg = "[daemon]\ncontrol_socket = \"" + control() + "\"\nstate_dir = \"" + dir + "/state\"\nnode_dir = \"" +
                      dir + "/dev\"\nlog_level = \"warn\"\n";
    for (int i = 0; i < vms; ++i)
      cfg += "[[vm]]\nname = \"vm" + std::to_string(i) + "\"\nqmp = \"" + qmp(i) +
             "\"\n[[vm.macvtap]]\nnic = \"nic0\"\nparent = \"p0\"\nmac = \"" + mac(i) + "\"\n";
    std::ofstream(dir + "/relinkd.toml") << cfg;
    relinkd = std::make_unique<test::Child>(
        std::vector<std::string>{test::binary_dir() + "/relinkd", "--config", dir + "/relinkd.toml"},
        test::Child::Options{ns.name(), dir + "/relinkd.log", {}});
    if (!test::wait_until([&] { return std::filesystem::exists(control()); }, 10s))
      die("relinkd did not start:\n" + test::read_file(dir + "/relinkd.log"));
  }
  static std::string mac(int i) {
    char m[32];
    std::snprintf(m, sizeof m, "52:54:00:13:%02x:%02x", (i >> 8) & 0xff, i & 0xff);
    return m;
  }
  size_t attached() {
    auto st = ctl::control_request(control(), {{"command", "status"}});
    size_t n = 0;
    if (st && st->contains("result"))
      for (const auto& vm : (*st)["result"]["vms"])
        for (const auto& b : vm["bindings"]) n += b["state"] == "attached";
    return n;
  }
};

// The baseline poller: one connect attempt per offline VM every 5 s, out of phase.
int poll_child(const std::string& dir, int vms) {
  const auto step = std::chrono::microseconds(5'000'000 / vms);
  for (int i = 0;; i = (i + 1) % vms) {
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    const std::string p = dir + "/vm" + std::to_string(i) + ".qmp";
    p.copy(a.sun_path, sizeof a.sun_path - 1);
    (void)!connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
    close(fd);
    std::this_thread::sleep_for(step);
  }
}

void print(const std::vector<Figure>& figs) {
  std::printf("%-44s %14s %14s %10s\n", "scenario", "wakeups/min", "CPU ms/min", "RSS KiB");
  for (const auto& f : figs)
    std::printf("%-44s %14.1f %14.1f %10llu\n", f.what.c_str(), f.wakeups_per_min, f.cpu_ms_per_min,
                static_cast<unsigned long long>(f.rss_kib));
}

}  // namespace

int main(int argc, char** argv) {
  int vms = 32, seconds = 30;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--poll-child" && i + 2 < argc) return poll_child(argv[i + 1], std::atoi(argv[i + 2]));
    if (a == "--vms" && i + 1 < argc) vms = std::atoi(argv[++i]);
    else if (a == "--seconds" && i + 1 < argc) seconds = std::atoi(argv[++i]);
    else {
      std::cout << "idle_bench: what relinkd costs while nothing happens (wakeups per minute, CPU, RSS)\n"
                   "with N VMs attached and with N VMs offline, next to relinkd with no VM and to a\n"
                   "poller reconnecting N offline VMs every 5 s, all measured in this run.\n"
                   "Needs root (namespaces, QEMU). Takes about 3 x S + 40 seconds (2 minutes with the defaults).\n\n"
                   "Usage: idle_bench [--vms N] [--seconds S]\n"
                   "  --vms N       VMs per scenario (default 32)\n"
                   "  --seconds S   length of each measuring window (default 30)\n"
                   "  -h, --help    this text\n";
      return a == "--help" || a == "-h" ? 0 : 2;
    }
  }
  if (vms < 1 || seconds < 1) return 2;
  if (geteuid() != 0) {
    std::cerr << "idle_bench: needs root\n";
    return 1;
  }
  std::vector<Figure> figs;
  try {
    {
      Sandbox sb;
      sb.start_relinkd(0);
      std::this_thread::sleep_for(2s);
      figs.push_back(measure("relinkd, no VM (floor)", sb.relinkd->pid(), seconds));
    }
    {
      Sandbox sb;
      sb.ns.ip("link add p0 type veth peer name p0peer");
      sb.ns.ip("link set p0 up");
      sb.ns.ip("link set p0peer up");
      for (int i = 0; i < vms; ++i) sb.start_qemu(i, Sandbox::mac(i));
      sb.start_relinkd(vms);
      if (!test::wait_until([&] { return sb.attached() == static_cast<size_t>(vms); }, 60s, 200ms))
        die("not every binding attached:\n" + test::read_file(sb.dir + "/relinkd.log"));
      std::this_thread::sleep_for(2s);
      figs.push_back(measure("relinkd, " + std::to_string(vms) + " VMs attached", sb.relinkd->pid(), seconds));
    }
    {
      Sandbox sb;
      sb.start_relinkd(vms);
      std::this_thread::sleep_for(10s);  // past the backoff (0.1 s doubling to 5 s)
      figs.push_back(measure("relinkd, " + std::to_string(vms) + " VMs offline", sb.relinkd->pid(), seconds));
      test::Child poller({argv[0], "--poll-child", sb.dir, std::to_string(vms)}, test::Child::Options{});
      std::this_thread::sleep_for(1s);
      figs.push_back(measure("baseline: poll " + std::to_string(vms) + " offline VMs every 5 s", poller.pid(), seconds));
    }
  } catch (const Fatal& e) {
    std::cerr << "idle_bench: " << e.what() << "\n";
    return 1;
  }
  print(figs);
  const double base = figs[3].wakeups_per_min;
  if (base > 0)
    std::printf("\noffline VMs: relinkd %.1f wakeups/min = %.3fx the 5 s poller\n", figs[2].wakeups_per_min,
                figs[2].wakeups_per_min / base);
  return 0;
}
