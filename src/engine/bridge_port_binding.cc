// SPDX-License-Identifier: GPL-2.0-or-later
// The bridge port machine: when a tap goes back into its bridge, and when it is left alone.
#include "engine/bridge_port_binding.h"

#include <algorithm>

#include "util/log.h"

namespace relink::engine {

const char* port_state_name(PortState s) {
  switch (s) {
    case PortState::WaitingTap: return "waiting-tap";
    case PortState::Attached: return "attached";
    case PortState::WaitingBridge: return "waiting-bridge";
    case PortState::Backoff: return "backoff";
    case PortState::Failed: return "failed";
    case PortState::Moved: return "moved";
    case PortState::Detached: return "detached";
    case PortState::TapGone: return "tap-gone";
  }
  return "?";
}

void BridgePortBinding::set_state(PortState s) {
  if (s == state_) return;
  log::get("engine")->debug("{}: {} -> {}", name_, port_state_name(state_), port_state_name(s));
  state_ = s;
}

std::vector<PortAction> BridgePortBinding::handle(const PortEvent& ev) {
  if (auto* o = std::get_if<PortObserved>(&ev)) return observed(*o);
  if (auto* s = std::get_if<RejoinSucceeded>(&ev)) {
    if (s->generation != generation_ || !rejoining_) return {};
    rejoining_ = false;
    failures_ = 0;
    failed_bridge_ = 0;
    last_error_.clear();
    joined_ = last_.bridge;
    set_state(PortState::Attached);
    return {};
  }
  if (auto* f = std::get_if<RejoinFailed>(&ev)) return failed(*f);
  if (std::holds_alternative<RejoinRequested>(ev)) {
    if (!last_.tap || !last_.bridge) return {};
    failures_ = 0;
    failed_bridge_ = 0;
    detach_pending_ = false;
    by_hand_ = false;
    return rejoin(last_.bridge);
  }
  // PortTimerExpired: a backoff ends, or a detach's grace period.
  timer_ = false;
  if (state_ == PortState::Detached && detach_pending_) {
    detach_pending_ = false;
    joined_ = 0;
    by_hand_ = true;  // taken out by hand: not put back when the bridge is re-created
    return {};
  }
  if (state_ != PortState::Backoff) return {};
  failed_bridge_ = 0;
  return observed(last_);
}

std::vector<PortAction> BridgePortBinding::observed(const PortObserved& o) {
  last_ = o;
  std::vector<PortAction> out;
  auto cancel = [&] {
    if (timer_) out.push_back(CancelPortTimer{});
    timer_ = false;
  };
  if (rejoining_) return out;  // the result comes first
  if (!o.tap) {
    cancel();
    detach_pending_ = false;
    by_hand_ = false;
    joined_ = 0;
    set_state(state_ == PortState::WaitingTap ? PortState::WaitingTap : PortState::TapGone);
    return out;
  }
  if (o.master && o.master == o.bridge) {
    cancel();
    detach_pending_ = false;
    by_hand_ = false;
    joined_ = o.bridge;
    failures_ = 0;
    set_state(PortState::Attached);
    return out;
  }
  if (o.master) {
    cancel();
    detach_pending_ = false;
    by_hand_ = true;
    joined_ = 0;  // in another bridge by hand: relinkd keeps out of it
    set_state(PortState::Moved);
    return out;
  }
  auto more = no_master(o);
  out.insert(out.end(), more.begin(), more.end());
  return out;
}

// The tap is in no bridge.
std::vector<PortAction> BridgePortBinding::no_master(const PortObserved& o) {
  std::vector<PortAction> out;
  if (!o.bridge) {
    // A bridge being deleted drops its ports first: this was no detach by hand.
    detach_pending_ = false;
    if (timer_) out.push_back(CancelPortTimer{});
    timer_ = false;
    set_state(by_hand_ ? PortState::Detached : PortState::WaitingBridge);
    return out;
  }
  if (by_hand_) {
    set_state(PortState::Detached);
    return out;
  }
  // Backoff waits for its timer; Failed for a bridge other than the one it failed on.
  if ((state_ == PortState::Backoff || state_ == PortState::Failed) && o.bridge == failed_bridge_) return out;
  const bool awaited = joined_ != 0 || state_ == PortState::WaitingBridge || state_ == PortState::Backoff ||
                       state_ == PortState::Failed;
  if (o.bridge != joined_ && awaited) return rejoin(o.bridge);
  if (o.bridge == joined_ && !detach_pending_) {
    // It left the bridge it was in, which still stands: by hand, unless the
    // bridge turns out to be on its way out within the grace period.
    detach_pending_ = true;
    timer_ = true;
    out.push_back(StartPortTimer{kDetachGraceMs});
  }
  set_state(PortState::Detached);
  return out;
}

std::vector<PortAction> BridgePortBinding::rejoin(int bridge) {
  std::vector<PortAction> out;
  if (timer_) out.push_back(CancelPortTimer{});
  timer_ = false;
  rejoining_ = true;
  out.push_back(Rejoin{++generation_, last_.tap, bridge});
  return out;
}

std::vector<PortAction> BridgePortBinding::failed(const RejoinFailed& f) {
  if (f.generation != generation_ || !rejoining_) return {};
  rejoining_ = false;
  last_error_ = f.error;
  failed_bridge_ = last_.bridge;
  if (++failures_ >= kMaxFailures) {
    set_state(PortState::Failed);
    return {};
  }
  set_state(PortState::Backoff);
  const uint64_t ms = std::min(kBackoffMaxMs, kBackoffInitialMs << std::min(failures_ - 1, 20u));
  timer_ = true;
  return {StartPortTimer{ms}};
}

}  // namespace relink::engine
