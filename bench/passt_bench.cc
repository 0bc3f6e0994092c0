// SPDX-License-Identifier: GPL-2.0-or-later
// passt recovery time of relinkd against a floor, both measured in this run.
//
// Recovery = passt killed (SIGKILL, sent by this bench) -> BOTH a TCP port
// that passt forwards (`-t PORT`) accepts on the host again AND QEMU has
// reported one more NETDEV_STREAM_CONNECTED. The event alone is not enough:
// QEMU emits it at accept(), before the new passt is ready. "Accepts" is
// checked every 200 us as "a socket listens on the port" once the killed
// passt is gone (see port_listening() for why not with a real connect).
//
// QEMU 7.2 serves `-netdev stream,server=on` on a unix socket. The floor is
// this process acting as the least a supervisor can do: a thread that
// connects to that socket, forks, and execs `passt -f --fd 3 -t PORT` as
// nobody, then waits on the passt's pidfd and starts over as soon as it
// exits. The measuring thread only kills and watches, so the floor's reaction
// is as independent of the measurement as relinkd's. Then the same for
// relinkd (one `[[vm.passt]]` stream-server binding), with a fresh QEMU.
//
// Usage (root): passt_bench [--kills N] [--port P] [--only floor|relinkd] [--passt PATH] [--help]
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "ctl/control_client.h"
#include "passt/passt.h"
#include "bench_util.h"
#include "support/harness.h"
#include "support/qmp_sync.h"
#include "util/clock.h"

using namespace relink;
using namespace std::chrono_literals;
using nlohmann::json;

namespace {

std::string g_passt = "/usr/bin/passt";  // --passt
constexpr const char* kConnected = "NETDEV_STREAM_CONNECTED";
constexpr uint64_t kRecoveryLimitUs = 5'000'000;  // abort when a recovery takes longer
constexpr uint64_t kMinRunUs = 1'100'000;         // relinkd: a passt dying within 1 s is a failed start
constexpr uint64_t kProbeStepUs = 200;
constexpr double kLibvirtMs = 5000;  // QEMU's reconnect timer as libvirt sets it (reconnect=5)

using bench::die;
using bench::Fatal;
using bench::pct;

// SIGINT/SIGTERM: stop at the next kill, through the destructors.
std::atomic<bool> g_interrupted{false};
void on_interrupt(int) { g_interrupted = true; }
void check_interrupted() {
  if (g_interrupted) die("interrupted");
}

int pidfd_open(pid_t pid) { return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)); }

void sleep_until_us(uint64_t t) {
  const uint64_t now = monotonic_us();
  if (t > now) std::this_thread::sleep_for(std::chrono::microseconds(t - now));
}

std::string tail(const std::string& text, size_t lines) {
  size_t pos = text.size();
  for (size_t n = 0; pos > 0 && n <= lines; --pos)
    if (text[pos - 1] == '\n') ++n;
  return text.substr(pos);
}

// ---------------------------------------------------------------- observers

// The test's own view of QEMU (second QMP socket): a thread that timestamps
// every NETDEV_STREAM_CONNECTED as it arrives.
class ConnectedWatcher {
 public:
  explicit ConnectedWatcher(const std::string& qmp) {
    if (!q_.connect(qmp)) die("cannot connect to QEMU's QMP socket " + qmp);
    th_ = std::thread([this] { run(); });
  }
  ~ConnectedWatcher() {
    stop_ = true;
    th_.join();
  }
  size_t count() {
    std::lock_guard lk(m_);
    return times_.size();
  }
  // Arrival time of the n-th event (1-based), waiting until deadline; nullopt on timeout.
  std::optional<uint64_t> wait(size_t n, uint64_t deadline_us) {
    std::unique_lock lk(m_);
    while (times_.size() < n) {
      const uint64_t now = monotonic_us();
      if (now >= deadline_us) return std::nullopt;
      cv_.wait_for(lk, std::chrono::microseconds(deadline_us - now));
    }
    return times_[n - 1];
  }

