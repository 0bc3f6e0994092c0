// SPDX-License-Identifier: GPL-2.0-or-later
// Spawning passt unprivileged and watching it (pidfd, log pipe) on the event loop.
#include "passt/process.h"

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <optional>
#include <string_view>

#include "passt/pidfile.h"
#include "util/clock.h"
#include "util/log.h"

namespace relink::passt {
namespace {

// waitid() on a pidfd (Linux 5.4); glibc 2.36 does not define the idtype.
constexpr idtype_t kPidfdIdType = static_cast<idtype_t>(3);  // P_PIDFD

// Raw syscalls: glibc 2.36's <sys/pidfd.h> lacks extern "C" and cannot be
// used from C++. A pidfd is always O_CLOEXEC.
int sys_pidfd_open(pid_t pid) { return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)); }
int sys_pidfd_send_signal(int pidfd, int sig) {
  return static_cast<int>(::syscall(SYS_pidfd_send_signal, pidfd, sig, nullptr, 0));
}

constexpr size_t kMaxLogLine = 4096;
constexpr size_t kReadChunk = 16 * 1024;
constexpr int kMaxReadsPerDispatch = 8;  // level-triggered: the rest comes next iteration
constexpr int kMaxReadsAtExit = 64;      // a grandchild could hold the pipe open and keep writing
constexpr uint64_t kKillTimerAccuracyUs = 1000;
constexpr int kProbeTimeoutMs = 2000;
constexpr size_t kMaxProbeOutput = 256 * 1024;

// passt needs no environment; the daemon's (NOTIFY_SOCKET, LISTEN_FDS,
// INVOCATION_ID under systemd) is not passt's to see.
constexpr const char* kChildPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

// What the child reports on its error pipe before exec.
enum class ChildStage : int { Dup, Setsid, FdLimit, Setgroups, Setgid, Setuid, StillRoot, NoNewPrivs, Chdir, Exec };

const char* stage_name(ChildStage s) {
  switch (s) {
    case ChildStage::Dup: return "dup";
    case ChildStage::Setsid: return "setsid";
    case ChildStage::FdLimit: return "setrlimit(RLIMIT_NOFILE)";
    case ChildStage::Setgroups: return "setgroups";
    case ChildStage::Setgid: return "setgid";
    case ChildStage::Setuid: return "setuid";
    case ChildStage::StillRoot: return "drop root";
    case ChildStage::NoNewPrivs: return "prctl(PR_SET_NO_NEW_PRIVS)";
    case ChildStage::Chdir: return "chdir /";
    case ChildStage::Exec: return "exec";
  }
  return "?";
}

struct ChildError {
  int stage;
  int err;
};

// Everything the child needs, prepared before fork: after fork it may only
// make async-signal-safe calls (no allocation).
struct ChildPlan {
  const char* path;
  char* const* argv;
  char* const* envp;
  uid_t uid;
  gid_t gid;
  int devnull;
  int log_w;
  int err_w;
  int handed;  // -1: none
  int go_r, go_w;  // the parent's go-ahead (-1: none)
  rlim_t fd_limit;  // RLIMIT_NOFILE (soft and hard) to start with (RLIM_INFINITY: leave it)
};

[[noreturn]] void child_fail(int err_fd, ChildStage stage, int err) {
  ChildError e{static_cast<int>(stage), err};
  ssize_t n;
  do n = ::write(err_fd, &e, sizeof e);
  while (n < 0 && errno == EINTR);
  ::_exit(127);
}

