// Per-binding pidfiles, written by relinkd (root-only, in state_dir), so that
// a restarted relinkd adopts the passt that still serves a VM instead of
// starting a second one. The pid alone is not proof: the process's start time
// and executable must match what was recorded (pid reuse).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>

#include "util/result.h"

namespace relink::passt {

struct PidRecord {
  pid_t pid = 0;
  uint64_t start_time = 0;  // /proc/PID/stat field 22 (clock ticks since boot)
  std::string exe;          // /proc/PID/exe at start
  uint64_t generation = 0;
  std::string mode;         // mode_name()
  std::string socket;

  bool operator==(const PidRecord&) const = default;
};

// What /proc says about a process now.
struct ProcInfo {
  pid_t pid = 0;
  uint64_t start_time = 0;
  std::string exe;      // readlink of /proc/PID/exe; may end in " (deleted)"
  bool zombie = false;  // state Z or X
};

// Reads /proc/PID (proc_root lets tests use a fake tree). nullopt: no such process.
std::optional<ProcInfo> read_proc(pid_t pid, const std::string& proc_root = "/proc");

enum class Adoption {
  Adopt,   // the recorded passt is alive: watch it, do not start another
  Dead,    // no such process (or a zombie): start a new passt
  Reused,  // the pid now belongs to another process: start a new passt, never signal that pid
};
const char* adoption_name(Adoption a);

// Pure decision from the record and the process found under its pid. A
// binary replaced by a package upgrade (exe ending in " (deleted)") is still
// the process relinkd started, and so is "<exe>.avx2": passt re-executes
// itself as its AVX2 build right after start where the CPU has AVX2.
Adoption decide_adoption(const PidRecord& rec, const std::optional<ProcInfo>& now);

// JSON file, written to a temporary name and renamed, mode 0600.
Result<void> write_pidfile(const std::string& path, const PidRecord& rec);
// Errors: ENOENT when absent; EINVAL (with the reason) when malformed.
Result<PidRecord> read_pidfile(const std::string& path);
void remove_pidfile(const std::string& path);

}  // namespace relink::passt
