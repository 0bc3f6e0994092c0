// SPDX-License-Identifier: GPL-2.0-or-later
// The passt processes relinkd runs: feature probe, start (socket, spawn,
// pidfile, watch), adoption of a previous relinkd's passt, retirement.
#include "daemon/passt_supervisor.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <climits>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "daemon/passt_runner.h"
#include "passt/listen_path.h"
#include "util/clock.h"
#include "util/log.h"
#include "util/trusted_dir.h"
#include "util/untrusted.h"
#include "util/unix_addr.h"

namespace relink::daemon {
namespace {

auto logger() { return log::get("daemon"); }
uint64_t now_ms() { return monotonic_us() / 1000; }

// passt's own output: its start-up banner and notes are chatter (debug);
// what reads as an error is a warning. Under the "passt" logger, as passt's
// words, not relinkd's.
void log_passt_line(const std::string& log_name, std::string_view line) {
  if (passt::is_problem_line(line)) log::get("passt")->warn("{}: {}", log_name, line);
  else log::get("passt")->debug("{}: {}", log_name, line);
}

// How long ago a process started, from its /proc start time (clock ticks
// since boot).
uint64_t age_ms(uint64_t start_ticks) {
  timespec ts{};
  clock_gettime(CLOCK_BOOTTIME, &ts);
  const uint64_t boot_ms = static_cast<uint64_t>(ts.tv_sec) * 1000 + static_cast<uint64_t>(ts.tv_nsec) / 1'000'000;
  const uint64_t started = start_ticks * 1000 / static_cast<uint64_t>(sysconf(_SC_CLK_TCK));
  return boot_ms > started ? boot_ms - started : 0;
}

// Connects to QEMU's listening stream socket. The connection completes at
// once (QEMU's listen backlog takes it even while QEMU still serves an older
// peer; QEMU accepts it when that one is gone).
Result<UniqueFd> connect_stream(const std::string& path) {
  UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd) return Error::last("socket");
  auto sa = unix_addr(path);
  if (!sa) return sa.error();
  if (connect(fd.get(), reinterpret_cast<const sockaddr*>(&*sa), sizeof *sa) < 0) {
    if (errno == EAGAIN)  // the listen backlog is full: QEMU still serves a peer and one more waits
      return Error{EAGAIN, "QEMU's stream socket " + path + " is busy: QEMU still serves another peer"};
    return Error::last("connect to QEMU's stream socket " + path);
  }
  // passt gets a blocking socket, as QEMU's own peers do.
  const int flags = fcntl(fd.get(), F_GETFL);
  if (flags < 0 || fcntl(fd.get(), F_SETFL, flags & ~O_NONBLOCK) < 0) return Error::last("fcntl");
  return fd;
}

// The directory of a binding's pidfile, state_dir/passt/VM, opened as a
// trusted directory (util/trusted_dir.h) level by level, and the pidfile's
// name in it. `pidfile` is "<state_dir>/passt/<vm>/<netdev>.pid".
struct PidfileDir {
  UniqueFd dir;
  std::string name;
};

Result<PidfileDir> open_pidfile_dir(const std::string& pidfile, const std::string& vm, bool create) {
  const std::string middle = "/passt/" + vm + "/";
  const size_t at = pidfile.rfind(middle);
  if (at == std::string::npos) return Error{EINVAL, "unexpected pidfile path " + pidfile};
  const std::string state_dir = pidfile.substr(0, at);
  auto top = trusted::open_dir(state_dir, 0755);
  if (!top) return top.error();
  auto passt_dir = trusted::open_subdir(top->get(), "passt", 0700, create, state_dir + "/passt");
  if (!passt_dir) return passt_dir.error();
  auto vm_dir = trusted::open_subdir(passt_dir->get(), vm, 0700, create, state_dir + "/passt/" + vm);
  if (!vm_dir) return vm_dir.error();
  return PidfileDir{std::move(*vm_dir), pidfile.substr(at + middle.size())};
}

Result<passt::PidRecord> read_binding_pidfile(const std::string& pidfile, const std::string& vm) {
  auto d = open_pidfile_dir(pidfile, vm, /*create=*/false);
  if (!d) return d.error();
  return passt::read_pidfile_at(d->dir.get(), d->name, pidfile);
}

Result<void> write_binding_pidfile(const std::string& pidfile, const std::string& vm, const passt::PidRecord& rec) {
  auto d = open_pidfile_dir(pidfile, vm, /*create=*/true);
  if (!d) return d.error();
  return passt::write_pidfile_at(d->dir.get(), d->name, rec, pidfile);
}

void remove_binding_pidfile(const std::string& pidfile, const std::string& vm, const std::string& log_name) {
  auto d = open_pidfile_dir(pidfile, vm, /*create=*/false);
  Result<void> r = d ? passt::remove_pidfile_at(d->dir.get(), d->name, pidfile) : Result<void>(d.error());
  if (!r && r.error().code != ENOENT) logger()->warn("{}: not removing the pidfile: {}", log_name, r.error().message);
}

std::string describe_ids(const passt::ProcInfo& info) {
  if (!info.ids_known) return "unknown user";
  return "uid " + std::to_string(info.uids[0]) + " gid " + std::to_string(info.gids[0]);
}

std::string describe_cmdline(const passt::ProcInfo& info) {
  std::string line;
  for (const auto& a : info.cmdline) line += (line.empty() ? "" : " ") + a;
  return untrusted::safe_text(line, 200);
}

}  // namespace

