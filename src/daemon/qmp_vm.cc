// SPDX-License-Identifier: GPL-2.0-or-later
// A QMP VM: its session's events routed to its runners, the adoption probe
// at each connection, its part of status.
#include "daemon/qmp_vm.h"

#include "config/qemu_args.h"
#include "daemon/hub_attach.h"
#include "daemon/intent_journal.h"
#include "daemon/macvtap_reconcile.h"
#include "daemon/replug_attach.h"
#include "qemu/netdev_events.h"
#include "qemu/qmp_peer.h"
#include "util/log.h"
#include "util/untrusted.h"

namespace relink::daemon {
namespace {

auto logger() { return log::get("daemon"); }

constexpr config::AttachMode kStrategies[] = {config::AttachMode::Hub, config::AttachMode::Replug};

}  // namespace

struct QmpVm::ProbeFound {
  // Each strategy's bindings (the attacher reads them until it answers), and what it found.
  std::map<config::AttachMode, std::vector<config::MacvtapBinding>> cfgs;
  std::map<config::AttachMode, std::vector<engine::VmConnected>> by_mode;
};

QmpVm::QmpVm(config::Vm cfg, std::string origin, const Services& s, PasstSupervisor& passt,
             std::map<std::string, std::unique_ptr<PasstRunner>> carry)
    : ManagedVm(std::move(cfg), s), origin_(std::move(origin)), passt_(passt) {
  qemu::QmpClient::Callbacks cbs;
  cbs.on_connected = [this] { on_connected(); };
  cbs.on_disconnected = [this](const Error& why) { on_disconnected(why); };
  cbs.on_event = [this](const std::string& event, const nlohmann::json& data) { on_event(event, data); };
  cbs.on_refused = [this](const Error& why) { on_refused(why); };
  qemu::QmpOptions qmp_opts;
  // Read at each connection, so that a reload's qemu_binaries applies to every VM.
  qmp_opts.verify_peer = [config = s_.config, qemu = qemu::QemuIdentity{cfg_.qemu_uid, cfg_.qemu_user}](
                             int fd, const std::string& path) {
    return qemu::verify_qmp_peer(fd, path, config->daemon.qemu_binaries, qemu);
  };
  qmp_ = std::make_unique<qemu::QmpClient>(s_.loop, cfg_.qmp, std::move(cbs), std::move(qmp_opts));
  hub_ = std::make_unique<HubAttacher>(*s_.factory, *qmp_, *s_.defer);
  auto replug = std::make_unique<ReplugAttacher>(*s_.factory, *qmp_, *s_.defer);
  replug->set_journal(s_.journal);
  replug_ = std::move(replug);
  hub_->set_vm(cfg_.name);
  replug_->set_vm(cfg_.name);
  for (const auto& b : cfg_.macvtaps) {
    MacvtapRunner& r = add_macvtap(b, attacher_for(b.attach));
    if (const int parent = s_.links->resolve_parent(b)) r.warn_if_wifi(parent);
  }
  for (const auto& pc : cfg_.passts) {
    auto p = std::make_unique<PasstRunner>(cfg_.name, pc, passt_, *qmp_, s_);
    // The same binding in the VM's previous incarnation: keep its passt.
    if (auto it = carry.find(pc.netdev); it != carry.end()) p->carry_from(*it->second);
    passts_.push_back(std::move(p));
  }
  for (auto& [netdev, old] : carry)
    if (old->has_processes()) old->retire();
  for (const auto& t : cfg_.taps) taps_.push_back(std::make_unique<BridgePortRunner>(*this, t, s_));
}

// QMP sessions first: their callbacks refer to the runners and attachers.
QmpVm::~QmpVm() { qmp_.reset(); }

void QmpVm::describe(nlohmann::json& binding) const {
  const auto* replug = dynamic_cast<const ReplugAttacher*>(replug_.get());
  if (!replug || !binding.value("nic", nlohmann::json()).is_string()) return;
  const std::string name =
      replug->adopted_macvtap(binding["nic"].get<std::string>(), binding.value("macvtap_ifindex", 0));
  if (!name.empty()) binding["macvtap"] = name;
}

Attacher& QmpVm::attacher_for(config::AttachMode m) {
  return m == config::AttachMode::Replug ? *replug_ : *hub_;
}

void QmpVm::start() {
  for (auto& p : passts_) p->listen();
  qmp_->start();
}

void QmpVm::on_connected() {
  qemu_pid_ = qmp_->peer_pid();
  last_refusal_.clear();
  const uint64_t session = ++session_;
  logger()->info("{}: QMP connected (QEMU pid {})", name(), qemu_pid_);
  s_.reporter->publish({{"event", "vm"}, {"vm", name()}, {"qmp", "connected"}, {"qemu_pid", qemu_pid_}});
  probe_from(session, 0, std::make_shared<ProbeFound>());
  passts_connected(session);
}

void QmpVm::on_disconnected(const Error& why) {
  const bool exited = !process_alive(qemu_pid_);
  logger()->info("{}: QMP disconnected ({}){}", name(), why.message, exited ? ", QEMU has exited" : "");
  s_.reporter->publish(
      {{"event", "vm"}, {"vm", name()}, {"qmp", "disconnected"}, {"error", untrusted::safe_text(why.message)}});
  ++session_;
  // What was begun for a QEMU that is gone cannot be finished.
  if (exited && s_.journal) s_.journal->drop_gone();
  for (auto& b : macvtaps_) b->feed(engine::VmDisconnected{exited});
  for (auto& p : passts_) p->vm_disconnected(exited);
  if (exited) remove_unheld_macvtaps(*s_.factory, name(), name() + ": QEMU exited");
}

void QmpVm::on_event(const std::string& event, const nlohmann::json& data) {
  if (logger()->should_log(spdlog::level::debug))
    logger()->debug("{}: QMP event {} {}", name(), untrusted::safe_text(event, 64),
                    untrusted::safe_text(untrusted::dump_json(data), 300));
  if (event == "DEVICE_DELETED") on_device_deleted(data);
  if (event != qemu::kStreamConnected && event != qemu::kStreamDisconnected && event != qemu::kVhostUserConnected &&
      event != qemu::kVhostUserDisconnected)
    return;
  if (!data.is_object() || !data.contains("netdev-id") || !data["netdev-id"].is_string()) return;
  if (PasstRunner* p = find_passt(data["netdev-id"].get<std::string>()))
    p->stream_event(event == qemu::kStreamConnected || event == qemu::kVhostUserConnected);
}

void QmpVm::on_refused(const Error& why) {
  if (last_refusal_ == why.message) return;  // said once per reason, not per retry
  last_refusal_ = why.message;
  logger()->warn("{}: {}; retrying slowly", name(), why.message);
}

void QmpVm::probe_from(uint64_t session, size_t index, std::shared_ptr<ProbeFound> found) {
  if (session_ != session || !connected()) return;
  for (; index < std::size(kStrategies); ++index) {
    const config::AttachMode mode = kStrategies[index];
    auto& cfgs = found->cfgs[mode];
    for (const auto& b : macvtaps_)
      if (b->cfg().attach == mode) cfgs.push_back(b->cfg());
    // A strategy with no binding here has nothing to look at.
    if (cfgs.empty()) continue;
    attacher_for(mode).probe(cfgs, guarded(guard_, [this, session, index, found, mode](std::vector<engine::VmConnected> r) {
                               found->by_mode[mode] = std::move(r);
                               probe_from(session, index + 1, found);
                             }));
    return;
  }
  std::map<config::AttachMode, size_t> next;
  for (auto& b : macvtaps_) {
    auto& list = found->by_mode[b->cfg().attach];
    size_t& i = next[b->cfg().attach];
    if (i >= list.size()) continue;
    engine::VmConnected vc = list[i++];
    // A macvtap made on a macvlan parent sits on the macvlan's lower device.
    const int parent = s_.links->resolve_parent(b->cfg());
    const netlink::LinkInfo* p = s_.links->link(parent);
    if (vc.adopt && p && vc.adopt->parent_ifindex == p->parent_ifindex &&
        (p->kind == "macvlan" || p->kind == "macvtap"))
      vc.adopt->parent_ifindex = parent;
    b->feed(vc);
  }
}

// DEVICE_DELETED comes twice for a virtio NIC: first for its backend (no
// "device", a path under the NIC), then for the NIC itself.
void QmpVm::on_device_deleted(const nlohmann::json& data) {
  if (!data.is_object()) return;
  auto it = data.find("device");
  if (it == data.end() || !it->is_string()) return;
  const std::string& dev = it->get_ref<const std::string&>();
  for (auto& b : macvtaps_) {
    if (b->cfg().attach != config::AttachMode::Replug || b->cfg().nic != dev) continue;
    released(*b);
    // Released for a parent that is gone: its old backend goes now, off the return's path.
    if (b->engine().state() == engine::State::WaitingParent && !b->engine().nic_present())
      if (auto* replug = dynamic_cast<ReplugAttacher*>(replug_.get())) replug->drop_backend(dev);
  }
}

// Not asked for. It may be the late event of the NIC's previous device: QEMU
// can answer a repeated device_del with DeviceNotFound before it sends
// DEVICE_DELETED, and the NIC is plugged in again meanwhile. Only a NIC that
// QEMU no longer has was unplugged.
void QmpVm::unasked_release(MacvtapRunner& b) {
  const std::string nic = b.cfg().nic;
  const uint64_t session = session_;
  // One in flight per NIC is enough (one left from an ended session is not):
  // a QEMU that floods DEVICE_DELETED cannot queue a check per event.
  if (auto [pc, fresh] = presence_checks_.emplace(nic, session); !fresh) {
    if (pc->second == session) return;
    pc->second = session;
  }
  qmp_->execute("qom-get", {{"path", "/machine/peripheral/" + nic}, {"property", "type"}},
                guarded(guard_, [this, &b, nic, session, alive = b.guard().watch()](const qemu::QmpReply& r) {
                  if (auto pc = presence_checks_.find(nic); pc != presence_checks_.end() && pc->second == session)
                    presence_checks_.erase(pc);
                  if (alive.expired()) return;
                  if (r || !qmp_not_found(r.error())) {
                    logger()->debug("{}: DEVICE_DELETED of the NIC's previous device", b.name());
                    return;
                  }
                  const auto* replug = dynamic_cast<const ReplugAttacher*>(replug_.get());
                  if (replug && replug->release_asked_before(nic) && b.engine().state() == engine::State::Attached) {
                    logger()->info("{}: the guest let go of the NIC as an earlier relinkd asked", b.name());
                    b.feed(engine::ReattachRequested{});
                    return;
                  }
                  logger()->info("{}: the NIC was unplugged", b.name());
                  b.feed(engine::Released{});
                }));
}

// QMP is up: find what runs (a passt of ours, QEMU's stream peers) and tell
// each passt runner.
void QmpVm::passts_connected(uint64_t session) {
  if (passts_.empty()) return;
  qmp_->execute("human-monitor-command", {{"command-line", "info network"}},
                guarded(guard_, [this, session](const Result<nlohmann::json>& r) {
                  if (session_ != session || !connected()) return;
                  if (!r) logger()->warn("{}: info network: {}", name(), r.error().message);
                  std::string text;
                  if (r && r->is_string()) text = r->get<std::string>();
                  const bool known = r && r->is_string();
                  for (auto& p : passts_) p->vm_connected(known ? &text : nullptr, qmp_->qemu_version());
                }));
}

void QmpVm::restart_failed() {
  ManagedVm::restart_failed();
  for (auto& p : passts_) {
    if (p->refused()) {
      // Refused for what the installed passt lacked: look again.
      auto fresh = std::make_unique<PasstRunner>(cfg_.name, p->cfg(), passt_, *qmp_, s_);
      if (fresh->refused()) continue;
      p = std::move(fresh);
      for (auto& q : passts_) q->listen();
      if (connected()) passts_connected(session_);
    } else if (p->engine().state() == engine::State::Failed) {
      p->reset();
    }
  }
}

std::map<std::string, std::unique_ptr<PasstRunner>> QmpVm::take_passts(const std::vector<std::string>& keep) {
  std::map<std::string, std::unique_ptr<PasstRunner>> carry;
  for (auto& p : passts_) {
    if (std::find(keep.begin(), keep.end(), p->cfg().netdev) != keep.end()) carry[p->cfg().netdev] = std::move(p);
    else p->retire();
  }
  passts_.clear();
  return carry;
}

void QmpVm::reverify() { qmp_->reverify(); }

void QmpVm::retire_passts() {
  for (auto& p : passts_) p->retire();
}

Result<nlohmann::json> QmpVm::qemu_args() const {
  const auto args = config::qemu_args(cfg_);
  return nlohmann::json{{"args", args.args}, {"notes", args.notes}, {"text", config::format_qemu_args(args)}};
}

nlohmann::json QmpVm::status() const {
  nlohmann::json v = ManagedVm::status();
  v["source"] = origin_;
  v["qmp"] = qmp_->connected() ? "connected" : "disconnected";
  v["qmp_socket"] = cfg_.qmp;
  if (qmp_->connected()) v["qemu_pid"] = qemu_pid_;
  else if (!qmp_->last_error().empty()) v["qmp_error"] = qmp_->last_error();
  return v;
}

}  // namespace relink::daemon
