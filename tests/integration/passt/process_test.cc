// SPDX-License-Identifier: GPL-2.0-or-later
// ProcessSpawner, Process and probe_features against real processes: the
// spawner's promises (user, fds, signals, session) checked in /proc on a
// plain sleep, then Debian 12's passt itself in a throwaway namespace.
#include "passt/process.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <spdlog/sinks/base_sink.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "passt/passt.h"
#include "passt/pidfile.h"
#include "support/fake_qmp.h"
#include "support/harness.h"
#include "util/log.h"

namespace relink::passt {
namespace {

using namespace std::chrono_literals;
using test::run_until;

constexpr const char* kPasst = "/usr/bin/passt";
constexpr uid_t kNobody = 65534;
constexpr gid_t kNogroup = 65534;

// ---- what /proc says about a process ----

std::string proc_path(pid_t pid, const std::string& what) { return "/proc/" + std::to_string(pid) + "/" + what; }

// A "Key:\tvalue" line of /proc/PID/status, value as printed.
std::string status_field(pid_t pid, const std::string& key) {
  std::istringstream in(test::read_file(proc_path(pid, "status")));
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(key + ":", 0) == 0) {
      std::string v = line.substr(key.size() + 1);
      v.erase(0, v.find_first_not_of(" \t"));
      return v;
    }
  }
  return "";
}

uint64_t status_mask(pid_t pid, const std::string& key) {
  return std::stoull(status_field(pid, key), nullptr, 16);
}

// fd number -> readlink target.
std::map<int, std::string> fd_table(pid_t pid) {
  std::map<int, std::string> out;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(proc_path(pid, "fd"), ec)) {
    out[std::stoi(e.path().filename().string())] = std::filesystem::read_symlink(e.path(), ec).string();
  }
  return out;
}

std::set<int> fd_numbers(pid_t pid) {
  std::set<int> out;
  for (const auto& [fd, target] : fd_table(pid)) out.insert(fd);
  return out;
}

// What one of our own fds is ("pipe:[123]", "socket:[456]").
std::string own_fd_target(int fd) {
  return std::filesystem::read_symlink("/proc/self/fd/" + std::to_string(fd)).string();
}

size_t own_fd_count() { return fd_table(getpid()).size(); }

bool no_children_left() { return waitpid(-1, nullptr, WNOHANG) < 0 && errno == ECHILD; }

// ---- cleanup ----

// Kills (SIGKILL) and reaps a spawned process on every exit path. It keeps its
// own pidfd, so it can never hit a reused pid.
class KillGuard {
 public:
  explicit KillGuard(int pidfd) : pidfd_(pidfd >= 0 ? fcntl(pidfd, F_DUPFD_CLOEXEC, 3) : -1) {}
  ~KillGuard() {
    if (!pidfd_) return;
    syscall(SYS_pidfd_send_signal, pidfd_.get(), SIGKILL, nullptr, 0);
    siginfo_t info{};
    waitid(static_cast<idtype_t>(3) /* P_PIDFD */, static_cast<id_t>(pidfd_.get()), &info, WEXITED);
  }
  KillGuard(const KillGuard&) = delete;
  KillGuard& operator=(const KillGuard&) = delete;

 private:
  UniqueFd pidfd_;
};

// ---- log capture ----

// Takes the "passt" logger's messages (at debug, where a Process without a
// line callback logs its output) while alive; they are shown on failure
// instead of cluttering the test output.
class LogCapture {
 public:
  LogCapture()
      : logger_(log::get("passt")),
        old_level_(logger_->level()),
        old_sinks_(logger_->sinks()),
        sink_(std::make_shared<Sink>()) {
    logger_->sinks() = {sink_};
    logger_->set_level(spdlog::level::debug);
  }
  ~LogCapture() {
    logger_->sinks() = old_sinks_;
    logger_->set_level(old_level_);
  }
  std::vector<std::string> lines() const {
    std::lock_guard lock(sink_->mu);
    return sink_->lines;
  }
  bool any_contains(const std::string& text) const {
    for (const auto& l : lines()) {
      if (l.find(text) != std::string::npos) return true;
    }
    return false;
  }
  std::string dump() const {
    std::string out;
    for (const auto& l : lines()) out += "  [" + l + "]\n";
    return out;
  }

 private:
  struct Sink : spdlog::sinks::base_sink<spdlog::details::null_mutex> {
    std::mutex mu;
    std::vector<std::string> lines;
    void sink_it_(const spdlog::details::log_msg& msg) override {
      std::lock_guard lock(mu);
      lines.emplace_back(msg.payload.data(), msg.payload.size());
    }
    void flush_() override {}
  };
  std::shared_ptr<spdlog::logger> logger_;
  spdlog::level::level_enum old_level_;
  std::vector<spdlog::sink_ptr> old_sinks_;
  std::shared_ptr<Sink> sink_;
};

