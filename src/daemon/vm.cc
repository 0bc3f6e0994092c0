// SPDX-License-Identifier: GPL-2.0-or-later
// What every managed VM does alike: its bindings' lookup, status, reattach,
// and the one path a released NIC takes.
#include "daemon/vm.h"

#include <algorithm>

#include "util/log.h"
#include "util/untrusted.h"

namespace relink::daemon {

nlohmann::json refused(const std::string& why) { return {{"ok", false}, {"error", why}}; }
nlohmann::json done(nlohmann::json result) { return {{"ok", true}, {"result", std::move(result)}}; }

std::shared_ptr<spdlog::logger> ManagedVm::origin_logger() const { return log::get("daemon"); }

MacvtapRunner& ManagedVm::add_macvtap(const config::MacvtapBinding& cfg, Attacher& attacher) {
  macvtaps_.push_back(std::make_unique<MacvtapRunner>(*this, cfg, attacher, s_));
  return *macvtaps_.back();
}

MacvtapRunner* ManagedVm::find_macvtap(const std::string& nic) {
  for (auto& b : macvtaps_)
    if (b->cfg().nic == nic) return b.get();
  return nullptr;
}

BridgePortRunner* ManagedVm::find_tap(const std::string& tap) {
  for (auto& t : taps_)
    if (t->cfg().tap == tap) return t.get();
  return nullptr;
}

BridgePortRunner& ManagedVm::add_tap(const config::TapBinding& cfg) {
  if (std::find(cfg_.taps.begin(), cfg_.taps.end(), cfg) == cfg_.taps.end()) cfg_.taps.push_back(cfg);
  taps_.push_back(std::make_unique<BridgePortRunner>(*this, cfg, s_));
  return *taps_.back();
}

void ManagedVm::remove_tap(const std::string& which) {
  const std::string tap = which;  // `which` may be the runner's own name
  std::erase_if(taps_, [&](const auto& t) { return t->cfg().tap == tap; });
  std::erase_if(cfg_.taps, [&](const auto& t) { return t.tap == tap; });
}

PasstRunner* ManagedVm::find_passt(const std::string& netdev) {
  for (auto& p : passts_)
    if (p->cfg().netdev == netdev) return p.get();
  return nullptr;
}

void ManagedVm::macvtap_gone(MacvtapRunner& b, int ifindex, uint64_t now_us) {
  b.feed(engine::LinkRemoved{ifindex}, now_us);
}

void ManagedVm::released(MacvtapRunner& b) {
  if (!b.released()) unasked_release(b);
}

void ManagedVm::restart_failed() {
  for (auto& b : macvtaps_)
    if (b->engine().state() == engine::State::Failed) b->feed(engine::ReattachRequested{});
  for (auto& t : taps_)
    if (t->engine().state() == engine::PortState::Failed) (void)t->reattach();  // its log says how it went
}

// Why a reattach cannot help a binding released on the loss of its parent
// ("": it can).
static std::string released_for_its_parent(const MacvtapRunner& b) {
  const auto& cfg = b.cfg();
  if (cfg.attach == config::AttachMode::Hub || cfg.release != config::Release::OnLoss) return "";
  if (b.engine().parent_ifindex() != 0) return "";
  return "its parent " + cfg.parent + " is gone; the NIC is " +
         (b.engine().nic_present() ? "being released" : "released") +
         " (release = \"on-loss\") and is plugged in again when the parent returns";
}

nlohmann::json ManagedVm::reattach(const std::string& nic) {
  // Which bindings: all, or the one named (checked before anything is done).
  std::string names;
  bool found = nic.empty();
  for (auto& b : macvtaps_) {
    names += (names.empty() ? "" : ", ") + b->cfg().nic;
    found = found || b->cfg().nic == nic;
  }
  for (auto& p : passts_) {
    names += (names.empty() ? "" : ", ") + p->cfg().netdev;
    found = found || p->cfg().netdev == nic;
  }
  for (auto& t : taps_) {
    names += (names.empty() ? "" : ", ") + t->cfg().tap;
    found = found || t->cfg().tap == nic;
  }
  if (!found)
    return refused("VM '" + name() + "' has no binding for NIC" + (taps_.empty() ? " or netdev" : ", netdev or tap") +
                   " '" + untrusted::safe_text(nic, 64) + "'" +
                   (names.empty() ? " (it has none)" : " (it has: " + names + ")"));
  // A tap goes back into its bridge without QEMU: for taps alone the VM
  // need not be connected.
  const bool only_tap = !nic.empty() && find_tap(nic);
  if (!only_tap && !connected() && (taps_.empty() || !nic.empty()))
    return refused("VM '" + name() + "' is offline (" + offline_reason() + ")");
  nlohmann::json list = nlohmann::json::array();
  for (auto& t : taps_)
    if (nic.empty() || t->cfg().tap == nic) {
      const uint64_t gen = t->engine().generation();
      auto r = t->reattach();
      if (!r && !nic.empty()) return refused(t->name() + ": " + r.error().message);
      list.push_back({{"kind", "bridge"},
                      {"tap", t->cfg().tap},
                      {"generation_before", gen},
                      {"error", r ? nlohmann::json(nullptr) : nlohmann::json(r.error().message)}});
    }
  for (auto& b : macvtaps_)
    if ((nic.empty() || b->cfg().nic == nic) && connected()) {
      if (std::string gone = released_for_its_parent(*b); !gone.empty()) {
        // Nothing to reattach to: the parent's return plugs the NIC in.
        if (!nic.empty()) return refused(b->name() + ": " + gone);
        list.push_back({{"kind", "macvtap"}, {"nic", b->cfg().nic}, {"error", gone}});
        continue;
      }
      const uint64_t gen = b->engine().generation();
      b->feed(engine::ReattachRequested{});
      list.push_back({{"kind", "macvtap"}, {"nic", b->cfg().nic}, {"generation_before", gen}});
    }
  for (auto& p : passts_)
    if ((nic.empty() || p->cfg().netdev == nic) && connected()) {
      if (p->refused()) {
        if (!nic.empty()) return refused(p->name() + ": " + p->engine().last_error());
        continue;
      }
      const uint64_t gen = p->engine().generation();
      p->reset();
      list.push_back({{"kind", "passt"}, {"netdev", p->cfg().netdev}, {"generation_before", gen}});
    }
  if (list.empty()) return refused("VM '" + name() + "' has no binding relinkd can reattach");
  return done({{"vm", name()}, {"bindings", std::move(list)}});
}

nlohmann::json ManagedVm::status() const {
  nlohmann::json bindings = nlohmann::json::array();
  for (const auto& b : macvtaps_) bindings.push_back(b->status());
  for (const auto& p : passts_) bindings.push_back(p->status());
  for (const auto& t : taps_) bindings.push_back(t->status());
  return {{"name", name()}, {"bindings", std::move(bindings)}};
}

}  // namespace relink::daemon