// One level per kind of exit, whichever the loop learns of first (the exit,
// or QEMU's report of the dropped stream): stopped by relinkd, or a clean
// exit (QEMU closed the stream) is info; a signal from elsewhere, a failure
// status or an unknown status is a warning.
void log_passt_exit(const passt::Process& proc, const passt::ExitStatus& st, const std::string& what) {
  if (proc.ended_by_stop(st)) logger()->info("{} {}, stopped by relinkd", what, st.describe());
  else if (st.known && !st.signaled && st.value == 0) logger()->info("{} {}", what, st.describe());
  else logger()->warn("{} {}", what, st.describe());
}

PasstSupervisor::PasstSupervisor(sd_event* loop, DeferQueue& defer, std::unique_ptr<passt::Spawner> spawner)
    : loop_(loop), defer_(defer), spawner_(std::move(spawner)) {}

PasstSupervisor::~PasstSupervisor() = default;

void PasstSupervisor::probe(const std::vector<config::Vm>& wanted, const std::string& configured_passt) {
  features_ = {};
  features_error_.clear();
  uid_t uid = 65534;
  gid_t gid = 65534;
  bool any = false;
  for (const auto& vm : wanted)
    for (const auto& p : vm.passts) {
      if (!any) uid = p.uid, gid = p.gid;
      any = true;
    }
  probed_ = any;
  if (!any) return;
  exec_ = passt::exec_path(configured_passt);
  // What /proc/PID/exe will read once passt runs (symlinks resolved).
  char real[PATH_MAX];
  exec_real_ = ::realpath(exec_.c_str(), real) ? std::string(real) : exec_;
  auto f = passt::probe_features(*spawner_, exec_, uid, gid);
  if (!f) {
    features_error_ = "cannot run passt: " + f.error().message;
    logger()->error("{}", features_error_);
    return;
  }
  features_ = *f;
  logger()->info("passt at {}{}: --fd {}, --socket {}, --vhost-user {}", exec_,
                 features_.version.empty() ? "" : " (" + features_.version + ")", features_.fd ? "yes" : "no",
                 features_.socket ? "yes" : "no", features_.vhost_user ? "yes" : "no");
}

std::optional<std::string> PasstSupervisor::refusal(passt::Mode mode) const {
  if (!features_error_.empty()) return features_error_;
  return passt::unsupported_reason(mode, features_);
}

passt::Expected PasstSupervisor::expected(const config::PasstBinding& cfg) const {
  return passt::Expected{cfg.uid, cfg.gid, passt::build_argv(exec_, cfg.mode, cfg.socket, cfg.args),
                         passt::mode_name(cfg.mode), cfg.socket};
}

OwnedPasst PasstSupervisor::route_to(PasstRunner& runner, uint64_t gen, const std::string& name) {
  OwnedPasst p;
  p.route = std::make_shared<PasstRoute>();
  p.route->runner = &runner;
  p.route->generation = gen;
  p.route->name = name;
  return p;
}