 private:
  void run() {
    size_t seen = 0;
    while (!stop_) {
      const uint64_t before = monotonic_us();
      if (!q_.wait_events(kConnected, seen + 1, 100)) {
        // Timeout, or QEMU gone: then do not spin.
        if (monotonic_us() - before < 50'000) std::this_thread::sleep_for(50ms);
        continue;
      }
      const uint64_t now = monotonic_us();
      const size_t n = q_.count_events(kConnected);
      {
        std::lock_guard lk(m_);
        for (; seen < n; ++seen) times_.push_back(now);
      }
      cv_.notify_all();
    }
  }
  test::QmpSync q_;
  std::thread th_;
  std::atomic<bool> stop_{false};
  std::mutex m_;
  std::condition_variable cv_;
  std::vector<uint64_t> times_;
};

// Whether the port accepts: a TCP socket of the calling thread's namespace
// listens on it (state 0A in /proc/net/tcp), so the kernel completes any
// connect to it. Not an actual connect: passt would accept it and send a SYN
// to the guest, and a guest that cannot receive (here: QEMU -S, no driver)
// makes QEMU 7.2 queue that frame and stop reading the stream socket, so it
// would never see the next passt die (no NETDEV_STREAM_DISCONNECTED, no
// accept of the next connection). A real connect is made once, at the end.
bool port_listening(const sockaddr_in& addr) {
  char want[8];
  std::snprintf(want, sizeof want, "%04X", ntohs(addr.sin_port));
  std::ifstream f("/proc/thread-self/net/tcp");
  std::string line;
  std::getline(f, line);  // header
  while (std::getline(f, line)) {
    std::istringstream in(line);
    std::string sl, local, remote, state;
    if (!(in >> sl >> local >> remote >> state)) continue;
    if (state == "0A" && local.size() > 5 && local.compare(local.size() - 4, 4, want) == 0) return true;
  }
  return false;
}

// One real TCP connect; true when it is accepted. The connection is reset,
// not closed.
bool port_connects(const sockaddr_in& addr) {
  int s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (s < 0) die("socket");
  bool ok = false;
  if (connect(s, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0) {
    ok = true;
  } else if (errno == EINPROGRESS) {
    pollfd p{s, POLLOUT, 0};
    if (poll(&p, 1, 1000) == 1) {
      int err = 0;
      socklen_t len = sizeof err;
      ok = getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == 0;
    }
  }
  linger l{1, 0};
  setsockopt(s, SOL_SOCKET, SO_LINGER, &l, sizeof l);
  close(s);
  return ok;
}

struct Sample {
  double total_ms;  // kill -> port accepts and CONNECTED seen
  double exit_ms;   // kill -> the old passt is gone (its pidfd readable)
  double port_ms;   // kill -> the port accepts again
  double qmp_ms;    // kill -> NETDEV_STREAM_CONNECTED arrived
};

// Kills `pid` and measures until it is replaced. The calling thread must be
// in the namespace (the port is probed from there). `connected_before` is
// the number of CONNECTED events seen before the kill.
//
// The port is probed only once the old passt is gone (its pidfd turns
// readable after the kernel has closed its files, so its listener is gone
// too): a probe before that could still see the dying passt's listener.
Sample kill_and_measure(pid_t pid, ConnectedWatcher& watcher, size_t connected_before, const sockaddr_in& addr) {
  const int pfd = pidfd_open(pid);
  if (pfd < 0) die("pidfd_open " + std::to_string(pid) + ": " + std::strerror(errno));
  const uint64_t t0 = monotonic_us();
  if (kill(pid, SIGKILL) < 0) {
    close(pfd);
    die("kill " + std::to_string(pid) + ": " + std::strerror(errno));
  }
  pollfd p{pfd, POLLIN, 0};
  const int r = poll(&p, 1, static_cast<int>(kRecoveryLimitUs / 1000));
  close(pfd);
  if (r != 1) die("passt " + std::to_string(pid) + " did not exit within 5 s of SIGKILL");
  const uint64_t t_exit = monotonic_us();
  const uint64_t deadline = t0 + kRecoveryLimitUs;
  uint64_t t_port = 0;
  while (true) {
    const uint64_t attempt = monotonic_us();
    if (port_listening(addr)) {
      t_port = monotonic_us();
      break;
    }
    if (attempt >= deadline) die("recovery: the port did not accept again within 5 s of the kill");
    sleep_until_us(attempt + kProbeStepUs);
  }
  auto t_qmp = watcher.wait(connected_before + 1, deadline);
  if (!t_qmp) die("recovery: QEMU reported no NETDEV_STREAM_CONNECTED within 5 s of the kill");
  auto ms = [&](uint64_t t) { return static_cast<double>(t - t0) / 1000.0; };
  return {ms(std::max(t_port, *t_qmp)), ms(t_exit), ms(t_port), ms(*t_qmp)};
}

// ---------------------------------------------------------------- sandbox

struct Sandbox {
  test::Netns ns{"pbench"};
  std::string dir = "/tmp/relink-pbench-" + test::random_suffix();
  std::unique_ptr<test::Child> qemu;
  sockaddr_in addr{};

  explicit Sandbox(int port) {
    std::filesystem::create_directories(dir);
    for (const std::string cmd :
         {"link add up0 type veth peer name up1", "addr add 192.0.2.1/24 dev up0", "link set up0 up",
          "link set up1 up", "link set lo up", "route add default via 192.0.2.254 dev up0"}) {
      auto r = test::sh("ip -n " + ns.name() + " " + cmd);
      if (r.status != 0) die("ip " + cmd + ": " + r.out);
    }
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    inet_pton(AF_INET, "192.0.2.1", &addr.sin_addr);
  }
  ~Sandbox() {
    qemu.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
  std::string q1() const { return dir + "/q1.qmp"; }
  std::string q2() const { return dir + "/q2.qmp"; }
  std::string sock() const { return dir + "/net1.sock"; }

  void start_qemu() {
    qemu = std::make_unique<test::Child>(
        std::vector<std::string>{"qemu-system-x86_64", "-nodefaults", "-display", "none", "-machine", "q35",
                                 "-accel", "tcg", "-m", "64", "-S", "-qmp", "unix:" + q1() + ",server=on,wait=off",
                                 "-qmp", "unix:" + q2() + ",server=on,wait=off", "-netdev",
                                 "stream,id=net1,server=on,addr.type=unix,addr.path=" + sock(), "-device",
                                 "virtio-net-pci,netdev=net1,id=nic0"},
        test::Child::Options{"", dir + "/qemu.log", {}});
    if (!test::wait_until([&] { return std::filesystem::exists(q2()) && std::filesystem::exists(sock()); }, 20s))
      die("QEMU did not start:\n" + test::read_file(dir + "/qemu.log"));
  }

  // passt processes in the namespace (by command name; passt may re-exec
  // itself as passt.avx2).
  std::vector<pid_t> passts(std::string* seen = nullptr) const {
    std::vector<pid_t> out;
    std::istringstream in(test::sh("ip netns pids " + ns.name()).out);
    for (pid_t pid; in >> pid;) {
      std::string comm = test::read_file("/proc/" + std::to_string(pid) + "/comm");
      if (seen) *seen += " " + std::to_string(pid) + ":" + comm.substr(0, comm.find('\n'));
      if (pid != getpid() && (comm == "passt\n" || comm == "passt.avx2\n")) out.push_back(pid);
    }
    return out;
  }
  void expect_one_passt(pid_t expected) const {
    if (!std::filesystem::exists("/run/netns/" + ns.name()))
      die("namespace " + ns.name() + " was removed under the bench (scripts/test.sh removes relink-* namespaces "
          "and kills \"passt -f --fd 3\" processes: do not run both at once)");
    std::string seen;
    auto p = passts(&seen);
    if (p.size() != 1 || (expected > 0 && p[0] != expected))
      die("expected exactly one passt (pid " + std::to_string(expected) + ") in the namespace; processes there:" +
          (seen.empty() ? " none" : seen));
  }
};

// ---------------------------------------------------------------- floor

// The minimal supervisor: connect, fork + exec passt, wait on its pidfd,
// again. Runs in its own thread, inside the namespace.
class FloorSupervisor {
 public:
  FloorSupervisor(std::string netns, std::string sock, int port)
      : netns_(std::move(netns)), sock_(std::move(sock)), port_(std::to_string(port)) {
    stop_fd_ = eventfd(0, EFD_CLOEXEC);
    if (stop_fd_ < 0) die("eventfd");
    th_ = std::thread([this] { run(); });
  }
  ~FloorSupervisor() {
    stop_ = true;
    uint64_t one = 1;
    (void)!write(stop_fd_, &one, sizeof one);
    th_.join();
    close(stop_fd_);
  }
  pid_t current() const { return current_.load(); }
  std::string error() {
    std::lock_guard lk(m_);
    return error_;
  }

 private:
  void fail(const std::string& e) {
    std::lock_guard lk(m_);
    error_ = e;
  }
  void run() {
    test::ScopedNetnsEnter in(netns_);
    if (!in.ok()) return fail("cannot enter " + netns_);
    // Everything the child needs, prepared before fork (after it, only
    // async-signal-safe calls).
    // The same binary relinkd runs (passt.avx2 where passt would re-exec itself).
    std::vector<std::string> args{passt::exec_path(g_passt), "-f", "--fd", "3", "-t", port_};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    char path_env[] = "PATH=/usr/sbin:/usr/bin:/sbin:/bin";
    char* envp[] = {path_env, nullptr};
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    std::strncpy(sa.sun_path, sock_.c_str(), sizeof sa.sun_path - 1);
    const int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (devnull < 0) return fail("open /dev/null");

    while (!stop_) {
      const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
      if (fd < 0 || connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) < 0) {
        fail("floor: connect " + sock_ + ": " + std::strerror(errno));
        if (fd >= 0) close(fd);
        break;
      }
      const pid_t pid = fork();
      if (pid == 0) {
        setsid();
        struct sigaction ign {};
        ign.sa_handler = SIG_IGN;
        sigaction(SIGPIPE, &ign, nullptr);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, nullptr);
        // Raw syscalls: glibc's set*id would try to reach threads this
        // child does not have.
        if (syscall(SYS_setgroups, 0, nullptr) < 0 || syscall(SYS_setgid, 65534) < 0 ||
            syscall(SYS_setuid, 65534) < 0)
          _exit(126);
        if (dup2(fd, 3) < 0 || dup2(devnull, 0) < 0 || dup2(devnull, 1) < 0 || dup2(devnull, 2) < 0) _exit(126);
        close_range(4, ~0U, 0);
        execve(args[0].c_str(), argv.data(), envp);
        _exit(127);
      }
      close(fd);
      if (pid < 0) {
        fail(std::string("floor: fork: ") + std::strerror(errno));
        break;
      }
      const int pfd = pidfd_open(pid);
      current_ = pid;
      pollfd p[2] = {{pfd, POLLIN, 0}, {stop_fd_, POLLIN, 0}};
      while (poll(p, 2, -1) < 0 && errno == EINTR) {
      }
      if (p[1].revents) kill(pid, SIGKILL);
      int st;
      waitpid(pid, &st, 0);
      close(pfd);
    }
    close(devnull);
  }

  std::string netns_, sock_, port_;
  int stop_fd_ = -1;
  std::atomic<bool> stop_{false};
  std::atomic<pid_t> current_{0};
  std::mutex m_;
  std::string error_;
  std::thread th_;
};

// Waits (from inside the namespace) until the port accepts and `n` CONNECTED
// events have arrived.
void wait_ready(ConnectedWatcher& w, size_t n, const sockaddr_in& addr, const std::function<std::string()>& why) {
  const uint64_t deadline = monotonic_us() + 20'000'000;
  while (!port_listening(addr)) {
    if (monotonic_us() > deadline) die("passt never accepted on the port: " + why());
    std::this_thread::sleep_for(5ms);
  }
  if (!w.wait(n, deadline)) die("QEMU reported no NETDEV_STREAM_CONNECTED: " + why());
}

std::vector<Sample> run_floor(int kills, int port) {
  Sandbox sb(port);
  sb.start_qemu();
  ConnectedWatcher watcher(sb.q2());
  test::ScopedNetnsEnter in(sb.ns.name());
  if (!in.ok()) die("cannot enter " + sb.ns.name());
  std::vector<Sample> out;
  {
    FloorSupervisor sup(sb.ns.name(), sb.sock(), port);
    auto why = [&] { return "floor supervisor: " + sup.error(); };
    wait_ready(watcher, 1, sb.addr, why);
    uint64_t recovered = monotonic_us();
    pid_t last = 0;
    for (int i = 0; i < kills; ++i) {
      sleep_until_us(recovered + kMinRunUs);
      check_interrupted();
      const pid_t pid = sup.current();
      if (pid <= 0 || pid == last) die("floor: no new passt to kill: " + why());
      const size_t before = watcher.count();
      try {
        out.push_back(kill_and_measure(pid, watcher, before, sb.addr));
      } catch (const Fatal& e) {
        die(std::string(e.what()) + " (" + why() + ")");
      }
      recovered = monotonic_us();
      last = pid;
    }
    sleep_until_us(recovered + 100'000);
    sb.expect_one_passt(sup.current());
    if (!port_connects(sb.addr)) die("floor: the last passt does not accept a connection on the port");
  }
  return out;
}

// ---------------------------------------------------------------- relinkd

json passt_binding(const std::string& sock) {
  auto r = ctl::control_request(sock, {{"command", "status"}}, 2000);
  if (!r || !r->value("ok", false)) return nullptr;
  const json& st = (*r)["result"];
  for (const auto& vm : st.value("vms", json::array()))
    for (const auto& b : vm.value("bindings", json::array()))
      if (b.value("kind", "") == "passt") return b;
  return nullptr;
}

struct DaemonResult {
  std::vector<Sample> samples;
  std::vector<double> self;  // relinkd's own last_recovery_ms per kill
};

DaemonResult run_daemon(int kills, int port) {
  Sandbox sb(port);
  sb.start_qemu();
  ConnectedWatcher watcher(sb.q2());
  const std::string ctl = sb.dir + "/control.sock", log = sb.dir + "/relinkd.log";
  const char* level = getenv("RELINK_BENCH_LOG");
  std::ofstream(sb.dir + "/relinkd.toml")
      << "[daemon]\ncontrol_socket = \"" << ctl << "\"\nstate_dir = \"" << sb.dir << "/state\"\nnode_dir = \"" << sb.dir
      << "/dev\"\npasst = \"" << g_passt << "\"\nlog_level = \"" << (level ? level : "info")
      << "\"\n\n[[vm]]\nname = \"vm0\"\nqmp = \"" << sb.q1() << "\"\n\n[[vm.passt]]\nnetdev = \"net1\"\n"
      << "mode = \"stream-server\"\nsocket = \"" << sb.sock() << "\"\nargs = [\"-t\", \"" << port << "\"]\n";
  test::Child relinkd({test::binary_dir() + "/relinkd", "--config", sb.dir + "/relinkd.toml"},
                      test::Child::Options{sb.ns.name(), log, {}});
  auto why = [&] { return "relinkd log:\n" + tail(test::read_file(log), 30); };
  auto keep_log = [&] {
    if (level)
      std::filesystem::copy_file(log, "/tmp/relink-passt-bench-relinkd.log",
                                 std::filesystem::copy_options::overwrite_existing);
  };

  test::ScopedNetnsEnter in(sb.ns.name());
  if (!in.ok()) die("cannot enter " + sb.ns.name());
  json b;
  // Running at `gen` or later, with a pid: the state relinkd is in when a kill may come.
  auto running_after = [&](uint64_t gen) {
    return test::wait_until(
        [&] {
          b = passt_binding(ctl);
          return b.is_object() && b.value("state", "") == "running" && b["pid"].is_number() &&
                 b.value("generation", uint64_t{0}) > gen;
        },
        10s, 5ms);
  };
  if (!running_after(0)) die("relinkd did not start passt: " + why());
  wait_ready(watcher, 1, sb.addr, why);
  uint64_t recovered = monotonic_us();
  DaemonResult out;
  for (int i = 0; i < kills; ++i) {
    const uint64_t gen = b.value("generation", uint64_t{0});
    const pid_t pid = b["pid"].get<pid_t>();
    sleep_until_us(recovered + kMinRunUs);
    check_interrupted();
    const size_t before = watcher.count();
    try {
      out.samples.push_back(kill_and_measure(pid, watcher, before, sb.addr));
    } catch (const Fatal& e) {
      keep_log();
      die(std::string(e.what()) + "\n" + why());
    }
    recovered = monotonic_us();
    // After the measurement: relinkd's own figure for this restart.
    if (!running_after(gen)) {
      keep_log();
      die("relinkd shows no running passt after kill " + std::to_string(i + 1) + ": " + why());
    }
    if (b["last_recovery_ms"].is_number()) out.self.push_back(b["last_recovery_ms"].get<double>());
  }
  sleep_until_us(recovered + 100'000);
  b = passt_binding(ctl);
  sb.expect_one_passt(b.is_object() && b["pid"].is_number() ? b["pid"].get<pid_t>() : 0);
  if (!port_connects(sb.addr)) die("relinkd: the last passt does not accept a connection on the port");
  keep_log();
  return out;
}

// ---------------------------------------------------------------- report

std::vector<double> col(const std::vector<Sample>& s, double Sample::*f) {
  std::vector<double> v;
  for (const auto& x : s) v.push_back(x.*f);
  return v;
}

constexpr const char* kUsage =
    "usage: passt_bench [--kills N] [--port P] [--only floor|relinkd] [--passt PATH] [--help]";

void print_help() {
  std::printf(
      "%s   (run as root; the measurement is not part of ctest)\n"
      "\n"
      "Measures how long a VM behind passt (stream-server: QEMU 7.2 listens on\n"
      "-netdev stream,server=on, relinkd connects and runs passt --fd) is cut off when\n"
      "passt is killed: from the SIGKILL (sent by this program) until BOTH a port passt\n"
      "forwards (-t P) listens on the host again AND QEMU has reported one more\n"
      "NETDEV_STREAM_CONNECTED. The port is looked at every %d us once the killed passt\n"
      "is gone. QEMU runs stopped (-S, TCG) in a throwaway namespace (relink-pbench-*).\n"
      "\n"
      "Next to relinkd it measures a floor in the same run: this program connects to\n"
      "QEMU's socket, forks and execs passt -f --fd 3 -t P as nobody, waits on its pidfd\n"
      "and starts over, nothing else. Each kill comes at least %.1f s after that passt\n"
      "started (relinkd counts a passt that dies sooner as a failed start and backs off).\n"
      "Reported: p50, p90, p99 and max for each, split into old passt gone, CONNECTED and\n"
      "port listening; relinkd's own last_recovery_ms; the ratio relinkd/floor and the\n"
      "goals (p50 <= 2x the floor, p50 <= 10 ms, p99 <= 25 ms).\n"
      "\n"
      "A run with the defaults (100 kills each) takes about 4 minutes: about 1.2 s per kill,\n"
      "for the floor and for relinkd. Everything it creates (the namespace, QEMU, passt,\n"
      "relinkd, /tmp/relink-pbench-*) is removed on exit, on failure and on SIGINT/SIGTERM.\n"
      "Do not run it while scripts/test.sh runs (that removes relink-* namespaces and kills\n"
      "passt -f --fd 3 processes).\n"
      "\n"
      "Options:\n"
      "  --kills N               kills for the floor and for relinkd (default 100)\n"
      "  --port P                the port passt forwards (default 10001)\n"
      "  --only floor|relinkd    measure one side only\n"
      "  --passt PATH            the passt binary (default /usr/bin/passt)\n"
      "  -h, --help              this text\n"
      "Environment: RELINK_BENCH_LOG=LEVEL runs relinkd at that log level (default info) and\n"
      "keeps its log as /tmp/relink-passt-bench-relinkd.log.\n",
      kUsage, static_cast<int>(kProbeStepUs), static_cast<double>(kMinRunUs) / 1e6);
}

void row(const char* name, const std::vector<double>& v) {
  std::printf("  %-38s n=%-4zu p50 %7.3f  p90 %7.3f  p99 %7.3f  max %7.3f ms\n", name, v.size(), pct(v, 50),
              pct(v, 90), pct(v, 99), v.empty() ? 0 : *std::max_element(v.begin(), v.end()));
}

}  // namespace

int run(int argc, char** argv);

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const Fatal& e) {
    std::cerr << "passt_bench: " << e.what() << "\n";
    return 1;
  }
}

