// SPDX-License-Identifier: GPL-2.0-or-later
// What every benchmark needs: percentiles, a fatal error that unwinds, and
// the floors' one QMP write (bytes, with an fd on the same sendmsg).
#pragma once

#include <sys/socket.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

namespace relink::bench {

// The p-th percentile (0..100) of v, nearest rank; 0 for an empty v.
inline double pct(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t i = static_cast<size_t>(p / 100.0 * static_cast<double>(v.size() - 1) + 0.5);
  return v[std::min(i, v.size() - 1)];
}

// Thrown, not exit(): the sandboxes' destructors must run to remove their
// namespaces, QEMUs, passts and relinkd.
struct Fatal : std::runtime_error {
  using std::runtime_error::runtime_error;
};
[[noreturn]] inline void die(const std::string& msg) { throw Fatal(msg); }

// Writes `bytes` to a blocking socket in one sendmsg, with `pass_fd` (if >= 0)
// as SCM_RIGHTS, as QMP's getfd wants it. True if all of it was written.
inline bool send_with_fd(int sock, const std::string& bytes, int pass_fd) {
  iovec iov{const_cast<char*>(bytes.data()), bytes.size()};
  msghdr m{};
  m.msg_iov = &iov;
  m.msg_iovlen = 1;
  alignas(cmsghdr) char ctl[CMSG_SPACE(sizeof(int))];
  if (pass_fd >= 0) {
    m.msg_control = ctl;
    m.msg_controllen = sizeof ctl;
    cmsghdr* c = CMSG_FIRSTHDR(&m);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    std::memcpy(CMSG_DATA(c), &pass_fd, sizeof(int));
  }
  return sendmsg(sock, &m, MSG_NOSIGNAL) == static_cast<ssize_t>(bytes.size());
}

}  // namespace relink::bench
