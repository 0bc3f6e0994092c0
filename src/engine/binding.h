// SPDX-License-Identifier: GPL-2.0-or-later
// The reconnect engine: a pure state machine per binding. Events in, actions
// out; no syscalls, no clock. Executors carry the actions out and report back
// with AttachSucceeded / AttachFailed / TimerExpired.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <variant>
#include <vector>

namespace relink::engine {

enum class State {
  VmOffline,      // QEMU's QMP socket is not connected: nothing can be handed over
  WaitingParent,  // no interface has the parent's name: nothing to attach to
  Releasing,      // replug: the guest was asked to let go of the NIC (device_del); waiting for it
  Attaching,      // a macvtap is being created and handed to QEMU
  Attached,       // the NIC is connected to a live macvtap on the parent
  Backoff,        // the last attach failed; the next try waits for a timer
  Failed,         // too many failures in a row; waits for a new parent, reattach or reload
  // passt bindings (see passt_binding.h) share VmOffline, Backoff and Failed.
  Starting,       // a passt was started; QEMU has not reported the stream connected yet
  Running,        // passt runs and QEMU's netdev is connected to it
};

const char* state_name(State s);

// --- Events -----------------------------------------------------------------

// The parent now resolves to `ifindex` (0: no such interface), whose carrier
// is `carrier`. Sent whenever either may have changed; repeats are harmless.
struct ParentChanged {
  int ifindex = 0;
  bool carrier = true;
};
// An interface disappeared; the binding checks whether it was its macvtap.
struct LinkRemoved { int ifindex = 0; };
// An interface was deleted (not renamed); the binding checks whether its live
// macvtap sat on it. Needed where the kernel does not delete the macvtap with
// its parent: a macvtap requested on a macvlan sits on the macvlan's lower
// device and outlives the macvlan.
struct ParentRemoved { int ifindex = 0; };
// The VM's QMP session is up and relinkd has looked at what QEMU has.
struct VmConnected {
  // QEMU already uses a live macvtap of this binding (relinkd restarted).
  struct Adopt {
    uint64_t generation = 0;
    int macvtap_ifindex = 0;
    int parent_ifindex = 0;
  };
  std::optional<Adopt> adopt;
  uint64_t max_generation_seen = 0;  // highest generation of ours found in QEMU
  bool nic_present = true;           // replug: QEMU has the NIC device (false: it was unplugged)
};
// The QMP session is gone. vm_exited: the QEMU process no longer exists.
struct VmDisconnected { bool vm_exited = false; };
// link_up: the link state the hand-over gave the NIC, when it is known; it
// may differ from the Attach's when the parent's carrier changed meanwhile.
struct AttachSucceeded {
  uint64_t generation = 0;
  int macvtap_ifindex = 0;
  std::optional<bool> link_up;
};
struct AttachFailed { uint64_t generation = 0; std::string error; };
struct TimerExpired {};
// relinkctl reattach, or a reload that resets a failed binding.
struct ReattachRequested {};
// replug: QEMU reported the NIC deleted (DEVICE_DELETED), or found it gone.
struct Released {};
// replug: the NIC cannot be released (device_del refused).
struct ReleaseFailed { std::string error; };

using Event = std::variant<ParentChanged, LinkRemoved, ParentRemoved, VmConnected, VmDisconnected, AttachSucceeded,
                           AttachFailed, TimerExpired, ReattachRequested, Released, ReleaseFailed>;

// --- Actions ----------------------------------------------------------------

// Create a macvtap on the parent and hand it to QEMU as `generation`; the
// NIC's link ends up `link_up` (replug: the NIC is plugged in anew, device_add).
struct Attach {
  uint64_t generation = 0;
  int parent_ifindex = 0;
  bool link_up = true;
};
// Take generation's tap side out of QEMU (if connected) and delete its
// macvtap (0: already gone or unknown). Missing pieces are not errors.
// link_down: also set the NIC's link off (the NIC is left with no uplink); an
// undo of a stale generation must not touch the link of the live one.
struct Detach { uint64_t generation = 0; int macvtap_ifindex = 0; bool link_down = false; };
struct StartTimer { uint64_t delay_ms = 0; };
struct CancelTimer {};
// replug: ask the guest to release the NIC (device_del); Released follows.
struct Release { uint64_t generation = 0; };
// The guest NIC's link (carrier following).
struct SetLink { bool up = true; };

using Action = std::variant<Attach, Detach, StartTimer, CancelTimer, Release, SetLink>;

struct RetryPolicy {
  uint64_t initial_delay_ms = 100;
  uint64_t max_delay_ms = 30'000;
  unsigned max_failures = 8;  // consecutive failures before Failed

