// SPDX-License-Identifier: GPL-2.0-or-later
// The control socket under abuse, against the real relinkd (no VM needed):
// thousands of idle connections, an fd limit so low that accept() fails,
// connections that never send their request, and requests that are not
// what they should be. relinkctl status must keep answering, relinkd must
// not spin, and its log must not fill up.
#include <fcntl.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <iostream>
#include <sstream>
#include <thread>

#include "control_socket_util.h"
#include "daemon_env.h"
#include "util/unique_fd.h"

namespace relink::test {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// utime + stime of a process, in seconds, from /proc/PID/stat.
double cpu_seconds(pid_t pid) {
  const std::string s = read_file("/proc/" + std::to_string(pid) + "/stat");
  const size_t rp = s.rfind(')');
  if (rp == std::string::npos) return -1;
  std::istringstream in(s.substr(rp + 2));
  std::vector<std::string> f;
  for (std::string w; in >> w;) f.push_back(w);
  if (f.size() < 13) return -1;
  // Fields 14 and 15 of proc(5); f[0] is field 3 (state).
  return static_cast<double>(std::stoull(f[11]) + std::stoull(f[12])) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

size_t count_lines_with(const std::string& text, const std::string& word) {
  size_t n = 0;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);)
    if (line.find(word) != std::string::npos) ++n;
  return n;
}

// Connects `n` sockets without sending a byte and keeps them. A full listen
// queue (EAGAIN) means relinkd has not taken the earlier ones yet: retry.
struct Flood {
  std::vector<UniqueFd> fds;
  size_t queue_full = 0;
  double seconds = 0;
};
Flood flood(const std::string& path, size_t n, std::chrono::seconds budget) {
  Flood f;
  const sockaddr_un addr = unix_addr(path);
  const auto t0 = Clock::now();
  while (f.fds.size() < n && Clock::now() - t0 < budget) {
    UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!fd) {
      ADD_FAILURE() << "socket: " << std::strerror(errno);
      break;
    }
    if (connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0) {
      f.fds.push_back(std::move(fd));
      continue;
    }
    if (errno != EAGAIN) {
      ADD_FAILURE() << "connect: " << std::strerror(errno);
      break;
    }
    ++f.queue_full;
    std::this_thread::sleep_for(100us);
  }
  f.seconds = seconds_since(t0);
  return f;
}

// Sends `bytes` on a fresh connection and returns the reply line ("" when
// relinkd closed without one).
std::string exchange(const std::string& path, const std::string& bytes) {
  const sockaddr_un addr = unix_addr(path);
  UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  timeval tv{10, 0};
  setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  if (connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) < 0) return "";
  size_t off = 0;
  while (off < bytes.size()) {
    ssize_t n = send(fd.get(), bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL);
    if (n <= 0) break;  // relinkd may answer and close before reading it all
    off += static_cast<size_t>(n);
  }
  std::string in;
  char buf[4096];
  while (in.find('\n') == std::string::npos) {
    ssize_t n = recv(fd.get(), buf, sizeof buf, 0);
    if (n <= 0) break;
    in.append(buf, static_cast<size_t>(n));
  }
  return in.substr(0, in.find('\n'));
}

class ControlLimits : public ::testing::Test {
 protected:
  void SetUp() override { RELINK_REQUIRE_ROOT(); }

