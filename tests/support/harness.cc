// SPDX-License-Identifier: GPL-2.0-or-later
#include "support/harness.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <random>
#include <sstream>
#include <thread>

namespace relink::test {

ShResult sh(const std::string& cmd) {
  ShResult r;
  std::string full = cmd + " 2>&1";
  FILE* p = popen(full.c_str(), "re");
  if (!p) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  int st = pclose(p);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

std::string sh_ok(const std::string& cmd) {
  auto r = sh(cmd);
  if (r.status != 0) ADD_FAILURE() << "command failed (" << r.status << "): " << cmd << "\n" << r.out;
  return r.out;
}

bool is_root() { return geteuid() == 0; }

std::string random_suffix(size_t n) {
  static std::mt19937_64 rng{std::random_device{}()};
  static const char* chars = "abcdefghijklmnopqrstuvwxyz0123456789";
  std::string s;
  for (size_t i = 0; i < n; ++i) s += chars[rng() % 36];
  return s;
}

bool kernel_supports_link_kind(const std::string& kind) {
  Netns ns("probe");
  std::string args = kind == "vlan" ? "link add pr0 type veth peer name pr1 && ip -n " + ns.name() +
                                          " link add link pr0 name pr0.5 type vlan id 5"
                                    : "link add pr0 type " + kind;
  return sh("ip -n " + ns.name() + " " + args).status == 0;
}

bool wait_until(const std::function<bool()>& pred, std::chrono::milliseconds timeout,
                std::chrono::milliseconds step) {
  auto end = std::chrono::steady_clock::now() + timeout;
  while (true) {
    if (pred()) return true;
    if (std::chrono::steady_clock::now() >= end) return false;
    std::this_thread::sleep_for(step);
  }
}

Netns::Netns(const std::string& tag) : name_("relink-" + tag + "-" + random_suffix()) {
  auto r = sh("ip netns add " + name_ + " && ip -n " + name_ + " link set lo up");
  if (r.status != 0) ADD_FAILURE() << "ip netns add " << name_ << ": " << r.out;
}

Netns::~Netns() {
  // Kill whatever still runs in the namespace, then remove it.
  sh("for p in $(ip netns pids " + name_ + " 2>/dev/null); do kill -9 $p; done; ip netns del " +
     name_ + " 2>/dev/null");
}

ShResult Netns::run(const std::string& cmd) const {
  std::string quoted;
  for (char c : cmd) {
    if (c == '\'') quoted += "'\\''";
    else quoted += c;
  }
  return sh("ip netns exec " + name_ + " sh -c '" + quoted + "'");
}

std::string Netns::run_ok(const std::string& cmd) const {
  auto r = run(cmd);
  if (r.status != 0) ADD_FAILURE() << "in " << name_ << ": " << cmd << "\n" << r.out;
  return r.out;
}

std::string Netns::ip(const std::string& args) const { return sh_ok("ip -n " + name_ + " " + args); }

int Netns::ifindex(const std::string& ifname) const {
  auto r = run("cat /sys/class/net/" + ifname + "/ifindex");
  if (r.status != 0) return 0;
  return std::atoi(r.out.c_str());
}

ScopedNetnsEnter::ScopedNetnsEnter(const std::string& netns_name) {
  saved_ = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
  int fd = open(("/run/netns/" + netns_name).c_str(), O_RDONLY | O_CLOEXEC);
  if (saved_ >= 0 && fd >= 0 && setns(fd, CLONE_NEWNET) == 0) ok_ = true;
  if (fd >= 0) close(fd);
}

ScopedNetnsEnter::~ScopedNetnsEnter() {
  if (saved_ >= 0) {
    if (ok_) (void)setns(saved_, CLONE_NEWNET);
    close(saved_);
  }
}

Child::Child(const std::vector<std::string>& argv_in, const Options& opts) {
  // `ip netns exec` (which execs, it does not fork) also remounts /sys for the
  // namespace, so the child sees its own interfaces in sysfs.
  std::vector<std::string> argv;
  if (!opts.netns.empty()) argv = {"ip", "netns", "exec", opts.netns};
  argv.insert(argv.end(), argv_in.begin(), argv_in.end());
  int logfd = open(opts.log_path.empty() ? "/dev/null" : opts.log_path.c_str(),
                   O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  std::vector<char*> cargv;
  for (auto& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
  cargv.push_back(nullptr);
  pid_t parent = getpid();
  pid_ = fork();
  if (pid_ == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);
    setpgid(0, 0);
    int devnull = open("/dev/null", O_RDONLY);
    dup2(devnull, 0);
    if (logfd >= 0) {
      dup2(logfd, 1);
      dup2(logfd, 2);
    }
    // Like a service manager, hand the child nothing but stdio and keep_fds:
    // whatever the test process holds without CLOEXEC must not leak in.
    std::vector<int> keep = opts.keep_fds;
    std::sort(keep.begin(), keep.end());
    unsigned from = 3;
    for (int fd : keep) {
      if (fd < 3) continue;
      if (static_cast<unsigned>(fd) > from) close_range(from, static_cast<unsigned>(fd) - 1, 0);
      from = static_cast<unsigned>(fd) + 1;
      int flags = fcntl(fd, F_GETFD);
      if (flags >= 0) fcntl(fd, F_SETFD, flags & ~FD_CLOEXEC);
    }
    close_range(from, ~0U, 0);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    execvp(cargv[0], cargv.data());
    _exit(127);
  }
  if (logfd >= 0) close(logfd);
}

Child::~Child() { kill_now(); }

Child::Child(Child&& o) noexcept : pid_(std::exchange(o.pid_, -1)), status_(o.status_) {}
Child& Child::operator=(Child&& o) noexcept {
  if (this != &o) {
    kill_now();
    pid_ = std::exchange(o.pid_, -1);
    status_ = o.status_;
  }
  return *this;
}

bool Child::running() {
  if (pid_ <= 0) return false;
  int st;
  pid_t r = waitpid(pid_, &st, WNOHANG);
  if (r == pid_) {
    status_ = st;
    pid_ = -1;
    return false;
  }
  return true;
}

int Child::wait(std::chrono::milliseconds timeout) {
  if (pid_ <= 0) return status_;
  if (wait_until([&] { return !running(); }, timeout, std::chrono::milliseconds(2))) return status_;
  return -1;
}

int Child::stop(int sig, std::chrono::milliseconds timeout) {
  if (pid_ <= 0) return status_;
  ::kill(pid_, sig);
  return wait(timeout);
}

void Child::kill_now() {
  if (pid_ > 0) {
    ::kill(-pid_, SIGKILL);
    ::kill(pid_, SIGKILL);
    int st;
    waitpid(pid_, &st, 0);
    status_ = st;
    pid_ = -1;
  }
}

std::string read_file(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::string binary_dir() { return RELINK_BINARY_DIR; }
std::string source_dir() { return RELINK_SOURCE_DIR; }

}  // namespace relink::test