  // Delay after the n-th consecutive failure (n >= 1): doubles from initial to max.
  uint64_t delay_after(unsigned failures) const;
};

// How the binding's NIC gets a new tap.
struct Style {
  // false: hub (the tap hangs off a hub port; the NIC stays). true: replug
  // (the NIC is peered with the tap: it is released, then plugged in anew).
  bool replug = false;
  uint64_t release_timeout_ms = 10'000;  // replug: how long the guest may take
  bool follow_carrier = true;            // the NIC's link mirrors the parent's carrier
  // replug: release the NIC as soon as the parent is gone (the interface its
  // macvtap sat on was deleted), not on its return; the return then only
  // plugs the NIC in. Neither a carrier loss nor a parent renamed away (its
  // macvtap keeps passing traffic) is a loss.
  bool release_on_loss = false;
  std::string nic;                       // the NIC's id, for messages
};

class Binding {
 public:
  explicit Binding(std::string name, RetryPolicy policy = {}, Style style = {});

  // Feeds one event; returns the actions to carry out, in order.
  [[nodiscard]] std::vector<Action> handle(const Event& ev);

  State state() const { return state_; }
  uint64_t generation() const { return generation_; }
  int parent_ifindex() const { return parent_ifindex_; }
  int attached_parent_ifindex() const { return attached_parent_; }
  int macvtap_ifindex() const { return macvtap_ifindex_; }
  unsigned failures() const { return failures_; }
  const std::string& last_error() const { return last_error_; }
  const std::string& name() const { return name_; }
  bool carrier() const { return carrier_; }
  // replug: QEMU has the NIC device (as far as the engine knows).
  bool nic_present() const { return nic_present_; }
  // replug: a device_del was sent and its DEVICE_DELETED has not come yet.
  bool release_pending() const { return release_pending_; }
  // The guest NIC's link as last set (nullopt: unknown).
  std::optional<bool> link_up() const { return link_up_; }
  // The link the guest NIC should have: the parent's carrier when it follows it.
  bool link_target() const { return !style_.follow_carrier || carrier_; }

 private:
  void set_state(State s);
  void start_attach(std::vector<Action>& out);
  void start_release(std::vector<Action>& out);
  void wait_for_parent(std::vector<Action>& out);
  bool on_loss() const { return style_.replug && style_.release_on_loss; }
  void detach_current(std::vector<Action>& out, bool link_down);
  void on_parent(int ifindex, std::vector<Action>& out);
  void on_carrier(bool carrier, std::vector<Action>& out);
  void fail(std::string error, std::vector<Action>& out);
  void set_link(bool up, std::vector<Action>& out);
  // One handler per event type; handle() dispatches with std::visit.
  void on(const ParentChanged& e, std::vector<Action>& out);
  void on(const LinkRemoved& e, std::vector<Action>& out);
  void on(const ParentRemoved& e, std::vector<Action>& out);
  void on(const VmConnected& e, std::vector<Action>& out);
  void on(const VmDisconnected& e, std::vector<Action>& out);
  void on(const AttachSucceeded& e, std::vector<Action>& out);
  void on(const AttachFailed& e, std::vector<Action>& out);
  void on(const TimerExpired& e, std::vector<Action>& out);
  void on(const ReattachRequested& e, std::vector<Action>& out);
  void on(const Released& e, std::vector<Action>& out);
  void on(const ReleaseFailed& e, std::vector<Action>& out);

  std::string name_;
  RetryPolicy policy_;
  Style style_;
  State state_ = State::VmOffline;
  uint64_t generation_ = 0;   // generation of the current/last attach attempt
  int parent_ifindex_ = 0;    // what the parent name resolves to now
  int attaching_parent_ = 0;  // parent of the attempt in flight
  int attached_parent_ = 0;   // parent the live macvtap sits on
  int macvtap_ifindex_ = 0;   // live macvtap (Attached only)
  unsigned failures_ = 0;
  std::string last_error_;
  bool carrier_ = true;
  std::optional<bool> link_up_;
  bool nic_present_ = true;
  bool release_pending_ = false;
};

}  // namespace relink::engine
