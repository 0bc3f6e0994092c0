// SPDX-License-Identifier: GPL-2.0-or-later
// A passt binding's executor: engine actions carried out through the passt
// supervisor, passt's exits and QEMU's stream events fed back.
#include "daemon/passt_runner.h"

#include <cstring>

#include "qemu/info_network.h"
#include "qemu/netdev_events.h"
#include "qemu/qmp_client.h"
#include "util/clock.h"
#include "util/log.h"

namespace relink::daemon {
namespace {

auto logger() { return log::get("daemon"); }
uint64_t now_ms() { return monotonic_us() / 1000; }

}  // namespace

PasstRunner::PasstRunner(const std::string& vm, config::PasstBinding cfg, PasstSupervisor& supervisor,
                         qemu::QmpClient& qmp, const Services& s)
    : cfg_(std::move(cfg)),
      id_{vm, vm + "/" + cfg_.netdev, s.config->daemon.state_dir + "/passt/" + vm + "/" + cfg_.netdev + ".pid"},
      supervisor_(supervisor),
      qmp_(qmp),
      s_(s),
      engine_(id_.name,
              cfg_.mode == passt::Mode::VhostUser ? engine::Readiness::OnSpawn : engine::Readiness::StreamEvents,
              cfg_.mode == passt::Mode::StreamServer, engine::RestartPolicy{},
              /*before_qemu=*/cfg_.mode == passt::Mode::VhostUser) {
  if (auto reason = supervisor_.refusal(cfg_.mode)) {
    refused_ = true;
    logger()->error("{}: {} binding refused: {}", id_.name, passt::mode_name(cfg_.mode), *reason);
    (void)engine_.handle(engine::passt_ev::Unsupported{*reason});
  }
}

// A runner that goes away hands its processes on (carry_from) or retires
// them (retire) first; what is left is only watched no more.
PasstRunner::~PasstRunner() {
  for (auto& [gen, p] : procs_)
    if (p.route) p.route->runner = nullptr;
}

void PasstRunner::carry_from(PasstRunner& previous) {
  if (refused_) return;
  procs_ = std::move(previous.procs_);
  previous.procs_.clear();
  for (auto& [gen, p] : procs_) p.route->runner = this;
  live_started_ms_ = previous.live_started_ms_;
  pidfile_generation_ = previous.pidfile_generation_;
}

void PasstRunner::retire() {
  timer_.reset();
  for (auto& [gen, p] : procs_) {
    if (p.proc->exited()) continue;
    if (p.proc->alive()) {
      logger()->info("{}: binding removed from the configuration, stopping passt pid {}", id_.name, p.proc->pid());
      p.proc->stop();
    }
    supervisor_.retire(std::move(p));
  }
  procs_.clear();
  supervisor_.remove_pidfile(id_);
  pidfile_generation_ = 0;
}

std::optional<engine::passt_ev::VmConnected::Adopt> PasstRunner::running_adopt() const {
  for (auto it = procs_.rbegin(); it != procs_.rend(); ++it)
    if (!it->second.proc->exited()) return engine::passt_ev::VmConnected::Adopt{it->first, live_started_ms_};
  return std::nullopt;
}

// A vhost-user binding starts its passt as soon as it exists, QEMU or not
// (QEMU cannot start without it), after adopting one that runs already (kept
// across a reload, or a previous relinkd's). A stream-client passt starts
// once QMP is up, as a stream-server one does: passt 2025-05 crashes when a
// forwarded port is connected to before QEMU is, so it listens no longer
// than it must.
void PasstRunner::listen() {
  if (refused_ || !engine_.starts_before_qemu()) return;
  engine::passt_ev::Listen ev;
  ev.now_ms = now_ms();
  ev.adopt = running_adopt();
  if (!ev.adopt)
    if (auto a = supervisor_.adopt(*this, cfg_, id_, ev.max_generation_seen)) {
      ev.adopt = engine::passt_ev::VmConnected::Adopt{a->generation, a->started_ms};
      live_started_ms_ = a->started_ms;
      pidfile_generation_ = a->generation;
      procs_[a->generation] = std::move(a->proc);
    }
  feed(ev);
}

// QMP is up: find what runs (a passt of ours, QEMU's stream peer) and tell
// the engine.
void PasstRunner::vm_connected(const std::string* info, unsigned qemu_version) {
  const std::string text = info ? *info : std::string();
  const auto streams = qemu::parse_stream_netdevs(text);
  engine::passt_ev::VmConnected vc;
  vc.now_ms = now_ms();
  auto s = streams.find(cfg_.netdev);
  if (info && s == streams.end() && cfg_.mode != passt::Mode::VhostUser)
    logger()->warn("{}: QEMU has no stream netdev '{}' (see relinkctl status and the docs)", id_.name, cfg_.netdev);
  vc.stream_connected = s != streams.end() && s->second;
  nic_ = qemu::nic_of_netdev(text, cfg_.netdev);
  // A passt this relinkd runs already (QMP came back, or a reload).
  vc.adopt = running_adopt();
  // A passt a previous relinkd left.
  if (!vc.adopt && !refused_)
    if (auto a = supervisor_.adopt(*this, cfg_, id_, vc.max_generation_seen)) {
      vc.adopt = engine::passt_ev::VmConnected::Adopt{a->generation, a->started_ms};
      live_started_ms_ = a->started_ms;
      pidfile_generation_ = a->generation;
      procs_[a->generation] = std::move(a->proc);
    }
  // QEMU 10 reports vhost-user connections as events: such a binding is
  // running once QEMU connected, not once passt started, and the guest is
  // announced then.
  if (cfg_.mode == passt::Mode::VhostUser)
    engine_.set_readiness(qemu_version >= qemu::kQemuVhostUserEvents ? engine::Readiness::StreamEvents
                                                               : engine::Readiness::OnSpawn);
  feed(vc);
}

void PasstRunner::vm_disconnected(bool exited) { feed(engine::passt_ev::VmDisconnected{exited}); }

void PasstRunner::stream_event(bool connected) {
  if (connected) feed(engine::passt_ev::StreamConnected{now_ms()});
  else feed(engine::passt_ev::StreamDisconnected{now_ms()});
}

void PasstRunner::reset() { feed(engine::passt_ev::ResetRequested{now_ms()}); }

void PasstRunner::feed(const engine::PasstEvent& ev) {
  const engine::State before = engine_.state();
  auto actions = engine_.handle(ev);
  const engine::State after = engine_.state();
  if (after != before) {
    s_.reporter->state_changed(id_.vm, "passt", cfg_.netdev, before, after, engine_.generation(),
                               engine_.last_error());
    const bool bad = after == engine::State::Backoff || after == engine::State::Failed;
    if (bad && before != engine::State::Backoff) ++failures_total_;
    const bool recovered = after == engine::State::Running && engine_.last_recovery_ms() >= 0 &&
                           before == engine::State::Starting && engine_.restarts() > 0;
    if (recovered) s_.reporter->recovered("passt", engine_.last_recovery_ms() / 1000.0);
    if (recovered)
      logger()->info("{}: {} -> running, recovered in {:.2f} ms", id_.name, engine::state_name(before),
                     engine_.last_recovery_ms());
    else if (bad)
      logger()->warn("{}: {} -> {} ({})", id_.name, engine::state_name(before), engine::state_name(after),
                     engine_.last_error());
    else
      logger()->info("{}: {} -> {}", id_.name, engine::state_name(before), engine::state_name(after));
  }
  for (const auto& a : actions) execute(a);
  if (before == engine::State::Starting && after == engine::State::Running &&
      engine_.readiness() == engine::Readiness::StreamEvents)
    announce();
}

// A new passt does not know the guest's MAC address until the guest sends a
// frame, and until then it cannot deliver forwarded connections to a guest
// that only listens. QEMU's announce-self makes the guest's NIC send one at
// once (RARP, and a gratuitous ARP from guests with VIRTIO_NET_F_GUEST_ANNOUNCE).
void PasstRunner::announce() {
  nlohmann::json args = {{"initial", 50}, {"max", 550}, {"rounds", 3}, {"step", 100}};
  if (!nic_.empty()) args["interfaces"] = nlohmann::json::array({nic_});
  qmp_.execute("announce-self", std::move(args), [name = id_.name](const Result<nlohmann::json>& r) {
    if (!r)
      logger()->warn("{}: announce-self failed (forwarded connections reach the guest only after it sends a frame): {}",
                     name, r.error().message);
  });
}

void PasstRunner::post(engine::PasstEvent ev) {
  s_.defer->post(guarded(guard_, [this, ev = std::move(ev)] { feed(ev); }));
}

void PasstRunner::execute(const engine::PasstAction& action) {
  std::visit(
      [&](const auto& a) {
        using T = std::decay_t<decltype(a)>;
        namespace act = engine::passt_act;
        if constexpr (std::is_same_v<T, act::Spawn>) {
          spawn(a.generation);
        } else if constexpr (std::is_same_v<T, act::Stop>) {
          stop(a.generation);
        } else if constexpr (std::is_same_v<T, engine::StartTimer>) {
          sd_event_source* src = nullptr;
          if (int r = sd_event_add_time_relative(s_.loop, &src, CLOCK_MONOTONIC, a.delay_ms * 1000, 1000,
                                                 &PasstRunner::on_timer, this);
              r < 0) {
            logger()->error("{}: cannot arm restart timer: {}", id_.name, std::strerror(-r));
            return;
          }
          timer_.reset(src);
          logger()->info("{}: starting passt again in {} ms", id_.name, a.delay_ms);
        } else if constexpr (std::is_same_v<T, engine::CancelTimer>) {
          timer_.reset();
        }
      },
      action);
}

void PasstRunner::spawn(uint64_t gen) {
  bool pidfile_written = false;
  auto p = supervisor_.start(*this, cfg_, id_, gen, pidfile_written);
  if (pidfile_written) pidfile_generation_ = gen;
  if (!p) {
    post(engine::passt_ev::SpawnFailed{gen, p.error().message, now_ms()});
    return;
  }
  procs_[gen] = std::move(*p);
  live_started_ms_ = now_ms();
  post(engine::passt_ev::Spawned{gen, now_ms()});
}

void PasstRunner::stop(uint64_t gen) {
  auto it = procs_.find(gen);
  // One that is gone already (killed from outside, its exit not yet
  // dispatched) is not stopped: its exit is reported as what it was.
  if (it != procs_.end() && it->second.proc->alive()) {
    logger()->info("{}: stopping passt pid {} (generation {})", id_.name, it->second.proc->pid(), gen);
    it->second.proc->stop();
  }
  if (pidfile_generation_ == gen) {
    supervisor_.remove_pidfile(id_);
    pidfile_generation_ = 0;
  }
}

int PasstRunner::on_timer(sd_event_source*, uint64_t, void* userdata) {
  auto* self = static_cast<PasstRunner*>(userdata);
  self->timer_.reset();
  self->feed(engine::passt_ev::TimerExpired{now_ms()});
  return 0;
}

void PasstRunner::on_exit(uint64_t gen, const passt::Process* proc, const passt::ExitStatus& st) {
  auto it = procs_.find(gen);
  if (it == procs_.end() || it->second.proc.get() != proc) return;
  log_passt_exit(*proc, st, id_.name + ": passt pid " + std::to_string(proc->pid()) + " (generation " +
                                std::to_string(gen) + ")");
  // The Process is being destroyed from its own callback: free it from the loop.
  std::shared_ptr<passt::Process> keep(std::move(it->second.proc));
  s_.defer->post([keep] {});
  procs_.erase(it);
  if (pidfile_generation_ == gen) {
    supervisor_.remove_pidfile(id_);
    pidfile_generation_ = 0;
  }
  feed(engine::passt_ev::Exited{gen, st.describe(), now_ms()});
}

nlohmann::json PasstRunner::status() const {
  const auto& e = engine_;
  nlohmann::json j = {
      {"kind", "passt"},
      {"netdev", cfg_.netdev},
      {"mode", passt::mode_name(cfg_.mode)},
      {"state", engine::state_name(e.state())},
      {"generation", e.generation()},
      {"socket", cfg_.socket},
      {"runas", cfg_.runas},
      {"restarts", e.restarts()},
      {"failures", e.failures()},
      {"failures_total", failures_total_},
  };
  auto live = procs_.find(e.live_generation());
  j["pid"] = live != procs_.end() && !live->second.proc->exited() ? nlohmann::json(live->second.proc->pid())
                                                                   : nlohmann::json(nullptr);
  j["last_error"] = e.last_error().empty() ? nlohmann::json(nullptr) : nlohmann::json(e.last_error());
  j["last_exit"] = e.last_exit().empty() ? nlohmann::json(nullptr) : nlohmann::json(e.last_exit());
  j["last_recovery_ms"] = e.last_recovery_ms() >= 0 ? nlohmann::json(e.last_recovery_ms()) : nlohmann::json(nullptr);
  return j;
}

}  // namespace relink::daemon