// ---- fixture ----

// Where on_exit reports go.
struct ExitRecord {
  int calls = 0;
  ExitStatus status;
};

class ProcessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    RELINK_REQUIRE_ROOT();
    sd_event* e = nullptr;
    ASSERT_GE(sd_event_new(&e), 0);
    loop_.reset(e);
  }

  SpawnRequest request(std::vector<std::string> argv, int handed_fd = -1) {
    SpawnRequest req;
    req.path = argv.at(0);
    req.argv = std::move(argv);
    req.uid = kNobody;
    req.gid = kNogroup;
    req.handed_fd = handed_fd;
    return req;
  }

  // Spawns, guards and watches; the exit lands in `exit`.
  std::unique_ptr<Process> start(const SpawnRequest& req, ExitRecord& exit, const std::string& name = "t") {
    auto s = spawner_.spawn(req);
    EXPECT_TRUE(s) << s.error().message;
    if (!s) return nullptr;
    guards_.push_back(std::make_unique<KillGuard>(s->pidfd.get()));
    last_exe_ = s->exe;
    last_start_time_ = s->start_time;
    auto p = Process::watch(loop_.get(), std::move(*s), name, [&exit](const ExitStatus& st) {
      ++exit.calls;
      exit.status = st;
    });
    EXPECT_TRUE(p) << p.error().message;
    return p ? std::move(*p) : nullptr;
  }

  bool run_until_exit(const ExitRecord& exit, std::chrono::milliseconds timeout = 5s) {
    return run_until(loop_.get(), [&] { return exit.calls > 0; }, timeout);
  }

  ProcessSpawner spawner_;
  std::string last_exe_;  // of the last start()
  uint64_t last_start_time_ = 0;
  SdEventPtr loop_;
  std::vector<std::unique_ptr<KillGuard>> guards_;  // declared after loop_: they go first
};

// ---- the spawner, on plain programs ----

TEST_F(ProcessTest, ChildGetsOnlyStdioAndTheHandedSocket) {
  // Things a root daemon may hold that must not reach passt: a fd without
  // CLOEXEC, blocked signals, an ignored signal, its environment.
  UniqueFd leaky(open("/dev/zero", O_RDONLY));  // deliberately not O_CLOEXEC
  ASSERT_TRUE(leaky);
  int sp[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp), 0);
  UniqueFd ours(sp[0]), theirs(sp[1]);
  sigset_t block, old_mask;
  sigemptyset(&block);
  sigaddset(&block, SIGTERM);
  sigaddset(&block, SIGHUP);
  ASSERT_EQ(sigprocmask(SIG_BLOCK, &block, &old_mask), 0);
  struct sigaction ign {}, old_usr1 {};
  ign.sa_handler = SIG_IGN;
  ASSERT_EQ(sigaction(SIGUSR1, &ign, &old_usr1), 0);
  setenv("RELINK_TEST_SECRET", "leaked", 1);

  auto s = spawner_.spawn(request({"/bin/sleep", "30"}, theirs.get()));

  sigprocmask(SIG_SETMASK, &old_mask, nullptr);
  sigaction(SIGUSR1, &old_usr1, nullptr);
  unsetenv("RELINK_TEST_SECRET");
  ASSERT_TRUE(s) << s.error().message;
  KillGuard guard(s->pidfd.get());
  const pid_t pid = s->pid;

  // The dynamic loader opens libraries for a moment after exec; a leaked fd
  // would stay forever.
  EXPECT_TRUE(test::wait_until([&] { return fd_numbers(pid) == std::set<int>{0, 1, 2, 3}; }, 3s))
      << "fds: " << ::testing::PrintToString(fd_table(pid));
  auto fds = fd_table(pid);
  EXPECT_EQ(fds[0], "/dev/null");
  EXPECT_EQ(fds[1], own_fd_target(s->log.get())) << "stdout is the log pipe";
  EXPECT_EQ(fds[2], own_fd_target(s->log.get())) << "stderr is the log pipe";
  EXPECT_EQ(fds[3], own_fd_target(theirs.get())) << "fd 3 is the handed socket";

  EXPECT_EQ(status_field(pid, "Uid"), "65534\t65534\t65534\t65534");
  EXPECT_EQ(status_field(pid, "Gid"), "65534\t65534\t65534\t65534");
  EXPECT_EQ(status_field(pid, "Groups"), "");
  EXPECT_EQ(status_field(pid, "NoNewPrivs"), "1");
  EXPECT_EQ(status_mask(pid, "SigIgn"), 1ull << (SIGPIPE - 1)) << "only SIGPIPE ignored";
  EXPECT_EQ(status_mask(pid, "SigBlk"), 0u) << "nothing blocked";
  EXPECT_EQ(getsid(pid), pid) << "own session";
  EXPECT_EQ(std::filesystem::read_symlink(proc_path(pid, "cwd")), "/");
  EXPECT_EQ(test::read_file(proc_path(pid, "environ")).find("RELINK_TEST_SECRET"), std::string::npos);

  // What Spawned reports matches /proc.
  EXPECT_EQ(s->exe, std::filesystem::canonical("/bin/sleep").string());
  auto info = read_proc(pid);
  ASSERT_TRUE(info);
  EXPECT_EQ(s->start_time, info->start_time);
  EXPECT_GT(s->start_time, 0u);
  EXPECT_TRUE(fcntl(s->pidfd.get(), F_GETFD) & FD_CLOEXEC);
  EXPECT_TRUE(fcntl(s->log.get(), F_GETFD) & FD_CLOEXEC);
  EXPECT_TRUE(fcntl(s->log.get(), F_GETFL) & O_NONBLOCK);
}

