// SPDX-License-Identifier: GPL-2.0-or-later
// Checks that a QMP socket and the process behind it are the VM's QEMU before fds go to it.
#include "qemu/qmp_peer.h"

#include <fcntl.h>
#include <glob.h>
#include <limits.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <deque>
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

// Symlinks followed on one path at most, as the kernel's own MAXSYMLINKS.
constexpr int kMaxSymlinks = 40;

std::string octal(mode_t mode) {
  std::ostringstream s;
  s << std::oct << (mode & 07777);
  return s.str();
}

std::string join(const std::string& dir, const std::string& name) { return dir == "/" ? "/" + name : dir + "/" + name; }

std::string parent_of(const std::string& dir) {
  if (dir == "/") return "/";
  const size_t slash = dir.rfind('/');
  return slash == 0 ? "/" : dir.substr(0, slash);
}

std::deque<std::string> components(const std::string& path) {
  std::deque<std::string> out;
  std::stringstream in(path);
  for (std::string c; std::getline(in, c, '/');)
    if (!c.empty() && c != ".") out.push_back(c);
  return out;
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

std::string whose(uid_t uid, const QemuIdentity& q) {
  return uid == 0 ? "root" : "uid " + std::to_string(uid) + (uid == q.uid ? " (" + q.user + ")" : "");
}

}  // namespace

std::string judge_qmp_path(const std::vector<DirStep>& walk, const QemuIdentity& q) {
  const std::string allowed = q.uid == 0 ? "root" : "root or " + untrusted::safe_text(q.user) + " (uid " +
                                                        std::to_string(q.uid) + ", the VM's qemu_user)";
  for (const auto& d : walk) {
    const std::string dir = untrusted::safe_text(d.path);
    if (!d.exists || !d.is_dir) return "cannot check the directory " + dir;
    if (d.uid != 0 && d.uid != q.uid)
      return "the directory " + dir + " belongs to uid " + std::to_string(d.uid) + ", but every directory on the way "
             "to a QMP socket must be " + allowed + "'s: whoever owns it can replace the socket (chown it, or keep "
             "the socket elsewhere; set qemu_user if QEMU runs as that user)";
    if (!(d.mode & (S_IWGRP | S_IWOTH))) continue;
    const std::string next = untrusted::safe_text(join(d.path, d.next));
    if ((d.mode & S_ISVTX) && d.next_exists && (d.next_uid == 0 || d.next_uid == q.uid)) continue;
    if (d.mode & S_ISVTX)
      return "the directory " + dir + " (mode " + octal(d.mode) + ") is writable by other users; its sticky bit "
             "protects only what is " + allowed + "'s, and " + next +
             (d.next_exists ? " belongs to uid " + std::to_string(d.next_uid) : " does not exist yet") +
             ": keep the QMP socket in a directory of " + allowed + "'s inside it, or elsewhere";
    return "the directory " + dir + " (mode " + octal(d.mode) + ") is writable by other users, so anyone could "
           "have put a socket (or a directory of their own) there: chmod go-w " + dir +
           ", or keep QMP sockets in a directory only " + allowed + " can write";
  }
  return "";
}

std::optional<std::string> judge_qmp_peer(const QmpPeerFacts& f, const QemuIdentity& q) {
  const std::string where = "QMP socket " + untrusted::safe_text(f.configured);
  if (const std::string why = judge_qmp_path(f.walk, q); !why.empty()) return where + ": " + why;
  if (!f.walk_complete || !f.socket_is_socket) return where + " is not a socket";
  if (f.socket_uid != 0 && f.socket_uid != q.uid)
    return where + " belongs to uid " + std::to_string(f.socket_uid) + ", neither root nor the VM's qemu_user (" +
           untrusted::safe_text(q.user) + ")";
  if (f.uid != q.uid)
    return where + ": the process listening on it (pid " + std::to_string(f.pid) + ") runs as " + whose(f.uid, q) +
           ", but the VM's QEMU runs as " + untrusted::safe_text(q.user) + " (uid " + std::to_string(q.uid) +
           ", [[vm]] qemu_user): refusing to pass it anything";
  if (f.exe.empty() || !f.exe_id || !f.exe_stable)
    return where + ": cannot tell which program listens on it (pid " + std::to_string(f.pid) + ")";
  if (std::find(f.binaries.begin(), f.binaries.end(), *f.exe_id) != f.binaries.end()) return std::nullopt;
  return where + ": the process listening on it (pid " + std::to_string(f.pid) + ") runs " +
         untrusted::safe_text(f.exe) + ", which is not QEMU: it is none of the files [daemon] qemu_binaries names "
         "(compared as files, not paths" +
         (f.exe.ends_with(" (deleted)") ? "; its binary was replaced since it started: restart that QEMU" : "") + ")";
}

