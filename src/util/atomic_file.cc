// SPDX-License-Identifier: GPL-2.0-or-later
// Atomic writes and bounded, checked reads of relinkd's own files in a trusted directory.
#include "util/atomic_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>

#include "util/trusted_dir.h"
#include "util/unique_fd.h"

namespace relink::atomic_file {
namespace {

Result<void> write_all(int fd, const std::string& text, const std::string& shown) {
  size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Error::last("write " + shown);
    }
    done += static_cast<size_t>(n);
  }
  return ok();
}

}  // namespace

Result<void> write_at(int dirfd, const std::string& name, const std::string& text, const std::string& shown) {
  const std::string tmp = name + ".tmp";
  const std::string shown_tmp = shown + ".tmp";
  // A fresh file: a leftover temporary may be a hard link to anything.
  if (::unlinkat(dirfd, tmp.c_str(), 0) != 0 && errno != ENOENT) return Error::last("remove " + shown_tmp);
  UniqueFd fd(::openat(dirfd, tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY, 0600));
  if (!fd) return Error::last("create " + shown_tmp);
  auto fail = [&](Error e) -> Result<void> {
    fd.reset();
    (void)::unlinkat(dirfd, tmp.c_str(), 0);
    return e;
  };
  // The umask may have taken bits, and a setgid directory lent its group: 0600 exactly.
  if (::fchmod(fd.get(), 0600) != 0) return fail(Error::last("chmod " + shown_tmp));
  if (auto r = write_all(fd.get(), text, shown_tmp); !r) return fail(r.error());
  if (::fsync(fd.get()) != 0) return fail(Error::last("fsync " + shown_tmp));
  if (::close(fd.release()) != 0) return fail(Error::last("close " + shown_tmp));
  if (::renameat(dirfd, tmp.c_str(), dirfd, name.c_str()) != 0)
    return fail(Error::last("rename " + shown_tmp + " to " + shown));
  if (::fsync(dirfd) != 0) return Error::last("fsync the directory of " + shown);
  return ok();
}

Result<std::string> read_at(int dirfd, const std::string& name, size_t max, const std::string& shown) {
  // O_NONBLOCK: a FIFO in its place must not hang the daemon in open().
  UniqueFd fd(::openat(dirfd, name.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY | O_NONBLOCK));
  if (!fd) {
    if (errno == ELOOP) return Error{EPERM, shown + ": is a symlink, not a file relinkd wrote"};
    return Error::last("open " + shown);
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return Error::last("stat " + shown);
  if (std::string why = trusted::why_untrusted_file(st, ::geteuid()); !why.empty())
    return Error{EPERM, shown + ": " + why + ", not a file relinkd wrote"};
  if (static_cast<uint64_t>(st.st_size) > max)
    return Error{EFBIG, shown + ": is larger than " + std::to_string(max) + " bytes"};
  std::string text;
  char buf[16384];
  for (;;) {
    const ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Error::last("read " + shown);
    }
    if (n == 0) return text;
    if (text.size() + static_cast<size_t>(n) > max)
      return Error{EFBIG, shown + ": is larger than " + std::to_string(max) + " bytes"};
    text.append(buf, static_cast<size_t>(n));
  }
}

Result<void> remove_at(int dirfd, const std::string& name, const std::string& shown) {
  if (::unlinkat(dirfd, name.c_str(), 0) != 0) {
    if (errno == ENOENT) return ok();
    return Error::last("remove " + shown);
  }
  if (::fsync(dirfd) != 0) return Error::last("fsync the directory of " + shown);
  return ok();
}

Result<std::string> set_aside_at(int dirfd, const std::string& name, const std::string& aside) {
  int err = EEXIST;
  std::string to;
  for (int n = 0; n < 1000 && err == EEXIST; ++n) {
    to = aside + (n ? "." + std::to_string(n) : "");
    err = ::renameat2(dirfd, name.c_str(), dirfd, to.c_str(), RENAME_NOREPLACE) == 0 ? 0 : errno;
  }
  if (err != 0) return Error{err, "cannot rename " + name + " to " + to + ": " + std::strerror(err)};
  (void)::fsync(dirfd);
  return to;
}

}  // namespace relink::atomic_file