Result<passt::Spawned> PasstSupervisor::spawn(const config::PasstBinding& cfg, const PasstIdentity& id,
                                              uint64_t gen, bool& intent_written) {
  UniqueFd handed;
  if (cfg.mode == passt::Mode::StreamServer) {
    auto fd = connect_stream(cfg.socket);
    if (!fd) return fd.error();
    handed = std::move(*fd);
  } else if (auto r = passt::prepare_listen_path(cfg.socket, cfg.uid, cfg.gid); !r) {
    return r.error();
  }
  passt::SpawnRequest req;
  req.path = exec_;
  req.argv = expected(cfg).argv;
  req.uid = cfg.uid;
  req.gid = cfg.gid;
  req.handed_fd = handed.get();
  // The pidfile is written before passt may exec, naming the binary about
  // to run: a relinkd that dies right after the exec leaves a record the
  // next one can prove and act on (stop_unclaimed, adopt).
  req.before_exec = [&](pid_t pid, uint64_t start_time) {
    passt::PidRecord rec{pid, start_time, exec_real_, gen, passt::mode_name(cfg.mode), cfg.socket};
    rec.uid = cfg.uid;
    rec.gid = cfg.gid;
    rec.argv = req.argv;
    if (auto w = write_binding_pidfile(id.pidfile, id.vm, rec); !w)
      logger()->warn("{}: cannot write pidfile (a restarted relinkd will not adopt this passt): {}", id.name,
                     w.error().message);
    else
      intent_written = true;
  };
  return spawner_->spawn(req);
}

Result<OwnedPasst> PasstSupervisor::start(PasstRunner& runner, const config::PasstBinding& cfg,
                                          const PasstIdentity& id, uint64_t gen, bool& pidfile_written) {
  pidfile_written = false;
  auto s = spawn(cfg, id, gen, pidfile_written);
  if (!s) {
    // The record names a child that never ran passt (and is reaped).
    if (pidfile_written) remove_binding_pidfile(id.pidfile, id.vm, id.name);
    pidfile_written = false;
    logger()->warn("{}: cannot start passt: {}", id.name, s.error().message);
    return s.error();
  }
  const std::vector<std::string> argv = expected(cfg).argv;
  std::string line;
  for (const auto& a : argv) line += (line.empty() ? "" : " ") + a;
  logger()->info("{}: started passt pid {} (generation {}): {}", id.name, s->pid, gen, line);

  // A spawner that ran no hook, or an exe that reads otherwise than the
  // path resolved before the exec: record what /proc says now.
  if (!pidfile_written || (!s->exe.empty() && s->exe != exec_real_)) {
    passt::PidRecord rec{s->pid, s->start_time, s->exe, gen, passt::mode_name(cfg.mode), cfg.socket};
    rec.uid = cfg.uid;
    rec.gid = cfg.gid;
    rec.argv = argv;
    if (auto w = write_binding_pidfile(id.pidfile, id.vm, rec); !w)
      logger()->warn("{}: cannot write pidfile (a restarted relinkd will not adopt this passt): {}", id.name,
                     w.error().message);
    else
      pidfile_written = true;
  }
  const pid_t pid = s->pid;
  OwnedPasst owned = route_to(runner, gen, id.name);
  std::string log_name = id.name + " passt[" + std::to_string(pid) + "]";
  auto proc = passt::Process::watch(
      loop_, std::move(*s), log_name, [this, route = owned.route](const passt::ExitStatus& st) { on_exit(route, st); },
      [log_name](std::string_view l) { log_passt_line(log_name, l); });
  if (!proc) {
    // Not watchable: it must not run unsupervised.
    logger()->error("{}: cannot watch passt pid {}: {}; killing it", id.name, pid, proc.error().message);
    ::kill(pid, SIGKILL);
    return proc.error();
  }
  owned.proc = std::move(*proc);
  owned.route->proc = owned.proc.get();
  return owned;
}

