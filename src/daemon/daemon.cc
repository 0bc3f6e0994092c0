// SPDX-License-Identifier: GPL-2.0-or-later
#include "daemon/daemon.h"

#include <net/if.h>
#include <signal.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>

#include <algorithm>
#include <cstring>
#include <filesystem>

#include "daemon/hub_attach.h"
#include "daemon/qemu_names.h"
#include "daemon/replug_attach.h"
#include "passt/pidfile.h"
#include "qemu/qmp_peer.h"
#include "util/clock.h"
#include "util/log.h"
#include "util/trusted_dir.h"
#include "util/untrusted.h"

namespace relink::daemon {
namespace {

auto logger() { return log::get("daemon"); }

// Creates a missing directory with `mode`; an existing one is left as it is
// (it may be shared, like /run).
Result<void> make_dir(const std::string& path, mode_t mode) {
  std::error_code ec;
  if (!std::filesystem::create_directories(path, ec)) {
    if (ec) return Error{ec.value(), "create " + path + ": " + ec.message()};
    return ok();
  }
  if (chmod(path.c_str(), mode) < 0) return Error::last("chmod " + path);
  return ok();
}

// state_dir and state_dir/passt hold the pidfiles naming processes relinkd
// adopts or stops: they must be relinkd's alone (util/trusted_dir.h). What
// is missing is created; what exists and others could have written is
// refused, and relinkd does not start.
Result<void> make_state_dirs(const std::string& state_dir) {
  auto top = trusted::open_dir(state_dir, 0755);
  if (!top) return Error{top.error().code, "state_dir: " + top.error().message};
  auto passt_dir = trusted::open_subdir(top->get(), "passt", 0700, /*create=*/true, state_dir + "/passt");
  if (!passt_dir) return Error{passt_dir.error().code, "state_dir: " + passt_dir.error().message};
  return ok();
}

}  // namespace

Daemon::BindingRt::BindingRt(std::string v, config::MacvtapBinding c)
    : vm(std::move(v)), cfg(std::move(c)), engine(vm + "/" + cfg.nic, engine::RetryPolicy{}, [&] {
        engine::Style st;
        st.replug = cfg.attach != config::AttachMode::Hub;
        st.release_timeout_ms = cfg.release_timeout_ms;
        st.follow_carrier = cfg.follow_carrier;
        st.nic = cfg.nic;
        return st;
      }()) {}

Daemon::Daemon(config::Config cfg, std::string log_level_override)
    : cfg_(std::move(cfg)), log_level_override_(std::move(log_level_override)) {}

Daemon::~Daemon() {
  // QMP sessions first: their callbacks refer to bindings and the attacher.
  vms_.clear();
  control_.reset();
  links_.reset();
}

Result<void> Daemon::setup() {
  sd_event* e = nullptr;
  if (int r = sd_event_new(&e); r < 0) return Error::from_errno(-r, "sd_event_new");
  loop_.reset(e);
  defer_ = std::make_unique<DeferQueue>(loop_.get());
  started_us_ = monotonic_us();

  sigset_t mask;
  sigemptyset(&mask);
  for (int sig : {SIGTERM, SIGINT, SIGHUP}) sigaddset(&mask, sig);
  sigprocmask(SIG_BLOCK, &mask, nullptr);
  signal(SIGPIPE, SIG_IGN);
  for (int sig : {SIGTERM, SIGINT, SIGHUP}) {
    sd_event_source* s = nullptr;
    if (int r = sd_event_add_signal(loop_.get(), &s, sig, &Daemon::on_signal, this); r < 0)
      return Error::from_errno(-r, "sd_event_add_signal");
    signals_.emplace_back(s);
  }
  sd_event_set_watchdog(loop_.get(), true);

  if (auto r = make_state_dirs(cfg_.daemon.state_dir); !r) return r;
  load_runtime_vms();
  spawner_ = std::make_unique<passt::ProcessSpawner>();
  probe_passt_features();
  factory_ = std::make_unique<macvtap::RtnlMacvtapFactory>(cfg_.daemon.node_dir);

  links_ = std::make_unique<netlink::LinkWatcher>(
      loop_.get(), [this](const std::vector<netlink::LinkEvent>& ev) { on_links(ev); },
      cfg_.daemon.netlink_receive_buffer);
  if (auto r = links_->start(); !r) return Error{r.error().code, "rtnetlink: " + r.error().message};

  const std::string sock_dir = std::filesystem::path(cfg_.daemon.control_socket).parent_path();
  if (auto r = make_dir(sock_dir, 0755); !r) return r;
  control_ = make_control_server();
  if (auto r = control_->listen(cfg_.daemon.control_socket, cfg_.daemon.control_group); !r) return r;

  for (const auto& vm : wanted_vms()) {
    start_vm(vm);
    vms_.back()->runtime = runtime_vm(vm.name) != nullptr;
  }
  if (cfg_.libvirt.enabled)
    if (auto r = start_libvirt(); !r) return r;
  return ok();
}

std::unique_ptr<ControlServer> Daemon::make_control_server() {
  return std::make_unique<ControlServer>(loop_.get(),
                                         [this](const nlohmann::json& req, const Peer&) { return handle_control(req); });
}

void Daemon::start_vm(const config::Vm& vmcfg, std::map<std::string, std::unique_ptr<PasstRt>> carry) {
  auto vm = std::make_unique<VmRt>();
  vm->cfg = vmcfg;
  VmRt* raw = vm.get();
  const std::string name = vmcfg.name;
  qemu::QmpClient::Callbacks cbs;
  cbs.on_connected = [this, name] {
    VmRt* v = find_vm(name);
    if (!v) return;
    v->qemu_pid = v->qmp->peer_pid();
    v->last_refusal.clear();
    const uint64_t session = ++v->session;
    logger()->info("{}: QMP connected (QEMU pid {})", name, v->qemu_pid);
    publish({{"event", "vm"}, {"vm", name}, {"qmp", "connected"}, {"qemu_pid", v->qemu_pid}});
    probe_bindings(*v, session);
    passt_vm_connected(*v, session);
  };
  cbs.on_disconnected = [this, name](const Error& why) {
    VmRt* v = find_vm(name);
    if (!v) return;
    const bool exited = !process_alive(v->qemu_pid);
    logger()->info("{}: QMP disconnected ({}){}", name, why.message, exited ? ", QEMU has exited" : "");
    publish({{"event", "vm"}, {"vm", name}, {"qmp", "disconnected"}, {"error", untrusted::safe_text(why.message)}});
    ++v->session;
    for (auto& b : v->bindings) feed(*v, *b, engine::VmDisconnected{exited});
    for (auto& p : v->passts) feed_passt(*v, *p, engine::passt_ev::VmDisconnected{exited});
  };
  cbs.on_event = [this, name](const std::string& event, const nlohmann::json& data) {
    if (logger()->should_log(spdlog::level::debug))
      logger()->debug("{}: QMP event {} {}", name, untrusted::safe_text(event, 64),
                      untrusted::safe_text(untrusted::dump_json(data), 300));
    VmRt* v = find_vm(name);
    if (!v) return;
    if (event == "DEVICE_DELETED") on_device_deleted(*v, data);
    if (event != kStreamConnected && event != kStreamDisconnected && event != kVhostUserConnected &&
        event != kVhostUserDisconnected)
      return;
    passt_stream_event(*v, event, data);
  };
  cbs.on_refused = [this, name](const Error& why) {
    VmRt* v = find_vm(name);
    if (!v || v->last_refusal == why.message) return;  // said once per reason, not per retry
    v->last_refusal = why.message;
    logger()->warn("{}: {}; retrying slowly", name, why.message);
  };
  qemu::QmpOptions qmp_opts;
  // Read at each connection, so that a reload's qemu_binaries applies to every VM.
  qmp_opts.verify_peer = [this, qemu = qemu::QemuIdentity{vmcfg.qemu_uid, vmcfg.qemu_user}](int fd,
                                                                                         const std::string& path) {
    return qemu::verify_qmp_peer(fd, path, cfg_.daemon.qemu_binaries, qemu);
  };
  vm->qmp = std::make_unique<qemu::QmpClient>(loop_.get(), vmcfg.qmp, std::move(cbs), std::move(qmp_opts));
  vm->hub = std::make_unique<HubAttacher>(*factory_, *vm->qmp, *defer_);
  vm->replug = std::make_unique<ReplugAttacher>(*factory_, *vm->qmp, *defer_);
  for (const auto& b : vmcfg.macvtaps) {
    (b.attach == config::AttachMode::Replug ? vm->replug_cfgs : vm->hub_cfgs).push_back(b);
    auto rt = std::make_unique<BindingRt>(vmcfg.name, b);
    rt->daemon = this;
    rt->owner = raw;
    (void)rt->engine.handle(parent_of(b));
    if (const int parent = resolve_parent(b)) warn_if_wifi(*raw, *rt, parent);
    vm->bindings.push_back(std::move(rt));
  }
  for (const auto& pc : vmcfg.passts) {
    auto p = make_passt(*raw, pc);
    // The same binding in the VM's previous incarnation: keep its passt.
    if (auto it = carry.find(pc.netdev); it != carry.end() && !p->refused) {
      p->procs = std::move(it->second->procs);
      p->live_started_ms = it->second->live_started_ms;
      p->pidfile_generation = it->second->pidfile_generation;
    }
    vm->passts.push_back(std::move(p));
  }
  for (auto& [netdev, old] : carry)
    if (!old->procs.empty()) retire_passt(*old);
  vms_.push_back(std::move(vm));
  passt_listen(*raw);
  raw->qmp->start();
}

// Each strategy's attacher looks at what the VM has of its bindings, one
// after the other; the results are fed in binding order once all have answered.
struct Daemon::ProbeFound {
  std::map<config::AttachMode, std::vector<engine::VmConnected>> by_mode;
};

namespace {
constexpr config::AttachMode kStrategies[] = {config::AttachMode::Hub, config::AttachMode::Replug,
                                              config::AttachMode::Libvirt};
}  // namespace

void Daemon::probe_bindings(VmRt& vm, uint64_t session) {
  probe_from(vm.cfg.name, session, 0, std::make_shared<ProbeFound>());
}

void Daemon::probe_from(const std::string& name, uint64_t session, size_t index, std::shared_ptr<ProbeFound> found) {
  VmRt* v = find_vm(name);
  if (!v || v->session != session || !v->connected()) return;
  for (; index < std::size(kStrategies); ++index) {
    const config::AttachMode mode = kStrategies[index];
    const auto& cfgs = v->cfgs_for(mode);
    // A strategy with no binding here has nothing to look at.
    if (cfgs.empty()) continue;
    v->attacher_for(mode).probe(cfgs, [this, name, session, index, found, mode](std::vector<engine::VmConnected> r) {
      found->by_mode[mode] = std::move(r);
      probe_from(name, session, index + 1, found);
    });
    return;
  }
  std::map<config::AttachMode, size_t> next;
  for (auto& b : v->bindings) {
    auto& list = found->by_mode[b->cfg.attach];
    size_t& i = next[b->cfg.attach];
    if (i >= list.size()) continue;
    engine::VmConnected vc = list[i++];
    // A macvtap made on a macvlan parent sits on the macvlan's lower device.
    const int parent = resolve_parent(b->cfg);
    const netlink::LinkInfo* p = links_->table().find(parent);
    if (vc.adopt && p && vc.adopt->parent_ifindex == p->parent_ifindex &&
        (p->kind == "macvlan" || p->kind == "macvtap"))
      vc.adopt->parent_ifindex = parent;
    feed(*v, *b, vc);
  }
}

// DEVICE_DELETED comes twice for a virtio NIC: first for its backend (no
// "device", a path under the NIC), then for the NIC itself.
void Daemon::on_device_deleted(VmRt& vm, const nlohmann::json& data) {
  if (!data.is_object()) return;
  auto it = data.find("device");
  if (it == data.end() || !it->is_string()) return;
  const std::string& dev = it->get_ref<const std::string&>();
  for (auto& b : vm.bindings) {
    if (b->cfg.attach != config::AttachMode::Replug || b->cfg.nic != dev) continue;
    if (b->release_sent_us) {
      b->last_release_ms = static_cast<double>(monotonic_us() - b->release_sent_us) / 1000.0;
      b->round_release_ms = b->last_release_ms;
      b->release_sent_us = 0;
      logger()->info("{}/{}: the guest released the NIC in {:.0f} ms", vm.cfg.name, dev, b->last_release_ms);
    } else if (b->engine.state() == engine::State::Attached) {
      // Not asked for. It may be the late event of the NIC's previous device:
      // QEMU can answer a repeated device_del with DeviceNotFound before it
      // sends DEVICE_DELETED, and the NIC is plugged in again meanwhile. Only
      // a NIC that QEMU no longer has was unplugged.
      const std::string vm_name = vm.cfg.name, nic = dev;
      const uint64_t session = vm.session;
      // One in flight per NIC is enough (one left from an ended session is not).
      if (auto [pc, fresh] = vm.presence_checks.emplace(nic, session); !fresh) {
        if (pc->second == session) continue;
        pc->second = session;
      }
      vm.qmp->execute("qom-get", {{"path", "/machine/peripheral/" + nic}, {"property", "type"}},
                      [this, vm_name, nic, session](qemu::QmpReply r) {
                        VmRt* v = find_vm(vm_name);
                        if (v) {
                          auto pc = v->presence_checks.find(nic);
                          if (pc != v->presence_checks.end() && pc->second == session) v->presence_checks.erase(pc);
                        }
                        BindingRt* bb = v ? find_binding(*v, nic) : nullptr;
                        if (!bb) return;
                        if (r || !qmp_not_found(r.error())) {
                          logger()->debug("{}/{}: DEVICE_DELETED of the NIC's previous device", vm_name, nic);
                          return;
                        }
                        logger()->info("{}/{}: the NIC was unplugged", vm_name, nic);
                        feed(*v, *bb, engine::Released{});
                      });
      continue;
    }
    feed(vm, *b, engine::Released{});
  }
}

int Daemon::resolve_parent(const config::MacvtapBinding& b) const {
  if (b.parent_mac) {
    const auto m = links_->table().find_by_mac(*b.parent_mac);
    if (m && !dead_parents_.count(m.link->ifindex)) {
      // Several interfaces share the MAC (a bridge and its port): the one
      // with the configured name wins if it is among them.
      const netlink::LinkInfo* named = links_->table().find_by_name(b.parent);
      if (m.ambiguous() && named && m.includes(*named) && !dead_parents_.count(named->ifindex))
        return named->ifindex;
      return m.link->ifindex;
    }
  }
  const netlink::LinkInfo* l = links_->table().find_by_name(b.parent);
  return l && !dead_parents_.count(l->ifindex) ? l->ifindex : 0;
}

engine::ParentChanged Daemon::parent_of(const config::MacvtapBinding& b) const {
  const int ifindex = resolve_parent(b);
  const netlink::LinkInfo* l = ifindex ? links_->table().find(ifindex) : nullptr;
  return engine::ParentChanged{ifindex, l && netlink::has_carrier(*l)};
}

void Daemon::on_links(const std::vector<netlink::LinkEvent>& events) {
  const uint64_t now = monotonic_us();
  in_link_batch_ = true;
  for (const auto& ev : events)
    if (ev.type == netlink::LinkEventType::Removed) dead_parents_.erase(ev.link.ifindex);
  // Parents first: a name may have moved to a new ifindex within the batch.
  // Only the batch's end state is fed, so a carrier that flapped within it
  // costs the guest nothing.
  for (auto& vm : vms_)
    for (auto& b : vm->bindings) {
      const engine::ParentChanged pc = parent_of(b->cfg);
      if (pc.ifindex == b->engine.parent_ifindex() && (!pc.ifindex || pc.carrier == b->engine.carrier())) continue;
      if (pc.ifindex && pc.ifindex != b->engine.parent_ifindex()) {
        const netlink::LinkInfo* l = links_->table().find(pc.ifindex);
        const bool by_mac = b->cfg.parent_mac && l && (l->perm_mac == b->cfg.parent_mac || l->mac == b->cfg.parent_mac);
        logger()->info("{}/{}: parent is {} (ifindex {}){}", vm->cfg.name, b->cfg.nic, l ? l->name : "?", pc.ifindex,
                       by_mac ? " by its MAC " + format_mac(*b->cfg.parent_mac)
                              : " by its name");
        if (l) warn_if_wifi(*vm, *b, pc.ifindex);
      } else if (pc.ifindex) {
        logger()->info("{}/{}: parent {} {} carrier", vm->cfg.name, b->cfg.nic, b->cfg.parent,
                       pc.carrier ? "has" : "lost");
      }
      feed(*vm, *b, pc, now);
    }
  for (const auto& ev : events) {
    if (ev.type != netlink::LinkEventType::Removed) continue;
    for (auto& vm : vms_)
      for (auto& b : vm->bindings) {
        if (b->engine.attached_parent_ifindex() == ev.link.ifindex) {
          feed(*vm, *b, engine::ParentRemoved{ev.link.ifindex}, now);
          continue;
        }
        if (b->engine.macvtap_ifindex() != ev.link.ifindex) continue;
        // The kernel unlists a parent before it deletes the macvtaps on it,
        // and only then reports the parent gone: ask the kernel now, so the
        // binding waits for the parent instead of trying the dying one.
        char name[IF_NAMESIZE];
        const int parent = b->engine.attached_parent_ifindex();
        if (parent && !if_indextoname(static_cast<unsigned>(parent), name)) {
          dead_parents_.insert(parent);
          if (b->engine.parent_ifindex() == parent) feed(*vm, *b, engine::ParentChanged{0, false}, now);
        } else if (vm->from_libvirt) {
          // libvirt deletes the macvtap of an interface its owner detaches
          // before it reports the removal: give that report a moment before
          // the loss counts as a dead tap to replace.
          after(kLibvirtRemovalGraceMs, [this, name = vm->cfg.name, nic = b->cfg.nic, ifindex = ev.link.ifindex] {
            VmRt* v = find_vm(name);
            BindingRt* bb = v ? find_binding(*v, nic) : nullptr;
            if (bb && bb->engine.macvtap_ifindex() == ifindex) feed(*v, *bb, engine::LinkRemoved{ifindex});
          });
          continue;
        }
        feed(*vm, *b, engine::LinkRemoved{ev.link.ifindex}, now);
      }
  }
  in_link_batch_ = false;
  run_attaches();
}

// A parent shared by many VMs comes back as one event: make every macvtap
// first, then hand them to their QEMUs.
void Daemon::run_attaches() {
  std::vector<std::pair<QueuedAttach, Result<macvtap::Macvtap>>> made;
  for (auto& q : queued_attaches_) {
    VmRt* v = find_vm(q.vm);
    BindingRt* b = v ? find_binding(*v, q.nic) : nullptr;
    // A later event of the same batch may have moved the binding on already.
    if (!b || b->engine.generation() != q.generation || b->engine.state() != engine::State::Attaching) continue;
    made.emplace_back(q, v->attacher_for(b->cfg).create(b->cfg, q.parent_ifindex));
  }
  queued_attaches_.clear();
  for (auto& [q, mvt] : made) {
    VmRt* v = find_vm(q.vm);
    BindingRt* b = v ? find_binding(*v, q.nic) : nullptr;
    if (!b) continue;
    auto done = attach_done(q.vm, q.nic, q.generation);
    if (mvt) v->attacher_for(b->cfg).hand_over(b->cfg, q.generation, std::move(mvt.value()), q.link_up, std::move(done));
    else defer_->post([done, err = mvt.error().message] { done(AttachResult{false, 0, err}); });
  }
}

std::function<void(AttachResult)> Daemon::attach_done(const std::string& vm_name, const std::string& nic,
                                                      uint64_t gen) {
  return [this, vm_name, nic, gen](AttachResult r) {
    VmRt* v = find_vm(vm_name);
    BindingRt* bb = v ? find_binding(*v, nic) : nullptr;
    if (!bb) return;
    if (!r.ok) {
      if (gen == bb->engine.generation()) bb->round_release_ms = -1;
      feed(*v, *bb, engine::AttachFailed{gen, r.error});
      return;
    }
    if (gen == bb->engine.generation()) {
      bb->last_reattach_ms = static_cast<double>(monotonic_us() - bb->trigger_us) / 1000.0;
      if (bb->cfg.attach != config::AttachMode::Hub)
        bb->last_own_ms = bb->last_reattach_ms - std::max(0.0, bb->round_release_ms);
      bb->round_release_ms = -1;
      // The first attach is not a recovery.
      if (++bb->attaches > 1) recovery_["macvtap"].observe(bb->last_reattach_ms / 1000.0);
    }
    feed(*v, *bb, engine::AttachSucceeded{gen, r.macvtap_ifindex});
    if (bb->engine.state() == engine::State::Attached)
      logger()->info("{}/{}: attached generation {} on {} in {:.2f} ms", vm_name, nic, gen, bb->cfg.parent,
                     bb->last_reattach_ms);
    if (!r.wrong_tap.empty() && gen == bb->engine.generation()) {
      // The guest's NIC has some other tap: plug it in again (libvirt's next
      // macvtap gets another ifindex), a few times.
      bb->wrong_tap = r.wrong_tap;
      logger()->error("{}/{}: {}", vm_name, nic, r.wrong_tap);
      if (++bb->wrong_tap_retries <= 3) feed(*v, *bb, engine::ReattachRequested{});
      return;
    }
    if (r.wrong_tap.empty() && gen == bb->engine.generation()) {
      bb->wrong_tap.clear();
      bb->wrong_tap_retries = 0;
    }
    // The macvtap may have vanished while QEMU was being told about it,
    // before the link watcher saw it appear at all.
    char name[IF_NAMESIZE];
    if (bb->engine.macvtap_ifindex() == r.macvtap_ifindex &&
        !if_indextoname(static_cast<unsigned>(r.macvtap_ifindex), name))
      feed(*v, *bb, engine::LinkRemoved{r.macvtap_ifindex});
  };
}

void Daemon::warn_if_wifi(VmRt& vm, BindingRt& b, int ifindex) {
  const netlink::LinkInfo* l = links_->table().find(ifindex);
  if (!l) return;
  if (!netlink::is_wifi(l->name)) {
    b.warning.clear();
    return;
  }
  const std::string w = netlink::wifi_warning(l->name);
  if (b.warning == w) return;
  b.warning = w;
  logger()->warn("{}/{}: {}", vm.cfg.name, b.cfg.nic, w);
}

void Daemon::publish(nlohmann::json event) {
  if (!control_ || !control_->monitoring()) return;
  event["time"] = static_cast<double>(realtime_us()) / 1e6;
  control_->publish(event);
}

void Daemon::publish_state(const VmRt& vm, const std::string& kind, const std::string& id, engine::State from,
                           engine::State to, uint64_t generation, const std::string& error) {
  if (!control_ || !control_->monitoring()) return;
  nlohmann::json ev = {{"event", "state"},
                       {"vm", vm.cfg.name},
                       {"kind", kind},
                       {kind == "passt" ? "netdev" : "nic", id},
                       {"from", engine::state_name(from)},
                       {"state", engine::state_name(to)},
                       {"generation", generation}};
  ev["error"] = error.empty() || (to != engine::State::Backoff && to != engine::State::Failed) ? nlohmann::json(nullptr)
                                                                                                : nlohmann::json(error);
  publish(std::move(ev));
}

std::string Daemon::metrics_text() const { return format_metrics(status(), recovery_); }

Daemon::VmRt* Daemon::find_vm(const std::string& name) {
  for (auto& vm : vms_)
    if (vm->cfg.name == name) return vm.get();
  return nullptr;
}

Daemon::BindingRt* Daemon::find_binding(VmRt& vm, const std::string& nic) {
  for (auto& b : vm.bindings)
    if (b->cfg.nic == nic) return b.get();
  return nullptr;
}

void Daemon::feed(VmRt& vm, BindingRt& b, const engine::Event& ev, uint64_t trigger_us) {
  const engine::State before = b.engine.state();
  auto actions = b.engine.handle(ev);
  const bool failed_now = b.engine.state() == engine::State::Backoff || b.engine.state() == engine::State::Failed;
  if (b.engine.state() != before && failed_now && before != engine::State::Backoff) ++b.failures_total;
  if (b.engine.state() != before)
    publish_state(vm, "macvtap", b.cfg.nic, before, b.engine.state(), b.engine.generation(), b.engine.last_error());
  if (b.engine.state() != before)
    logger()->info("{}/{}: {} -> {}{}", vm.cfg.name, b.cfg.nic, engine::state_name(before),
                   engine::state_name(b.engine.state()),
                   b.engine.state() == engine::State::Backoff || b.engine.state() == engine::State::Failed
                       ? " (" + b.engine.last_error() + ")"
                       : "");
  for (const auto& a : actions) execute(vm, b, a, trigger_us ? trigger_us : monotonic_us());
}

void Daemon::execute(VmRt& vm, BindingRt& b, const engine::Action& action, uint64_t trigger_us) {
  std::visit(
      [&](const auto& a) {
        using T = std::decay_t<decltype(a)>;
        if constexpr (std::is_same_v<T, engine::Attach>) {
          // After a release, the attach is timed from what started the release.
          if (b.round_release_ms < 0) b.trigger_us = trigger_us;
          logger()->debug("{}/{}: attaching generation {} on ifindex {}", vm.cfg.name, b.cfg.nic, a.generation,
                          a.parent_ifindex);
          queued_attaches_.push_back({vm.cfg.name, b.cfg.nic, a.generation, a.parent_ifindex, a.link_up});
          if (!in_link_batch_) run_attaches();
        } else if constexpr (std::is_same_v<T, engine::Detach>) {
          vm.attacher_for(b.cfg).detach(b.cfg, a.generation, a.macvtap_ifindex, a.link_down);
        } else if constexpr (std::is_same_v<T, engine::Release>) {
          b.trigger_us = trigger_us;
          b.round_release_ms = -1;
          b.release_sent_us = monotonic_us();
          logger()->info("{}/{}: asking the guest to release the NIC ({})", vm.cfg.name, b.cfg.nic,
                         vm.from_libvirt ? "libvirt detach" : "device_del");
          keep_resumable(vm, b);
          const std::string vm_name = vm.cfg.name, nic = b.cfg.nic;
          vm.attacher_for(b.cfg).release(b.cfg, a.generation, [this, vm_name, nic](Attacher::ReleaseResult r) {
            VmRt* v = find_vm(vm_name);
            BindingRt* bb = v ? find_binding(*v, nic) : nullptr;
            if (!bb) return;
            if (r.already_gone) {
              bb->release_sent_us = 0;
              feed(*v, *bb, engine::Released{});
            } else if (!r.error.empty()) {
              bb->release_sent_us = 0;
              feed(*v, *bb, engine::ReleaseFailed{r.error});
            }
          });
        } else if constexpr (std::is_same_v<T, engine::SetLink>) {
          logger()->debug("{}/{}: link {}", vm.cfg.name, b.cfg.nic, a.up ? "on" : "off");
          vm.attacher_for(b.cfg).set_link(b.cfg, a.up);
        } else if constexpr (std::is_same_v<T, engine::StartTimer>) {
          sd_event_source* s = nullptr;
          if (int r = sd_event_add_time_relative(loop_.get(), &s, CLOCK_MONOTONIC, a.delay_ms * 1000, 1000,
                                                 &Daemon::on_timer, &b);
              r < 0) {
            logger()->error("{}/{}: cannot arm retry timer: {}", vm.cfg.name, b.cfg.nic, std::strerror(-r));
            return;
          }
          b.timer.reset(s);
          logger()->info("{}/{}: retrying in {} ms", vm.cfg.name, b.cfg.nic, a.delay_ms);
        } else if constexpr (std::is_same_v<T, engine::CancelTimer>) {
          b.timer.reset();
        }
      },
      action);
}

void Daemon::after(uint64_t ms, std::function<void()> fn) {
  auto* heap = new std::function<void()>(std::move(fn));
  sd_event_source* s = nullptr;
  auto run = [](sd_event_source* src, uint64_t, void* userdata) -> int {
    auto* f = static_cast<std::function<void()>*>(userdata);
    (*f)();
    // Fired once: the loop's reference becomes ours and is dropped, which
    // frees `f` through the destroy callback.
    sd_event_source_set_floating(src, 0);
    sd_event_source_unref(src);
    return 0;
  };
  if (int r = sd_event_add_time_relative(loop_.get(), &s, CLOCK_MONOTONIC, ms * 1000, 1000, run, heap); r < 0) {
    logger()->error("cannot arm a timer: {}", std::strerror(-r));
    delete heap;
    return;
  }
  sd_event_source_set_destroy_callback(s, [](void* userdata) { delete static_cast<std::function<void()>*>(userdata); });
  // Freed with the loop if it never fires.
  sd_event_source_set_floating(s, 1);
  sd_event_source_unref(s);
}

int Daemon::on_timer(sd_event_source*, uint64_t, void* userdata) {
  auto* b = static_cast<BindingRt*>(userdata);
  b->timer.reset();  // sd-event keeps the source alive until this callback returns
  b->daemon->feed(*b->owner, *b, engine::TimerExpired{});
  return 0;
}

int Daemon::on_signal(sd_event_source* s, const signalfd_siginfo* si, void* userdata) {
  auto* self = static_cast<Daemon*>(userdata);
  if (si->ssi_signo == SIGHUP) {
    if (auto r = self->reload(); !r) logger()->error("reload failed, keeping the running configuration: {}", r.error().message);
    return 0;
  }
  logger()->info("received {}, exiting", strsignal(static_cast<int>(si->ssi_signo)));
  sd_notify(0, "STOPPING=1");
  return sd_event_exit(sd_event_source_get_event(s), 0);
}

Result<nlohmann::json> Daemon::reload() {
  sd_notifyf(0, "RELOADING=1\nMONOTONIC_USEC=%llu", static_cast<unsigned long long>(monotonic_us()));
  auto refuse = [](Error e) -> Result<nlohmann::json> {
    sd_notify(0, "READY=1");
    return e;
  };
  config::Config next;
  try {
    next = config::load_file(cfg_.path);
  } catch (const config::ConfigError& e) {
    return refuse(Error{EINVAL, e.what()});
  }
  // VMs registered at runtime stay: a file VM may not take one's place.
  for (const auto& rv : runtime_vms_)
    if (next.find_vm(rv.vm.name))
      return refuse(Error{EEXIST, cfg_.path + ": VM '" + rv.vm.name +
                                      "' is also registered at runtime (relinkctl remove " + rv.vm.name + " first)"});
  if (next.daemon.control_socket != cfg_.daemon.control_socket ||
      next.daemon.control_group != cfg_.daemon.control_group) {
    auto server = make_control_server();
    if (auto r = server->listen(next.daemon.control_socket, next.daemon.control_group); !r) return refuse(r.error());
    // This may run inside the old server's callback: free it from the loop.
    std::shared_ptr<ControlServer> previous(std::move(control_));
    defer_->post([previous] {});
    control_ = std::move(server);
  } else if (auto r = control_->refresh_group(next.daemon.control_group); !r) {
    return refuse(r.error());
  }
  log::setup(spdlog::level::from_str(log_level_override_.empty() ? next.daemon.log_level : log_level_override_),
             getenv("JOURNAL_STREAM") != nullptr);
  // The passt binary may have been upgraded or reconfigured.
  config::Config previous = std::move(cfg_);
  cfg_ = std::move(next);
  probe_passt_features();
  nlohmann::json changes = apply_vms(previous);
  // Sessions verified against the previous list are checked again (a VM
  // whose qemu_user changed was started anew by apply_vms, and so is too).
  if (previous.daemon.qemu_binaries != cfg_.daemon.qemu_binaries)
    for (auto& v : vms_)
      if (v->qmp) v->qmp->reverify();
  const std::string what = describe_changes(changes);
  logger()->info("configuration reloaded from {} ({} VMs){}", cfg_.path, cfg_.vms.size(),
                 what.empty() ? ", nothing changed" : ": " + what);
  sd_notify(0, "READY=1");
  return changes;
}

std::string Daemon::describe_changes(const nlohmann::json& changes) {
  std::string out;
  for (const char* what : {"added", "removed", "changed"}) {
    const auto& list = changes.value(what, nlohmann::json::array());
    if (list.empty()) continue;
    if (!out.empty()) out += "; ";
    out += std::string(what) + " ";
    for (size_t i = 0; i < list.size(); ++i) out += (i ? ", " : "") + list[i].get<std::string>();
  }
  return out;
}

std::vector<config::Vm> Daemon::wanted_vms() const {
  std::vector<config::Vm> all = cfg_.vms;
  for (const auto& rv : runtime_vms_) all.push_back(rv.vm);
  return all;
}

// A VM whose configuration is unchanged keeps its session and state (a
// failed binding gets a fresh start); any other is started anew and adopts
// what QEMU already has. A VM that left is no longer managed: its QEMU keeps
// its macvtaps, but its passt processes are stopped, as are those of passt
// bindings that left or changed. libvirt VMs stay as they are unless
// [libvirt] changed; then the source starts anew and adopts what each domain
// has. Returns what changed: {"added","removed","changed"}, each a list of
// "VM" or "VM/NIC" names.
nlohmann::json Daemon::apply_vms(const config::Config& previous) {
  nlohmann::json added = nlohmann::json::array(), removed = nlohmann::json::array(),
                 changed = nlohmann::json::array();
  std::vector<std::unique_ptr<VmRt>> libvirt_vms;
  for (auto& v : vms_)
    if (v->from_libvirt) libvirt_vms.push_back(std::move(v));
  std::erase(vms_, nullptr);
  const bool libvirt_changed = !(previous.libvirt == cfg_.libvirt);
  if (libvirt_changed) {
    libvirt_vms.clear();
    libvirt_.reset();
    libvirt_conflicts_.clear();
    changed.push_back("[libvirt]");
  }
  const bool passt_changed = previous.daemon.passt != cfg_.daemon.passt;
  std::vector<std::unique_ptr<VmRt>> old = std::move(vms_);
  vms_.clear();
  for (const auto& vmcfg : wanted_vms()) {
    auto it = std::find_if(old.begin(), old.end(), [&](const auto& v) { return v && v->cfg.name == vmcfg.name; });
    const bool runtime = runtime_vm(vmcfg.name) != nullptr;
    if (it != old.end() && (*it)->cfg == vmcfg && !passt_changed) {
      vms_.push_back(std::move(*it));
      VmRt& vm = *vms_.back();
      vm.runtime = runtime;
      for (auto& b : vm.bindings)
        if (b->engine.state() == engine::State::Failed) feed(vm, *b, engine::ReattachRequested{});
      for (auto& p : vm.passts) {
        if (p->refused) {
          // Refused for what the installed passt lacked: look again.
          auto fresh = make_passt(vm, p->cfg);
          if (fresh->refused) continue;
          p = std::move(fresh);
          passt_listen(vm);
          if (vm.qmp->connected()) passt_vm_connected(vm, vm.session);
        } else if (p->engine.state() == engine::State::Failed) {
          feed_passt(vm, *p, engine::passt_ev::ResetRequested{monotonic_us() / 1000});
        }
      }
      continue;
    }
    // Changed: start it anew; passt bindings that did not change keep their passt.
    std::map<std::string, std::unique_ptr<PasstRt>> carry;
    if (it != old.end()) {
      const config::Vm& was = (*it)->cfg;
      if (was.qmp != vmcfg.qmp) changed.push_back(vmcfg.name + " (qmp)");
      // Bindings by their QEMU id: gone, new, or different.
      auto diff = [&](const auto& before, const auto& after, auto id, bool all_changed) {
        for (const auto& b : before) {
          auto now = std::find_if(after.begin(), after.end(), [&](const auto& x) { return id(x) == id(b); });
          if (now == after.end()) removed.push_back(vmcfg.name + "/" + id(b));
          else if (!(*now == b) || all_changed) changed.push_back(vmcfg.name + "/" + id(b));
        }
        for (const auto& b : after)
          if (std::none_of(before.begin(), before.end(), [&](const auto& x) { return id(x) == id(b); }))
            added.push_back(vmcfg.name + "/" + id(b));
      };
      diff(was.macvtaps, vmcfg.macvtaps, [](const config::MacvtapBinding& b) { return b.nic; }, false);
      diff(was.passts, vmcfg.passts, [](const config::PasstBinding& b) { return b.netdev; }, passt_changed);
      for (auto& p : (*it)->passts) {
        const bool same = std::find(vmcfg.passts.begin(), vmcfg.passts.end(), p->cfg) != vmcfg.passts.end() &&
                          !passt_changed;
        if (same) carry[p->cfg.netdev] = std::move(p);
        else retire_passt(*p);
      }
      it->reset();
    } else {
      added.push_back(vmcfg.name);
    }
    start_vm(vmcfg, std::move(carry));
    vms_.back()->runtime = runtime;
  }
  for (auto& v : old) {
    if (!v) continue;
    for (auto& p : v->passts) retire_passt(*p);
    removed.push_back(v->cfg.name);
    logger()->info("{}: no longer {}, no longer managed{}", v->cfg.name,
                   v->runtime ? "registered" : "in the configuration",
                   v->passts.empty() ? "" : " (its passt stopped)");
  }
  old.clear();
  for (auto& v : libvirt_vms) {
    if (find_vm(v->cfg.name)) {
      libvirt_conflicts_[v->cfg.name] = "a VM of the config file has this name";
      logger()->error("libvirt domain {} has the name of a VM in {}: not followed", v->cfg.name, cfg_.path);
      continue;
    }
    vms_.push_back(std::move(v));
  }
  // A VM that left the config file may be a libvirt domain: look again.
  if (libvirt_ && !libvirt_changed)
    for (auto it = libvirt_conflicts_.begin(); it != libvirt_conflicts_.end();) {
      if (find_vm(it->first)) {
        ++it;
        continue;
      }
      libvirt_->refresh(it->first);
      it = libvirt_conflicts_.erase(it);
    }
  if (cfg_.libvirt.enabled && !libvirt_)
    if (auto r = start_libvirt(); !r) logger()->error("libvirt: {}", r.error().message);
  return {{"added", std::move(added)}, {"removed", std::move(removed)}, {"changed", std::move(changed)}};
}

nlohmann::json Daemon::status() const {
  nlohmann::json vms = nlohmann::json::array();
  for (const auto& vm : vms_) {
    nlohmann::json bindings = nlohmann::json::array();
    for (const auto& b : vm->bindings) {
      const auto& e = b->engine;
      nlohmann::json j = {
          {"kind", "macvtap"},
          {"nic", b->cfg.nic},
          {"state", engine::state_name(e.state())},
          {"generation", e.generation()},
          {"parent", b->cfg.parent},
          {"parent_ifindex", e.parent_ifindex()},
          {"macvtap", b->cfg.macvtap},
          {"macvtap_ifindex", e.macvtap_ifindex()},
          {"mode", macvtap::mode_name(b->cfg.mode)},
          {"mac", format_mac(b->cfg.mac)},
          {"attach", config::attach_mode_name(b->cfg.attach)},
          {"attaches", b->attaches},
          {"failures", e.failures()},
          {"failures_total", b->failures_total},
          {"follow_carrier", b->cfg.follow_carrier},
      };
      j["last_error"] = e.last_error().empty() ? nlohmann::json(nullptr) : nlohmann::json(e.last_error());
      j["warning"] = b->warning.empty() ? nlohmann::json(nullptr) : nlohmann::json(b->warning);
      if (b->cfg.macvtap.empty()) j["macvtap"] = nullptr;
      auto ms_or_null = [](double ms) { return ms >= 0 ? nlohmann::json(ms) : nlohmann::json(nullptr); };
      j["last_reattach_ms"] = ms_or_null(b->last_reattach_ms);
      // The parent's carrier as relinkd last saw it (null: no parent).
      j["carrier"] = e.parent_ifindex() ? nlohmann::json(e.carrier()) : nlohmann::json(nullptr);
      j["link"] = e.link_up() ? nlohmann::json(*e.link_up() ? "up" : "down") : nlohmann::json(nullptr);
      j["parent_mac"] = b->cfg.parent_mac ? nlohmann::json(format_mac(*b->cfg.parent_mac)) : nlohmann::json(nullptr);
      if (vm->from_libvirt) j["source"] = "libvirt";
      if (!b->wrong_tap.empty()) j["wrong_tap"] = b->wrong_tap;
      if (b->cfg.attach == config::AttachMode::Hub) {
        j["hub"] = b->cfg.hub;
      } else {
        j["queues"] = b->cfg.queues;
        j["release_timeout_s"] = b->cfg.release_timeout_ms / 1000;
        j["last_release_ms"] = ms_or_null(b->last_release_ms);
        // relinkd's own part of the last replug: all of it but the guest's release.
        j["last_own_ms"] = ms_or_null(b->last_own_ms);
      }
      bindings.push_back(std::move(j));
    }
    for (const auto& p : vm->passts) bindings.push_back(passt_status(*p));
    nlohmann::json v = {{"name", vm->cfg.name}, {"bindings", std::move(bindings)}};
    if (vm->from_libvirt) {
      v["source"] = "libvirt";
      v["domain"] = vm->cfg.name;
      v["libvirt"] = vm->libvirt_live ? "connected" : "disconnected";
      v["paused"] = vm->paused;
      v["qemu_pid"] = vm->libvirt->info().qemu_pid ? nlohmann::json(vm->libvirt->info().qemu_pid) : nlohmann::json(nullptr);
    } else {
      v["source"] = vm->runtime ? "runtime" : "config";
      v["qmp"] = vm->qmp->connected() ? "connected" : "disconnected";
      v["qmp_socket"] = vm->cfg.qmp;
      if (vm->qmp->connected()) v["qemu_pid"] = vm->qemu_pid;
      else if (!vm->qmp->last_error().empty()) v["qmp_error"] = vm->qmp->last_error();
    }
    vms.push_back(std::move(v));
  }
  return {{"version", 1},
          {"vms", std::move(vms)},
          {"daemon",
           {{"version", RELINK_VERSION},
            {"config", cfg_.path},
            {"uptime_s", static_cast<double>(monotonic_us() - started_us_) / 1e6},
            {"netlink_overruns", links_ ? links_->overruns() : 0}}},
          {"libvirt", libvirt_status()}};
}

namespace {
nlohmann::json refused(const std::string& why) { return {{"ok", false}, {"error", why}}; }
nlohmann::json done(nlohmann::json result = nlohmann::json::object()) {
  return {{"ok", true}, {"result", std::move(result)}};
}
std::string string_field(const nlohmann::json& req, const char* key) {
  auto it = req.find(key);
  return it != req.end() && it->is_string() ? it->get<std::string>() : std::string();
}
}  // namespace

nlohmann::json Daemon::handle_control(const nlohmann::json& req) {
  const std::string cmd = string_field(req, "command");
  if (cmd == "status") return done(status());
  if (cmd == "reload") {
    auto r = reload();
    if (!r) {
      logger()->error("reload asked over the control socket refused, keeping the running configuration: {}",
                      r.error().message);
      return refused(r.error().message);
    }
    return done(*r);
  }
  if (cmd == "reattach") return control_reattach(string_field(req, "vm"), string_field(req, "nic"));
  if (cmd == "metrics") return done({{"text", metrics_text()}});
  if (cmd == "qemu-args") {
    const std::string name = string_field(req, "vm");
    VmRt* vm = find_vm(name);
    if (!vm) return refused(no_such_vm(name));
    if (vm->from_libvirt) return refused("libvirt runs VM '" + name + "' and wires its NICs itself: no QEMU arguments to add");
    const auto args = config::qemu_args(vm->cfg);
    return done({{"args", args.args}, {"notes", args.notes}, {"text", config::format_qemu_args(args)}});
  }
  if (cmd == "add") return control_add(string_field(req, "toml"));
  if (cmd == "remove") return control_remove(string_field(req, "vm"));
  if (cmd.empty()) return refused("request has no \"command\"");
  return refused("unknown command '" + untrusted::safe_text(cmd, 64) +
                 "' (known: status, reattach, reload, add, remove, qemu-args, monitor, metrics)");
}

std::string Daemon::no_such_vm(const std::string& name) const {
  std::string known;
  for (const auto& v : vms_) known += (known.empty() ? "" : ", ") + v->cfg.name;
  return "no VM named '" + untrusted::safe_text(name, 80) + "'" + (known.empty() ? " (relinkd manages none)" : " (known: " + known + ")");
}

nlohmann::json Daemon::control_reattach(const std::string& vm_name, const std::string& nic) {
  VmRt* vm = find_vm(vm_name);
  if (!vm) return refused(no_such_vm(vm_name));
  // Which bindings: all, or the one named (checked before anything is done).
  std::string names;
  bool found = nic.empty();
  for (auto& b : vm->bindings) {
    names += (names.empty() ? "" : ", ") + b->cfg.nic;
    found = found || b->cfg.nic == nic;
  }
  for (auto& p : vm->passts) {
    names += (names.empty() ? "" : ", ") + p->cfg.netdev;
    found = found || p->cfg.netdev == nic;
  }
  if (!found)
    return refused("VM '" + vm_name + "' has no binding for NIC or netdev '" + untrusted::safe_text(nic, 64) + "'" +
                   (names.empty() ? " (it has none)" : " (it has: " + names + ")"));
  if (!vm->connected())
    return refused("VM '" + vm_name + "' is offline (" +
                   (vm->from_libvirt ? std::string("libvirt not connected") : "QMP not connected: " + vm->qmp->last_error()) + ")");
  nlohmann::json list = nlohmann::json::array();
  for (auto& b : vm->bindings)
    if (nic.empty() || b->cfg.nic == nic) {
      const uint64_t gen = b->engine.generation();
      feed(*vm, *b, engine::ReattachRequested{});
      list.push_back({{"kind", "macvtap"}, {"nic", b->cfg.nic}, {"generation_before", gen}});
    }
  for (auto& p : vm->passts)
    if (nic.empty() || p->cfg.netdev == nic) {
      if (p->refused) {
        if (!nic.empty()) return refused(p->name() + ": " + p->engine.last_error());
        continue;
      }
      const uint64_t gen = p->engine.generation();
      feed_passt(*vm, *p, engine::passt_ev::ResetRequested{monotonic_us() / 1000});
      list.push_back({{"kind", "passt"}, {"netdev", p->cfg.netdev}, {"generation_before", gen}});
    }
  if (list.empty()) return refused("VM '" + vm_name + "' has no binding relinkd can reattach");
  return done({{"vm", vm_name}, {"bindings", std::move(list)}});
}

int Daemon::run() {
  if (auto r = setup(); !r) {
    logger()->critical("cannot start: {}", r.error().message);
    return 1;
  }
  logger()->info("relinkd {} running: {} VMs{}, control socket {}", RELINK_VERSION, vms_.size(),
                 cfg_.libvirt.enabled ? " and libvirt's domains (" + cfg_.libvirt.uri + ")" : "",
                 cfg_.daemon.control_socket);
  sd_notify(0, "READY=1");
  int r = sd_event_loop(loop_.get());
  // VMs keep their network: relinkd leaves every attachment as it is, and a
  // later relinkd adopts them.
  vms_.clear();
  libvirt_.reset();
  control_.reset();
  return r < 0 ? 1 : 0;
}

}  // namespace relink::daemon
