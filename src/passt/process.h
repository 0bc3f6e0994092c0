// SPDX-License-Identifier: GPL-2.0-or-later
// Starting passt and watching it on the event loop.
//
// A passt is spawned without a shell, as an unprivileged user (never root),
// with SIGPIPE ignored (its log pipe may outlive relinkd; passt dies of
// SIGPIPE on a log write otherwise), in its own session, with stdin on
// /dev/null and stdout/stderr on a pipe relinkd reads. Only the handed socket
// is inherited (as fd 3); every other fd is closed before exec.
#pragma once

#include <sys/types.h>
#include <systemd/sd-event.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "util/fd_limit.h"
#include "util/result.h"
#include "util/sd_event.h"
#include "passt/passt.h"
#include "util/unique_fd.h"

namespace relink::passt {

struct SpawnRequest {
  std::string path;               // absolute path of the passt binary
  std::vector<std::string> argv;  // argv[0] included
  uid_t uid = 0;                  // must not be 0
  gid_t gid = 0;
  int handed_fd = -1;             // becomes fd 3 in the child (-1: none)
  // Runs in relinkd after fork and before the child may exec: the child's
  // pid and /proc start time (fixed at fork, kept across exec) are known,
  // so a record of what is about to run can be written first. If relinkd
  // dies before it returns, the child never execs (it waits for a go-ahead
  // on a pipe whose writer is then gone).
  std::function<void(pid_t pid, uint64_t start_time)> before_exec;
};

struct Spawned {
  pid_t pid = 0;
  UniqueFd pidfd;           // O_CLOEXEC
  UniqueFd log;             // read end of the child's stdout/stderr, O_CLOEXEC|O_NONBLOCK
  uint64_t start_time = 0;  // /proc/PID/stat starttime
  std::string exe;          // /proc/PID/exe after exec
};

class Spawner {
 public:
  virtual ~Spawner() = default;
  // Starts the process. Fails (and leaves nothing behind) if fork or exec
  // fails; an exec failure is reported with its errno, not as an exit.
  virtual Result<Spawned> spawn(const SpawnRequest& req) = 0;
};

// The real one: fork + exec.
class ProcessSpawner : public Spawner {
 public:
  // child_fd_limit: the RLIMIT_NOFILE children start with, as both their
  // soft and hard limit (nullopt: relinkd's own). By default the soft limit
  // relinkd started with, before it raised its own (util/fd_limit.h). Hard
  // too, because passt raises its soft limit to its hard one as it starts:
  // a soft limit alone would not hold it.
  explicit ProcessSpawner(std::optional<rlim_t> child_fd_limit = fdlimit::starting_soft())
      : child_fd_limit_(child_fd_limit) {}
  Result<Spawned> spawn(const SpawnRequest& req) override;

 private:
  std::optional<rlim_t> child_fd_limit_;
};

struct ExitStatus {
  bool known = false;     // false: not our child (adopted), status unknown
  bool signaled = false;
  int value = 0;          // exit code, or signal number when signaled
  std::string describe() const;  // "exited with status 1", "killed by SIGKILL", "exited (status unknown)"
};

// One passt process on the loop: its exit (pidfd) and its output lines
// (syslog noise dropped, lines bounded). Destroying a Process stops watching
// but leaves passt running.
class Process {
 public:
  using ExitCb = std::function<void(const ExitStatus&)>;
  // One line of the process's output, without its line end.
  using LineCb = std::function<void(std::string_view line)>;

  // Watches a child from Spawner::spawn. on_exit is called once, from the
  // loop. Output lines go to on_line, or without one to the "passt" logger at
  // debug as "<log_name>: <line>".
  static Result<std::unique_ptr<Process>> watch(sd_event* loop, Spawned s, std::string log_name, ExitCb on_exit,
                                                LineCb on_line = {});
  // Watches a process relinkd did not start in this life (pidfd_open); its
  // output is not available and its exit status is unknown.
  static Result<std::unique_ptr<Process>> adopt(sd_event* loop, pid_t pid, std::string log_name, ExitCb on_exit);

  ~Process();
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  pid_t pid() const { return pid_; }
  // on_exit has run.
  bool exited() const { return exited_; }
  // Still running: not exited, its pidfd reports no exit the loop has yet to
  // dispatch, and it is not dying (a passt killed from outside is gone before
  // on_exit runs, and QEMU's report of the dropped stream comes first).
  bool alive() const;
  // SIGTERM now, SIGKILL after kill_after_ms if it is still alive. on_exit
  // still fires when it is gone.
  void stop(uint64_t kill_after_ms = 1000);
  // Whether `st`, its exit, is the one stop() asked for: stop() was called
  // and it did not die of a signal relinkd never sent (a SIGKILL from
  // elsewhere while it handled SIGTERM is not relinkd's doing).
  bool ended_by_stop(const ExitStatus& st) const;

 private:
  Process() = default;
  static int on_pidfd(sd_event_source*, int, uint32_t, void*);
  static int on_log(sd_event_source*, int, uint32_t, void*);
  static int on_kill_timer(sd_event_source*, uint64_t, void*);
  void flush_log(bool eof);

  sd_event* loop_ = nullptr;
  pid_t pid_ = 0;
  bool child_ = false;
  bool exited_ = false;
  UniqueFd pidfd_, log_;
  SdEventSourcePtr pid_src_, log_src_, kill_timer_;
  bool stop_requested_ = false, kill_sent_ = false;
  std::string log_name_, partial_;
  ExitCb on_exit_;
  LineCb on_line_;
};

// Runs `passt --help` as uid/gid (bounded time, no shell) and parses it.
Result<Features> probe_features(Spawner& spawner, const std::string& passt_path, uid_t uid, gid_t gid);

}  // namespace relink::passt
