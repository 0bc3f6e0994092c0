// SPDX-License-Identifier: GPL-2.0-or-later
// passt recovery after kill -9 with a booted guest, per way of running
// passt, side by side in one run: relinkd in its three modes (stream-server,
// the baseline; stream-client and vhost-user, where QEMU reconnects on its own
// timer, swept over reconnect-ms) and libvirt's own passt backend.
//
// Recovery = SIGKILL (sent by this bench to the passt that serves the guest)
// -> a TCP connection to the port passt forwards (127.0.0.1:8080 in the VM's
// namespace) receives the guest's greeting "RELINK-GUEST-HELLO". The bench
// opens a new connection every few milliseconds (--probe-ms) without waiting
// for the earlier ones, and keeps each up to 1 s: the first greeting on any
// of them ends the outage.
//
// Where passt listens (stream-client, vhost-user, libvirt) the probing starts
// only once the new passt has accepted QEMU's connection on its socket
// (looked for every 1 ms; that time is kept too): passt 2025-05 (Debian 13)
// dies of SIGSEGV when a connection to a forwarded port arrives before QEMU
// has connected, so probes during QEMU's reconnect interval would kill every
// new passt (relinkd then gives up after 5 failed starts). In stream-server
// mode passt starts on an already connected socket and the probing starts at
// once.
//
// Every configuration gets a fresh namespace (an uplink with an address and
// a default route: passt needs one), a fresh relinkd or libvirtd and a fresh
// QEMU with the test guest (tests/guest, TCG, 256 MiB, DHCP from passt,
// relink.serve=8080). relinkd runs passt as nobody; the sockets of the
// listening modes are in a directory nobody owns. relinkd is started before
// QEMU in the listening modes: a vhost-user passt listens as soon as the
// binding is registered (a vhost-user QEMU does not start without its
// backend); a stream-client one once QMP answers.
//
// Usage (root): passt_recovery_bench [--kills N] [--libvirt-kills N] [--reconnect-ms LIST]
//   [--vhost-reconnect-ms LIST] [--only LIST] [--timeout S] [--probe-ms MS] [--help]
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
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
#include <string>
#include <thread>
#include <vector>

#include "bench_util.h"
#include "ctl/control_client.h"
#include "guest_net.h"
#include "support/harness.h"
#include "support/libvirt_env.h"
#include "util/clock.h"

using namespace relink;
using namespace std::chrono_literals;
using nlohmann::json;

