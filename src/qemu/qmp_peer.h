// SPDX-License-Identifier: GPL-2.0-or-later
// Who may receive a tap fd. relinkd passes macvtap fds over QMP, and whoever
// listens on the QMP path gets them. A VM is tied to the user its QEMU runs
// as ([[vm]] qemu_user, root by default). Before a session is used, the
// socket and the process behind it must be that VM's QEMU:
//  - every directory from / to the socket (symlinks followed, each hop's
//    directory included) is root's or the QEMU user's and writable by nobody
//    else; a sticky directory writable by all (/tmp) may be crossed only
//    where the entry taken in it is root's or the QEMU user's (the sticky
//    bit keeps others from renaming or removing it);
//  - the socket is root's or the QEMU user's;
//  - the peer (SO_PEERCRED, pinned by a pidfd where the kernel has
//    SO_PEERPIDFD) runs as the QEMU user, and its executable is one of the
//    files [daemon] qemu_binaries names: the same file (device and inode),
//    not a path that reads the same (another mount namespace can show any
//    file under any path).
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

#include "util/result.h"

namespace relink::qemu {

struct FileId {
  dev_t dev = 0;
  ino_t ino = 0;
  bool operator==(const FileId&) const = default;
};

// One directory crossed on the way to the socket, and the entry taken in it.
struct DirStep {
  std::string path;       // the directory, as reached (symlinks resolved)
  bool exists = false;
  bool is_dir = false;
  uid_t uid = 0;
  mode_t mode = 0;
  std::string next;       // the entry taken in it (a name)
  bool next_exists = false;
  uid_t next_uid = 0;
};

// What relinkd learns about a QMP session before trusting it.
struct QmpPeerFacts {
  std::string configured;        // the QMP path from the config
  std::vector<DirStep> walk;     // from / to the socket, in order
  bool walk_complete = false;    // the walk reached the socket
  bool socket_is_socket = false;
  uid_t socket_uid = 0;
  pid_t pid = 0;
  uid_t uid = 0;                 // SO_PEERCRED
  std::string exe;               // /proc/PID/exe for messages; empty: unreadable
  std::optional<FileId> exe_id;  // the executable's file (stat through /proc/PID/exe)
  bool exe_stable = true;        // false: the peer exited (or its pid was reused) while checked
  std::vector<FileId> binaries;  // the files qemu_binaries names now
};

// Whose QEMU a VM's QMP socket must belong to.
struct QemuIdentity {
  uid_t uid = 0;
  std::string user = "root";  // as configured, for messages
};

// Why the directories on the way to the socket are unsafe for `qemu` (""
// when they are safe). Pure; the message names the component and what to
// change. An incomplete walk is judged as far as it went.
std::string judge_qmp_path(const std::vector<DirStep>& walk, const QemuIdentity& qemu);

// The decision, pure: nullopt when the peer may be used, else why not.
std::optional<std::string> judge_qmp_peer(const QmpPeerFacts& facts, const QemuIdentity& qemu);

// Walks `path` from /, following symlinks (at most 40), with lstat at each
// step. Stops at the first missing component.
std::vector<DirStep> walk_path(const std::string& path, bool* complete = nullptr);

// The files the qemu_binaries patterns (glob) name now, by identity.
std::vector<FileId> binaries_of(const std::vector<std::string>& qemu_binaries);

// Gathers the facts for a connected QMP socket `fd` reached through `path`.
QmpPeerFacts gather_qmp_peer(int fd, const std::string& path, const std::vector<std::string>& qemu_binaries);

// Both, as an error value (EPERM) naming what was wrong.
Result<void> verify_qmp_peer(int fd, const std::string& path, const std::vector<std::string>& qemu_binaries,
                             const QemuIdentity& qemu);

}  // namespace relink::qemu