TEST_F(ProcessTest, HandedFdOnAStdioNumberStillBecomesFd3) {
  // handed_fd may sit on 1 or 2 in the daemon (started with those closed):
  // placing stdout/stderr must not clobber it first.
  int sp[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp), 0);
  UniqueFd ours(sp[0]), theirs(sp[1]);
  const std::string socket_target = own_fd_target(theirs.get());
  for (int number : {1, 2}) {
    UniqueFd saved(fcntl(number, F_DUPFD_CLOEXEC, 10));
    ASSERT_TRUE(saved);
    ASSERT_EQ(dup2(theirs.get(), number), number);
    auto s = spawner_.spawn(request({"/bin/sleep", "30"}, number));
    dup2(saved.get(), number);  // the test's stdout/stderr back
    ASSERT_TRUE(s) << s.error().message;
    KillGuard guard(s->pidfd.get());
    EXPECT_TRUE(test::wait_until([&] { return fd_numbers(s->pid) == std::set<int>{0, 1, 2, 3}; }, 3s));
    auto fds = fd_table(s->pid);
    EXPECT_EQ(fds[3], socket_target) << "handed on fd " << number;
    EXPECT_EQ(fds[1], own_fd_target(s->log.get())) << "handed on fd " << number;
    EXPECT_EQ(fds[2], own_fd_target(s->log.get())) << "handed on fd " << number;
  }
}

TEST_F(ProcessTest, WithoutHandedFdThereIsNoFd3) {
  auto s = spawner_.spawn(request({"/bin/sleep", "30"}));
  ASSERT_TRUE(s) << s.error().message;
  KillGuard guard(s->pidfd.get());
  EXPECT_TRUE(test::wait_until([&] { return fd_numbers(s->pid) == std::set<int>{0, 1, 2}; }, 3s))
      << ::testing::PrintToString(fd_table(s->pid));
}

TEST_F(ProcessTest, BeforeExecRunsWhileTheChildHasNotExecutedYet) {
  // What relinkd writes there (the pidfile) must name the process that then
  // runs: same pid, same start time; and exec must not have happened yet.
  pid_t hook_pid = 0;
  uint64_t hook_start = 0;
  std::string exe_then, cmdline_then;
  auto req = request({"/bin/sleep", "30"});
  req.before_exec = [&](pid_t pid, uint64_t start_time) {
    hook_pid = pid;
    hook_start = start_time;
    // The child waits for the go-ahead: give it time it must not use.
    std::this_thread::sleep_for(50ms);
    auto info = read_proc(pid);
    if (info) exe_then = info->exe, cmdline_then = info->cmdline.empty() ? "" : info->cmdline[0];
  };
  auto s = spawner_.spawn(req);
  ASSERT_TRUE(s) << s.error().message;
  KillGuard guard(s->pidfd.get());
  EXPECT_EQ(hook_pid, s->pid);
  EXPECT_NE(hook_start, 0u);
  EXPECT_EQ(hook_start, s->start_time) << "exec keeps the start time the record names";
  EXPECT_EQ(exe_then, std::filesystem::read_symlink("/proc/self/exe").string()) << "not exec'd yet";
  EXPECT_NE(cmdline_then, "/bin/sleep");
  EXPECT_EQ(s->exe, std::filesystem::canonical("/bin/sleep").string());
}