namespace {

using bench::check_interrupted;
using bench::die;
using bench::Fatal;
using bench::pause_for;
using bench::pct;
using bench::wait_for;

constexpr int kPort = 8080;                        // the guest serves here; passt forwards the same port
constexpr uint64_t kMinRunUs = 1'100'000;          // relinkd: a passt that ran < 1 s is a failed start
constexpr uint64_t kProbeLifeUs = 1'000'000;       // a probe connection is given up after 1 s
constexpr const char* kHello = "RELINK-GUEST-HELLO";
constexpr const char* kMac = "52:54:00:12:34:56";
constexpr const char* kUsage =
    "usage: passt_recovery_bench [--kills N] [--libvirt-kills N] [--reconnect-ms LIST] [--vhost-reconnect-ms LIST]\n"
    "       [--only LIST] [--timeout S] [--libvirt-max-misses N] [--probe-ms MS] [--help]";

struct Options {
  int kills = 50;
  int libvirt_kills = 50;
  int libvirt_max_misses = 3;
  int timeout_s = 30;
  int probe_ms = 5;
  std::vector<int> client_r{1, 5, 20, 100, 1000};
  std::vector<int> vhost_r{1, 5, 20, 100, 1000};
  std::vector<std::string> only;  // empty: all
};
Options g_opt;

void print_help() {
  std::printf(
      "%s\n"
      "(run as root, in the Debian 13 container: tests/trixie/trixie_test.sh --bench SRC BUILD ARGS...;\n"
      "not part of ctest)\n"
      "\n"
      "Measures how long a booted guest behind passt stays unreachable after passt is killed\n"
      "(SIGKILL, sent by this program): from the kill until a TCP connection to the port passt\n"
      "forwards (127.0.0.1:%d in the VM's namespace) receives the guest's greeting\n"
      "\"%s\". A new connection is opened every --probe-ms ms (each kept up to 1 s), so a\n"
      "figure is late by up to that much. Where passt listens (all but stream-server) the\n"
      "probes start only once the new passt has accepted QEMU's connection on its socket\n"
      "(checked every 1 ms): passt 2025-05 dies of SIGSEGV when a connection to a forwarded\n"
      "port arrives before QEMU has connected. Configurations, each with a fresh namespace, QEMU\n"
      "(TCG, q35, 256 MiB, the test guest from BUILD/guest with DHCP) and supervisor:\n"
      "  stream-server   relinkd; QEMU -netdev stream,server=on (the baseline)\n"
      "  stream-client   relinkd; QEMU -netdev stream,server=off,...,reconnect-ms=R, for each R\n"
      "                  of --reconnect-ms\n"
      "  vhost-user      relinkd; QEMU -chardev socket,...,reconnect-ms=R + -netdev vhost-user\n"
      "                  (guest RAM a shared memfd), for each R of --vhost-reconnect-ms\n"
      "  libvirt         libvirtd's own <interface type='user'><backend type='passt'/> with a\n"
      "                  <portForward> of port %d; the bench kills libvirt's passt\n"
      "Each kill comes at least %.1f s after the guest was reachable again (relinkd counts a\n"
      "passt that dies within 1 s as a failed start). A kill not recovered within --timeout\n"
      "is reported as such, counted apart, not as a figure; for libvirt the domain is then\n"
      "created again (a fresh passt) and, after --libvirt-max-misses such kills, given up.\n"
      "\n"
      "Reported per configuration: n, median, p90, max and mean recovery in ms, the ratio of\n"
      "its median to the stream-server median of the same run, the unrecovered kills, and the\n"
      "part until QEMU was connected to the new passt; per reconnect-ms sweep the smallest value\n"
      "below which a smaller one no longer shortened the median of that part (by more than\n"
      "max(2 ms, 10 %%); the guest's answer after it is TCG noise common to all). Also\n"
      "the versions of QEMU, passt and libvirtd.\n"
      "\n"
      "A run with the defaults (50 kills each, 10 reconnect-ms configurations) takes about 25\n"
      "minutes on a 2-core machine: about 1.2 s per kill plus R, 10-30 s per guest boot, and\n"
      "for libvirt about 5-7 s per kill when it recovers, timeout + a boot when it does not.\n"
      "Everything it creates (namespaces relink-prbench-*, QEMU, relinkd, libvirtd, passt,\n"
      "/tmp/relink-prbench-*, /tmp/relink-lv-*) is removed on exit, failure, SIGINT/SIGTERM.\n"
      "\n"
      "Options:\n"
      "  --kills N                kills per relinkd configuration (default %d)\n"
      "  --libvirt-kills N        kills of libvirt's passt (default %d)\n"
      "  --libvirt-max-misses N   give libvirt up after N unrecovered kills (default %d)\n"
      "  --reconnect-ms LIST      stream-client reconnect-ms values, e.g. 1,5,20,100,1000 (default)\n"
      "  --vhost-reconnect-ms LIST  vhost-user chardev reconnect-ms values (default 1,5,20,100,1000)\n"
      "  --only LIST              some of stream-server,stream-client,vhost-user,libvirt\n"
      "  --timeout S              a kill not recovered within S s counts as unrecovered (default %d)\n"
      "  --probe-ms MS            a new probe connection every MS ms (default %d)\n"
      "  -h, --help               this text\n"
      "Environment: RELINK_BENCH_KEEP_LOGS=1 copies each configuration's relinkd/libvirtd log,\n"
      "QEMU log and guest console to /tmp/relink-prbench-logs/.\n",
      kUsage, kPort, kHello, kPort, static_cast<double>(kMinRunUs) / 1e6, g_opt.kills, g_opt.libvirt_kills,
      g_opt.libvirt_max_misses, g_opt.timeout_s, g_opt.probe_ms);
}

std::string tail(const std::string& s, size_t n) { return s.size() > n ? s.substr(s.size() - n) : s; }
double ms_between(uint64_t from_us, uint64_t to_us) { return static_cast<double>(to_us - from_us) / 1000.0; }
void sleep_until_us(uint64_t t) {
  while (true) {
    check_interrupted();
    const uint64_t now = monotonic_us();
    if (now >= t) return;
    std::this_thread::sleep_for(std::chrono::microseconds(std::min<uint64_t>(t - now, 50'000)));
  }
}
std::string first_line(const std::string& s) { return s.substr(0, s.find('\n')); }

// ---------------------------------------------------------------- probing

// Connections to 127.0.0.1:PORT of the calling thread's namespace.
class HelloProber {
 public:
  explicit HelloProber(int port) {
    addr_.sin_family = AF_INET;
    addr_.sin_port = htons(static_cast<uint16_t>(port));
    inet_pton(AF_INET, "127.0.0.1", &addr_.sin_addr);
  }
  ~HelloProber() { close_all(); }
  HelloProber(const HelloProber&) = delete;
  HelloProber& operator=(const HelloProber&) = delete;

  struct Outcome {
    std::optional<uint64_t> hello;  // the first greeting's arrival
    std::optional<uint64_t> gate;   // when `gate` first held
  };
  // Waits (checking every 1 ms) until `gate` holds, then opens a new
  // connection every step_us; returns at the first greeting or at
  // deadline_us. on_tick (if any) runs about every 20 ms throughout.
  Outcome run(uint64_t step_us, uint64_t deadline_us, const std::function<void()>& on_tick = {},
              const std::function<bool()>& gate = {}) {
    Outcome out;
    uint64_t next_tick = monotonic_us();
    while (gate && !gate()) {
      check_interrupted();
      const uint64_t now = monotonic_us();
      if (now >= deadline_us) return out;
      if (on_tick && now >= next_tick) {
        on_tick();
        next_tick = now + 20'000;
      }
      std::this_thread::sleep_for(1ms);
    }
    out.gate = monotonic_us();
    uint64_t next = monotonic_us();
    while (true) {
      check_interrupted();
      uint64_t now = monotonic_us();
      if (now >= deadline_us) break;
      if (now >= next) {
        open_one();
        next += step_us;
        if (next <= now) next = now + step_us;
      }
      // (`opened` may be later than `now`: the connection just made.)
      for (size_t i = 0; i < conns_.size();)
        if (now > conns_[i].opened + kProbeLifeUs) drop(i);
        else ++i;
      if (on_tick && now >= next_tick) {
        on_tick();
        next_tick = now + 20'000;
      }
      std::vector<pollfd> p;
      for (const auto& c : conns_) p.push_back({c.fd, static_cast<short>(c.connected ? POLLIN : POLLOUT), 0});
      now = monotonic_us();
      const uint64_t until = std::min(next, deadline_us);
      timespec ts{};
      if (until > now)
        ts = {static_cast<time_t>((until - now) / 1'000'000), static_cast<long>((until - now) % 1'000'000 * 1000)};
      if (ppoll(p.data(), p.size(), &ts, nullptr) <= 0) continue;
      const uint64_t t = monotonic_us();
      // Back to front: drop() moves the last connection into the hole.
      for (size_t i = p.size(); i-- > 0;) {
        if (!p[i].revents) continue;
        Conn& c = conns_[i];
        if (!c.connected) {
          int err = 0;
          socklen_t len = sizeof err;
          if (getsockopt(c.fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) {
            drop(i);
            continue;
          }
          c.connected = true;
          continue;
        }
        char buf[512];
        const ssize_t n = read(c.fd, buf, sizeof buf);
        if (n > 0) {
          c.got.append(buf, static_cast<size_t>(n));
          if (c.got.find(kHello) != std::string::npos) {
            out.hello = t;
            close_all();
            return out;
          }
        } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
          drop(i);
        }
      }
    }
    close_all();
    return out;
  }

 private:
  struct Conn {
    int fd;
    uint64_t opened;
    bool connected;
    std::string got;
  };
  void open_one() {
    const int s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (s < 0) die(std::string("socket: ") + std::strerror(errno));
    // Reset, not closed: no TIME_WAIT pile-up, and passt forwards the reset.
    linger l{1, 0};
    setsockopt(s, SOL_SOCKET, SO_LINGER, &l, sizeof l);
    const uint64_t t = monotonic_us();
    if (connect(s, reinterpret_cast<const sockaddr*>(&addr_), sizeof addr_) == 0) {
      conns_.push_back({s, t, true, {}});
    } else if (errno == EINPROGRESS) {
      conns_.push_back({s, t, false, {}});
    } else {
      close(s);  // refused: nothing listens
    }
  }
  void drop(size_t i) {
    close(conns_[i].fd);
    conns_[i] = std::move(conns_.back());
    conns_.pop_back();
  }
  void close_all() {
    for (auto& c : conns_) close(c.fd);
    conns_.clear();
  }
  sockaddr_in addr_{};
  std::vector<Conn> conns_;
};

// ---------------------------------------------------------------- passt processes

// Live passt processes (by command name; passt may re-exec itself as
// passt.avx2) whose network namespace is `netns`.
std::vector<pid_t> passts_in(const std::string& netns) {
  struct stat want {};
  if (stat(("/run/netns/" + netns).c_str(), &want) != 0) return {};
  std::vector<pid_t> out;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator("/proc", ec)) {
    const std::string name = e.path().filename().string();
    if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) continue;
    const std::string stat_line = test::read_file("/proc/" + name + "/stat");
    const size_t open = stat_line.find('('), close_p = stat_line.rfind(')');
    if (open == std::string::npos || close_p == std::string::npos || close_p + 2 >= stat_line.size()) continue;
    const std::string comm = stat_line.substr(open + 1, close_p - open - 1);
    if (comm != "passt" && comm != "passt.avx2") continue;
    if (stat_line[close_p + 2] == 'Z') continue;
    struct stat st {};
    if (stat(("/proc/" + name + "/ns/net").c_str(), &st) != 0 || st.st_ino != want.st_ino || st.st_dev != want.st_dev)
      continue;
    out.push_back(static_cast<pid_t>(std::stoi(name)));
  }
  return out;
}
// SIGKILLs `pid` and returns the time of the kill once the process is gone
// (its pidfd readable: the kernel has closed its files, its listening socket
// on the forwarded port too, so no probe can reach the dying passt).
uint64_t kill_and_wait_gone(pid_t pid) {
  const int pfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (pfd < 0) die("pidfd_open " + std::to_string(pid) + ": " + std::strerror(errno));
  const uint64_t t0 = monotonic_us();
  if (::kill(pid, SIGKILL) != 0) {
    close(pfd);
    die("kill " + std::to_string(pid) + ": " + std::strerror(errno));
  }
  pollfd p{pfd, POLLIN, 0};
  const int r = poll(&p, 1, 5000);
  close(pfd);
  if (r != 1) die("passt " + std::to_string(pid) + " did not exit within 5 s of SIGKILL");
  return t0;
}
std::string cmdline_of(pid_t pid) {
  std::string c = test::read_file("/proc/" + std::to_string(pid) + "/cmdline");
  std::replace(c.begin(), c.end(), '\0', ' ');
  while (!c.empty() && c.back() == ' ') c.pop_back();
  return c;
}

// Whether a passt of `netns` has accepted QEMU's connection on its unix
// socket `path`: a connected socket with that path is among that passt's
// fds. The kernel makes the accepting end of a unix connection in the
// connecting process's network namespace, so it is listed in QEMU's
// /proc/PID/net/unix, not in passt's.
//
// The bench probes the forwarded port only after that: passt 2025-05
// (Debian 13) dies of SIGSEGV when a connection to a forwarded port arrives
// before QEMU has connected to its socket, so probing during QEMU's
// reconnect interval would kill every new passt (seen here with
// stream-client, reconnect-ms >= 20).
bool passt_accepted_qemu(const std::string& netns, const std::string& path, pid_t qemu) {
  std::vector<std::string> inodes;
  std::ifstream f("/proc/" + std::to_string(qemu) + "/net/unix");
  std::string line;
  std::getline(f, line);  // header
  while (std::getline(f, line)) {
    std::istringstream in(line);
    std::string num, refs, proto, flags, type, st, inode, p;
    if (in >> num >> refs >> proto >> flags >> type >> st >> inode >> p && st == "03" && p == path)
      inodes.push_back("socket:[" + inode + "]");
  }
  if (inodes.empty()) return false;
  for (pid_t pid : passts_in(netns)) {
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/fd", ec)) {
      std::error_code ec2;
      const std::string target = std::filesystem::read_symlink(e.path(), ec2).string();
      if (std::find(inodes.begin(), inodes.end(), target) != inodes.end()) return true;
    }
  }
  return false;
}
// The --socket PATH (or -s PATH) of a passt's command line; "" if none.
std::string socket_of(pid_t pid) {
  std::string c = test::read_file("/proc/" + std::to_string(pid) + "/cmdline");
  std::vector<std::string> args;
  for (size_t at = 0; at < c.size();) {
    const size_t end = c.find('\0', at);
    args.push_back(c.substr(at, end == std::string::npos ? std::string::npos : end - at));
    if (end == std::string::npos) break;
    at = end + 1;
  }
  for (size_t i = 0; i + 1 < args.size(); ++i)
    if (args[i] == "--socket" || args[i] == "-s") return args[i + 1];
  for (const auto& a : args)
    if (a.rfind("--socket=", 0) == 0) return a.substr(9);
  return "";
}

// ---------------------------------------------------------------- configurations

enum class Kind { StreamServer, StreamClient, VhostUser, Libvirt };

struct Config {
  Kind kind;
  int reconnect_ms = 0;  // stream-client, vhost-user
  std::string label() const {
    switch (kind) {
      case Kind::StreamServer: return "relinkd stream-server (baseline)";
      case Kind::StreamClient: return "relinkd stream-client reconnect-ms=" + std::to_string(reconnect_ms);
      case Kind::VhostUser: return "relinkd vhost-user reconnect-ms=" + std::to_string(reconnect_ms);
      case Kind::Libvirt: return "libvirt passt backend (libvirt's own)";
    }
    return "";
  }
  std::string mode() const {
    switch (kind) {
      case Kind::StreamServer: return "stream-server";
      case Kind::StreamClient: return "stream-client";
      case Kind::VhostUser: return "vhost-user";
      case Kind::Libvirt: return "libvirt";
    }
    return "";
  }
};

struct Result {
  Config cfg;
  int attempted = 0;
  std::vector<double> recovery;     // kill -> greeting, recovered kills only
  std::vector<double> connected;    // kill -> the new passt accepted QEMU's connection (listening modes)
  int unrecovered = 0;              // no greeting within --timeout
  std::vector<std::string> notes;   // what was seen (libvirt: restarts, command lines)
  std::string error;                // the configuration failed (not a measurement)
  double boot_s = 0;                // start to the guest reachable
};

// A namespace with an uplink passt can take its address and route from, and
// a directory for the run (the passt sockets in one nobody owns).
struct Base {
  test::Netns ns{"prbench"};
  std::string dir = "/tmp/relink-prbench-" + test::random_suffix();
  std::string guest_dir = test::binary_dir() + "/guest";