  // relinkd with no VM at all, optionally under `prlimit --nofile=N:N`.
  void start(const std::string& nofile = "") {
    env.write_config({});
    if (nofile.empty())
      env.start_relinkd();
    else
      env.start_relinkd({"prlimit", "--nofile=" + nofile});
    ASSERT_TRUE(env.relinkd().running()) << read_file(env.log_path());
    ASSERT_TRUE(env.status().is_object()) << env.explain();
  }
  std::string limits() {
    auto r = sh("grep 'Max open files' /proc/" + std::to_string(env.relinkd().pid()) + "/limits");
    return r.out;
  }
  // `relinkctl status` until it answers or `budget` passes; seconds taken (-1: never).
  double time_status(std::chrono::seconds budget) {
    const auto t0 = Clock::now();
    while (Clock::now() - t0 < budget) {
      auto r = sh(relinkctl_bin() + " --socket " + env.control() + " status --json 2>&1");
      if (r.status == 0) return seconds_since(t0);
      last_status_error = r.out;
    }
    return -1;
  }
  // Floods the socket, then checks that status answers and that relinkd
  // stays calm while the connections are held.
  void flood_then_status(size_t n, double status_budget_s, const std::string& what) {
    FdLimit mine(n + 512);
    ASSERT_TRUE(mine.ok()) << "cannot raise the test's own fd limit";
    const pid_t pid = env.relinkd().pid();
    const double cpu0 = cpu_seconds(pid);
    Flood f = flood(env.control(), n, 30s);
    ASSERT_EQ(f.fds.size(), n) << "only " << f.fds.size() << " connections in 30 s\n" << env.explain();
    const double status_s = time_status(20s);
    ASSERT_GE(status_s, 0) << "status never answered: " << last_status_error << "\n" << env.explain();
    const double cpu1 = cpu_seconds(pid);
    std::this_thread::sleep_for(3s);
    const double cpu2 = cpu_seconds(pid);
    const std::string log = read_file(env.log_path());
    const size_t accept_lines = count_lines_with(log, "accept");
    std::cout << "[ figures  ] " << what << ": " << n << " connections in " << f.seconds << " s (" << f.queue_full
              << " connects found the queue full); status answered after " << status_s << " s; relinkd CPU "
              << (cpu1 - cpu0) << " s during flood+status, " << (cpu2 - cpu1) << " s in the 3 s after; log "
              << log.size() << " bytes, " << accept_lines << " lines with 'accept'\n";
    EXPECT_LT(status_s, status_budget_s);
    EXPECT_LT(cpu2 - cpu1, 0.3) << "relinkd spins while the connections are held";
    EXPECT_LT(accept_lines, 50u) << DaemonEnv::tail(log, 3000);
    EXPECT_LT(log.size(), 64u * 1024) << DaemonEnv::tail(log, 3000);
    EXPECT_TRUE(env.relinkd().running());
    if (getenv("RELINK_SHOW_LOG")) std::cout << log;
  }

  DaemonEnv env;
  std::string last_status_error;
};

TEST_F(ControlLimits, TwoThousandIdleConnectionsUnderSystemdsFdLimit) {
  start("1024:1024");
  ASSERT_NE(limits().find("1024                 1024"), std::string::npos) << limits();
  flood_then_status(2000, 3.0, "nofile 1024");
  // The cap kept relinkd far from its fd limit.
  EXPECT_LT(open_fds(env.relinkd().pid()), 200u);
}

TEST_F(ControlLimits, AcceptOutOfFdsDoesNotSpin) {
  start("48:48");
  flood_then_status(2000, 15.0, "nofile 48");
  const std::string log = read_file(env.log_path());
  EXPECT_NE(log.find("Too many open files"), std::string::npos)
      << "the fd limit was never reached: the test proves nothing\n"
      << DaemonEnv::tail(log, 3000);
}

// So few fds that relinkd can hold only a couple of connections: each
// accept must free one of its own, and status still gets through. (15:
// relinkd's own fds, its state_dir lock included, take 13.)
TEST_F(ControlLimits, AcceptOutOfFdsWithRoomForTwoConnections) {
  start("15:15");
  flood_then_status(2000, 15.0, "nofile 15");
  EXPECT_NE(read_file(env.log_path()).find("Too many open files"), std::string::npos);
}

