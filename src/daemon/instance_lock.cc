// SPDX-License-Identifier: GPL-2.0-or-later
// The exclusive lock on state_dir/relinkd.lock.
#include "daemon/instance_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <string>

#include "util/trusted_dir.h"

namespace relink::daemon {

Result<InstanceLock> InstanceLock::acquire(const std::string& state_dir) {
  auto dir = trusted::open_dir(state_dir, 0755);
  if (!dir) return Error{dir.error().code, "state_dir: " + dir.error().message};
  const std::string path = state_dir + "/" + kInstanceLockName;
  // O_NOFOLLOW: the directory is root's alone, but a symlink left there
  // must still not send the pid write elsewhere.
  UniqueFd fd(openat(dir->get(), kInstanceLockName, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY, 0644));
  if (!fd) return Error::last("open " + path);
  struct stat st {};
  if (fstat(fd.get(), &st) < 0) return Error::last("stat " + path);
  if (!S_ISREG(st.st_mode)) return Error{EINVAL, path + " is not a regular file"};
  if (flock(fd.get(), LOCK_EX | LOCK_NB) < 0) {
    if (errno != EWOULDBLOCK) return Error::last("lock " + path);
    // Read, never written: the holder's pid is the holder's business.
    char buf[32] = {};
    const ssize_t n = pread(fd.get(), buf, sizeof buf - 1, 0);
    const long pid = n > 0 ? std::strtol(buf, nullptr, 10) : 0;
    return Error{EBUSY, "another relinkd" + (pid > 0 ? " (pid " + std::to_string(pid) + ")" : std::string()) +
                            " already runs with state_dir " + state_dir + " (it holds " + path +
                            "); only one relinkd may manage a state_dir"};
  }
  const std::string pid = std::to_string(getpid()) + "\n";
  if (ftruncate(fd.get(), 0) < 0 || pwrite(fd.get(), pid.data(), pid.size(), 0) != static_cast<ssize_t>(pid.size()))
    return Error::last("write " + path);
  return InstanceLock(std::move(fd));
}

}  // namespace relink::daemon