// Runs in the forked child. Never returns.
[[noreturn]] void child_exec(const ChildPlan& p) {
  int err_fd = p.err_w;

  // Wait for the parent's record of this child (SpawnRequest::before_exec).
  // Its write end is closed here first, so a parent that dies meanwhile
  // leaves EOF: then nothing is run.
  if (p.go_r >= 0) {
    ::close(p.go_w);
    char go = 0;
    ssize_t n;
    do n = ::read(p.go_r, &go, 1);
    while (n < 0 && errno == EINTR);
    if (n != 1) ::_exit(127);
    ::close(p.go_r);
  }

  // Move every fd we keep above 4 first, so that placing them on 0..4 cannot
  // clobber one still needed (handed_fd may well be 1, 2 or 3).
  auto lift = [&](int fd) {
    int moved = ::fcntl(fd, F_DUPFD_CLOEXEC, 5);
    if (moved < 0) child_fail(err_fd, ChildStage::Dup, errno);
    return moved;
  };
  const int err_hi = lift(p.err_w);
  err_fd = err_hi;
  const int devnull_hi = lift(p.devnull);
  const int log_hi = lift(p.log_w);
  const int handed_hi = p.handed >= 0 ? lift(p.handed) : -1;

  // dup2 clears FD_CLOEXEC on the target; the error pipe stays CLOEXEC so
  // that a successful exec closes it (the parent reads EOF).
  if (::dup2(devnull_hi, 0) < 0 || ::dup2(log_hi, 1) < 0 || ::dup2(log_hi, 2) < 0)
    child_fail(err_fd, ChildStage::Dup, errno);
  if (handed_hi >= 0 && ::dup2(handed_hi, kHandedFd) < 0) child_fail(err_fd, ChildStage::Dup, errno);
  if (::dup3(err_hi, 4, O_CLOEXEC) < 0) child_fail(err_fd, ChildStage::Dup, errno);
  err_fd = 4;
  if (handed_hi < 0) ::close(kHandedFd);
  ::close_range(5, ~0U, 0);

  if (::setsid() < 0) child_fail(err_fd, ChildStage::Setsid, errno);

  // Signal dispositions set to SIG_IGN and the signal mask survive exec:
  // start from the defaults (relinkd blocks SIGTERM, SIGINT, SIGHUP for
  // sd-event). SIGPIPE stays ignored on purpose: passt's log pipe may lose
  // its reader (relinkd restarting) and passt must not die of that.
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  for (int sig = 1; sig < _NSIG; ++sig) ::sigaction(sig, &dfl, nullptr);  // fails for KILL/STOP: fine
  struct sigaction ign {};
  ign.sa_handler = SIG_IGN;
  ::sigaction(SIGPIPE, &ign, nullptr);
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);

  if (p.fd_limit != RLIM_INFINITY) {
    rlimit rl{};
    if (::getrlimit(RLIMIT_NOFILE, &rl) < 0) child_fail(err_fd, ChildStage::FdLimit, errno);
    // Both: passt raises its soft limit to the hard one as it starts
    // (passt.c), so the hard limit is the one that counts.
    rl.rlim_cur = rl.rlim_max = std::min(p.fd_limit, rl.rlim_max);
    if (::setrlimit(RLIMIT_NOFILE, &rl) < 0) child_fail(err_fd, ChildStage::FdLimit, errno);
  }
  if (::setgroups(0, nullptr) < 0) child_fail(err_fd, ChildStage::Setgroups, errno);
  if (::setresgid(p.gid, p.gid, p.gid) < 0) child_fail(err_fd, ChildStage::Setgid, errno);
  if (::setresuid(p.uid, p.uid, p.uid) < 0) child_fail(err_fd, ChildStage::Setuid, errno);
  if (::getuid() == 0 || ::geteuid() == 0) child_fail(err_fd, ChildStage::StillRoot, EPERM);
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) child_fail(err_fd, ChildStage::NoNewPrivs, errno);
  if (::chdir("/") < 0) child_fail(err_fd, ChildStage::Chdir, errno);

  ::execve(p.path, p.argv, p.envp);
  child_fail(err_fd, ChildStage::Exec, errno);
}