TEST_F(ControlLimits, IdleConnectionsAreClosed) {
  start();
  const pid_t pid = env.relinkd().pid();
  const size_t fds_before = open_fds(pid);
  const sockaddr_un addr = unix_addr(env.control());
  std::vector<UniqueFd> conns;
  for (int i = 0; i < 3; ++i) {
    UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    ASSERT_EQ(connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr), 0);
    conns.push_back(std::move(fd));
  }
  // One says nothing, one sends half a request, one sends its line slowly.
  const std::string half = "{\"command\": \"sta";
  ASSERT_EQ(send(conns[1].get(), half.data(), half.size(), MSG_NOSIGNAL), static_cast<ssize_t>(half.size()));
  const auto t0 = Clock::now();
  std::vector<double> closed_after(conns.size(), -1);
  while (seconds_since(t0) < 10) {
    for (size_t i = 0; i < conns.size(); ++i) {
      if (closed_after[i] >= 0) continue;
      if (i == 2) (void)!send(conns[i].get(), " ", 1, MSG_NOSIGNAL | MSG_DONTWAIT);  // never a newline
      pollfd p{conns[i].get(), POLLIN, 0};
      if (poll(&p, 1, 0) == 1) {
        char c;
        if (recv(conns[i].get(), &c, 1, MSG_DONTWAIT) <= 0) closed_after[i] = seconds_since(t0);
      }
    }
    if (std::all_of(closed_after.begin(), closed_after.end(), [](double s) { return s >= 0; })) break;
    std::this_thread::sleep_for(50ms);
  }
  std::cout << "[ figures  ] idle connections closed after " << closed_after[0] << ", " << closed_after[1] << ", "
            << closed_after[2] << " s\n";
  for (double s : closed_after) {
    EXPECT_GE(s, 4.5) << "closed before the idle timeout";
    EXPECT_LE(s, 7.0) << "not closed within the idle timeout (-1: never)";
  }
  // Nothing left behind once they are gone.
  EXPECT_TRUE(wait_until([&] { return open_fds(pid) <= fds_before; }, 2s)) << open_fds(pid) << " > " << fds_before;
  EXPECT_TRUE(env.status().is_object()) << env.explain();
}

TEST_F(ControlLimits, BadRequestsGetAnErrorReply) {
  start();
  struct Case {
    std::string name;
    std::string bytes;
    std::string error_has;
  };
  const std::vector<Case> cases = {
      {"invalid UTF-8 in a string", "{\"command\":\"status\",\"vm\":\"\xff\xfe\"}\n", "invalid"},
      {"invalid UTF-8 in the command", "{\"command\":\"re\xc3\x28\"}\n", "invalid"},
      {"a lone surrogate escape", "{\"command\":\"\\udc80\"}\n", "invalid"},
      {"100000 '['", std::string(100000, '[') + "\n", ""},
      {"deep nesting in an object", "{\"command\":\"status\",\"x\":" + std::string(1000, '[') + "\n", "nested"},
      {"a command that is not a string", "{\"command\": 5}\n", ""},
      {"not an object", "[1,2,3]\n", "not a JSON object"},
      {"a huge number", "{\"command\":\"status\",\"n\":1e999999}\n", ""},
      {"NUL bytes", std::string("{\"command\":\"st\0atus\"}\n", 22), ""},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    const std::string line = exchange(env.control(), c.bytes);
    auto reply = nlohmann::json::parse(line, nullptr, false);
    ASSERT_TRUE(reply.is_object()) << "reply: '" << line << "'\n" << env.explain();
    EXPECT_EQ(reply.value("ok", true), false) << line;
    ASSERT_TRUE(reply["error"].is_string()) << line;
    EXPECT_NE(reply["error"].get<std::string>().find(c.error_has), std::string::npos) << line;
    ASSERT_TRUE(env.relinkd().running()) << env.explain();
  }
  // Over the size cap, with no newline: refused, never buffered without end.
  const std::string big = exchange(env.control(), std::string(200 * 1024, 'x'));
  if (!big.empty()) {
    EXPECT_NE(big.find("request over"), std::string::npos) << big;
  }
  EXPECT_TRUE(env.relinkd().running()) << env.explain();
  const auto t0 = Clock::now();
  EXPECT_TRUE(env.status().is_object()) << env.explain();
  std::cout << "[ figures  ] status after the bad requests: " << seconds_since(t0) << " s\n";
}

}  // namespace
}  // namespace relink::test
