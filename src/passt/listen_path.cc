// SPDX-License-Identifier: GPL-2.0-or-later
// Readies a listening passt's socket path as root, only where root or passt's user owns it.
#include "passt/listen_path.h"

#include <fcntl.h>
#include <unistd.h>

#include <filesystem>

#include "util/unique_fd.h"

namespace relink::passt {

std::string why_not_root_in(const struct stat& dir, const std::string& shown, uid_t uid) {
  if (dir.st_uid == 0 || dir.st_uid == uid) return "";
  return "the directory " + shown + " belongs to uid " + std::to_string(dir.st_uid) +
         ", neither root nor the user passt runs as (uid " + std::to_string(uid) +
         "): relinkd does not create, chown or remove files there on anyone's behalf; choose a socket path in a "
         "directory of root's or of the binding's runas user";
}

Result<void> prepare_listen_path(const std::string& path, uid_t uid, gid_t gid) {
  const std::filesystem::path fp(path);
  const std::string dir = fp.parent_path();
  const std::string name = fp.filename();
  const std::string parent = fp.parent_path().parent_path();
  const std::string dir_name = fp.parent_path().filename();
  if (name.empty()) return Error{EINVAL, "not a socket path: " + path};
  UniqueFd dfd;
  if (dir_name.empty()) {
    dfd.reset(open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  } else {
    UniqueFd pfd(open(parent.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!pfd) return Error::last("open " + parent);
    const int flags = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC;
    dfd.reset(openat(pfd.get(), dir_name.c_str(), flags));
    if (!dfd && errno == ENOENT) {
      struct stat pst {};
      if (fstat(pfd.get(), &pst) < 0) return Error::last("stat " + parent);
      if (const std::string why = why_not_root_in(pst, parent, uid); !why.empty())
        return Error{EPERM, "cannot create passt's socket directory " + dir + ": " + why};
      const bool created = mkdirat(pfd.get(), dir_name.c_str(), 0755) == 0;
      if (!created && errno != EEXIST) return Error::last("create " + dir);
      dfd.reset(openat(pfd.get(), dir_name.c_str(), flags));
      if (created && dfd && fchown(dfd.get(), uid, gid) < 0) return Error::last("chown " + dir);
    }
  }
  if (!dfd) {
    if (errno == ELOOP || errno == ENOTDIR)
      return Error{ENOTDIR, "passt's socket directory " + dir + " is a symlink or not a directory: relinkd does not "
                            "follow it; give the socket a path whose directory is a real one"};
    return Error::last("open " + dir);
  }
  struct stat st {};
  if (fstat(dfd.get(), &st) < 0) return Error::last("stat " + dir);
  const bool writable = (st.st_uid == uid && (st.st_mode & S_IWUSR)) || (st.st_gid == gid && (st.st_mode & S_IWGRP)) ||
                        (st.st_mode & S_IWOTH);
  if (!writable)
    return Error{EACCES, "passt runs as uid " + std::to_string(uid) + " and cannot create its socket in " + dir +
                             ": make the directory writable by that user, or choose another socket path"};
  const struct stat dst = st;
  if (fstatat(dfd.get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) {
    if (!S_ISSOCK(st.st_mode)) return Error{EEXIST, path + " exists and is not a socket"};
    if (const std::string why = why_not_root_in(dst, dir, uid); !why.empty())
      return Error{EPERM, "cannot remove the stale socket " + path + ": " + why};
    // passt made it as its own user: a socket of anyone else is not a stale one of ours.
    if (st.st_uid != 0 && st.st_uid != uid)
      return Error{EPERM, path + " belongs to uid " + std::to_string(st.st_uid) + ", not to passt's user (uid " +
                              std::to_string(uid) + "): relinkd does not remove another user's socket"};
    if (unlinkat(dfd.get(), name.c_str(), 0) < 0 && errno != ENOENT) return Error::last("remove stale socket " + path);
  } else if (errno != ENOENT) {
    return Error::last("stat " + path);
  }
  return ok();
}

Result<void> remove_listen_socket(const std::string& path, uid_t uid) {
  const std::filesystem::path fp(path);
  const std::string dir = fp.parent_path(), name = fp.filename();
  if (name.empty() || dir.empty()) return Error{EINVAL, "not a socket path: " + path};
  UniqueFd dfd(open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dfd) return errno == ENOENT ? ok() : Error::last("open " + dir);
  struct stat dst {}, st {};
  if (fstat(dfd.get(), &dst) < 0) return Error::last("stat " + dir);
  if (fstatat(dfd.get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0)
    return errno == ENOENT ? ok() : Error::last("stat " + path);
  if (!S_ISSOCK(st.st_mode)) return Error{EEXIST, path + " is not a socket"};
  if (const std::string why = why_not_root_in(dst, dir, uid); !why.empty())
    return Error{EPERM, "not removing " + path + ": " + why};
  if (st.st_uid != 0 && st.st_uid != uid)
    return Error{EPERM, path + " belongs to uid " + std::to_string(st.st_uid) + ", not to passt's user"};
  if (unlinkat(dfd.get(), name.c_str(), 0) < 0 && errno != ENOENT) return Error::last("remove " + path);
  return ok();
}

}  // namespace relink::passt
