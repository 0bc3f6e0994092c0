// SPDX-License-Identifier: GPL-2.0-or-later
// Checks that a QMP socket and the process behind it are the VM's QEMU before fds go to it.
#include "qemu/qmp_peer.h"

#include <fcntl.h>
#include <fnmatch.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "util/untrusted.h"
#include "util/unique_fd.h"

#ifndef SO_PEERPIDFD
#define SO_PEERPIDFD 77  // Linux 6.5; Debian 12's headers predate it
#endif

namespace relink::qemu {
namespace {

std::string octal(mode_t mode) {
  std::ostringstream s;
  s << std::oct << (mode & 07777);
  return s.str();
}

PathFacts facts_of(const std::string& path, bool follow) {
  PathFacts f;
  f.path = path;
  struct stat st {};
  if ((follow ? stat(path.c_str(), &st) : lstat(path.c_str(), &st)) != 0) return f;
  f.exists = true;
  f.is_dir = S_ISDIR(st.st_mode);
  f.is_socket = S_ISSOCK(st.st_mode);
  f.uid = st.st_uid;
  f.mode = st.st_mode;
  return f;
}

std::string parent_of(const std::string& path) {
  std::string p = std::filesystem::path(path).parent_path().string();
  return p.empty() ? "." : p;
}

// The pid a pidfd refers to now: -1 once that process has exited, and so
// also when its number has been reused since.
long pidfd_pid(int pidfd) {
  std::ifstream in("/proc/self/fdinfo/" + std::to_string(pidfd));
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("Pid:", 0) == 0) return std::strtol(line.c_str() + 4, nullptr, 10);
  return -1;
}

}  // namespace

std::optional<std::string> judge_qmp_peer(const QmpPeerFacts& f, const std::vector<std::string>& qemu_binaries) {
  const std::string where = "QMP socket " + untrusted::safe_text(f.configured);
  if (!f.socket.exists || !f.socket.is_socket) return where + " is not a socket";
  if (f.uid != 0 && f.uid != f.socket.uid)
    return where + " is owned by uid " + std::to_string(f.socket.uid) + " but the process listening on it runs as uid " +
           std::to_string(f.uid) + ": refusing to pass it anything";
  for (const auto& d : f.dirs) {
    const std::string dir = untrusted::safe_text(d.path);
    if (!d.exists || !d.is_dir) return where + ": cannot check its directory " + dir;
    if (d.uid != 0 && d.uid != f.socket.uid)
      return where + ": its directory " + dir + " belongs to uid " + std::to_string(d.uid) +
             ", neither root nor the socket's owner (uid " + std::to_string(f.socket.uid) + ")";
    if (d.mode & (S_IWGRP | S_IWOTH))
      return where + ": its directory " + dir + " (mode " + octal(d.mode) +
             ") is writable by other users, so anyone could have put a socket there; keep QMP sockets in a "
             "directory only root or QEMU's user can write";
  }
  if (f.exe.empty() || !f.exe_stable)
    return where + ": cannot tell which program listens on it (pid " + std::to_string(f.pid) + ")";
  for (const auto& pattern : qemu_binaries)
    if (fnmatch(pattern.c_str(), f.exe.c_str(), 0) == 0) return std::nullopt;
  return where + ": the process listening on it (pid " + std::to_string(f.pid) + ") runs " +
         untrusted::safe_text(f.exe) + ", which is not QEMU ([daemon] qemu_binaries)";
}

QmpPeerFacts gather_qmp_peer(int fd, const std::string& path) {
  QmpPeerFacts f;
  f.configured = path;
  f.socket = facts_of(path, /*follow=*/true);
  f.dirs.push_back(facts_of(parent_of(path), true));
  if (PathFacts link = facts_of(path, false); link.exists && S_ISLNK(link.mode)) {
    char real[PATH_MAX];
    if (realpath(path.c_str(), real)) f.dirs.push_back(facts_of(parent_of(real), true));
    else f.dirs.push_back(PathFacts{"(target of " + path + ")"});
  }

  ucred cred{};
  socklen_t len = sizeof cred;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) return f;
  f.pid = cred.pid;
  f.uid = cred.uid;
  // A pidfd pins the peer: had it exited and its pid been reused while its
  // exe was read, the pidfd would say so.
  int pidfd = -1;
  len = sizeof pidfd;
  UniqueFd pin(getsockopt(fd, SOL_SOCKET, SO_PEERPIDFD, &pidfd, &len) == 0 ? pidfd : -1);
  std::error_code ec;
  std::string exe = std::filesystem::read_symlink("/proc/" + std::to_string(cred.pid) + "/exe", ec).string();
  if (ec) return f;
  constexpr std::string_view kDeleted = " (deleted)";  // the binary was upgraded under it
  if (exe.size() > kDeleted.size() && exe.ends_with(kDeleted)) exe.resize(exe.size() - kDeleted.size());
  f.exe = exe;
  if (pin) f.exe_stable = pidfd_pid(pin.get()) == cred.pid;
  return f;
}

Result<void> verify_qmp_peer(int fd, const std::string& path, const std::vector<std::string>& qemu_binaries) {
  if (auto why = judge_qmp_peer(gather_qmp_peer(fd, path), qemu_binaries)) return Error{EPERM, *why};
  return ok();
}

}  // namespace relink::qemu