TEST_F(ProcessTest, AChildWhoseParentDiesBeforeTheGoAheadNeverExecs) {
  // A forked helper plays relinkd: it spawns with a hook that kills the
  // helper itself (a crash between fork and the record), so the child never
  // gets its go-ahead. Its child must exit without running the program.
  const std::string marker = "/tmp/relink-never-" + test::random_suffix();
  int pids[2];
  ASSERT_EQ(pipe2(pids, O_CLOEXEC), 0);
  const pid_t helper = fork();
  ASSERT_GE(helper, 0);
  if (helper == 0) {
    ProcessSpawner spawner;
    SpawnRequest req;
    req.path = "/bin/sh";
    req.argv = {"/bin/sh", "-c", "touch " + marker};
    req.uid = kNobody;
    req.gid = kNogroup;
    req.before_exec = [&](pid_t pid, uint64_t) {
      (void)!write(pids[1], &pid, sizeof pid);
      ::kill(getpid(), SIGKILL);
    };
    (void)spawner.spawn(req);
    _exit(0);
  }
  close(pids[1]);
  pid_t child = 0;
  ASSERT_EQ(read(pids[0], &child, sizeof child), static_cast<ssize_t>(sizeof child));
  close(pids[0]);
  int st = 0;
  ASSERT_EQ(waitpid(helper, &st, 0), helper);
  // The orphaned child is reparented (to init or a subreaper): wait for it to be gone.
  EXPECT_TRUE(test::wait_until([&] { return !read_proc(child) || read_proc(child)->zombie; }, 3s));
  EXPECT_FALSE(std::filesystem::exists(marker)) << "the program ran without its record";
  std::filesystem::remove(marker);
}

TEST_F(ProcessTest, MissingBinaryIsAnExecErrorAndLeavesNothing) {
  ASSERT_TRUE(no_children_left());
  const size_t fds_before = own_fd_count();
  auto s = spawner_.spawn(request({"/nonexistent/passt", "--help"}));
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().code, ENOENT);
  EXPECT_EQ(s.error().message, "exec /nonexistent/passt: No such file or directory");
  EXPECT_TRUE(no_children_left()) << "the failed child was reaped";
  EXPECT_EQ(own_fd_count(), fds_before);
}

TEST_F(ProcessTest, NotExecutableIsAnExecError) {
  auto s = spawner_.spawn(request({"/etc/passwd"}));
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().code, EACCES) << s.error().message;
  EXPECT_TRUE(no_children_left());
}

TEST_F(ProcessTest, RootIsRefused) {
  SpawnRequest req = request({"/bin/sleep", "30"});
  req.uid = 0;
  auto s = spawner_.spawn(req);
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().code, EPERM);
  EXPECT_NE(s.error().message.find("passt never runs as root"), std::string::npos) << s.error().message;

  req = request({"/bin/sleep", "30"});
  req.gid = 0;
  s = spawner_.spawn(req);
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().code, EPERM);
  EXPECT_TRUE(no_children_left());
}

TEST_F(ProcessTest, LogLinesReachTheLoggerCleanedAndBounded) {
  LogCapture capture;
  ExitRecord exit;
  // CRLF, syslog noise, an empty line, a 5000-byte line and an unterminated
  // last line.
  auto p = start(request({"/bin/sh", "-c",
                          "printf 'one\\r\\nFailed to send 31 bytes to syslog\\n\\ntwo\\n'; "
                          "head -c 5000 /dev/zero | tr '\\000' x; printf '\\nlast'; exit 3"}),
                 exit, "web1/net1");
  ASSERT_TRUE(p);
  ASSERT_TRUE(run_until_exit(exit));
  EXPECT_EQ(exit.calls, 1);
  EXPECT_EQ(exit.status.describe(), "exited with status 3");
  EXPECT_TRUE(p->exited());
  EXPECT_EQ(capture.lines(), (std::vector<std::string>{
                                 "web1/net1: one",
                                 "web1/net1: two",
                                 "web1/net1: " + std::string(4096, 'x'),
                                 "web1/net1: " + std::string(5000 - 4096, 'x'),
                                 "web1/net1: last",
                             }));
}

TEST_F(ProcessTest, LinesGoToTheLineCallbackInsteadOfTheLogger) {
  LogCapture capture;
  ExitRecord exit;
  std::vector<std::string> lines;
  auto s = spawner_.spawn(request({"/bin/sh", "-c", "printf 'one\\r\\nFailed to send 31 bytes to syslog\\n\\ntwo'"}));
  ASSERT_TRUE(s) << s.error().message;
  KillGuard guard(s->pidfd.get());
  auto p = Process::watch(
      loop_.get(), std::move(*s), "t",
      [&](const ExitStatus& st) {
        ++exit.calls;
        exit.status = st;
      },
      [&](std::string_view line) { lines.emplace_back(line); });
  ASSERT_TRUE(p) << p.error().message;
  ASSERT_TRUE(run_until_exit(exit));
  EXPECT_EQ(lines, (std::vector<std::string>{"one", "two"}));
  EXPECT_TRUE(capture.lines().empty()) << capture.dump();
}