  void init() {
    if (!std::filesystem::exists("/run/netns/" + ns.name())) die("cannot create a network namespace");
    for (const std::string cmd :
         {"link add up0 type veth peer name up1", "addr add 192.0.2.1/24 dev up0", "link set up0 up",
          "link set up1 up", "link set lo up", "route add default via 192.0.2.254 dev up0"}) {
      auto r = test::sh("ip -n " + ns.name() + " " + cmd);
      if (r.status != 0) die("ip " + cmd + ": " + r.out);
    }
    std::filesystem::create_directories(dir + "/passt");
    // passt (nobody) must reach its socket directory through this one.
    if (chmod(dir.c_str(), 0711) != 0 || chown((dir + "/passt").c_str(), 65534, 65534) != 0)
      die("cannot prepare " + dir + " for passt as nobody");
  }
  ~Base() {
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
  std::string console() const { return dir + "/console.log"; }
  std::string read_console() const { return test::read_file(console()); }
  std::string kernel() const {
    return guest_dir + (std::filesystem::exists(guest_dir + "/vmlinux") ? "/vmlinux" : "/vmlinuz");
  }
  void keep(const std::string& from, const std::string& as) const {
    if (!getenv("RELINK_BENCH_KEEP_LOGS")) return;
    std::error_code ec;
    std::filesystem::create_directories("/tmp/relink-prbench-logs", ec);
    std::filesystem::copy_file(from, "/tmp/relink-prbench-logs/" + as,
                               std::filesystem::copy_options::overwrite_existing, ec);
  }
};

// Boot (READY, a DHCP lease from passt) and the greeting through the forward.
void wait_reachable(const Base& b, const std::function<std::string()>& why, const std::function<bool()>& alive) {
  auto seen = [&](const char* what) { return b.read_console().find(what) != std::string::npos; };
  if (!wait_for([&] { return seen("RELINK-GUEST-READY") || !alive(); }, 240s, 100ms) || !alive())
    die("the guest did not boot\n" + why());
  if (!wait_for([&] { return seen("RELINK-GUEST-DHCP event=bound"); }, 60s, 100ms))
    die("the guest got no DHCP lease from passt\n" + why());
  test::ScopedNetnsEnter in(b.ns.name());
  if (!in.ok()) die("cannot enter " + b.ns.name());
  HelloProber p(kPort);
  if (!p.run(50'000, monotonic_us() + 60'000'000).hello)
    die("the guest is not reachable through passt's forward of port " + std::to_string(kPort) + "\n" + why());
}

// ---------------------------------------------------------------- relinkd

struct RelinkdRun : Base {
  Config cfg;
  std::unique_ptr<test::Child> relinkd;
  std::unique_ptr<test::Child> qemu;

  explicit RelinkdRun(Config c) : cfg(c) {}
  ~RelinkdRun() {
    qemu.reset();
    relinkd.reset();  // its passts are in the namespace: gone with it
  }
  std::string ctl() const { return dir + "/control.sock"; }
  std::string log() const { return dir + "/relinkd.log"; }
  std::string qmp() const { return dir + "/vm0.qmp"; }
  std::string qemu_log() const { return dir + "/qemu.log"; }
  std::string sock() const { return dir + "/passt/vm0-net1.sock"; }
  std::string why() const {
    return "relinkd log (tail):\n" + tail(test::read_file(log()), 2500) + "\nQEMU log (tail):\n" +
           tail(test::read_file(qemu_log()), 1500) + "\nguest console (tail):\n" + tail(read_console(), 1500);
  }
  void keep_logs() const {
    const std::string tag = cfg.mode() + (cfg.reconnect_ms ? "-" + std::to_string(cfg.reconnect_ms) : "");
    keep(log(), tag + ".relinkd.log");
    keep(qemu_log(), tag + ".qemu.log");
    keep(console(), tag + ".console");
  }

  json binding() const {
    auto r = relink::ctl::control_request(ctl(), {{"command", "status"}}, 2000);
    if (!r || !r->value("ok", false)) return nullptr;
    for (const auto& vm : (*r)["result"].value("vms", json::array()))
      for (const auto& b : vm.value("bindings", json::array()))
        if (b.value("kind", "") == "passt") return b;
    return nullptr;
  }
  // Running at a generation above `gen`, with a pid.
  json running_after(uint64_t gen, std::chrono::milliseconds timeout) const {
    json b;
    if (!wait_for(
            [&] {
              b = binding();
              return b.is_object() && b.value("state", "") == "running" && b["pid"].is_number() &&
                     b.value("generation", uint64_t{0}) > gen;
            },
            timeout, 5ms))
      return nullptr;
    return b;
  }

  void start_relinkd() {
    std::ofstream(dir + "/relinkd.toml") << "[daemon]\ncontrol_socket = \"" << ctl() << "\"\nstate_dir = \"" << dir
                                         << "/state\"\nnode_dir = \"" << dir << "/dev\"\nlog_level = \"info\"\n\n"
                                         << "[[vm]]\nname = \"vm0\"\nqmp = \"" << qmp() << "\"\n\n[[vm.passt]]\n"
                                         << "netdev = \"net1\"\nmode = \"" << cfg.mode() << "\"\nsocket = \""
                                         << sock() << "\"\nargs = [\"-t\", \"" << kPort << "\"]\n";
    relinkd = std::make_unique<test::Child>(
        std::vector<std::string>{test::binary_dir() + "/relinkd", "--config", dir + "/relinkd.toml"},
        test::Child::Options{ns.name(), log(), {}});
  }
  void start_qemu() {
    const std::string r = std::to_string(cfg.reconnect_ms);
    const std::string dev = std::string("virtio-net-pci,netdev=net1,id=nic0,mac=") + kMac;
    std::vector<std::string> argv{"qemu-system-x86_64", "-nodefaults", "-display", "none", "-accel", "tcg", "-m",
                                  "256", "-qmp", "unix:" + qmp() + ",server=on,wait=off"};
    std::vector<std::string> net;
    switch (cfg.kind) {
      case Kind::StreamServer:
        net = {"-machine", "q35", "-netdev", "stream,id=net1,server=on,addr.type=unix,addr.path=" + sock(),
               "-device", dev};
        break;
      case Kind::StreamClient:
        net = {"-machine", "q35", "-netdev",
               "stream,id=net1,server=off,addr.type=unix,addr.path=" + sock() + ",reconnect-ms=" + r, "-device", dev};
        break;
      case Kind::VhostUser:
        net = {"-object", "memory-backend-memfd,id=mem,size=256M,share=on", "-machine", "q35,memory-backend=mem",
               "-chardev", "socket,id=net1.chr,path=" + sock() + ",reconnect-ms=" + r, "-netdev",
               "vhost-user,id=net1,chardev=net1.chr", "-device", dev};
        break;
      case Kind::Libvirt: break;
    }
    argv.insert(argv.end(), net.begin(), net.end());
    argv.insert(argv.end(), {"-no-reboot", "-serial", "file:" + console(), "-kernel", kernel(), "-initrd",
                             guest_dir + "/initramfs.cpio.gz", "-append",
                             "console=ttyS0 quiet panic=-1 relink.tag=prbench relink.dhcp=1 relink.serve=" +
                                 std::to_string(kPort) + " relink.poll=0.05"});
    qemu = std::make_unique<test::Child>(argv, test::Child::Options{"", qemu_log(), {}});
  }

  void run(Result& res) {
    init();
    const uint64_t t_start = monotonic_us();
    auto explain = [&] { return why(); };
    json b;
    if (cfg.kind == Kind::StreamServer) {
      // QEMU listens; relinkd connects once QMP and the socket are there.
      start_qemu();
      if (!wait_for([&] { return std::filesystem::exists(sock()) || !qemu->running(); }, 30s) || !qemu->running())
        die("QEMU did not start\n" + why());
      start_relinkd();
    } else if (cfg.kind == Kind::VhostUser) {
      // passt listens before QEMU starts: relinkd first (a vhost-user QEMU
      // waits for its backend, and relinkd starts it at once).
      start_relinkd();
      if (!wait_for([&] { return std::filesystem::exists(sock()) && binding()["pid"].is_number(); }, 20s))
        die("relinkd's passt does not listen on " + sock() + "\n" + why());
      start_qemu();
    } else {
      // stream-client: relinkd starts passt once QMP answers; QEMU's
      // reconnect-ms timer connects to it.
      start_relinkd();
      start_qemu();
    }
    b = running_after(0, 30s);
    if (b.is_null()) die("relinkd shows no running passt\n" + why());
    wait_reachable(*this, explain, [&] { return qemu->running(); });
    b = running_after(0, 10s);
    if (b.is_null()) die("relinkd shows no running passt after the boot\n" + why());
    res.boot_s = ms_between(t_start, monotonic_us()) / 1000.0;

    test::ScopedNetnsEnter in(ns.name());
    if (!in.ok()) die("cannot enter " + ns.name());
    HelloProber prober(kPort);
    const uint64_t step = static_cast<uint64_t>(g_opt.probe_ms) * 1000;
    const uint64_t limit = static_cast<uint64_t>(g_opt.timeout_s) * 1'000'000;
    uint64_t recovered = monotonic_us();
    int extra_restarts = 0;
    for (int i = 1; i <= g_opt.kills; ++i) {
      sleep_until_us(recovered + kMinRunUs);
      const uint64_t gen = b.value("generation", uint64_t{0});
      const pid_t pid = b["pid"].get<pid_t>();
      const uint64_t t0 = kill_and_wait_gone(pid);
      ++res.attempted;
      // stream-server: passt starts on a connected socket, nothing to wait for.
      const auto accepted = [&] { return passt_accepted_qemu(ns.name(), sock(), qemu->pid()); };
      const auto o = cfg.kind == Kind::StreamServer ? prober.run(step, t0 + limit)
                                                    : prober.run(step, t0 + limit, {}, accepted);
      if (o.hello) {
        res.recovery.push_back(ms_between(t0, *o.hello));
        if (cfg.kind != Kind::StreamServer) res.connected.push_back(ms_between(t0, *o.gate));
      } else {
        ++res.unrecovered;
        // Not a figure; the next kill needs the guest back.
        if (!prober.run(50'000, monotonic_us() + 60'000'000).hello) {
          keep_logs();
          die("kill " + std::to_string(i) + ": not recovered within " + std::to_string(g_opt.timeout_s) +
              " s, nor 60 s later (" +
              (cfg.kind == Kind::StreamServer ? std::string("stream-server")
               : o.gate ? "QEMU connected to the new passt after " +
                              std::to_string(static_cast<int>(ms_between(t0, *o.gate))) + " ms"
                        : std::string("QEMU never connected to the new passt")) +
              ")\n" + why());
        }
      }
      recovered = monotonic_us();
      b = running_after(gen, 10s);
      if (b.is_null()) {
        keep_logs();
        die("kill " + std::to_string(i) + ": relinkd shows no running passt after it\n" + why());
      }
      extra_restarts += static_cast<int>(b.value("generation", uint64_t{0}) - gen - 1);
    }
    const std::string rlog = test::read_file(log());
    size_t segv = 0;
    const std::string segv_line = "killed by SIGSEGV";
    for (size_t at = rlog.find(segv_line); at != std::string::npos; at = rlog.find(segv_line, at + 1)) ++segv;
    if (segv) res.notes.push_back("WARNING: relinkd saw " + std::to_string(segv) + " passt(s) die of SIGSEGV");
    pause_for(200ms);
    const auto p = passts_in(ns.name());
    b = binding();
    if (p.size() != 1 || !b.is_object() || b.value("pid", 0) != p[0])
      res.notes.push_back("WARNING: " + std::to_string(p.size()) + " passt processes in the namespace at the end");
    if (extra_restarts) res.notes.push_back(std::to_string(extra_restarts) + " restarts beyond one per kill");
    if (read_console().find("RELINK-GUEST-ERROR") != std::string::npos)
      res.notes.push_back("the guest reported RELINK-GUEST-ERROR");
    keep_logs();
  }
};

// ---------------------------------------------------------------- libvirt

struct LibvirtRun : Base {
  std::unique_ptr<test::LibvirtEnv> lv;
  const std::string domain = "prlv";

  ~LibvirtRun() { lv.reset(); }  // destroys the domain, stops libvirtd; the namespace takes passt
  std::string why() const {
    return (lv ? lv->log() + "\ndomain's QEMU log (tail):\n" + tail(lv->qemu_log(domain), 2000) : "") +
           "\nguest console (tail):\n" + tail(read_console(), 1500);
  }
  void keep_logs() const {
    if (!lv) return;
    keep(lv->dir() + "/var/log/libvirt/libvirtd.log", "libvirt.libvirtd.log");
    keep(lv->dir() + "/var/log/libvirt/qemu/" + domain + ".log", "libvirt.qemu.log");
    keep(console(), "libvirt.console");
  }
  void create_domain() {
    std::filesystem::remove(console());
    test::DomainSpec d;
    d.name = domain;
    d.machine = "q35";
    d.passt_nics.push_back(test::PasstNic{kMac, kPort});
    d.guest_dir = guest_dir;
    d.cmdline_extra = "relink.dhcp=1 relink.serve=" + std::to_string(kPort) + " relink.poll=0.05";
    d.serial_log = console();
    if (!lv->create(test::domain_xml(d))) die("libvirt could not start the domain\n" + why());
    wait_reachable(*this, [&] { return why(); }, [&] { return lv->qemu_pid(domain) > 0; });
  }
  // QEMU's netdev for the passt NIC, as libvirt wrote it on the command line.
  std::string qemu_netdev() const {
    const std::string log = lv->qemu_log(domain);
    const size_t at = log.find("-netdev ");
    if (at == std::string::npos) return "(not found in the QEMU log)";
    const size_t end = log.find_first_of("\n\\", at + 8);
    return log.substr(at + 8, (end == std::string::npos ? log.size() : end) - at - 8);
  }

  void run(Result& res) {
    init();
    const uint64_t t_start = monotonic_us();
    lv = std::make_unique<test::LibvirtEnv>(ns);
    lv->start();
    if (!lv->running()) die("libvirtd did not start\n" + lv->log());
    create_domain();
    res.boot_s = ms_between(t_start, monotonic_us()) / 1000.0;
    auto p = passts_in(ns.name());
    if (p.size() != 1) die("expected one passt of libvirt's in the namespace, found " + std::to_string(p.size()));
    res.notes.push_back("libvirt runs: " + cmdline_of(p[0]));
    if (socket_of(p[0]).empty())
      res.notes.push_back("WARNING: no --socket in libvirt's passt command line: probes start right after the kill");
    res.notes.push_back("QEMU netdev: " + qemu_netdev());

    const uint64_t step = static_cast<uint64_t>(g_opt.probe_ms) * 1000;
    const uint64_t limit = static_cast<uint64_t>(g_opt.timeout_s) * 1'000'000;
    uint64_t recovered = monotonic_us();
    int restarted = 0, not_restarted = 0, recreated = 0;
    std::string restarted_cmdline;  // the first passt libvirt started after a kill
    std::vector<double> restart_ms;
    for (int i = 1; i <= g_opt.libvirt_kills && res.unrecovered < g_opt.libvirt_max_misses; ++i) {
      sleep_until_us(recovered + kMinRunUs);
      p = passts_in(ns.name());
      if (p.size() != 1) die("expected one passt before kill " + std::to_string(i) + ", found " +
                             std::to_string(p.size()) + "\n" + why());
      const pid_t old = p[0];
      const std::string lsock = socket_of(old);
      std::optional<uint64_t> t_new;  // a new passt first seen
      pid_t new_pid = 0;
      uint64_t t0 = 0;
      HelloProber::Outcome o;
      {
        test::ScopedNetnsEnter in(ns.name());
        if (!in.ok()) die("cannot enter " + ns.name());
        HelloProber prober(kPort);
        t0 = kill_and_wait_gone(old);
        ++res.attempted;
        std::function<bool()> gate;
        const pid_t qpid = lv->qemu_pid(domain);
        if (!lsock.empty()) gate = [&] { return passt_accepted_qemu(ns.name(), lsock, qpid); };
        o = prober.run(
            step, t0 + limit,
            [&] {
              if (t_new) return;
              for (pid_t q : passts_in(ns.name()))
                if (q != old) {
                  t_new = monotonic_us();
                  new_pid = q;
                  if (restarted_cmdline.empty()) restarted_cmdline = cmdline_of(q);
                }
            },
            gate);
      }
      if (t_new) {
        ++restarted;
        restart_ms.push_back(ms_between(t0, *t_new));
      } else {
        ++not_restarted;
      }
      if (o.hello) {
        res.recovery.push_back(ms_between(t0, *o.hello));
        if (!lsock.empty()) res.connected.push_back(ms_between(t0, *o.gate));
        std::printf("    libvirt kill %d: recovered after %.1f ms (a new passt %s)\n", i, res.recovery.back(),
                    t_new ? ("seen after " + std::to_string(static_cast<int>(restart_ms.back())) + " ms").c_str()
                          : "never seen");
      } else {
        ++res.unrecovered;
        std::string qemu_seen;
        if (!lsock.empty())
          qemu_seen = o.gate ? "; QEMU connected to it after " +
                                   std::to_string(static_cast<int>(ms_between(t0, *o.gate))) + " ms"
                             : "; QEMU never connected to a new passt";
        std::printf("    libvirt kill %d: not recovered within %d s (%s%s; domain %s)\n", i, g_opt.timeout_s,
                    t_new ? ("a new passt " + std::to_string(new_pid) + " appeared after " +
                             std::to_string(static_cast<int>(restart_ms.back())) + " ms")
                                .c_str()
                          : "no new passt appeared",
                    qemu_seen.c_str(), lv->qemu_pid(domain) > 0 ? "still running" : "gone");
        if (i == 1) keep_logs();
        // The next kill needs a passt that serves the guest: a fresh domain.
        if (i < g_opt.libvirt_kills && res.unrecovered < g_opt.libvirt_max_misses) {
          if (lv->virsh("destroy " + domain).status != 0) die("virsh destroy " + domain + "\n" + why());
          wait_for([&] { return passts_in(ns.name()).empty(); }, 10s);
          create_domain();
          ++recreated;
        }
      }
      std::fflush(stdout);
      recovered = monotonic_us();
    }
    res.notes.push_back("after a kill libvirt started a new passt " + std::to_string(restarted) + " of " +
                        std::to_string(res.attempted) + " times" +
                        (restart_ms.empty() ? std::string()
                                            : " (kill -> new passt seen: median " +
                                                  std::to_string(static_cast<int>(pct(restart_ms, 50))) + " ms)") +
                        (not_restarted ? "; none within " + std::to_string(g_opt.timeout_s) + " s " +
                                             std::to_string(not_restarted) + " times"
                                       : ""));
    if (!restarted_cmdline.empty()) res.notes.push_back("libvirt's passt after a kill: " + restarted_cmdline);
    if (recreated) res.notes.push_back("the domain was destroyed and created again " + std::to_string(recreated) +
                                       " times after unrecovered kills");
    if (res.unrecovered >= g_opt.libvirt_max_misses && res.attempted < g_opt.libvirt_kills)
      res.notes.push_back("given up after " + std::to_string(res.unrecovered) + " unrecovered kills");
    keep_logs();
  }
};

// ---------------------------------------------------------------- report

double mean(const std::vector<double>& v) {
  return v.empty() ? 0 : std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(v.size());
}
double maxv(const std::vector<double>& v) { return v.empty() ? 0 : *std::max_element(v.begin(), v.end()); }

void print_results(const std::vector<Result>& results) {
  double base = 0;
  for (const auto& r : results)
    if (r.cfg.kind == Kind::StreamServer && !r.recovery.empty()) base = pct(r.recovery, 50);
  std::printf("\npasst SIGKILL -> a connection to 127.0.0.1:%d receives \"%s\" (ms; probe every %d ms)\n", kPort,
              kHello, g_opt.probe_ms);
  std::printf("  %-44s %5s %9s %9s %9s %9s %9s  %s\n", "configuration", "n", "median", "p90", "max", "mean",
              "med/base", "not recovered");
  for (const auto& r : results) {
    if (!r.error.empty()) {
      std::printf("  %-44s FAILED: %s\n", r.cfg.label().c_str(), first_line(r.error).c_str());
      continue;
    }
    const std::string miss = r.unrecovered ? std::to_string(r.unrecovered) + " of " + std::to_string(r.attempted) +
                                                 " (not recovered within " + std::to_string(g_opt.timeout_s) + " s)"
                                           : "0 of " + std::to_string(r.attempted);
    if (r.recovery.empty()) {
      std::printf("  %-44s %5d %9s %9s %9s %9s %9s  %s\n", r.cfg.label().c_str(), 0, "-", "-", "-", "-", "-",
                  miss.c_str());
      continue;
    }
    char ratio[32] = "-";
    if (base > 0) std::snprintf(ratio, sizeof ratio, "%.2fx", pct(r.recovery, 50) / base);
    std::printf("  %-44s %5zu %9.1f %9.1f %9.1f %9.1f %9s  %s\n", r.cfg.label().c_str(), r.recovery.size(),
                pct(r.recovery, 50), pct(r.recovery, 90), maxv(r.recovery), mean(r.recovery), ratio, miss.c_str());
  }
  std::printf("\nof which: kill -> QEMU connected to the new passt (it accepted on its socket; ms, same kills;\n"
              "the port is probed only from then on, see --help)\n");
  for (const auto& r : results)
    if (r.error.empty() && !r.connected.empty())
      std::printf("  %-44s %5zu %9.1f %9.1f %9.1f %9.1f\n", r.cfg.label().c_str(), r.connected.size(),
                  pct(r.connected, 50), pct(r.connected, 90), maxv(r.connected), mean(r.connected));

  // The smallest useful reconnect-ms: walking from the largest value down,
  // the last one that still shortened the median noticeably.
  for (Kind k : {Kind::StreamClient, Kind::VhostUser}) {
    std::vector<const Result*> sweep;
    for (const auto& r : results)
      if (r.cfg.kind == k && r.error.empty() && !r.connected.empty()) sweep.push_back(&r);
    if (sweep.size() < 2) continue;
    std::sort(sweep.begin(), sweep.end(),
              [](const Result* a, const Result* b) { return a->cfg.reconnect_ms > b->cfg.reconnect_ms; });
    // Judged on kill -> QEMU connected: the guest's answer after that adds
    // the same TCG noise to every value and is left out.
    std::printf("\n%s reconnect-ms sweep: medians of kill -> QEMU connected (and of the whole recovery), and the\n"
                "gain in the first over the next larger value (helps: > max(2 ms, 10 %%))\n",
                sweep[0]->cfg.mode().c_str());
    int useful = sweep[0]->cfg.reconnect_ms;
    bool stopped = false;
    for (size_t i = 0; i < sweep.size(); ++i) {
      const double m = pct(sweep[i]->connected, 50);
      if (i == 0) {
        std::printf("  reconnect-ms=%-5d connected %8.1f ms (recovery %8.1f)\n", sweep[i]->cfg.reconnect_ms, m,
                    pct(sweep[i]->recovery, 50));
        continue;
      }
      const double prev = pct(sweep[i - 1]->connected, 50), gain = prev - m;
      const bool helps = gain > std::max(2.0, 0.10 * prev);
      std::printf("  reconnect-ms=%-5d connected %8.1f ms (recovery %8.1f)  gain %+8.1f ms  %s\n",
                  sweep[i]->cfg.reconnect_ms, m, pct(sweep[i]->recovery, 50), gain,
                  helps ? "helps" : "no longer helps");
      if (helps && !stopped) useful = sweep[i]->cfg.reconnect_ms;
      if (!helps) stopped = true;
    }
    std::printf("  smallest useful reconnect-ms (%s): %d\n", sweep[0]->cfg.mode().c_str(), useful);
  }

  std::printf("\nnotes\n");
  for (const auto& r : results) {
    std::printf("  %s: guest reachable %.1f s after the start\n", r.cfg.label().c_str(), r.boot_s);
    for (const auto& n : r.notes) std::printf("    %s\n", n.c_str());
    if (!r.error.empty()) std::printf("    FAILED: %s\n", tail(r.error, 4000).c_str());
  }
}

// ---------------------------------------------------------------- options

int parse_int(const char* s, int lo, int hi) {
  char* end = nullptr;
  const long v = std::strtol(s, &end, 10);
  if (!end || *end || end == s || v < lo || v > hi) die(kUsage);
  return static_cast<int>(v);
}
std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream in(s);
  for (std::string item; std::getline(in, item, ',');)
    if (!item.empty()) out.push_back(item);
  return out;
}
std::vector<int> parse_list(const std::string& s) {
  std::vector<int> out;
  for (const auto& item : split(s)) out.push_back(parse_int(item.c_str(), 1, 600'000));
  if (out.empty()) die(kUsage);
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}
bool wanted(const std::string& mode) {
  return g_opt.only.empty() || std::find(g_opt.only.begin(), g_opt.only.end(), mode) != g_opt.only.end();
}

// The first non-empty line of what `cmd` prints (passt starts with an empty one).
std::string version(const std::string& cmd) {
  auto r = test::sh(cmd + " 2>&1");
  std::istringstream in(r.out);
  for (std::string line; std::getline(in, line);)
    if (line.find_first_not_of(" \t") != std::string::npos) return line;
  return "(" + cmd + ": no output)";
}

int run(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      print_help();
      return 0;
    }
  }
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (i + 1 >= argc) die(kUsage);
    const char* v = argv[++i];
    if (a == "--kills") g_opt.kills = parse_int(v, 1, 100'000);
    else if (a == "--libvirt-kills") g_opt.libvirt_kills = parse_int(v, 1, 100'000);
    else if (a == "--libvirt-max-misses") g_opt.libvirt_max_misses = parse_int(v, 1, 100'000);
    else if (a == "--timeout") g_opt.timeout_s = parse_int(v, 1, 3600);
    else if (a == "--probe-ms") g_opt.probe_ms = parse_int(v, 1, 1000);
    else if (a == "--reconnect-ms") g_opt.client_r = parse_list(v);
    else if (a == "--vhost-reconnect-ms") g_opt.vhost_r = parse_list(v);
    else if (a == "--only") {
      g_opt.only = split(v);
      for (const auto& m : g_opt.only)
        if (m != "stream-server" && m != "stream-client" && m != "vhost-user" && m != "libvirt") die(kUsage);
    } else {
      die(kUsage);
    }
  }
  if (!test::is_root()) die("needs root (namespaces, QEMU, passt as nobody, libvirtd); see --help");
  signal(SIGPIPE, SIG_IGN);
  struct sigaction sa {};
  sa.sa_handler = bench::on_interrupt;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);

  std::vector<Config> configs;
  if (wanted("stream-server")) configs.push_back({Kind::StreamServer, 0});
  if (wanted("stream-client"))
    for (int r : g_opt.client_r) configs.push_back({Kind::StreamClient, r});
  if (wanted("vhost-user"))
    for (int r : g_opt.vhost_r) configs.push_back({Kind::VhostUser, r});
  if (wanted("libvirt")) configs.push_back({Kind::Libvirt, 0});

  const uint64_t started = monotonic_us();
  std::printf("passt_recovery_bench: %d kills per relinkd configuration, %d of libvirt's passt (at most %d "
              "unrecovered); timeout %d s; probe every %d ms; each kill >= %.1f s after the last recovery\n",
              g_opt.kills, g_opt.libvirt_kills, g_opt.libvirt_max_misses, g_opt.timeout_s, g_opt.probe_ms,
              static_cast<double>(kMinRunUs) / 1e6);
  // passt --version prints nothing when its output is not a terminal: the package's version instead.
  std::printf("  %s\n  passt %s (Debian package)\n  %s; package %s\n  relinkd %s/relinkd; guest %s/guest\n",
              version("qemu-system-x86_64 --version").c_str(),
              version("dpkg-query -W -f='${Version}\\n' passt").c_str(), version("libvirtd --version").c_str(),
              version("dpkg-query -W -f='${Version}\\n' libvirt-daemon").c_str(), test::binary_dir().c_str(),
              test::binary_dir().c_str());
  std::fflush(stdout);
  auto built = test::sh("bash " + test::source_dir() + "/tests/guest/build-guest.sh " + test::binary_dir() + "/guest");
  if (built.status != 0) die("building the test guest failed:\n" + built.out);

  std::vector<Result> results;
  for (const auto& c : configs) {
    Result res;
    res.cfg = c;
    std::printf("  %s ...\n", c.label().c_str());
    std::fflush(stdout);
    const uint64_t t0 = monotonic_us();
    try {
      if (c.kind == Kind::Libvirt) {
        LibvirtRun r;
        r.run(res);
      } else {
        RelinkdRun r(c);
        r.run(res);
      }
    } catch (const Fatal& e) {
      if (bench::g_interrupted) throw;
      res.error = e.what();
    }
    if (res.error.empty())
      std::printf("    %zu recovered (median %.1f ms), %d not recovered; %.0f s\n", res.recovery.size(),
                  pct(res.recovery, 50), res.unrecovered, ms_between(t0, monotonic_us()) / 1000.0);
    else
      std::printf("    FAILED: %s\n", first_line(res.error).c_str());
    std::fflush(stdout);
    results.push_back(std::move(res));
  }
  print_results(results);
  std::printf("\nrun took %.0f s\n", ms_between(started, monotonic_us()) / 1000.0);
  for (const auto& r : results)
    if (!r.error.empty()) return 1;
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  // Everything is torn down by destructors while the exception unwinds:
  // nothing here calls exit().
  try {
    return run(argc, argv);
  } catch (const Fatal& e) {
    std::cerr << "passt_recovery_bench: " << e.what() << "\n";
  } catch (const std::exception& e) {
    std::cerr << "passt_recovery_bench: unexpected error: " << e.what() << "\n";
  }
  return 1;
}
