// SPDX-License-Identifier: GPL-2.0-or-later
// The taps of [bridge.NAME] tables, found as ports of their bridge.
#include "daemon/bridge_taps.h"

#include <algorithm>

#include "util/log.h"

namespace relink::daemon {
namespace {

auto logger() { return log::get("daemon"); }

}  // namespace

BridgeTapsVm::BridgeTapsVm(const config::Bridge& bridge, const Services& s,
                           std::function<bool(const std::string&)> owned)
    : ManagedVm(config::Vm{vm_name(bridge.name), {}, {}, {}}, s), bridge_(bridge.name), owned_(std::move(owned)) {
  links_changed();
}

Result<nlohmann::json> BridgeTapsVm::qemu_args() const {
  return Error{EINVAL, "'" + name() + "' follows the taps of bridge " + bridge_ + ", it has no QEMU"};
}

nlohmann::json BridgeTapsVm::status() const {
  nlohmann::json v = ManagedVm::status();
  v["source"] = "bridge";
  v["bridge"] = bridge_;
  return v;
}

void BridgeTapsVm::links_changed() {
  // Deleted taps are not coming back (their VM is gone), and a tap a VM
  // follows itself is that VM's.
  for (size_t i = taps_.size(); i-- > 0;) {
    const std::string tap = taps_[i]->cfg().tap;  // a copy: remove_tap() frees the runner
    const bool gone = taps_[i]->engine().state() == engine::PortState::TapGone || !s_.links->link_by_name(tap);
    if (gone || owned_(tap)) {
      logger()->info("{}: no longer following tap {} ({})", name(), tap, gone ? "deleted" : "a VM follows it");
      remove_tap(tap);
    }
  }
  const netlink::LinkInfo* br = s_.links->link_by_name(bridge_);
  if (!br || br->kind != "bridge") return;
  for (const auto& [ifindex, port] : s_.links->bridge_ports()) {
    if (port.master != br->ifindex) continue;
    const netlink::LinkInfo* l = s_.links->link(ifindex);
    // Only taps: the bridge's uplink (a NIC, a veth, a bond) comes back with
    // the bridge from whoever re-creates it.
    if (!l || l->kind != "tun" || find_tap(l->name) || owned_(l->name)) continue;
    logger()->info("{}: following tap {}, a port of {}", name(), l->name, bridge_);
    add_tap({l->name, bridge_});
  }
}

bool BridgeTaps::owned_elsewhere(const std::string& tap) const {
  for (const auto& v : vms_.all()) {
    if (dynamic_cast<const BridgeTapsVm*>(v.get())) continue;
    for (const auto& t : v->cfg().taps)
      if (t.tap == tap) return true;
  }
  return false;
}

void BridgeTaps::apply(const std::vector<config::Bridge>& bridges) {
  auto wanted = [&](const std::string& vm) {
    return std::any_of(bridges.begin(), bridges.end(),
                       [&](const config::Bridge& b) { return b.follow_taps && BridgeTapsVm::vm_name(b.name) == vm; });
  };
  auto gone = vms_.take_if([&](const ManagedVm& v) {
    return dynamic_cast<const BridgeTapsVm*>(&v) != nullptr && !wanted(v.name());
  });
  for (const auto& v : gone) logger()->info("{}: no longer in the configuration, no longer followed", v->name());
  for (const auto& b : bridges) {
    if (!b.follow_taps || vms_.find(BridgeTapsVm::vm_name(b.name))) continue;
    vms_.add(std::make_unique<BridgeTapsVm>(b, s_, [this](const std::string& tap) { return owned_elsewhere(tap); }));
    logger()->info("{}: following every tap of bridge {}", BridgeTapsVm::vm_name(b.name), b.name);
  }
}

std::vector<std::unique_ptr<ManagedVm>> BridgeTaps::take_vms() {
  return vms_.take_if([](const ManagedVm& v) { return dynamic_cast<const BridgeTapsVm*>(&v) != nullptr; });
}

void BridgeTaps::put_back(std::vector<std::unique_ptr<ManagedVm>> vms) {
  for (auto& v : vms) vms_.add(std::move(v));
}

}  // namespace relink::daemon