int run(int argc, char** argv) {
  int kills = 100, port = 10001;
  std::string only;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      print_help();
      return 0;
    }
    if (i + 1 >= argc) die(kUsage);
    if (a == "--kills") kills = std::atoi(argv[++i]);
    else if (a == "--port") port = std::atoi(argv[++i]);
    else if (a == "--only") only = argv[++i];
    else if (a == "--passt") g_passt = argv[++i];
    else die(kUsage);
  }
  if (kills < 1 || port < 1 || port > 65535 || (!only.empty() && only != "floor" && only != "relinkd"))
    die(kUsage);
  if (!test::is_root()) die("needs root (namespaces, QEMU, passt as nobody); see --help");
  if (g_passt.empty() || g_passt[0] != '/' || access(g_passt.c_str(), X_OK) != 0)
    die("--passt: not an executable absolute path: " + g_passt);
  // A passt killed by us must not take this process down with a SIGPIPE.
  signal(SIGPIPE, SIG_IGN);
  struct sigaction sa {};
  sa.sa_handler = on_interrupt;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);

  std::printf("passt_bench: %d kills of passt (stream-server, -t %d), each >= %.1f s after its start\n", kills, port,
              static_cast<double>(kMinRunUs) / 1e6);
  std::fflush(stdout);
  std::vector<Sample> floor;
  DaemonResult d;
  if (only.empty() || only == "floor") floor = run_floor(kills, port);
  if (only.empty() || only == "relinkd") d = run_daemon(kills, port);

  std::printf("\npasst SIGKILL -> port %d accepts again AND QEMU 7.2 reported NETDEV_STREAM_CONNECTED\n", port);
  std::printf("(port: a listening socket on it, looked for every %d us once the killed passt is gone)\n",
              static_cast<int>(kProbeStepUs));
  if (!floor.empty()) row("floor (connect + fork/exec passt)", col(floor, &Sample::total_ms));
  if (!d.samples.empty()) row("relinkd", col(d.samples, &Sample::total_ms));
  std::printf("\nparts (each from the kill)\n");
  if (!floor.empty()) {
    row("floor: old passt gone (pidfd)", col(floor, &Sample::exit_ms));
    row("floor: NETDEV_STREAM_CONNECTED", col(floor, &Sample::qmp_ms));
    row("floor: port accepts", col(floor, &Sample::port_ms));
  }
  if (!d.samples.empty()) {
    row("relinkd: old passt gone (pidfd)", col(d.samples, &Sample::exit_ms));
    row("relinkd: NETDEV_STREAM_CONNECTED", col(d.samples, &Sample::qmp_ms));
    row("relinkd: port accepts", col(d.samples, &Sample::port_ms));
    row("relinkd self-reported last_recovery_ms", d.self);
    std::printf("  (last_recovery_ms: relinkd's exit seen -> CONNECTED handled, in whole ms)\n");
  }
  if (floor.empty() || d.samples.empty()) return 0;

  const double p50 = pct(col(d.samples, &Sample::total_ms), 50), p99 = pct(col(d.samples, &Sample::total_ms), 99);
  const double fp50 = pct(col(floor, &Sample::total_ms), 50);
  const double ratio = p50 / fp50;
  std::printf("\nratios and goals\n");
  std::printf("  p50 relinkd / p50 floor   %5.2fx      (goal <= 2x)     %s\n", ratio, ratio <= 2 ? "PASS" : "MISS");
  std::printf("  p50 relinkd             %7.3f ms    (goal <= 10 ms)  %s\n", p50, p50 <= 10 ? "PASS" : "MISS");
  std::printf("  p99 relinkd             %7.3f ms    (goal <= 25 ms)  %s\n", p99, p99 <= 25 ? "PASS" : "MISS");
  std::printf("  libvirt reconnect timer >= %.0f ms: relinkd p50 is %.0fx faster\n", kLibvirtMs, kLibvirtMs / p50);
  return 0;
}
