// SPDX-License-Identifier: GPL-2.0-or-later
// The macvtap binding's state machine: one handler per event, each returning the actions to carry out.
#include "engine/binding.h"

#include <algorithm>

#include "util/log.h"

namespace relink::engine {

const char* state_name(State s) {
  switch (s) {
    case State::VmOffline: return "vm-offline";
    case State::WaitingParent: return "waiting-parent";
    case State::Releasing: return "releasing";
    case State::Attaching: return "attaching";
    case State::Attached: return "attached";
    case State::Backoff: return "backoff";
    case State::Failed: return "failed";
    case State::Starting: return "starting";
    case State::Running: return "running";
  }
  return "unknown";
}

uint64_t RetryPolicy::delay_after(unsigned failures) const {
  uint64_t d = initial_delay_ms;
  for (unsigned i = 1; i < failures && d < max_delay_ms; ++i) d *= 2;
  return std::min(d, max_delay_ms);
}

Binding::Binding(std::string name, RetryPolicy policy, Style style)
    : name_(std::move(name)), policy_(policy), style_(std::move(style)) {}

void Binding::set_state(State s) {
  if (s == state_) return;
  log::get("engine")->debug("{}: {} -> {}", name_, state_name(state_), state_name(s));
  state_ = s;
}

// Hands a new macvtap over. A replugged NIC that QEMU still has must be
// released first: QEMU would accept a second NIC with the same MAC.
void Binding::start_attach(std::vector<Action>& out) {
  if (style_.replug && nic_present_) {
    start_release(out);
    return;
  }
  ++generation_;
  attaching_parent_ = parent_ifindex_;
  out.push_back(Attach{generation_, parent_ifindex_, link_target()});
  link_up_ = link_target();
  set_state(State::Attaching);
}

// Asks the guest to release the NIC and gives it release_timeout_ms. Asking
// again is harmless: QEMU answers that the unplug is already under way.
void Binding::start_release(std::vector<Action>& out) {
  out.push_back(Release{generation_});
  out.push_back(StartTimer{style_.release_timeout_ms});
  release_pending_ = true;
  set_state(State::Releasing);
}

// No parent: wait for it. With release_on_loss the guest lets go of a NIC it
// still has meanwhile: the NIC is useless until the parent returns, and the
// guest's part of a replug is then done before it.
void Binding::wait_for_parent(std::vector<Action>& out) {
  if (on_loss() && nic_present_) start_release(out);
  else set_state(State::WaitingParent);
}

void Binding::fail(std::string error, std::vector<Action>& out) {
  ++failures_;
  last_error_ = std::move(error);
  attaching_parent_ = 0;
  if (failures_ >= policy_.max_failures) {
    set_state(State::Failed);
  } else {
    out.push_back(StartTimer{policy_.delay_after(failures_)});
    set_state(State::Backoff);
  }
}

void Binding::set_link(bool up, std::vector<Action>& out) {
  if (link_up_ == up) return;
  out.push_back(SetLink{up});
  link_up_ = up;
}

void Binding::on_carrier(bool carrier, std::vector<Action>& out) {
  carrier_ = carrier;
  // Only a NIC on a live tap follows; a NIC without one is down already.
  if (state_ == State::Attached) set_link(link_target(), out);
}

// The NIC is gone from QEMU (DEVICE_DELETED, or device_del found none).
void Binding::on(const Released&, std::vector<Action>& out) {
  if (!style_.replug) return;
  const bool was_pending = release_pending_;
  release_pending_ = false;
  switch (state_) {
    case State::Releasing:
      nic_present_ = false;
      out.push_back(CancelTimer{});
      // release_on_loss releases without a parent; otherwise Releasing is
      // left when the parent goes.
      if (parent_ifindex_) start_attach(out);
      else set_state(State::WaitingParent);
      return;
    case State::Backoff:
    case State::Failed:
      nic_present_ = false;
      if (!was_pending) return;
      // A guest that was too slow (paused, then resumed): go on at once.
      if (state_ == State::Backoff) out.push_back(CancelTimer{});
      failures_ = 0;
      if (parent_ifindex_) start_attach(out);
      else set_state(State::WaitingParent);
      return;
    case State::WaitingParent:
      nic_present_ = false;
      return;
    case State::Attached:
      if (was_pending) return;  // a late answer to a release that an attach overtook
      // Someone else unplugged the NIC: putting it back is not relinkd's call.
      nic_present_ = false;
      detach_current(out, false);
      last_error_ = "NIC " + style_.nic + " was removed from the VM by someone else; run relinkctl reattach to plug it in again";
      set_state(State::Failed);
      return;
    case State::Attaching:
    case State::VmOffline:
    case State::Starting:
    case State::Running:
      return;
  }
}

// Takes the current generation out of QEMU: the live one when attached, the
// one in flight when attaching (its late result is then ignored).
void Binding::detach_current(std::vector<Action>& out, bool link_down) {
  if (state_ == State::Attached || state_ == State::Attaching) {
    out.push_back(Detach{generation_, state_ == State::Attached ? macvtap_ifindex_ : 0, link_down});
    if (link_down) link_up_ = false;
  }
  macvtap_ifindex_ = 0;
  attached_parent_ = 0;
  attaching_parent_ = 0;
}

void Binding::on_parent(int ifindex, std::vector<Action>& out) {
  const int previous = parent_ifindex_;
  parent_ifindex_ = ifindex;
  switch (state_) {
    case State::VmOffline:
      return;
    case State::WaitingParent:
      if (ifindex) start_attach(out);
      return;
    case State::Attached:
      // Renamed away (0) or renamed back (same ifindex): the macvtap still
      // sits on a live device and keeps passing traffic. If the parent was
      // deleted, the kernel deletes the macvtap too and LinkRemoved or
      // ParentRemoved follows (release_on_loss releases then, not here).
      if (ifindex == 0 || ifindex == attached_parent_) return;
      detach_current(out, false);  // the name now belongs to a new interface: move to it
      start_attach(out);
      return;
    case State::Releasing:
      if (ifindex) return;  // the release goes on; the attach after it uses the parent of that time
      // A release on loss goes on: it is wanted with or without the parent.
      if (on_loss()) return;
      // Gone again: the release may still complete (Released is remembered).
      out.push_back(CancelTimer{});
      set_state(State::WaitingParent);
      return;
    case State::Attaching:
      if (ifindex == attaching_parent_) return;
      // A replug in flight ends in device_add or a rollback: its result
      // decides what comes next, never a second NIC beside it.
      if (style_.replug) return;
      detach_current(out, ifindex == 0);
      if (ifindex) start_attach(out);
      else set_state(State::WaitingParent);
      return;
    case State::Backoff:
    case State::Failed:
      if (ifindex == previous) return;
      // The world changed: a new parent deserves a fresh start.
      out.push_back(CancelTimer{});
      failures_ = 0;
      if (ifindex) start_attach(out);
      else wait_for_parent(out);
      return;
    case State::Starting:
    case State::Running:
      return;  // passt states: never reached by a macvtap binding
  }
}

std::vector<Action> Binding::handle(const Event& ev) {
  std::vector<Action> out;
  std::visit([&](const auto& e) { on(e, out); }, ev);
  return out;
}

void Binding::on(const ParentChanged& e, std::vector<Action>& out) {
  // With no parent by that name (renamed away) the carrier is unknown: keep it.
  if (e.ifindex) carrier_ = e.carrier;
  if (e.ifindex != parent_ifindex_) on_parent(e.ifindex, out);
  on_carrier(carrier_, out);
}

void Binding::on(const LinkRemoved& e, std::vector<Action>& out) {
  if (state_ != State::Attached || e.ifindex != macvtap_ifindex_) return;
  macvtap_ifindex_ = 0;  // the kernel deleted it already
  detach_current(out, parent_ifindex_ == 0);
  if (parent_ifindex_) start_attach(out);
  else wait_for_parent(out);
}

void Binding::on(const ParentRemoved& e, std::vector<Action>& out) {
  if (state_ != State::Attached || e.ifindex != attached_parent_) return;
  detach_current(out, parent_ifindex_ == 0);  // deletes the macvtap if it still exists
  if (parent_ifindex_) start_attach(out);
  else wait_for_parent(out);
}

void Binding::on(const VmConnected& e, std::vector<Action>& out) {
  if (state_ != State::VmOffline) return;
  generation_ = std::max(generation_, e.max_generation_seen);
  failures_ = 0;
  nic_present_ = e.nic_present;
  release_pending_ = false;
  link_up_.reset();  // a new session: what QEMU's link is, is not known
  if (e.adopt && e.adopt->parent_ifindex == parent_ifindex_ && parent_ifindex_ != 0) {
    generation_ = std::max(generation_, e.adopt->generation);
    attached_parent_ = e.adopt->parent_ifindex;
    macvtap_ifindex_ = e.adopt->macvtap_ifindex;
    set_state(State::Attached);
    set_link(link_target(), out);
  } else if (parent_ifindex_) {
    start_attach(out);
  } else {
    if (nic_present_) set_link(false, out);  // its tap is dead or missing
    wait_for_parent(out);
  }
}

void Binding::on(const VmDisconnected& e, std::vector<Action>& out) {
  if (state_ == State::VmOffline) return;
  if (state_ == State::Backoff || state_ == State::Releasing) out.push_back(CancelTimer{});
  release_pending_ = false;
  // A QEMU that is gone leaves its macvtap behind: delete it. A QEMU
  // that still runs keeps using it; the next session adopts it.
  if (e.vm_exited && state_ == State::Attached)
    out.push_back(Detach{generation_, macvtap_ifindex_});
  macvtap_ifindex_ = 0;
  attached_parent_ = 0;
  attaching_parent_ = 0;
  set_state(State::VmOffline);
}

void Binding::on(const AttachSucceeded& e, std::vector<Action>& out) {
  if (style_.replug) nic_present_ = true;  // device_add happened, whichever generation it was
  if (state_ != State::Attaching || e.generation != generation_) {
    // A result that lost a race with a newer event: undo it.
    if (e.generation != generation_ || state_ != State::Attached)
      out.push_back(Detach{e.generation, e.macvtap_ifindex});
    return;
  }
  failures_ = 0;
  last_error_.clear();
  attached_parent_ = attaching_parent_;
  macvtap_ifindex_ = e.macvtap_ifindex;
  if (e.link_up) link_up_ = *e.link_up;
  set_state(State::Attached);
  // replug ignores parent changes while in flight: catch up now.
  if (parent_ifindex_ == 0) {
    detach_current(out, true);
    wait_for_parent(out);
  } else if (parent_ifindex_ != attached_parent_) {
    detach_current(out, false);
    start_attach(out);
  } else {
    set_link(link_target(), out);  // the carrier may have changed meanwhile
  }
}

void Binding::on(const AttachFailed& e, std::vector<Action>& out) {
  if (state_ != State::Attaching || e.generation != generation_) return;
  if (style_.replug) nic_present_ = false;  // a failed replug is rolled back to no NIC
  fail(e.error, out);
}

void Binding::on(const TimerExpired&, std::vector<Action>& out) {
  if (state_ == State::Releasing) {
    fail("the guest did not release " + style_.nic + " within " + std::to_string(style_.release_timeout_ms / 1000) +
             " s: is it paused or without PCI hotplug?",
         out);
    return;
  }
  if (state_ != State::Backoff) return;
  if (parent_ifindex_) start_attach(out);
  else wait_for_parent(out);  // a release on loss that timed out is asked for again
}

void Binding::on(const ReattachRequested&, std::vector<Action>& out) {
  if (state_ == State::VmOffline) return;
  if (state_ == State::Attaching && style_.replug) return;  // one replug at a time
  if (state_ == State::Backoff || state_ == State::Releasing) out.push_back(CancelTimer{});
  failures_ = 0;
  detach_current(out, parent_ifindex_ == 0);
  if (parent_ifindex_) start_attach(out);
  else wait_for_parent(out);
}

void Binding::on(const ReleaseFailed& e, std::vector<Action>& out) {
  if (state_ != State::Releasing) return;
  out.push_back(CancelTimer{});
  release_pending_ = false;
  fail(e.error, out);
}

}  // namespace relink::engine
