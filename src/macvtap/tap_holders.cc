// SPDX-License-Identifier: GPL-2.0-or-later
// Which processes hold a macvtap's queue, checked with TUNGETIFF on a pidfd_getfd copy of their fd.
#include "macvtap/tap_holders.h"

#include <dirent.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <limits.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <memory>
#include <optional>
#include <string_view>

#include "util/unique_fd.h"

namespace relink::macvtap {
namespace {

std::unique_ptr<DIR, int (*)(DIR*)> open_dir(const std::string& path) {
  return {opendir(path.c_str()), closedir};
}

std::optional<int> number(const char* s) {
  int v = 0;
  const char* end = s + std::strlen(s);
  auto [p, ec] = std::from_chars(s, end, v);
  if (ec != std::errc() || p != end || v < 0) return std::nullopt;
  return v;
}

}  // namespace

Liveness fd_liveness_by_node(pid_t pid, int fd) {
  const std::string path = "/proc/" + std::to_string(pid) + "/fd/" + std::to_string(fd);
  char target[PATH_MAX];
  const ssize_t n = readlink(path.c_str(), target, sizeof target - 1);
  if (n <= 0) return Liveness::Unknown;
  std::string t(target, static_cast<size_t>(n));
  constexpr std::string_view kDeleted = " (deleted)";
  const bool deleted = t.size() > kDeleted.size() && t.compare(t.size() - kDeleted.size(), kDeleted.size(), kDeleted) == 0;
  if (deleted) t.resize(t.size() - kDeleted.size());
  if (t.rfind("/dev/tap", 0) != 0 || !number(t.c_str() + 8)) return Liveness::Unknown;
  if (deleted) return Liveness::Dead;
  struct stat held {}, node {};
  if (stat(path.c_str(), &held) != 0 || stat(t.c_str(), &node) != 0) return Liveness::Unknown;
  return held.st_dev == node.st_dev && held.st_ino == node.st_ino ? Liveness::Live : Liveness::Unknown;
}

Liveness fd_liveness(pid_t pid, int fd, const std::string& ifname) {
  // pidfd_open and pidfd_getfd set O_CLOEXEC on what they return.
  UniqueFd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
  if (!pidfd) return Liveness::Unknown;
  UniqueFd copy(static_cast<int>(::syscall(SYS_pidfd_getfd, pidfd.get(), fd, 0)));
  if (!copy) return errno == EPERM || errno == ENOSYS ? fd_liveness_by_node(pid, fd) : Liveness::Unknown;
  struct stat st {};
  if (::fstat(copy.get(), &st) != 0 || !S_ISCHR(st.st_mode)) return Liveness::Dead;
  ifreq ifr {};
  if (::ioctl(copy.get(), TUNGETIFF, &ifr) != 0) return errno == ENOLINK ? Liveness::Dead : Liveness::Unknown;
  ifr.ifr_name[IFNAMSIZ - 1] = '\0';
  return ifname.empty() || ifname == ifr.ifr_name ? Liveness::Live : Liveness::Dead;
}

std::vector<int> fds_of_device(pid_t pid, dev_t dev) {
  std::vector<int> out;
  if (pid <= 0) return out;
  const std::string dir = "/proc/" + std::to_string(pid) + "/fd";
  auto d = open_dir(dir);
  if (!d) return out;
  while (dirent* e = readdir(d.get())) {
    auto fd = number(e->d_name);
    if (!fd) continue;
    struct stat st {};
    if (stat((dir + "/" + e->d_name).c_str(), &st) == 0 && S_ISCHR(st.st_mode) && st.st_rdev == dev)
      out.push_back(*fd);
  }
  return out;
}

bool holds_live(pid_t pid, dev_t dev, const std::string& ifname) {
  for (int fd : fds_of_device(pid, dev))
    if (fd_liveness(pid, fd, ifname) != Liveness::Dead) return true;
  return false;
}

bool anyone_holds_live(dev_t dev, const std::string& ifname) {
  auto d = open_dir("/proc");
  if (!d) return true;  // cannot tell: held
  while (dirent* e = readdir(d.get())) {
    auto pid = number(e->d_name);
    if (pid && *pid > 0 && holds_live(*pid, dev, ifname)) return true;
  }
  return false;
}

}  // namespace relink::macvtap
