// SPDX-License-Identifier: GPL-2.0-or-later
// Who may receive a tap fd. relinkd passes macvtap fds over QMP, and whoever
// listens on the QMP path gets them. Before a session is used, the socket
// and the process behind it must be the VM's QEMU:
//  - the socket (symlinks resolved) is owned by the uid QEMU runs as (or the
//    peer is root);
//  - the directory holding it, and the one holding the configured path when
//    that is a symlink, belong to root or that same user and are writable by
//    nobody else (not even with the sticky bit: in /tmp anyone could have
//    created the socket before QEMU did);
//  - the peer process (SO_PEERCRED, pinned by a pidfd where the kernel has
//    SO_PEERPIDFD) runs a binary matching one of the configured patterns.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

#include "util/result.h"

namespace relink::qemu {

struct PathFacts {
  std::string path;
  bool exists = false;
  bool is_dir = false;
  bool is_socket = false;
  uid_t uid = 0;
  mode_t mode = 0;
};

// What relinkd learns about a QMP session before trusting it.
struct QmpPeerFacts {
  std::string configured;           // the QMP path from the config
  PathFacts socket;                 // the socket, symlinks followed
  std::vector<PathFacts> dirs;      // directories that hold the path (and its target)
  pid_t pid = 0;
  uid_t uid = 0;                    // SO_PEERCRED
  std::string exe;                  // /proc/PID/exe, " (deleted)" removed; empty: unreadable
  bool exe_stable = true;           // false: the peer exited (or its pid was reused) while checked
};

// The decision, pure: nullopt when the peer may be used, else why not.
std::optional<std::string> judge_qmp_peer(const QmpPeerFacts& facts, const std::vector<std::string>& qemu_binaries);

// Gathers the facts for a connected QMP socket `fd` reached through `path`.
QmpPeerFacts gather_qmp_peer(int fd, const std::string& path);

// Both, as an error value (EPERM) naming what was wrong.
Result<void> verify_qmp_peer(int fd, const std::string& path, const std::vector<std::string>& qemu_binaries);

}  // namespace relink::qemu