std::optional<PasstSupervisor::Adopted> PasstSupervisor::adopt(PasstRunner& runner, const config::PasstBinding& cfg,
                                                               const PasstIdentity& id, uint64_t& max_generation_seen) {
  auto rec = read_binding_pidfile(id.pidfile, id.vm);
  if (!rec) {
    if (rec.error().code != ENOENT) logger()->warn("{}: ignoring pidfile: {}", id.name, rec.error().message);
    return std::nullopt;
  }
  max_generation_seen = rec->generation;
  const passt::Expected want = expected(cfg);
  auto now = passt::read_proc(rec->pid);
  auto decision = passt::decide_adoption(*rec, now, want);
  OwnedPasst owned = route_to(runner, rec->generation, id.name);
  if (decision == passt::Adoption::Adopt || decision == passt::Adoption::Outdated) {
    auto adopted = passt::Process::adopt(loop_, rec->pid, id.name + " passt[" + std::to_string(rec->pid) + "]",
                                         [this, route = owned.route](const passt::ExitStatus& st) { on_exit(route, st); });
    if (!adopted) {
      logger()->warn("{}: cannot watch passt pid {}: {}", id.name, rec->pid, adopted.error().message);
      return std::nullopt;
    }
    // The pidfd holds whatever had the pid when it was opened: look again,
    // so the process checked is the one the pidfd refers to.
    now = passt::read_proc(rec->pid);
    const auto again = passt::decide_adoption(*rec, now, want);
    if (again == decision) owned.proc = std::move(*adopted);
    else decision = again == passt::Adoption::Outdated || again == passt::Adoption::Adopt ? passt::Adoption::Reused
                                                                                           : again;
  }
  switch (decision) {
    case passt::Adoption::Adopt: {
      const uint64_t now_ms_ = now_ms();
      const uint64_t started = now_ms_ - std::min(now_ms_, age_ms(rec->start_time));
      logger()->info("{}: adopted running passt pid {} (generation {})", id.name, rec->pid, rec->generation);
      owned.route->proc = owned.proc.get();
      return Adopted{std::move(owned), rec->generation, started};
    }
    case passt::Adoption::Outdated:
      logger()->info("{}: stopping passt pid {}: it runs an older configuration ({})", id.name, rec->pid,
                     describe_cmdline(*now));
      owned.route->runner = nullptr;
      owned.route->proc = owned.proc.get();
      owned.proc->stop();
      retiring_.push_back(std::move(owned));
      break;
    case passt::Adoption::Dead:
      logger()->info("{}: passt pid {} from the pidfile is gone", id.name, rec->pid);
      break;
    case passt::Adoption::Reused:
      logger()->info("{}: passt pid {} from the pidfile is now another process", id.name, rec->pid);
      break;
    case passt::Adoption::Foreign:
      logger()->warn("{}: pid {} from the pidfile is not provably the passt relinkd started for this binding "
                     "({}, command line '{}'): leaving it alone, dropping the pidfile",
                     id.name, rec->pid, now ? describe_ids(*now) : "gone", now ? describe_cmdline(*now) : "");
      break;
  }
  remove_binding_pidfile(id.pidfile, id.vm, id.name);
  return std::nullopt;
}

void PasstSupervisor::retire(OwnedPasst p) {
  if (!p.proc) return;
  p.route->runner = nullptr;
  retiring_.push_back(std::move(p));  // its exit is logged when the loop dispatches it
}

void PasstSupervisor::remove_pidfile(const PasstIdentity& id) { remove_binding_pidfile(id.pidfile, id.vm, id.name); }

void PasstSupervisor::on_exit(const std::shared_ptr<PasstRoute>& route, const passt::ExitStatus& st) {
  if (route->runner) {
    route->runner->on_exit(route->generation, route->proc, st);
    return;
  }
  for (auto it = retiring_.begin(); it != retiring_.end(); ++it)
    if (it->route == route) {
      log_passt_exit(*it->proc, st, route->name + ": retired passt pid " + std::to_string(it->proc->pid()));
      // The Process is being destroyed from its own callback: free it from the loop.
      std::shared_ptr<passt::Process> keep(std::move(it->proc));
      defer_.post([keep] {});
      retiring_.erase(it);
      return;
    }
}

}  // namespace relink::daemon