void set_nonblock(int fd) {
  int flags = ::fcntl(fd, F_GETFL);
  if (flags >= 0) ::fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

// Reaps our child through its pidfd (blocking unless WNOHANG is in flags).
// nullopt: not reaped (still running with WNOHANG, or not our child).
std::optional<ExitStatus> reap(int pidfd, int flags) {
  siginfo_t info{};
  int r;
  do r = ::waitid(kPidfdIdType, static_cast<id_t>(pidfd), &info, WEXITED | flags);
  while (r < 0 && errno == EINTR);
  if (r < 0 || info.si_pid == 0) return std::nullopt;
  ExitStatus st;
  st.known = true;
  st.signaled = info.si_code == CLD_KILLED || info.si_code == CLD_DUMPED;
  st.value = info.si_status;
  return st;
}

// Runs `req` to completion with a deadline and returns what it printed.
Result<std::string> run_and_capture(Spawner& spawner, const SpawnRequest& req, int timeout_ms) {
  auto spawned = spawner.spawn(req);
  if (!spawned) return spawned.error();
  Spawned& s = *spawned;
  if (!s.log.valid() || !s.pidfd.valid()) return Error{EINVAL, "spawner returned no log or pidfd"};

  const uint64_t deadline = monotonic_us() + static_cast<uint64_t>(timeout_ms) * 1000;
  auto remaining_ms = [&]() -> int {
    uint64_t now = monotonic_us();
    return now >= deadline ? 0 : static_cast<int>((deadline - now + 999) / 1000);
  };
  std::string out;
  bool eof = false;
  while (!eof) {
    int left = remaining_ms();
    if (left == 0) break;
    pollfd pfd{s.log.get(), POLLIN, 0};
    int r = ::poll(&pfd, 1, left);
    if (r < 0 && errno != EINTR) break;
    if (r <= 0) continue;
    char buf[kReadChunk];
    ssize_t n = ::read(s.log.get(), buf, sizeof buf);
    if (n == 0) eof = true;
    else if (n > 0 && out.size() < kMaxProbeOutput) out.append(buf, static_cast<size_t>(n));
    else if (n < 0 && errno != EAGAIN && errno != EINTR) break;
  }

  // Output closed: the process is about to exit. Give it what is left of
  // the deadline, then make sure it is gone and reaped.
  pollfd pfd{s.pidfd.get(), POLLIN, 0};
  bool exited = eof && ::poll(&pfd, 1, remaining_ms()) == 1;
  if (!exited) sys_pidfd_send_signal(s.pidfd.get(), SIGKILL);
  (void)reap(s.pidfd.get(), 0);
  if (!exited) {
    std::string cmd;
    for (const std::string& a : req.argv) cmd += (cmd.empty() ? "" : " ") + a;
    return Error{ETIMEDOUT, "'" + cmd + "' did not finish within " + std::to_string(timeout_ms) + " ms, killed"};
  }
  return out;
}

}  // namespace

// ---------------------------------------------------------------------------
// ProcessSpawner

