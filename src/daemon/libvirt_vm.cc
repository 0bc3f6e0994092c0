// SPDX-License-Identifier: GPL-2.0-or-later
// A libvirt domain's bindings kept in step with its live XML; interfaces
// detached by their owner are dropped, new ones followed.
#include "daemon/libvirt_vm.h"

#include <algorithm>

#include "util/log.h"

namespace relink::daemon {
namespace {

auto logger() { return log::get("libvirt"); }

}  // namespace

LibvirtVm::LibvirtVm(const std::string& domain, libvirt::DomainRequests& libvirt, const Services& s)
    : ManagedVm(config::Vm{domain, {}, {}, {}}, s), attacher_(libvirt, *s.factory, *s.defer, domain) {
  attacher_.set_journal(s.journal);
  attacher_.set_vm(domain);
}

std::shared_ptr<spdlog::logger> LibvirtVm::origin_logger() const { return log::get("libvirt"); }

void LibvirtVm::connection_lost() {
  if (!live_) return;
  live_ = false;
  ++session_;
  for (auto& b : macvtaps_) {
    b->forget_release();
    b->feed(engine::VmDisconnected{false});
  }
}

void LibvirtVm::add_binding(const libvirt::DirectInterface& iface, bool probe) {
  config::MacvtapBinding cfg = libvirt_binding(iface, s_.config->libvirt, name());
  if (cfg.nic.empty()) {
    logger()->warn("{}: interface {} has no alias: not followed", name(), format_mac(iface.mac));
    return;
  }
  cfg_.macvtaps.push_back(cfg);
  MacvtapRunner& b = add_macvtap(cfg, attacher_);
  logger()->info("{}/{}: following {} on {} ({} mode{})", name(), cfg.nic, format_mac(cfg.mac), cfg.parent,
                 iface.mode, iface.target_dev.empty() ? "" : ", macvtap " + iface.target_dev);
  if (!probe) return;
  attacher_.probe({cfg}, guarded(b.guard(), [this, &b, session = session_](std::vector<engine::VmConnected> found) {
                    if (session_ != session || found.empty()) return;
                    b.feed(found.front());
                  }));
}

void LibvirtVm::remove_binding(const std::string& nic) {
  auto it = std::find_if(macvtaps_.begin(), macvtaps_.end(), [&](const auto& b) { return b->cfg().nic == nic; });
  if (it == macvtaps_.end()) return;
  const config::MacvtapBinding cfg = (*it)->cfg();
  macvtaps_.erase(it);
  std::erase(cfg_.macvtaps, cfg);
}

void LibvirtVm::rename_binding(MacvtapRunner& b, const libvirt::DirectInterface& i) {
  config::MacvtapBinding next = b.cfg();
  // libvirt may give a re-attached interface another alias.
  if (i.alias != b.cfg().nic && !i.alias.empty()) {
    logger()->info("{}/{}: now called {} by libvirt", name(), b.cfg().nic, i.alias);
    next.nic = i.alias;
    next.macvtap = i.target_dev;
  } else if (i.target_dev != b.cfg().macvtap) {
    next.macvtap = i.target_dev;
  } else {
    return;
  }
  std::replace(cfg_.macvtaps.begin(), cfg_.macvtaps.end(), b.cfg(), next);
  b.set_cfg(std::move(next));
}

// The taps follow the live XML alone: a tap libvirt names is followed, one
// it no longer names (interface detached, or moved to another bridge with
// update-device) is dropped. libvirt's own networks are not in the list.
void LibvirtVm::update_taps(const libvirt::Domain& d) {
  std::vector<std::string> gone;
  for (const auto& t : taps_) {
    const bool named = std::any_of(d.bridge_ports.begin(), d.bridge_ports.end(), [&](const auto& p) {
      return p.tap == t->cfg().tap && p.bridge == t->cfg().bridge;
    });
    if (!named) gone.push_back(t->cfg().tap);
  }
  for (const auto& tap : gone) {
    logger()->info("{}/{}: no longer in the domain's live XML: not followed", name(), tap);
    remove_tap(tap);
  }
  for (const auto& p : d.bridge_ports) {
    if (find_tap(p.tap)) continue;
    logger()->info("{}/{}: following the tap ({}) as a port of bridge {}{}", name(), p.tap, format_mac(p.mac),
                   p.bridge, p.network.empty() ? "" : " (libvirt network " + p.network + ")");
    // Remembers the port's settings now, not at the next netlink batch.
    add_tap(config::TapBinding{p.tap, p.bridge}).observe();
  }
}

void LibvirtVm::update(const libvirt::DomainInfo& info) {
  attacher_.update(info);
  update_taps(info.desc);
  if (paused_ != info.paused) logger()->info("{}: {}", name(), info.paused ? "paused" : "running");
  paused_ = info.paused;
  if (paused_)
    for (auto& b : macvtaps_)
      if (b->engine().state() != engine::State::Attached) keep_resumable(*b);
  const bool was_live = live_;
  live_ = true;

  // Interfaces gone from the live XML: their owner detached them. One that
  // relinkd released itself (to plug it in again) is kept.
  std::vector<std::string> gone;
  for (auto& b : macvtaps_) {
    if (const libvirt::DirectInterface* i = attacher_.interface(b->cfg().mac)) {
      rename_binding(*b, *i);
      continue;
    }
    const engine::State st = b->engine().state();
    if (!b->engine().nic_present() || st == engine::State::Releasing || st == engine::State::Attaching) continue;
    if (!was_live) continue;  // after a reconnect, the probe below says it is gone
    gone.push_back(b->cfg().nic);
  }
  for (const auto& nic : gone) {
    logger()->info("{}/{}: interface detached by its owner: no longer followed", name(), nic);
    remove_binding(nic);
  }
  // Interfaces that are new to relinkd.
  for (const auto& i : info.desc.interfaces) {
    const bool known = std::any_of(macvtaps_.begin(), macvtaps_.end(), [&](const auto& b) { return b->cfg().mac == i.mac; });
    if (!known) add_binding(i, was_live);
  }
  if (was_live) return;
  // First description over this connection: interfaces released by an
  // earlier relinkd that did not live to attach them again are followed
  // (absent: the probe says so, and the engine attaches them); then adopt
  // what is attached, replug what is not.
  for (const auto& i : attacher_.resume_from_journal()) {
    logger()->info("{}/{}: finishing a replug begun before: the interface was released and will be attached "
                   "again as the journal of intent recorded it",
                   name(), i.alias);
    add_binding(i, false);
  }
  const uint64_t session = ++session_;
  if (macvtaps_.empty()) return;
  auto cfgs = std::make_shared<std::vector<config::MacvtapBinding>>();
  for (const auto& b : macvtaps_) cfgs->push_back(b->cfg());
  attacher_.probe(*cfgs, guarded(guard_, [this, session, cfgs](std::vector<engine::VmConnected> found) {
                    if (session_ != session || !live_) return;
                    for (size_t i = 0; i < macvtaps_.size() && i < found.size(); ++i) macvtaps_[i]->feed(found[i]);
                  }));
}

void LibvirtVm::device_removed(const std::string& alias, bool failed) {
  MacvtapRunner* b = find_macvtap(alias);
  if (!b) return;
  if (!failed) {
    released(*b);
    return;
  }
  if (b->engine().state() != engine::State::Releasing) return;
  b->release_failed("the guest refused to release " + alias + " (libvirt: device removal failed)");
}

// Not asked for, and healthy: its owner detached it; or the guest let go as
// an earlier relinkd asked (a paused guest, resumed after the next relinkd
// adopted the interface's live macvtap): then it is attached again.
void LibvirtVm::unasked_release(MacvtapRunner& b) {
  if (attacher_.release_asked_before(b.cfg().mac) && b.engine().state() == engine::State::Attached) {
    logger()->info("{}: the guest let go of the interface as an earlier relinkd asked: attaching it again",
                   b.name());
    b.feed(engine::ReattachRequested{});
    return;
  }
  logger()->info("{}/{}: interface detached by its owner: no longer followed", name(), b.cfg().nic);
  remove_binding(b.cfg().nic);
}

// libvirt deletes the macvtap of an interface its owner detaches before it
// reports the removal: give that report a moment before the loss counts as a
// dead tap to replace.
void LibvirtVm::macvtap_gone(MacvtapRunner& b, int ifindex, uint64_t) {
  run_after(s_.loop, kRemovalGraceMs, guarded(b.guard(), [&b, ifindex] {
              if (b.engine().macvtap_ifindex() == ifindex) b.feed(engine::LinkRemoved{ifindex});
            }));
}

// A paused domain whose release was asked for while the parent was away
// (release = "on-loss") still has the interface when the parent returns:
// nothing else makes its stand-in then, and libvirt could not resume it.
void LibvirtVm::links_changed() {
  if (!paused_) return;
  for (auto& b : macvtaps_)
    if (b->engine().state() != engine::State::Attached) keep_resumable(*b);
}

// libvirt cannot resume a paused domain whose direct interface's macvtap is
// gone: it sets that name online first, and fails. A stand-in macvtap of the
// same name on the returned parent lets the user resume it; the guest then
// releases the NIC, libvirt deletes the stand-in with the interface, and the
// NIC is plugged in anew. QEMU never gets the stand-in's fd.
void LibvirtVm::keep_resumable(MacvtapRunner& b) {
  if (!paused_) return;
  const libvirt::DirectInterface* i = attacher_.interface(b.cfg().mac);
  const int parent = s_.links->resolve_parent(b.cfg());
  if (!i || i->target_dev.empty() || !parent) return;
  // One stand-in per parent: one libvirt deleted since (the domain
  // destroyed, the interface released) is not made again.
  int& stand_in = stand_in_parent_[b.cfg().mac];
  if (stand_in == parent) return;
  stand_in = parent;
  if (s_.links->link_by_name(i->target_dev)) return;
  macvtap::MacvtapSpec spec{i->target_dev, parent, b.cfg().mode, b.cfg().mac, 1};
  auto made = s_.factory->create(spec);
  if (!made) {
    logger()->warn("{}: cannot make a stand-in {} for libvirt to resume the domain with: {}", b.name(),
                   i->target_dev, made.error().message);
    return;
  }
  logger()->info("{}: made a stand-in macvtap {} so that libvirt can resume the paused domain", b.name(),
                 i->target_dev);
}

// The macvtap is the one the live XML names: an attach's answer names the
// new one before the domain's next description renames the binding.
void LibvirtVm::describe(nlohmann::json& binding) const {
  binding["source"] = "libvirt";
  auto mac = parse_mac(binding.value("mac", ""));
  const libvirt::DirectInterface* i = mac ? attacher_.interface(*mac) : nullptr;
  if (i && !i->target_dev.empty()) binding["macvtap"] = i->target_dev;
}

Result<nlohmann::json> LibvirtVm::qemu_args() const {
  return Error{EINVAL, "libvirt runs VM '" + name() + "' and wires its NICs itself: no QEMU arguments to add"};
}

nlohmann::json LibvirtVm::status() const {
  nlohmann::json v = ManagedVm::status();
  v["source"] = "libvirt";
  v["domain"] = name();
  v["libvirt"] = live_ ? "connected" : "disconnected";
  v["paused"] = paused_;
  v["qemu_pid"] = attacher_.info().qemu_pid ? nlohmann::json(attacher_.info().qemu_pid) : nlohmann::json(nullptr);
  return v;
}

}  // namespace relink::daemon