TEST_F(ProcessTest, NotAliveOnceKilledEvenBeforeTheLoopSeesTheExit) {
  ExitRecord exit;
  auto p = start(request({"/bin/sleep", "30"}), exit);
  ASSERT_TRUE(p);
  EXPECT_TRUE(p->alive());
  ASSERT_EQ(::kill(p->pid(), SIGKILL), 0);
  // Not dispatched yet: exited() still says no, alive() already knows.
  ASSERT_TRUE(test::wait_until([&] { return !p->alive(); }, 3s));
  EXPECT_FALSE(p->exited());
  EXPECT_EQ(exit.calls, 0);
  ASSERT_TRUE(run_until_exit(exit));
  EXPECT_FALSE(p->alive());
  EXPECT_FALSE(p->ended_by_stop(exit.status)) << "nobody asked it to stop";
}

TEST_F(ProcessTest, EndedByStopOnlyWhenTheSignalWasRelinkds) {
  {
    ExitRecord exit;
    auto p = start(request({"/bin/sleep", "30"}), exit);
    ASSERT_TRUE(p);
    p->stop(5000);
    ASSERT_TRUE(run_until_exit(exit, 3s));
    EXPECT_EQ(exit.status.describe(), "killed by SIGTERM");
    EXPECT_TRUE(p->ended_by_stop(exit.status));
  }
  {
    // Ignores SIGTERM; the grace period escalates to relinkd's SIGKILL.
    ExitRecord exit;
    auto p = start(request({"/bin/sh", "-c", "trap '' TERM; exec sleep 30"}), exit);
    ASSERT_TRUE(p);
    ASSERT_TRUE(test::wait_until([&] { return status_field(p->pid(), "Name") == "sleep"; }, 3s));
    p->stop(100);
    ASSERT_TRUE(run_until_exit(exit, 3s));
    EXPECT_EQ(exit.status.describe(), "killed by SIGKILL");
    EXPECT_TRUE(p->ended_by_stop(exit.status));
  }
  {
    // Ignores SIGTERM and is killed from elsewhere within the grace period.
    ExitRecord exit;
    auto p = start(request({"/bin/sh", "-c", "trap '' TERM; exec sleep 30"}), exit);
    ASSERT_TRUE(p);
    ASSERT_TRUE(test::wait_until([&] { return status_field(p->pid(), "Name") == "sleep"; }, 3s));
    p->stop(10000);
    ASSERT_EQ(::kill(p->pid(), SIGKILL), 0);
    ASSERT_TRUE(run_until_exit(exit, 3s));
    EXPECT_EQ(exit.status.describe(), "killed by SIGKILL");
    EXPECT_FALSE(p->ended_by_stop(exit.status)) << "that SIGKILL was not relinkd's";
  }
  {
    // Exits by itself: not a stop.
    ExitRecord exit;
    auto p = start(request({"/bin/true"}), exit);
    ASSERT_TRUE(p);
    ASSERT_TRUE(run_until_exit(exit, 3s));
    EXPECT_EQ(exit.status.describe(), "exited with status 0");
    EXPECT_FALSE(p->ended_by_stop(exit.status));
  }
}

TEST_F(ProcessTest, OnExitMayDestroyTheProcess) {
  int calls = 0;
  ExitStatus got;
  std::unique_ptr<Process> p;
  auto s = spawner_.spawn(request({"/bin/sh", "-c", "echo bye; exit 7"}));
  ASSERT_TRUE(s) << s.error().message;
  KillGuard guard(s->pidfd.get());
  auto w = Process::watch(loop_.get(), std::move(*s), "t", [&](const ExitStatus& st) {
    ++calls;
    got = st;
    p.reset();  // the owner drops it from its own exit callback
  });
  ASSERT_TRUE(w) << w.error().message;
  p = std::move(*w);
  ASSERT_TRUE(run_until(loop_.get(), [&] { return calls > 0; }, 5s));
  EXPECT_EQ(p, nullptr);
  EXPECT_EQ(got.describe(), "exited with status 7");
  test::run_for(loop_.get(), 50ms);
  EXPECT_EQ(calls, 1);
}

