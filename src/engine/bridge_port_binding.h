// SPDX-License-Identifier: GPL-2.0-or-later
// A tap's place in its bridge, as a pure state machine: what the host shows
// (is the tap there, whose port is it, which bridge has the name) and the
// results of re-joins go in; whether to re-join, and timers, come out. No
// syscalls, no clock: the runner (daemon/bridge_port_runner.h) observes the
// link tables, carries the re-join out and feeds back the result.
#pragma once

#include <cstdint>
#include <string>
#include <variant>
#include <vector>

namespace relink::engine {

enum class PortState {
  WaitingTap,     // no interface has the tap's name (yet)
  Attached,       // the tap is a port of the bridge
  WaitingBridge,  // the bridge is gone: the tap waits for one of that name
  Backoff,        // a re-join failed; the next try waits for a timer
  Failed,         // too many failures in a row; waits for a new bridge or a reattach
  Moved,          // the tap is a port of another master (put there by hand): left alone
  Detached,       // the tap left the bridge while the bridge lives (taken out by hand): left alone
  TapGone,        // the tap was deleted (its VM is gone): never created again
};
const char* port_state_name(PortState s);

// --- Events -----------------------------------------------------------------

// What the host shows now (after each netlink batch). Repeats are harmless.
struct PortObserved {
  int tap = 0;     // the tap's ifindex (0: no such interface)
  int master = 0;  // the tap's master's ifindex (0: none)
  int bridge = 0;  // ifindex of the bridge with the binding's name (0: none, or not a bridge)
};
struct RejoinSucceeded { uint64_t generation = 0; };
struct RejoinFailed { uint64_t generation = 0; std::string error; };
struct PortTimerExpired {};
// relinkctl reattach: re-join now, whatever the tap's state.
struct RejoinRequested {};

using PortEvent = std::variant<PortObserved, RejoinSucceeded, RejoinFailed, PortTimerExpired, RejoinRequested>;

// --- Actions ----------------------------------------------------------------

// Make the tap a port of `bridge` again, with its remembered settings.
struct Rejoin {
  uint64_t generation = 0;
  int tap = 0;
  int bridge = 0;
};
struct StartPortTimer { uint64_t ms = 0; };
struct CancelPortTimer {};
using PortAction = std::variant<Rejoin, StartPortTimer, CancelPortTimer>;

class BridgePortBinding {
 public:
  // A tap taken out of a live bridge is taken to be taken out by hand only
  // after this long: a bridge being deleted drops its ports before it goes.
  static constexpr uint64_t kDetachGraceMs = 1000;
  static constexpr uint64_t kBackoffInitialMs = 100;
  static constexpr uint64_t kBackoffMaxMs = 30'000;
  static constexpr unsigned kMaxFailures = 8;

  explicit BridgePortBinding(std::string name) : name_(std::move(name)) {}

  std::vector<PortAction> handle(const PortEvent& ev);

  PortState state() const { return state_; }
  uint64_t generation() const { return generation_; }
  // The bridge the tap was last a port of (0: none known).
  int joined_bridge() const { return joined_; }
  const std::string& last_error() const { return last_error_; }
  unsigned failures() const { return failures_; }
  // A re-join of this bridge is in flight.
  bool rejoining() const { return rejoining_; }
  // Detached, but within the grace period: maybe the bridge is on its way out.
  bool detach_pending() const { return detach_pending_; }

 private:
  std::vector<PortAction> observed(const PortObserved& o);
  std::vector<PortAction> no_master(const PortObserved& o);
  std::vector<PortAction> rejoin(int bridge);
  std::vector<PortAction> failed(const RejoinFailed& f);
  void set_state(PortState s);

  std::string name_;
  PortState state_ = PortState::WaitingTap;
  PortObserved last_{};
  int joined_ = 0;         // the bridge the tap was a port of, kept while it is away from it
  int failed_bridge_ = 0;  // the bridge the last re-joins failed on
  bool detach_pending_ = false;  // Detached, not yet past the grace period
  bool by_hand_ = false;         // taken out of the bridge or moved by hand: left alone
  bool timer_ = false;
  bool rejoining_ = false;
  uint64_t generation_ = 0;
  unsigned failures_ = 0;
  std::string last_error_;
};

}  // namespace relink::engine
