// SPDX-License-Identifier: GPL-2.0-or-later
// Directories relinkd trusts with what it later acts on (passt pidfiles name
// processes relinkd may signal). A directory is trusted when relinkd's own
// user (root) owns it, neither group nor others may write it, and it is not a
// symlink: then nobody else can have put anything in it. Every check is made
// on an open fd (fstat), and everything below a trusted directory is reached
// with *at() calls relative to its fd, so a path swapped after the check
// changes nothing.
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <string>

#include "util/result.h"
#include "util/unique_fd.h"

namespace relink::trusted {

// Why a directory with this stat cannot be trusted by a process running as
// `owner` ("" when it can), e.g. "is owned by uid 65534 with mode 0777".
std::string why_untrusted_dir(const struct stat& st, uid_t owner);
// The same for a regular file relinkd wrote itself (a pidfile).
std::string why_untrusted_file(const struct stat& st, uid_t owner);

// Opens the directory at the absolute `path`, creating it with `create_mode`
// when it is missing. Refused (EPERM, the message names the path, its owner
// and mode and what to do): a symlink, not a directory, not owned by
// relinkd's user, writable by group or others, or a parent directory that
// others could swap it in (not root's, or writable by others without the
// sticky bit).
Result<UniqueFd> open_dir(const std::string& path, mode_t create_mode);

// Opens the directory `name` (one path component) inside the trusted
// directory `dirfd`, creating it with `create_mode` when missing and `create`
// is set (ENOENT otherwise). The same refusals as open_dir; `shown` is the
// path for messages.
Result<UniqueFd> open_subdir(int dirfd, const std::string& name, mode_t create_mode, bool create,
                             const std::string& shown);

}  // namespace relink::trusted
