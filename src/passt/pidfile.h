// SPDX-License-Identifier: GPL-2.0-or-later
// Per-binding pidfiles, written by relinkd (root-only, in state_dir), so that
// a restarted relinkd adopts the passt that still serves a VM instead of
// starting a second one. A pidfile is read only from trusted directories
// (util/trusted_dir.h) and only when relinkd's user owns it, but even then
// it is not proof: the process under the pid must still be the one recorded
// (start time, executable, command line: pid reuse) and must be what a local
// user cannot fake, a process of the binding's runas user running the very
// command line relinkd built (decide_adoption).
#pragma once

#include <sys/types.h>

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "util/result.h"

namespace relink::passt {

struct PidRecord {
  pid_t pid = 0;
  uint64_t start_time = 0;  // /proc/PID/stat field 22 (clock ticks since boot)
  std::string exe;          // /proc/PID/exe at start
  uint64_t generation = 0;
  std::string mode;         // mode_name()
  std::string socket;
  // Who it runs as and its argv, as relinkd spawned it. Absent (-1, empty)
  // in pidfiles of earlier relinkd builds: such a record proves nothing
  // beyond what the live process shows by itself.
  int64_t uid = -1;
  int64_t gid = -1;
  std::vector<std::string> argv;

  bool operator==(const PidRecord&) const = default;
};

// What /proc says about a process now.
struct ProcInfo {
  pid_t pid = 0;
  uint64_t start_time = 0;
  std::string exe;      // readlink of /proc/PID/exe; may end in " (deleted)"
  bool zombie = false;  // state Z or X
  // PF_EXITING: do_exit() has begun (killed, or exiting). The process is torn
  // down before it becomes a zombie, its files (QEMU's stream) first and its
  // namespaces later, which can take milliseconds; only then does its pidfd
  // report the exit. A zombie has it too.
  bool exiting = false;
  // /proc/PID/status "Uid:" and "Gid:": real, effective, saved, filesystem.
  // A process whose ids could not be read has ids_known false.
  bool ids_known = false;
  std::array<uid_t, 4> uids{};
  std::array<gid_t, 4> gids{};
  std::vector<std::string> cmdline;  // /proc/PID/cmdline split at NULs
};

// Reads /proc/PID (proc_root lets tests use a fake tree). nullopt: no such process.
std::optional<ProcInfo> read_proc(pid_t pid, const std::string& proc_root = "/proc");

enum class Adoption {
  Adopt,     // the binding's passt is alive: watch it, do not start another
  Dead,      // no such process (or a zombie): start a new passt
  Reused,    // the pid now belongs to another process: start a new passt, never signal that pid
  Outdated,  // provably a passt relinkd started for this binding, with another command line
             // (its args or the passt binary changed while relinkd was down): stop it, start a new one
  Foreign,   // the recorded process lives but nothing proves it is relinkd's passt for this
             // binding (another user, another command line): never signal it, start a new passt
};
const char* adoption_name(Adoption a);

// What the binding would run now.
struct Expected {
  uid_t uid = 0;  // runas
  gid_t gid = 0;
  std::vector<std::string> argv;  // build_argv(...) for this binding
  std::string mode;               // mode_name()
  std::string socket;
};

// Pure decision from the record, the process found under its pid and the
// binding. Adopt needs all of: the recorded start time and executable (pid
// reuse), every uid and gid of the process equal to runas, and its command
// line equal to the argv relinkd would build now (and the record's mode and
// socket the binding's). Outdated needs the same except that the command line
// equals the recorded argv instead. A binary replaced by a package upgrade
// (exe ending in " (deleted)") is still the process relinkd started, and so
// is "<exe>.avx2": passt re-executes itself as its AVX2 build right after
// start where the CPU has AVX2 (keeping its argv).
Adoption decide_adoption(const PidRecord& rec, const std::optional<ProcInfo>& now, const Expected& want);

// Identity only: whether the recorded process still runs (Adopt), is gone
// (Dead) or its pid now names another process (Reused). Not proof that the
// process is relinkd's: the daemon uses the overload above.
Adoption decide_adoption(const PidRecord& rec, const std::optional<ProcInfo>& now);

// A pidfile no binding claims (its binding left while relinkd was down, or a
// crash came between saving runtime.toml and stopping the passt): the record
// itself is all that says what should run. Adopt (proved: relinkd's passt,
// to be stopped) needs a record of this build's kind (argv, uid and gid as
// spawned; never root) and everything decide_adoption checks against it: the
// same process (start time, executable), every id the recorded runas, and
// the recorded command line, which must be one relinkd builds (passt -f,
// then --fd 3 or the recorded socket) for the recorded mode. Anything else
// that lives is Foreign and never signalled.
Adoption decide_orphan(const PidRecord& rec, const std::optional<ProcInfo>& now);

// Pidfiles hold at most this much; anything longer is not relinkd's.
inline constexpr size_t kMaxPidfileBytes = 4096;

// Parses a pidfile's bytes (untrusted: bounded, never throws). EINVAL with
// the reason, prefixed with "pidfile <path_for_messages>: ".
Result<PidRecord> parse_pidfile(std::string_view text, const std::string& path_for_messages);

// The pidfile `name` inside the directory `dirfd`, which the caller opened
// as a trusted directory (trusted::open_subdir); `shown` is its path for
// messages. Written to a fresh temporary name (O_EXCL, O_NOFOLLOW), mode
// 0600, and renamed over `name`.
Result<void> write_pidfile_at(int dirfd, const std::string& name, const PidRecord& rec, const std::string& shown);
// Errors: ENOENT when absent; EPERM when it is a symlink, not a regular
// file, not owned by relinkd's user, writable by group or others, or over
// kMaxPidfileBytes; EINVAL (with the reason) when malformed.
Result<PidRecord> read_pidfile_at(int dirfd, const std::string& name, const std::string& shown);
// Never follows a symlink: unlinkat removes the name itself.
Result<void> remove_pidfile_at(int dirfd, const std::string& name, const std::string& shown);

// The same at a path: the directory holding it must be trusted (owned by
// relinkd's user, not writable by group or others, not a symlink); only that
// directory is checked.
Result<void> write_pidfile(const std::string& path, const PidRecord& rec);
Result<PidRecord> read_pidfile(const std::string& path);
void remove_pidfile(const std::string& path);

}  // namespace relink::passt
