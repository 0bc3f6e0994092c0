// SPDX-License-Identifier: GPL-2.0-or-later
// relinkd's passt bindings: carries out what each engine::PasstBinding decides
// (start passt, stop it, retry timers) and feeds back what happened (passt
// exited, QEMU's stream connected or dropped).
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>

#include "daemon/daemon.h"
#include "daemon/qemu_names.h"
#include "passt/listen_path.h"
#include "passt/pidfile.h"
#include "util/clock.h"
#include "util/log.h"
#include "util/trusted_dir.h"
#include "util/untrusted.h"

namespace relink::daemon {
namespace {

auto logger() { return log::get("daemon"); }
uint64_t now_ms() { return monotonic_us() / 1000; }

// One level per kind of exit, whichever the loop learns of first (the exit,
// or QEMU's report of the dropped stream): stopped by relinkd, or a clean
// exit (QEMU closed the stream) is info; a signal from elsewhere, a failure
// status or an unknown status is a warning.
void log_passt_exit(const passt::Process& proc, const passt::ExitStatus& st, const std::string& what) {
  if (proc.ended_by_stop(st)) logger()->info("{} {}, stopped by relinkd", what, st.describe());
  else if (st.known && !st.signaled && st.value == 0) logger()->info("{} {}", what, st.describe());
  else logger()->warn("{} {}", what, st.describe());
}

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
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  if (path.size() >= sizeof sa.sun_path) return Error{ENAMETOOLONG, "socket path too long: " + path};
  std::memcpy(sa.sun_path, path.c_str(), path.size() + 1);
  if (connect(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) < 0) {
    if (errno == EAGAIN)  // the listen backlog is full: QEMU still serves a peer and one more waits
      return Error{EAGAIN, "QEMU's stream socket " + path + " is busy: QEMU still serves another peer"};
    return Error::last("connect to QEMU's stream socket " + path);
  }
  // passt gets a blocking socket, as QEMU's own peers do.
  const int flags = fcntl(fd.get(), F_GETFL);
  if (flags < 0 || fcntl(fd.get(), F_SETFL, flags & ~O_NONBLOCK) < 0) return Error::last("fcntl");
  return fd;
}

// What a binding runs: the proof an adopted passt must match.
passt::Expected expected_for(const std::string& passt_exec, const config::PasstBinding& cfg) {
  return passt::Expected{cfg.uid, cfg.gid, passt::build_argv(passt_exec, cfg.mode, cfg.socket, cfg.args),
                         passt::mode_name(cfg.mode), cfg.socket};
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

Daemon::PasstRt::PasstRt(std::string v, config::PasstBinding c, const std::string& state_dir)
    : vm(std::move(v)),
      cfg(std::move(c)),
      engine(vm + "/" + cfg.netdev,
             cfg.mode == passt::Mode::VhostUser ? engine::Readiness::OnSpawn : engine::Readiness::StreamEvents,
             cfg.mode == passt::Mode::StreamServer, engine::RestartPolicy{},
             /*before_qemu=*/cfg.mode == passt::Mode::VhostUser),
      pidfile(state_dir + "/passt/" + vm + "/" + cfg.netdev + ".pid") {}

void Daemon::probe_passt_features() {
  passt_features_ = {};
  passt_features_error_.clear();
  uid_t uid = 65534;
  gid_t gid = 65534;
  bool any = false;
  for (const auto& vm : wanted_vms())
    for (const auto& p : vm.passts) {
      if (!any) uid = p.uid, gid = p.gid;
      any = true;
    }
  passt_probed_ = any;
  if (!any) return;
  passt_exec_ = passt::exec_path(cfg_.daemon.passt);
  auto f = passt::probe_features(*spawner_, passt_exec_, uid, gid);
  if (!f) {
    passt_features_error_ = "cannot run passt: " + f.error().message;
    logger()->error("{}", passt_features_error_);
    return;
  }
  passt_features_ = *f;
  logger()->info("passt at {}{}: --fd {}, --socket {}, --vhost-user {}", passt_exec_,
                 passt_features_.version.empty() ? "" : " (" + passt_features_.version + ")",
                 passt_features_.fd ? "yes" : "no", passt_features_.socket ? "yes" : "no",
                 passt_features_.vhost_user ? "yes" : "no");
}

std::unique_ptr<Daemon::PasstRt> Daemon::make_passt(VmRt& vm, const config::PasstBinding& cfg) {
  auto p = std::make_unique<PasstRt>(vm.cfg.name, cfg, cfg_.daemon.state_dir);
  p->daemon = this;
  p->owner = &vm;
  std::optional<std::string> reason;
  if (!passt_features_error_.empty()) reason = passt_features_error_;
  else reason = passt::unsupported_reason(cfg.mode, passt_features_);
  if (reason) {
    p->refused = true;
    logger()->error("{}: {} binding refused: {}", p->name(), passt::mode_name(cfg.mode), *reason);
    (void)p->engine.handle(engine::passt_ev::Unsupported{*reason});
  }
  return p;
}

Daemon::PasstRt* Daemon::find_passt(VmRt& vm, const std::string& netdev) {
  for (auto& p : vm.passts)
    if (p->cfg.netdev == netdev) return p.get();
  return nullptr;
}

// A passt a previous relinkd left, named by the binding's pidfile: adopted
// or stopped only when the process proves to be that passt
// (passt::decide_adoption); anything else is never signalled.
void Daemon::adopt_from_pidfile(PasstRt& p, std::optional<engine::passt_ev::VmConnected::Adopt>& adopt,
                                uint64_t& max_generation_seen) {
  const std::string name = p.vm;
  auto rec = read_binding_pidfile(p.pidfile, p.vm);
  if (!rec) {
    if (rec.error().code != ENOENT) logger()->warn("{}: ignoring pidfile: {}", p.name(), rec.error().message);
    return;
  }
  max_generation_seen = rec->generation;
  const passt::Expected want = expected_for(passt_exec_, p.cfg);
  auto now = passt::read_proc(rec->pid);
  auto decision = passt::decide_adoption(*rec, now, want);
  std::unique_ptr<passt::Process> proc;
  auto holder = std::make_shared<const passt::Process*>(nullptr);
  if (decision == passt::Adoption::Adopt || decision == passt::Adoption::Outdated) {
    const uint64_t gen = rec->generation;
    auto adopted = passt::Process::adopt(
        loop_.get(), rec->pid, p.name() + " passt[" + std::to_string(rec->pid) + "]",
        [this, name, netdev = p.cfg.netdev, gen, holder](const passt::ExitStatus& st) {
          on_passt_exit(name, netdev, gen, *holder, st);
        });
    if (!adopted) {
      logger()->warn("{}: cannot watch passt pid {}: {}", p.name(), rec->pid, adopted.error().message);
      return;
    }
    // The pidfd holds whatever had the pid when it was opened: look again,
    // so the process checked is the one the pidfd refers to.
    now = passt::read_proc(rec->pid);
    const auto again = passt::decide_adoption(*rec, now, want);
    if (again == decision) proc = std::move(*adopted);
    else decision = again == passt::Adoption::Outdated || again == passt::Adoption::Adopt ? passt::Adoption::Reused
                                                                                           : again;
  }
  switch (decision) {
    case passt::Adoption::Adopt: {
      const uint64_t gen = rec->generation;
      const uint64_t started = now_ms() - std::min(now_ms(), age_ms(rec->start_time));
      logger()->info("{}: adopted running passt pid {} (generation {})", p.name(), rec->pid, gen);
      *holder = proc.get();
      p.procs[gen] = std::move(proc);
      p.live_started_ms = started;
      p.pidfile_generation = gen;
      adopt = engine::passt_ev::VmConnected::Adopt{gen, started};
      return;
    }
    case passt::Adoption::Outdated:
      logger()->info("{}: stopping passt pid {}: it runs an older configuration ({})", p.name(), rec->pid,
                     describe_cmdline(*now));
      *holder = proc.get();
      proc->stop();
      retiring_.push_back(std::move(proc));
      break;
    case passt::Adoption::Dead:
      logger()->info("{}: passt pid {} from the pidfile is gone", p.name(), rec->pid);
      break;
    case passt::Adoption::Reused:
      logger()->info("{}: passt pid {} from the pidfile is now another process", p.name(), rec->pid);
      break;
    case passt::Adoption::Foreign:
      logger()->warn("{}: pid {} from the pidfile is not provably the passt relinkd started for this binding "
                     "({}, command line '{}'): leaving it alone, dropping the pidfile",
                     p.name(), rec->pid, now ? describe_ids(*now) : "gone", now ? describe_cmdline(*now) : "");
      break;
  }
  remove_binding_pidfile(p.pidfile, p.vm, p.name());
}

// A vhost-user binding starts its passt as soon as it exists, QEMU or not
// (QEMU cannot start without it), after adopting one that runs already (kept
// across a reload, or a previous relinkd's). A stream-client passt starts
// once QMP is up, as a stream-server one does: passt 2025-05 crashes when a
// forwarded port is connected to before QEMU is, so it listens no longer
// than it must.
void Daemon::passt_listen(VmRt& vm) {
  for (auto& p : vm.passts) {
    if (p->refused || !p->engine.starts_before_qemu()) continue;
    engine::passt_ev::Listen ev;
    ev.now_ms = now_ms();
    for (auto it = p->procs.rbegin(); it != p->procs.rend(); ++it)
      if (!it->second->exited()) {
        ev.adopt = engine::passt_ev::VmConnected::Adopt{it->first, p->live_started_ms};
        break;
      }
    if (!ev.adopt) adopt_from_pidfile(*p, ev.adopt, ev.max_generation_seen);
    feed_passt(vm, *p, ev);
  }
}

// QMP is up: find what runs (a passt of ours, QEMU's stream peers) and tell
// each engine.
void Daemon::passt_vm_connected(VmRt& vm, uint64_t session) {
  if (vm.passts.empty()) return;
  const std::string name = vm.cfg.name;
  vm.qmp->execute("human-monitor-command", {{"command-line", "info network"}},
                  [this, name, session](const Result<nlohmann::json>& r) {
                    VmRt* v = find_vm(name);
                    if (!v || v->session != session || !v->qmp->connected()) return;
                    std::map<std::string, bool> streams;
                    std::string text;
                    if (r && r->is_string()) text = r->get<std::string>();
                    streams = parse_stream_netdevs(text);
                    if (!r) logger()->warn("{}: info network: {}", name, r.error().message);
                    for (auto& p : v->passts) {
                      engine::passt_ev::VmConnected vc;
                      vc.now_ms = now_ms();
                      auto s = streams.find(p->cfg.netdev);
                      if (r && r->is_string() && s == streams.end() && p->cfg.mode != passt::Mode::VhostUser)
                        logger()->warn("{}: QEMU has no stream netdev '{}' (see relinkctl status and the docs)",
                                       p->name(), p->cfg.netdev);
                      vc.stream_connected = s != streams.end() && s->second;
                      p->nic = nic_of_netdev(text, p->cfg.netdev);
                      // A passt this relinkd runs already (QMP came back, or a reload).
                      for (auto it = p->procs.rbegin(); it != p->procs.rend(); ++it)
                        if (!it->second->exited()) {
                          vc.adopt = engine::passt_ev::VmConnected::Adopt{it->first, p->live_started_ms};
                          break;
                        }
                      // A passt a previous relinkd left.
                      if (!vc.adopt && !p->refused) adopt_from_pidfile(*p, vc.adopt, vc.max_generation_seen);
                      // QEMU 10 reports vhost-user connections as events:
                      // such a binding is running once QEMU connected, not
                      // once passt started, and the guest is announced then.
                      if (p->cfg.mode == passt::Mode::VhostUser)
                        p->engine.set_readiness(v->qmp->qemu_version() >= kQemuVhostUserEvents
                                                    ? engine::Readiness::StreamEvents
                                                    : engine::Readiness::OnSpawn);
                      feed_passt(*v, *p, vc);
                    }
                  });
}

void Daemon::passt_stream_event(VmRt& vm, const std::string& event, const nlohmann::json& data) {
  if (!data.is_object() || !data.contains("netdev-id") || !data["netdev-id"].is_string()) return;
  PasstRt* p = find_passt(vm, data["netdev-id"].get<std::string>());
  if (!p) return;
  if (event == kStreamConnected || event == kVhostUserConnected)
    feed_passt(vm, *p, engine::passt_ev::StreamConnected{now_ms()});
  else feed_passt(vm, *p, engine::passt_ev::StreamDisconnected{now_ms()});
}

void Daemon::feed_passt(VmRt& vm, PasstRt& p, const engine::PasstEvent& ev) {
  const engine::State before = p.engine.state();
  auto actions = p.engine.handle(ev);
  const engine::State after = p.engine.state();
  if (after != before) {
    publish_state(vm, "passt", p.cfg.netdev, before, after, p.engine.generation(), p.engine.last_error());
    const bool bad = after == engine::State::Backoff || after == engine::State::Failed;
    if (bad && before != engine::State::Backoff) ++p.failures_total;
    const bool recovered = after == engine::State::Running && p.engine.last_recovery_ms() >= 0 &&
                           before == engine::State::Starting && p.engine.restarts() > 0;
    if (recovered) recovery_["passt"].observe(p.engine.last_recovery_ms() / 1000.0);
    if (recovered)
      logger()->info("{}: {} -> running, recovered in {:.2f} ms", p.name(), engine::state_name(before),
                     p.engine.last_recovery_ms());
    else if (bad)
      logger()->warn("{}: {} -> {} ({})", p.name(), engine::state_name(before), engine::state_name(after),
                     p.engine.last_error());
    else
      logger()->info("{}: {} -> {}", p.name(), engine::state_name(before), engine::state_name(after));
  }
  for (const auto& a : actions) execute_passt(vm, p, a);
  if (before == engine::State::Starting && after == engine::State::Running &&
      p.engine.readiness() == engine::Readiness::StreamEvents)
    announce(vm, p);
}

// A new passt does not know the guest's MAC address until the guest sends a
// frame, and until then it cannot deliver forwarded connections to a guest
// that only listens. QEMU's announce-self makes the guest's NIC send one at
// once (RARP, and a gratuitous ARP from guests with VIRTIO_NET_F_GUEST_ANNOUNCE).
void Daemon::announce(VmRt& vm, PasstRt& p) {
  nlohmann::json args = {{"initial", 50}, {"max", 550}, {"rounds", 3}, {"step", 100}};
  if (!p.nic.empty()) args["interfaces"] = nlohmann::json::array({p.nic});
  vm.qmp->execute("announce-self", std::move(args), [name = p.name()](const Result<nlohmann::json>& r) {
    if (!r) logger()->warn("{}: announce-self failed (forwarded connections reach the guest only after it sends a frame): {}",
                           name, r.error().message);
  });
}

Result<passt::Spawned> Daemon::spawn_passt(PasstRt& p, uint64_t generation) {
  UniqueFd handed;
  if (p.cfg.mode == passt::Mode::StreamServer) {
    auto fd = connect_stream(p.cfg.socket);
    if (!fd) return fd.error();
    handed = std::move(*fd);
  } else if (auto r = passt::prepare_listen_path(p.cfg.socket, p.cfg.uid, p.cfg.gid); !r) {
    return r.error();
  }
  passt::SpawnRequest req;
  req.path = passt_exec_;
  req.argv = expected_for(passt_exec_, p.cfg).argv;
  req.uid = p.cfg.uid;
  req.gid = p.cfg.gid;
  req.handed_fd = handed.get();
  auto s = spawner_->spawn(req);
  if (!s) return s.error();
  std::string line;
  for (const auto& a : req.argv) line += (line.empty() ? "" : " ") + a;
  logger()->info("{}: started passt pid {} (generation {}): {}", p.name(), s->pid, generation, line);
  return s;
}

// Feeds `ev` from the loop (never re-entrantly from an executor), if the
// binding still exists then.
void Daemon::post_passt(const std::string& vm_name, const std::string& netdev, engine::PasstEvent ev) {
  defer_->post([this, vm_name, netdev, ev = std::move(ev)] {
    VmRt* v = find_vm(vm_name);
    if (PasstRt* p = v ? find_passt(*v, netdev) : nullptr) feed_passt(*v, *p, ev);
  });
}

void Daemon::execute_passt(VmRt& vm, PasstRt& p, const engine::PasstAction& action) {
  std::visit(
      [&](const auto& a) {
        using T = std::decay_t<decltype(a)>;
        namespace act = engine::passt_act;
        if constexpr (std::is_same_v<T, act::Spawn>) {
          const std::string vm_name = vm.cfg.name, netdev = p.cfg.netdev;
          const uint64_t gen = a.generation;
          auto s = spawn_passt(p, gen);
          if (!s) {
            logger()->warn("{}: cannot start passt: {}", p.name(), s.error().message);
            post_passt(vm_name, netdev, engine::passt_ev::SpawnFailed{gen, s.error().message, now_ms()});
            return;
          }
          passt::PidRecord rec{s->pid, s->start_time, s->exe, gen, passt::mode_name(p.cfg.mode), p.cfg.socket};
          rec.uid = p.cfg.uid;
          rec.gid = p.cfg.gid;
          rec.argv = expected_for(passt_exec_, p.cfg).argv;
          if (auto w = write_binding_pidfile(p.pidfile, p.vm, rec); !w)
            logger()->warn("{}: cannot write pidfile (a restarted relinkd will not adopt this passt): {}", p.name(),
                           w.error().message);
          else
            p.pidfile_generation = gen;
          const pid_t pid = s->pid;
          auto holder = std::make_shared<const passt::Process*>(nullptr);
          std::string log_name = p.name() + " passt[" + std::to_string(pid) + "]";
          auto proc = passt::Process::watch(
              loop_.get(), std::move(*s), log_name,
              [this, vm_name, netdev, gen, holder](const passt::ExitStatus& st) {
                on_passt_exit(vm_name, netdev, gen, *holder, st);
              },
              [log_name](std::string_view line) { log_passt_line(log_name, line); });
          if (!proc) {
            // Not watchable: it must not run unsupervised.
            logger()->error("{}: cannot watch passt pid {}: {}; killing it", p.name(), pid, proc.error().message);
            ::kill(pid, SIGKILL);
            post_passt(vm_name, netdev, engine::passt_ev::SpawnFailed{gen, proc.error().message, now_ms()});
            return;
          }
          *holder = proc->get();
          p.procs[gen] = std::move(*proc);
          p.live_started_ms = now_ms();
          post_passt(vm_name, netdev, engine::passt_ev::Spawned{gen, now_ms()});
        } else if constexpr (std::is_same_v<T, act::Stop>) {
          auto it = p.procs.find(a.generation);
          // One that is gone already (killed from outside, its exit not yet
          // dispatched) is not stopped: its exit is reported as what it was.
          if (it != p.procs.end() && it->second->alive()) {
            logger()->info("{}: stopping passt pid {} (generation {})", p.name(), it->second->pid(), a.generation);
            it->second->stop();
          }
          if (p.pidfile_generation == a.generation) {
            remove_binding_pidfile(p.pidfile, p.vm, p.name());
            p.pidfile_generation = 0;
          }
        } else if constexpr (std::is_same_v<T, engine::StartTimer>) {
          sd_event_source* s = nullptr;
          if (int r = sd_event_add_time_relative(loop_.get(), &s, CLOCK_MONOTONIC, a.delay_ms * 1000, 1000,
                                                 &Daemon::on_passt_timer, &p);
              r < 0) {
            logger()->error("{}: cannot arm restart timer: {}", p.name(), std::strerror(-r));
            return;
          }
          p.timer.reset(s);
          logger()->info("{}: starting passt again in {} ms", p.name(), a.delay_ms);
        } else if constexpr (std::is_same_v<T, engine::CancelTimer>) {
          p.timer.reset();
        }
      },
      action);
}

int Daemon::on_passt_timer(sd_event_source*, uint64_t, void* userdata) {
  auto* p = static_cast<PasstRt*>(userdata);
  p->timer.reset();
  p->daemon->feed_passt(*p->owner, *p, engine::passt_ev::TimerExpired{now_ms()});
  return 0;
}

void Daemon::on_passt_exit(const std::string& vm_name, const std::string& netdev, uint64_t generation,
                           const passt::Process* proc, const passt::ExitStatus& st) {
  // The Process is being destroyed from its own callback: free it from the loop.
  auto release = [this](std::unique_ptr<passt::Process> dead) {
    std::shared_ptr<passt::Process> keep(std::move(dead));
    defer_->post([keep] {});
  };
  for (auto it = retiring_.begin(); it != retiring_.end(); ++it)
    if (it->get() == proc) {
      log_passt_exit(*proc, st, vm_name + "/" + netdev + ": retired passt pid " + std::to_string(proc->pid()));
      release(std::move(*it));
      retiring_.erase(it);
      return;
    }
  VmRt* v = find_vm(vm_name);
  PasstRt* p = v ? find_passt(*v, netdev) : nullptr;
  if (!p) return;
  auto it = p->procs.find(generation);
  if (it == p->procs.end() || it->second.get() != proc) return;
  log_passt_exit(*proc, st, p->name() + ": passt pid " + std::to_string(proc->pid()) + " (generation " +
                              std::to_string(generation) + ")");
  release(std::move(it->second));
  p->procs.erase(it);
  if (p->pidfile_generation == generation) {
    remove_binding_pidfile(p->pidfile, p->vm, p->name());
    p->pidfile_generation = 0;
  }
  feed_passt(*v, *p, engine::passt_ev::Exited{generation, st.describe(), now_ms()});
}

void Daemon::retire_passt(PasstRt& p) {
  p.timer.reset();
  for (auto& [gen, proc] : p.procs) {
    if (!proc->exited()) {
      if (proc->alive()) {
        logger()->info("{}: binding removed from the configuration, stopping passt pid {}", p.name(), proc->pid());
        proc->stop();
      }
      retiring_.push_back(std::move(proc));  // its exit is logged when the loop dispatches it
    }
  }
  p.procs.clear();
  remove_binding_pidfile(p.pidfile, p.vm, p.name());
  p.pidfile_generation = 0;
}

nlohmann::json Daemon::passt_status(const PasstRt& p) const {
  const auto& e = p.engine;
  nlohmann::json j = {
      {"kind", "passt"},
      {"netdev", p.cfg.netdev},
      {"mode", passt::mode_name(p.cfg.mode)},
      {"state", engine::state_name(e.state())},
      {"generation", e.generation()},
      {"socket", p.cfg.socket},
      {"runas", p.cfg.runas},
      {"restarts", e.restarts()},
      {"failures", e.failures()},
      {"failures_total", p.failures_total},
  };
  auto live = p.procs.find(e.live_generation());
  j["pid"] = live != p.procs.end() && !live->second->exited() ? nlohmann::json(live->second->pid())
                                                               : nlohmann::json(nullptr);
  j["last_error"] = e.last_error().empty() ? nlohmann::json(nullptr) : nlohmann::json(e.last_error());
  j["last_exit"] = e.last_exit().empty() ? nlohmann::json(nullptr) : nlohmann::json(e.last_exit());
  j["last_recovery_ms"] = e.last_recovery_ms() >= 0 ? nlohmann::json(e.last_recovery_ms()) : nlohmann::json(nullptr);
  return j;
}

}  // namespace relink::daemon