std::vector<DirStep> walk_path(const std::string& path, bool* complete) {
  std::vector<DirStep> walk;
  if (complete) *complete = false;
  std::deque<std::string> todo = components(path);
  std::string cur = "/";
  int links = 0;
  while (!todo.empty()) {
    const std::string name = todo.front();
    todo.pop_front();
    if (name == "..") {
      cur = parent_of(cur);
      continue;
    }
    DirStep step;
    step.path = cur;
    step.next = name;
    struct stat st {};
    if (lstat(cur.c_str(), &st) == 0) {
      step.exists = true;
      step.is_dir = S_ISDIR(st.st_mode);
      step.uid = st.st_uid;
      step.mode = st.st_mode;
    }
    const std::string entry = join(cur, name);
    struct stat est {};
    const bool there = step.is_dir && lstat(entry.c_str(), &est) == 0;
    step.next_exists = there;
    step.next_uid = there ? est.st_uid : 0;
    walk.push_back(step);
    if (!there) return walk;
    if (S_ISLNK(est.st_mode)) {
      if (++links > kMaxSymlinks) return walk;
      char target[PATH_MAX];
      const ssize_t n = readlink(entry.c_str(), target, sizeof target - 1);
      if (n <= 0) return walk;
      const std::string t(target, static_cast<size_t>(n));
      std::deque<std::string> more = components(t);
      todo.insert(todo.begin(), more.begin(), more.end());
      if (t[0] == '/') cur = "/";
      continue;
    }
    cur = entry;
  }
  if (complete) *complete = true;
  return walk;
}

std::vector<FileId> binaries_of(const std::vector<std::string>& qemu_binaries) {
  std::vector<FileId> ids;
  for (const auto& pattern : qemu_binaries) {
    glob_t g{};
    if (glob(pattern.c_str(), GLOB_NOSORT, nullptr, &g) == 0)
      for (size_t i = 0; i < g.gl_pathc; ++i) {
        struct stat st {};
        if (stat(g.gl_pathv[i], &st) == 0 && S_ISREG(st.st_mode)) ids.push_back(FileId{st.st_dev, st.st_ino});
      }
    globfree(&g);
  }
  return ids;
}

QmpPeerFacts gather_qmp_peer(int fd, const std::string& path, const std::vector<std::string>& qemu_binaries) {
  QmpPeerFacts f;
  f.configured = path;
  f.walk = walk_path(path, &f.walk_complete);
  if (f.walk_complete) {
    const DirStep& last = f.walk.back();
    struct stat st {};
    if (lstat(join(last.path, last.next).c_str(), &st) == 0) {
      f.socket_is_socket = S_ISSOCK(st.st_mode);
      f.socket_uid = st.st_uid;
    }
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
  const std::string link = "/proc/" + std::to_string(cred.pid) + "/exe";
  std::error_code ec;
  f.exe = std::filesystem::read_symlink(link, ec).string();
  if (ec) f.exe.clear();
  // stat() through the magic link reaches the very file the process runs,
  // whatever path its mount namespace shows for it.
  if (struct stat st {}; stat(link.c_str(), &st) == 0) f.exe_id = FileId{st.st_dev, st.st_ino};
  if (pin) f.exe_stable = pidfd_pid(pin.get()) == cred.pid;
  f.binaries = binaries_of(qemu_binaries);
  return f;
}

Result<void> verify_qmp_peer(int fd, const std::string& path, const std::vector<std::string>& qemu_binaries,
                             const QemuIdentity& qemu) {
  if (auto why = judge_qmp_peer(gather_qmp_peer(fd, path, qemu_binaries), qemu)) return Error{EPERM, *why};
  return ok();
}

}  // namespace relink::qemu