TEST_F(ProcessTest, StopEscalatesToSigkill) {
  ExitRecord exit;
  // SIG_IGN survives exec: this sleep ignores SIGTERM.
  auto p = start(request({"/bin/sh", "-c", "trap '' TERM; exec sleep 30"}), exit);
  ASSERT_TRUE(p);
  ASSERT_TRUE(test::wait_until(
      [&] {
        return status_field(p->pid(), "Name") == "sleep" &&
               (status_mask(p->pid(), "SigIgn") & (1ull << (SIGTERM - 1)));
      },
      3s));
  const auto t0 = std::chrono::steady_clock::now();
  p->stop(300);
  ASSERT_TRUE(run_until_exit(exit, 5s));
  const auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_EQ(exit.status.describe(), "killed by SIGKILL");
  EXPECT_GE(took, 290ms) << "SIGKILL only after the grace period";
  EXPECT_LT(took, 3s);
}

TEST_F(ProcessTest, StopEndsAProcessWithSigterm) {
  ExitRecord exit;
  auto p = start(request({"/bin/sleep", "30"}), exit);
  ASSERT_TRUE(p);
  p->stop(5000);
  ASSERT_TRUE(run_until_exit(exit, 3s));
  EXPECT_EQ(exit.status.describe(), "killed by SIGTERM");
  p->stop();  // after exit: nothing to do
  test::run_for(loop_.get(), 20ms);
  EXPECT_EQ(exit.calls, 1);
}

TEST_F(ProcessTest, DestroyingTheProcessLeavesItRunning) {
  ExitRecord exit;
  auto p = start(request({"/bin/sleep", "30"}), exit);
  ASSERT_TRUE(p);
  const pid_t pid = p->pid();
  p.reset();
  test::run_for(loop_.get(), 50ms);
  EXPECT_EQ(exit.calls, 0);
  auto info = read_proc(pid);
  ASSERT_TRUE(info);
  EXPECT_FALSE(info->zombie);
}

TEST_F(ProcessTest, AdoptedProcessExitHasUnknownStatus) {
  test::Child other({"sleep", "30"}, {});  // started elsewhere: not through the spawner
  ASSERT_GT(other.pid(), 0);
  ExitRecord exit;
  auto p = Process::adopt(loop_.get(), other.pid(), "adopted", [&](const ExitStatus& st) {
    ++exit.calls;
    exit.status = st;
  });
  ASSERT_TRUE(p) << p.error().message;
  EXPECT_EQ((*p)->pid(), other.pid());
  test::run_for(loop_.get(), 50ms);
  EXPECT_EQ(exit.calls, 0);
  EXPECT_FALSE((*p)->exited());

  (*p)->stop(2000);  // signals through the pidfd, though not our child
  ASSERT_TRUE(run_until_exit(exit, 3s));
  EXPECT_TRUE((*p)->exited());
  EXPECT_FALSE(exit.status.known);
  EXPECT_EQ(exit.status.describe(), "exited (status unknown: not a child of this relinkd)");
  // The adopter did not reap it: its real parent still can.
  int st = other.wait(2s);
  ASSERT_NE(st, -1);
  EXPECT_TRUE(WIFSIGNALED(st) && WTERMSIG(st) == SIGTERM);
}

TEST_F(ProcessTest, AdoptingAGonePidFails) {
  pid_t gone = fork();
  if (gone == 0) _exit(0);
  ASSERT_GT(gone, 0);
  ASSERT_EQ(waitpid(gone, nullptr, 0), gone);
  auto p = Process::adopt(loop_.get(), gone, "gone", [](const ExitStatus&) {});
  ASSERT_FALSE(p);
  EXPECT_EQ(p.error().code, ESRCH) << p.error().message;
}

TEST(ExitStatusDescribe, Wording) {
  ExitStatus st;
  EXPECT_EQ(st.describe(), "exited (status unknown: not a child of this relinkd)");
  st.known = true;
  st.value = 1;
  EXPECT_EQ(st.describe(), "exited with status 1");
  st.signaled = true;
  st.value = SIGKILL;
  EXPECT_EQ(st.describe(), "killed by SIGKILL");
  st.value = SIGSEGV;
  EXPECT_EQ(st.describe(), "killed by SIGSEGV");
}

// ---- the real passt ----

class PasstTest : public ProcessTest {
 protected:
  void SetUp() override {
    ProcessTest::SetUp();
    if (IsSkipped()) return;
    if (access(kPasst, X_OK) != 0) GTEST_SKIP() << kPasst << " not installed";
    ns_ = std::make_unique<test::Netns>("passt");
    // passt picks its addresses from the interface with the default route.
    ns_->ip("link add v0 type veth peer name v1");
    ns_->ip("addr add 192.0.2.1/24 dev v0");
    ns_->ip("link set v0 up");
    ns_->ip("link set v1 up");
    ns_->ip("route add default via 192.0.2.254");
  }
  void TearDown() override {
    procs_.clear();
    guards_.clear();
    ns_.reset();
  }