Result<Spawned> ProcessSpawner::spawn(const SpawnRequest& req) {
  if (req.uid == 0) return Error{EPERM, "passt never runs as root (uid 0 requested)"};
  if (req.gid == 0) return Error{EPERM, "passt never runs as root (gid 0 requested)"};
  if (req.path.empty() || req.path[0] != '/') return Error{EINVAL, "not an absolute path: '" + req.path + "'"};
  if (req.argv.empty()) return Error{EINVAL, "empty argv for " + req.path};
  if (req.handed_fd >= 0 && ::fcntl(req.handed_fd, F_GETFD) < 0) {
    return Error::last("handed fd " + std::to_string(req.handed_fd));
  }

  std::vector<char*> argv;
  for (const std::string& a : req.argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  std::array<char*, 2> envp{const_cast<char*>(kChildPath), nullptr};

  UniqueFd devnull(::open("/dev/null", O_RDWR | O_CLOEXEC));
  if (!devnull) return Error::last("open /dev/null");
  int p[2];
  if (::pipe2(p, O_CLOEXEC) < 0) return Error::last("pipe2");
  UniqueFd log_r(p[0]), log_w(p[1]);
  if (::pipe2(p, O_CLOEXEC) < 0) return Error::last("pipe2");
  UniqueFd err_r(p[0]), err_w(p[1]);
  UniqueFd go_r, go_w;
  if (req.before_exec) {
    if (::pipe2(p, O_CLOEXEC) < 0) return Error::last("pipe2");
    go_r.reset(p[0]);
    go_w.reset(p[1]);
  }

  const ChildPlan plan{req.path.c_str(), argv.data(), envp.data(), req.uid, req.gid,
                       devnull.get(), log_w.get(), err_w.get(), req.handed_fd, go_r.get(), go_w.get(),
                       child_fd_limit_ ? *child_fd_limit_ : RLIM_INFINITY};
  pid_t pid = ::fork();
  if (pid < 0) return Error::last("fork");
  if (pid == 0) child_exec(plan);

  log_w.reset();
  err_w.reset();
  devnull.reset();
  if (req.before_exec) {
    go_r.reset();
    // The start time is the child's from fork on; exec keeps it.
    const auto info = read_proc(pid);
    req.before_exec(pid, info ? info->start_time : 0);
    const char go = 1;
    ssize_t n;
    do n = ::write(go_w.get(), &go, 1);
    while (n < 0 && errno == EINTR);
    go_w.reset();
  }

  // EOF: the error pipe was closed by a successful exec.
  ChildError ce{};
  ssize_t n;
  do n = ::read(err_r.get(), &ce, sizeof ce);
  while (n < 0 && errno == EINTR);
  if (n != 0) {
    int st = 0;
    while (::waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    if (n != static_cast<ssize_t>(sizeof ce)) return Error{EIO, "spawn " + req.path + ": lost the child's report"};
    auto stage = static_cast<ChildStage>(ce.stage);
    std::string what = stage == ChildStage::Exec ? "exec " + req.path
                                                 : "spawn " + req.path + ": " + stage_name(stage);
    return Error::from_errno(ce.err, what);
  }

  // Not reaped yet, so the pid cannot have been reused.
  int pidfd = sys_pidfd_open(pid);
  if (pidfd < 0) {
    Error err = Error::last("pidfd_open " + std::to_string(pid));
    ::kill(pid, SIGKILL);
    while (::waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
    }
    return err;
  }
  set_nonblock(log_r.get());

  Spawned s;
  s.pid = pid;
  s.pidfd = UniqueFd(pidfd);
  s.log = std::move(log_r);
  if (auto info = read_proc(pid)) {
    s.start_time = info->start_time;
    s.exe = info->exe;
  }
  return s;
}

// ---------------------------------------------------------------------------
// ExitStatus

std::string ExitStatus::describe() const {
  if (!known) return "exited (status unknown: not a child of this relinkd)";
  if (!signaled) return "exited with status " + std::to_string(value);
  if (const char* abbrev = ::sigabbrev_np(value)) return std::string("killed by SIG") + abbrev;
  return "killed by signal " + std::to_string(value);
}

// ---------------------------------------------------------------------------
// Process

Result<std::unique_ptr<Process>> Process::watch(sd_event* loop, Spawned s, std::string log_name, ExitCb on_exit,
                                                LineCb on_line) {
  if (!s.pidfd) return Error{EINVAL, "watch " + log_name + ": no pidfd"};
  std::unique_ptr<Process> p(new Process());
  p->loop_ = loop;
  p->pid_ = s.pid;
  p->child_ = true;
  p->pidfd_ = std::move(s.pidfd);
  p->log_ = std::move(s.log);
  p->log_name_ = std::move(log_name);
  p->on_exit_ = std::move(on_exit);
  p->on_line_ = std::move(on_line);

  sd_event_source* src = nullptr;
  if (int r = sd_event_add_io(loop, &src, p->pidfd_.get(), EPOLLIN, &Process::on_pidfd, p.get()); r < 0) {
    return Error::from_errno(-r, "watch " + p->log_name_ + ": sd_event_add_io(pidfd)");
  }
  p->pid_src_.reset(src);
  if (p->log_) {
    set_nonblock(p->log_.get());
    src = nullptr;
    if (int r = sd_event_add_io(loop, &src, p->log_.get(), EPOLLIN, &Process::on_log, p.get()); r < 0) {
      return Error::from_errno(-r, "watch " + p->log_name_ + ": sd_event_add_io(log)");
    }
    p->log_src_.reset(src);
  }
  return p;
}

Result<std::unique_ptr<Process>> Process::adopt(sd_event* loop, pid_t pid, std::string log_name, ExitCb on_exit) {
  if (pid <= 0) return Error{EINVAL, "adopt " + log_name + ": invalid pid " + std::to_string(pid)};
  int fd = sys_pidfd_open(pid);
  if (fd < 0) return Error::last("adopt " + log_name + ": pidfd_open " + std::to_string(pid));
  Spawned s;
  s.pid = pid;
  s.pidfd = UniqueFd(fd);
  auto p = watch(loop, std::move(s), std::move(log_name), std::move(on_exit));
  if (p) (*p)->child_ = false;
  return p;
}

Process::~Process() {
  // Sources first: they refer to the fds closed after them.
  kill_timer_.reset();
  log_src_.reset();
  pid_src_.reset();
}

bool Process::alive() const {
  if (exited_) return false;
  // A pidfd polls readable once its process has exited.
  pollfd pfd{pidfd_.get(), POLLIN, 0};
  int r;
  do r = ::poll(&pfd, 1, 0);
  while (r < 0 && errno == EINTR);
  if (r != 0) return false;
  // Not exited yet, but maybe dying: a killed passt closes its files (QEMU
  // reports the stream dropped) milliseconds before its pidfd reports the
  // exit, while the kernel tears down its namespaces. The pid is still this
  // process's: an unreaped child's cannot be reused, and an adopted one's
  // only after an exit the pidfd just did not report.
  auto info = read_proc(pid_);
  return info && !info->exiting && !info->zombie;
}

bool Process::ended_by_stop(const ExitStatus& st) const {
  if (!stop_requested_) return false;
  if (!st.known || !st.signaled) return true;
  return st.value == SIGTERM || (st.value == SIGKILL && kill_sent_);
}

void Process::stop(uint64_t kill_after_ms) {
  if (exited_) return;
  stop_requested_ = true;
  if (sys_pidfd_send_signal(pidfd_.get(), SIGTERM) < 0 && errno != ESRCH) {
    log::get("passt")->debug("{}: SIGTERM to pid {}: {}", log_name_, pid_, std::strerror(errno));
  }
  if (kill_timer_) return;  // an earlier stop() already set the deadline
  sd_event_source* s = nullptr;
  if (int r = sd_event_add_time_relative(loop_, &s, CLOCK_MONOTONIC, kill_after_ms * 1000, kKillTimerAccuracyUs,
                                         &Process::on_kill_timer, this);
      r < 0) {
    // Without a timer there is no later: kill now.
    log::get("passt")->debug("{}: no kill timer ({}), sending SIGKILL now", log_name_, std::strerror(-r));
    kill_sent_ = true;
    sys_pidfd_send_signal(pidfd_.get(), SIGKILL);
    return;
  }
  kill_timer_.reset(s);
}

int Process::on_kill_timer(sd_event_source*, uint64_t, void* userdata) {
  auto* self = static_cast<Process*>(userdata);
  if (!self->exited_) {
    log::get("passt")->debug("{}: pid {} still alive after SIGTERM, sending SIGKILL", self->log_name_, self->pid_);
    self->kill_sent_ = true;
    sys_pidfd_send_signal(self->pidfd_.get(), SIGKILL);
  }
  return 0;
}

int Process::on_pidfd(sd_event_source*, int, uint32_t, void* userdata) {
  auto* self = static_cast<Process*>(userdata);
  ExitStatus st;  // unknown unless we can reap it
  if (self->child_) {
    if (auto reaped = reap(self->pidfd_.get(), WNOHANG)) st = *reaped;
    // nullopt with ECHILD: someone else reaped it; the status is lost.
  }
  self->exited_ = true;
  self->pid_src_.reset();
  self->kill_timer_.reset();
  self->flush_log(true);

  // on_exit may destroy *self: nothing below touches it.
  ExitCb cb = std::move(self->on_exit_);
  if (cb) cb(st);
  return 0;
}

int Process::on_log(sd_event_source*, int, uint32_t, void* userdata) {
  static_cast<Process*>(userdata)->flush_log(false);
  return 0;
}

// Reads what the log pipe holds and logs whole lines. At eof (the process has
// exited) the pipe is drained, a last unterminated line is logged and the
// pipe is closed.
void Process::flush_log(bool eof) {
  if (!log_) return;
  auto logger = log::get("passt");
  auto emit = [&](std::string_view line) {
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty() || is_syslog_noise(line)) return;
    if (on_line_) on_line_(line);
    else logger->debug("{}: {}", log_name_, line);
  };

  bool closed = false;
  char buf[kReadChunk];
  for (int i = 0; i < (eof ? kMaxReadsAtExit : kMaxReadsPerDispatch); ++i) {
    ssize_t n = ::read(log_.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      closed = n == 0 || errno != EAGAIN;
      break;
    }
    partial_.append(buf, static_cast<size_t>(n));
    size_t start = 0;
    while (true) {
      size_t nl = partial_.find('\n', start);
      if (nl == std::string::npos) break;
      // A line longer than the bound is logged in pieces.
      for (size_t pos = start; pos < nl; pos += kMaxLogLine) {
        emit(std::string_view(partial_).substr(pos, std::min(kMaxLogLine, nl - pos)));
      }
      start = nl + 1;
    }
    partial_.erase(0, start);
    while (partial_.size() >= kMaxLogLine) {
      emit(std::string_view(partial_).substr(0, kMaxLogLine));
      partial_.erase(0, kMaxLogLine);
    }
  }

  if (eof || closed) {
    if (!partial_.empty()) emit(partial_);
    partial_.clear();
    log_src_.reset();
    log_.reset();
  }
}

// ---------------------------------------------------------------------------
// Feature probe

Result<Features> probe_features(Spawner& spawner, const std::string& passt_path, uid_t uid, gid_t gid) {
  struct stat st {};
  if (::stat(passt_path.c_str(), &st) != 0) return Error::last("passt not found at " + passt_path);

  SpawnRequest req;
  req.path = passt_path;
  req.argv = {passt_path, "--help"};
  req.uid = uid;
  req.gid = gid;
  auto help = run_and_capture(spawner, req, kProbeTimeoutMs);
  if (!help) {
    if (help.error().code == ENOENT) return Error::from_errno(ENOENT, "passt not found at " + passt_path);
    return Error{help.error().code, "probing " + passt_path + " --help: " + help.error().message};
  }
  Features f = parse_help(*help);

  // The version is only informative: a failure leaves it empty.
  req.argv = {passt_path, "--version"};
  if (auto version = run_and_capture(spawner, req, kProbeTimeoutMs)) {
    std::string_view text = *version;
    while (!text.empty()) {
      size_t nl = text.find('\n');
      std::string_view line = text.substr(0, nl);
      text = nl == std::string_view::npos ? std::string_view{} : text.substr(nl + 1);
      while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.remove_suffix(1);
      if (!line.empty() && !is_syslog_noise(line)) {
        f.version = line;
        break;
      }
    }
  }
  return f;
}

}  // namespace relink::passt
