// SPDX-License-Identifier: GPL-2.0-or-later
// The socket path a listening passt (stream-client, vhost-user) binds.
// relinkd runs as root and readies it for passt: it may create the
// socket's directory (and give it to passt's user) and remove a socket a
// dead passt left. Whoever registers a binding chooses the path, so root
// does either only in a directory that is root's or passt's user's: never
// in a directory of a third user, where it would create, chown or unlink on
// that user's behalf.
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <string>

#include "util/result.h"

namespace relink::passt {

// Why relinkd, as root, may not create, chown or unlink in a directory with
// this stat for a passt running as `uid` ("" when it may). Pure.
std::string why_not_root_in(const struct stat& dir, const std::string& shown, uid_t uid);

// Readies `path` for passt running as uid:gid: its directory exists (created
// 0755 and given to uid:gid when missing, in a parent that passes
// why_not_root_in) and is writable by that user; a stale socket there is
// removed (in a directory that passes why_not_root_in). Refused with the
// reason otherwise.
Result<void> prepare_listen_path(const std::string& path, uid_t uid, gid_t gid);

// Removes the socket a stopped passt (running as uid) listened on, under the
// same rules: only a socket of root's or uid's, in a directory that passes
// why_not_root_in, never through a symlink. Absent: nothing to do.
Result<void> remove_listen_socket(const std::string& path, uid_t uid);

}  // namespace relink::passt