  // A stream-server passt on one end of a socketpair (the other end stands
  // in for QEMU); relinkd's copy of the handed end is closed after spawn.
  Process* start_passt(ExitRecord& exit, UniqueFd& qemu_end, const std::string& netns = "") {
    int sp[2];
    EXPECT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp), 0);
    qemu_end.reset(sp[0]);
    UniqueFd handed(sp[1]);
    SpawnRequest req = request(build_argv(kPasst, Mode::StreamServer, "", {"-t", "10001"}), handed.get());
    std::unique_ptr<Process> p;
    {
      test::ScopedNetnsEnter in(netns.empty() ? ns_->name() : netns);  // the child inherits it
      EXPECT_TRUE(in.ok());
      p = start(req, exit, "passt-t");
    }
    if (!p) return nullptr;
    procs_.push_back(std::move(p));
    return procs_.back().get();
  }

  bool listening_on_10001() const {
    return ns_->run("ss -Hltn 'sport = :10001'").out.find("10001") != std::string::npos;
  }

  std::unique_ptr<test::Netns> ns_;
  std::vector<std::unique_ptr<Process>> procs_;
};

TEST_F(PasstTest, ServesTheHandedSocketAndExitsWhenThePeerCloses) {
  LogCapture capture;
  ExitRecord exit;
  UniqueFd qemu_end;
  Process* p = start_passt(exit, qemu_end);
  ASSERT_TRUE(p);
  const pid_t pid = p->pid();
  ASSERT_TRUE(test::wait_until([&] { return listening_on_10001(); }, 5s))
      << "passt did not come up; log:\n" << capture.dump();
  ASSERT_FALSE(p->exited());

  EXPECT_EQ(status_field(pid, "Uid"), "65534\t65534\t65534\t65534");
  EXPECT_TRUE(status_mask(pid, "SigIgn") & (1ull << (SIGPIPE - 1))) << "SIGPIPE ignored";
  // passt opens its own fds once running; what it got from us is 0..3.
  auto fds = fd_table(pid);
  EXPECT_EQ(fds[0], "/dev/null");
  ASSERT_TRUE(fds.count(3)) << ::testing::PrintToString(fds);
  EXPECT_EQ(fds[3].rfind("socket:", 0), 0u) << fds[3];

  qemu_end.reset();  // QEMU's side goes away
  ASSERT_TRUE(run_until_exit(exit, 5s)) << "log:\n" << capture.dump();
  EXPECT_EQ(exit.calls, 1);
  EXPECT_EQ(exit.status.describe(), "exited with status 0") << "log:\n" << capture.dump();
  EXPECT_FALSE(capture.any_contains("Failed to send")) << capture.dump();
}

TEST_F(PasstTest, StopEndsALivePasst) {
  ExitRecord exit;
  UniqueFd qemu_end;
  Process* p = start_passt(exit, qemu_end);
  ASSERT_TRUE(p);
  ASSERT_TRUE(test::wait_until([&] { return listening_on_10001(); }, 5s));
  const auto t0 = std::chrono::steady_clock::now();
  p->stop(3000);
  ASSERT_TRUE(run_until_exit(exit, 5s));
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2900ms) << "SIGTERM was enough";
  EXPECT_TRUE(p->exited());
  EXPECT_EQ(exit.status.describe(), "exited with status 0") << "passt 2023-03 exits cleanly on SIGTERM";
  EXPECT_FALSE(listening_on_10001());
}

TEST_F(PasstTest, SigkillIsReported) {
  ExitRecord exit;
  UniqueFd qemu_end;
  Process* p = start_passt(exit, qemu_end);
  ASSERT_TRUE(p);
  ASSERT_TRUE(test::wait_until([&] { return listening_on_10001(); }, 5s));
  ASSERT_EQ(kill(p->pid(), SIGKILL), 0);
  ASSERT_TRUE(run_until_exit(exit, 5s));
  EXPECT_EQ(exit.status.describe(), "killed by SIGKILL");
}

TEST_F(PasstTest, SurvivesLosingItsLogReader) {
  // relinkd restarting closes the read end of passt's stderr; passt's next
  // log line then meets EPIPE, and passt would die of SIGPIPE but for the
  // spawner ignoring it. -d makes passt log on its way down, too.
  int sp[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp), 0);
  UniqueFd qemu_end(sp[0]), handed(sp[1]);
  Result<Spawned> s = Error{};
  {
    test::ScopedNetnsEnter in(ns_->name());
    ASSERT_TRUE(in.ok());
    s = spawner_.spawn(request(build_argv(kPasst, Mode::StreamServer, "", {"-d", "-t", "10001"}), handed.get()));
  }
  ASSERT_TRUE(s) << s.error().message;
  guards_.push_back(std::make_unique<KillGuard>(s->pidfd.get()));
  s->log.reset();  // before passt's first line
  handed.reset();
  ExitRecord exit;
  auto p = Process::watch(loop_.get(), std::move(*s), "passt-t", [&](const ExitStatus& st) {
    ++exit.calls;
    exit.status = st;
  });
  ASSERT_TRUE(p) << p.error().message;
  ASSERT_TRUE(test::wait_until([&] { return listening_on_10001(); }, 5s));
  EXPECT_FALSE((*p)->exited());
  qemu_end.reset();
  ASSERT_TRUE(run_until_exit(exit, 5s));
  EXPECT_EQ(exit.status.describe(), "exited with status 0");
}

