// SPDX-License-Identifier: GPL-2.0-or-later
// Test harness: throwaway network namespaces and child processes that never
// outlive the test (PR_SET_PDEATHSIG, kill on destruction).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <string>
#include <vector>

namespace relink::test {

// Result of a shell command.
struct ShResult {
  int status = -1;  // exit code, or -1 if it did not exit normally
  std::string out;  // stdout and stderr, interleaved
};

// Runs `sh -c cmd` and waits. Never throws.
ShResult sh(const std::string& cmd);
// Runs `sh -c cmd`; fails the current test (ADD_FAILURE) if it does not exit 0.
std::string sh_ok(const std::string& cmd);

bool is_root();
// True when `ip link add ... type KIND` works in a scratch namespace.
bool kernel_supports_link_kind(const std::string& kind);

// Polls pred every `step` until it is true or `timeout` passes.
bool wait_until(const std::function<bool()>& pred, std::chrono::milliseconds timeout,
                std::chrono::milliseconds step = std::chrono::milliseconds(5));

// A named network namespace "relink-t-<random>", deleted (with every process
// left in it) on destruction.
class Netns {
 public:
  explicit Netns(const std::string& tag = "t");
  ~Netns();
  Netns(const Netns&) = delete;
  Netns& operator=(const Netns&) = delete;

  const std::string& name() const { return name_; }
  // Runs a shell command inside the namespace.
  ShResult run(const std::string& cmd) const;
  std::string run_ok(const std::string& cmd) const;
  // `ip -n NAME ARGS`
  std::string ip(const std::string& args) const;
  int ifindex(const std::string& ifname) const;  // 0 if absent

 private:
  std::string name_;
};

// Enters a namespace for the calling thread until destruction (for tests that
// open netlink sockets in-process).
class ScopedNetnsEnter {
 public:
  explicit ScopedNetnsEnter(const std::string& netns_name);
  ~ScopedNetnsEnter();
  ScopedNetnsEnter(const ScopedNetnsEnter&) = delete;
  ScopedNetnsEnter& operator=(const ScopedNetnsEnter&) = delete;
  bool ok() const { return ok_; }

 private:
  int saved_ = -1;
  bool ok_ = false;
};

// A child process (no shell), optionally inside a namespace, with stdout and
// stderr appended to a log file. Killed with SIGKILL on destruction, and by
// the kernel if the test process dies (PR_SET_PDEATHSIG).
class Child {
 public:
  struct Options {
    std::string netns;     // run under `ip netns exec NETNS` (empty: the test's own namespace)
    std::string log_path;  // empty: /dev/null
    std::vector<int> keep_fds;  // fds to inherit (others are closed)
  };
  Child() = default;
  Child(const std::vector<std::string>& argv, const Options& opts);
  ~Child();
  Child(Child&& o) noexcept;
  Child& operator=(Child&& o) noexcept;

  pid_t pid() const { return pid_; }
  bool running();
  // Sends sig and waits up to timeout for exit; returns exit status (wait
  // status) or -1 on timeout.
  int stop(int sig, std::chrono::milliseconds timeout);
  // Waits for exit; returns the raw wait status or -1 on timeout.
  int wait(std::chrono::milliseconds timeout);
  void kill_now();

 private:
  pid_t pid_ = -1;
  int status_ = -1;
};

std::string read_file(const std::string& path);
std::string binary_dir();   // CMake build directory
std::string source_dir();
std::string random_suffix(size_t n = 6);

}  // namespace relink::test

// Skips the test unless it runs as root (integration tests need root).
#define RELINK_REQUIRE_ROOT()                                                  \
  do {                                                                         \
    if (!::relink::test::is_root()) GTEST_SKIP() << "needs root (CAP_NET_ADMIN, namespaces)"; \
  } while (0)
