// SPDX-License-Identifier: GPL-2.0-or-later
// Helpers of the tests that load relinkd's control socket from outside
// (control_limits_test, control_robustness_test).
#pragma once

#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>

#include <algorithm>
#include <cstring>
#include <string>

#include "support/harness.h"

namespace relink::test {

inline sockaddr_un unix_addr(const std::string& path) {
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::strncpy(a.sun_path, path.c_str(), sizeof a.sun_path - 1);
  return a;
}

// The fds a process has open.
inline size_t open_fds(pid_t pid) {
  auto r = sh("ls /proc/" + std::to_string(pid) + "/fd | wc -l");
  return static_cast<size_t>(std::stoul(r.out.empty() ? "0" : r.out));
}

// Raises this test's own fd limit (root may) and puts it back afterwards.
class FdLimit {
 public:
  explicit FdLimit(rlim_t want) {
    getrlimit(RLIMIT_NOFILE, &saved_);
    rlimit rl = saved_;
    rl.rlim_max = std::max(rl.rlim_max, want);
    rl.rlim_cur = std::max(rl.rlim_cur, want);
    ok_ = setrlimit(RLIMIT_NOFILE, &rl) == 0;
  }
  ~FdLimit() {
    if (ok_) setrlimit(RLIMIT_NOFILE, &saved_);
  }
  FdLimit(const FdLimit&) = delete;
  FdLimit& operator=(const FdLimit&) = delete;
  bool ok() const { return ok_; }

 private:
  rlimit saved_{};
  bool ok_ = false;
};

}  // namespace relink::test
