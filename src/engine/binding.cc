#include "engine/binding.h"

#include <algorithm>

#include "util/log.h"

namespace relink::engine {

const char* state_name(State s) {
  switch (s) {
    case State::VmOffline: return "vm-offline";
    case State::WaitingParent: return "waiting-parent";
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

Binding::Binding(std::string name, RetryPolicy policy) : name_(std::move(name)), policy_(policy) {}

void Binding::set_state(State s) {
  if (s == state_) return;
  log::get("engine")->debug("{}: {} -> {}", name_, state_name(state_), state_name(s));
  state_ = s;
}

void Binding::start_attach(std::vector<Action>& out) {
  ++generation_;
  attaching_parent_ = parent_ifindex_;
  out.push_back(Attach{generation_, parent_ifindex_});
  set_state(State::Attaching);
}

// Takes the current generation out of QEMU: the live one when attached, the
// one in flight when attaching (its late result is then ignored).
void Binding::detach_current(std::vector<Action>& out, bool link_down) {
  if (state_ == State::Attached || state_ == State::Attaching)
    out.push_back(Detach{generation_, state_ == State::Attached ? macvtap_ifindex_ : 0, link_down});
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
      // deleted, the kernel deletes the macvtap too and LinkRemoved follows.
      if (ifindex == 0 || ifindex == attached_parent_) return;
      detach_current(out, false);  // the name now belongs to a new interface: move to it
      start_attach(out);
      return;
    case State::Attaching:
      if (ifindex == attaching_parent_) return;
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
      else set_state(State::WaitingParent);
      return;
    case State::Starting:
    case State::Running:
      return;  // passt states: never reached by a macvtap binding
  }
}

std::vector<Action> Binding::handle(const Event& ev) {
  std::vector<Action> out;
  std::visit(
      [&](const auto& e) {
        using T = std::decay_t<decltype(e)>;
        if constexpr (std::is_same_v<T, ParentChanged>) {
          on_parent(e.ifindex, out);
        } else if constexpr (std::is_same_v<T, LinkRemoved>) {
          if (state_ != State::Attached || e.ifindex != macvtap_ifindex_) return;
          macvtap_ifindex_ = 0;  // the kernel deleted it already
          detach_current(out, parent_ifindex_ == 0);
          if (parent_ifindex_) start_attach(out);
          else set_state(State::WaitingParent);
        } else if constexpr (std::is_same_v<T, ParentRemoved>) {
          if (state_ != State::Attached || e.ifindex != attached_parent_) return;
          detach_current(out, parent_ifindex_ == 0);  // deletes the macvtap if it still exists
          if (parent_ifindex_) start_attach(out);
          else set_state(State::WaitingParent);
        } else if constexpr (std::is_same_v<T, VmConnected>) {
          if (state_ != State::VmOffline) return;
          generation_ = std::max(generation_, e.max_generation_seen);
          failures_ = 0;
          if (e.adopt && e.adopt->parent_ifindex == parent_ifindex_ && parent_ifindex_ != 0) {
            generation_ = std::max(generation_, e.adopt->generation);
            attached_parent_ = e.adopt->parent_ifindex;
            macvtap_ifindex_ = e.adopt->macvtap_ifindex;
            set_state(State::Attached);
          } else if (parent_ifindex_) {
            start_attach(out);
          } else {
            set_state(State::WaitingParent);
          }
        } else if constexpr (std::is_same_v<T, VmDisconnected>) {
          if (state_ == State::VmOffline) return;
          if (state_ == State::Backoff) out.push_back(CancelTimer{});
          // A QEMU that is gone leaves its macvtap behind: delete it. A QEMU
          // that still runs keeps using it; the next session adopts it.
          if (e.vm_exited && state_ == State::Attached)
            out.push_back(Detach{generation_, macvtap_ifindex_});
          macvtap_ifindex_ = 0;
          attached_parent_ = 0;
          attaching_parent_ = 0;
          set_state(State::VmOffline);
        } else if constexpr (std::is_same_v<T, AttachSucceeded>) {
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
          set_state(State::Attached);
        } else if constexpr (std::is_same_v<T, AttachFailed>) {
          if (state_ != State::Attaching || e.generation != generation_) return;
          ++failures_;
          last_error_ = e.error;
          attaching_parent_ = 0;
          if (failures_ >= policy_.max_failures) {
            set_state(State::Failed);
          } else {
            out.push_back(StartTimer{policy_.delay_after(failures_)});
            set_state(State::Backoff);
          }
        } else if constexpr (std::is_same_v<T, TimerExpired>) {
          if (state_ != State::Backoff) return;
          if (parent_ifindex_) start_attach(out);
          else set_state(State::WaitingParent);
        } else if constexpr (std::is_same_v<T, ReattachRequested>) {
          if (state_ == State::VmOffline) return;
          if (state_ == State::Backoff) out.push_back(CancelTimer{});
          failures_ = 0;
          detach_current(out, parent_ifindex_ == 0);
          if (parent_ifindex_) start_attach(out);
          else set_state(State::WaitingParent);
        }
      },
      ev);
  return out;
}

}  // namespace relink::engine