TEST_F(PasstTest, ARestartedRelinkdAdoptsItsPasst) {
  ExitRecord first_exit;
  UniqueFd qemu_end;
  Process* first = start_passt(first_exit, qemu_end);
  ASSERT_TRUE(first);
  ASSERT_TRUE(test::wait_until([&] { return listening_on_10001(); }, 5s));
  const pid_t pid = first->pid();

  // What relinkd recorded at spawn, as its pidfile would carry it. The exe
  // was read right after exec; on an AVX2 CPU passt has re-executed itself
  // as passt.avx2 since.
  PidRecord rec;
  rec.pid = pid;
  rec.start_time = last_start_time_;
  rec.exe = last_exe_;
  EXPECT_TRUE(rec.exe == kPasst || rec.exe == std::string(kPasst) + ".avx2") << rec.exe;
  auto now = read_proc(pid);
  ASSERT_TRUE(now);
  EXPECT_EQ(now->start_time, rec.start_time);
  EXPECT_EQ(decide_adoption(rec, now), Adoption::Adopt) << "exe now: " << now->exe;

  procs_.clear();  // "relinkd exits": stops watching, passt keeps running
  test::run_for(loop_.get(), 50ms);
  EXPECT_EQ(first_exit.calls, 0);
  ASSERT_TRUE(listening_on_10001());

  ExitRecord exit;
  auto adopted = Process::adopt(loop_.get(), pid, "passt-t", [&](const ExitStatus& st) {
    ++exit.calls;
    exit.status = st;
  });
  ASSERT_TRUE(adopted) << adopted.error().message;
  qemu_end.reset();
  ASSERT_TRUE(run_until_exit(exit, 5s));
  EXPECT_EQ(exit.status.describe(), "exited (status unknown: not a child of this relinkd)");
  EXPECT_EQ(first_exit.calls, 0);
  EXPECT_EQ(decide_adoption(rec, read_proc(pid)), Adoption::Dead) << "a zombie until reaped";
}

TEST_F(PasstTest, NoDefaultRouteIsAnExitWithItsReasonLogged) {
  test::Netns bare("passt-bare");
  LogCapture capture;
  ExitRecord exit;
  UniqueFd qemu_end;
  Process* p = start_passt(exit, qemu_end, bare.name());
  ASSERT_TRUE(p);
  ASSERT_TRUE(run_until_exit(exit, 5s));
  EXPECT_EQ(exit.status.describe(), "exited with status 1");
  EXPECT_TRUE(capture.any_contains("passt-t: ")) << capture.dump();
  EXPECT_TRUE(capture.any_contains("No external routable interface")) << capture.dump();
  EXPECT_FALSE(capture.any_contains("Failed to send")) << capture.dump();
}

TEST_F(PasstTest, ProbeFeaturesOfTheInstalledPasst) {
  auto f = probe_features(spawner_, kPasst, kNobody, kNogroup);
  ASSERT_TRUE(f) << f.error().message;
  EXPECT_TRUE(f->fd);
  EXPECT_TRUE(f->socket);
  EXPECT_TRUE(f->foreground);
  EXPECT_FALSE(f->vhost_user);
  EXPECT_EQ(f->version.rfind("passt ", 0), 0u) << f->version;
  EXPECT_EQ(unsupported_reason(Mode::StreamServer, *f), std::nullopt);
  EXPECT_TRUE(unsupported_reason(Mode::VhostUser, *f));
  EXPECT_TRUE(no_children_left());
}

TEST_F(PasstTest, ProbeOfAMissingBinary) {
  auto f = probe_features(spawner_, "/nonexistent/passt", kNobody, kNogroup);
  ASSERT_FALSE(f);
  EXPECT_EQ(f.error().code, ENOENT);
  EXPECT_EQ(f.error().message, "passt not found at /nonexistent/passt: No such file or directory");
}

TEST_F(PasstTest, ProbeAsRootIsRefused) {
  auto f = probe_features(spawner_, kPasst, 0, 0);
  ASSERT_FALSE(f);
  EXPECT_EQ(f.error().code, EPERM);
}

}  // namespace
}  // namespace relink::passt
