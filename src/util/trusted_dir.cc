// SPDX-License-Identifier: GPL-2.0-or-later
// Checks and opens directories relinkd trusts, through fds so that they cannot be swapped.
#include "util/trusted_dir.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>

namespace relink::trusted {
namespace {

std::string mode_text(mode_t mode) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "0%03o", static_cast<unsigned>(mode & 07777));
  return buf;
}

std::string user_text(uid_t uid) { return uid == 0 ? "root" : "uid " + std::to_string(uid); }

std::string owner_and_mode(const struct stat& st) {
  return "owner " + user_text(st.st_uid) + ", mode " + mode_text(st.st_mode);
}

Error refused(const std::string& shown, const struct stat& st, const std::string& why, uid_t owner) {
  if (S_ISLNK(st.st_mode) || !S_ISDIR(st.st_mode))
    return Error{EPERM, shown + " " + why + ": relinkd does not follow symlinks to the places it trusts; remove it, "
                                            "and relinkd creates a directory there"};
  return Error{EPERM, shown + " (" + owner_and_mode(st) + ") " + why + ": relinkd trusts only directories owned by " +
                          user_text(owner) +
                          " and not writable by group or others; fix its owner and mode (chown, chmod go-w) or "
                          "remove it, and relinkd creates it"};
}

}  // namespace

std::string why_untrusted_dir(const struct stat& st, uid_t owner) {
  if (S_ISLNK(st.st_mode)) return "is a symlink";
  if (!S_ISDIR(st.st_mode)) return "is not a directory";
  if (st.st_uid != owner) return "is not owned by " + user_text(owner);
  if (st.st_mode & (S_IWGRP | S_IWOTH)) return "is writable by group or others";
  return "";
}

std::string why_untrusted_file(const struct stat& st, uid_t owner) {
  if (S_ISLNK(st.st_mode)) return "is a symlink";
  if (!S_ISREG(st.st_mode)) return "is not a regular file";
  if (st.st_uid != owner) return "is not owned by " + user_text(owner);
  if (st.st_mode & (S_IWGRP | S_IWOTH)) return "is writable by group or others";
  return "";
}

Result<UniqueFd> open_subdir(int dirfd, const std::string& name, mode_t create_mode, bool create,
                             const std::string& shown) {
  if (name.empty() || name == "." || name == ".." || name.find('/') != std::string::npos)
    return Error{EINVAL, shown + ": not a single directory name"};
  const uid_t owner = geteuid();
  const int flags = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC;
  bool created = false;
  UniqueFd fd(::openat(dirfd, name.c_str(), flags));
  if (!fd && errno == ENOENT && create) {
    if (::mkdirat(dirfd, name.c_str(), create_mode) == 0) created = true;
    else if (errno != EEXIST) return Error::last("create " + shown);
    fd.reset(::openat(dirfd, name.c_str(), flags));
  }
  if (!fd) {
    const int err = errno;
    struct stat st {};
    // O_NOFOLLOW|O_DIRECTORY fails on a symlink with ELOOP or ENOTDIR: say which it is.
    if ((err == ELOOP || err == ENOTDIR) && ::fstatat(dirfd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0)
      return refused(shown, st, why_untrusted_dir(st, owner), owner);
    return Error::from_errno(err, "open " + shown);
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return Error::last("stat " + shown);
  if (created) {
    // The umask may have taken bits; an inherited setgid bit is not wanted.
    if (::fchmod(fd.get(), create_mode) != 0) return Error::last("chmod " + shown);
    st.st_mode = (st.st_mode & ~07777) | (create_mode & 07777);
  }
  if (std::string why = why_untrusted_dir(st, owner); !why.empty()) return refused(shown, st, why, owner);
  return fd;
}

Result<UniqueFd> open_dir(const std::string& path, mode_t create_mode) {
  std::string p = path;
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  if (p.empty() || p[0] != '/') return Error{EINVAL, "'" + path + "' is not an absolute path"};
  const size_t slash = p.rfind('/');
  const std::string parent = slash == 0 ? "/" : p.substr(0, slash);
  const std::string name = p.substr(slash + 1);
  if (name.empty()) return Error{EINVAL, "'" + path + "': relinkd does not use / itself as a state directory"};

  UniqueFd pfd(::open(parent.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!pfd) return Error::last("open " + parent);
  struct stat st {};
  if (::fstat(pfd.get(), &st) != 0) return Error::last("stat " + parent);
  // Whoever may rename entries of the parent could swap the directory for
  // another between two uses. The sticky bit (/tmp) keeps others' hands off
  // root's entries.
  const bool swappable = (st.st_uid != 0 && st.st_uid != geteuid()) ||
                         ((st.st_mode & (S_IWGRP | S_IWOTH)) && !(st.st_mode & S_ISVTX));
  if (swappable)
    return Error{EPERM, p + ": its parent directory " + parent + " (" + owner_and_mode(st) +
                            ") lets others replace it: choose a directory under one owned by root and not writable "
                            "by others (or with the sticky bit, like /tmp)"};
  return open_subdir(pfd.get(), name, create_mode, /*create=*/true, p);
}

}  // namespace relink::trusted
