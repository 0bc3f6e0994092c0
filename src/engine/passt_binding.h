// SPDX-License-Identifier: GPL-2.0-or-later
// The reconnect engine for passt bindings: a pure state machine per binding,
// like engine::Binding for macvtaps. Events carry the time (ms, monotonic) so
// the restart policy needs no clock. Executors start and stop passt, and feed
// back Spawned / SpawnFailed / Exited and QEMU's stream events.
//
// States: vm-offline, starting, running, backoff, failed (state_name()).
#pragma once

#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "engine/binding.h"

namespace relink::engine {

// When to start passt again after it exited. Like systemd's: a passt that
// dies early is a failed start, restarted after an exponential backoff (100
// ms doubling to 30 s); `burst` failed starts within `interval_ms` give up
// (failed, until a reload or a manual reattach resets it). A passt that ran
// for at least `min_uptime_ms` was healthy: it is restarted at once and the
// history of failed starts is forgotten.
struct RestartPolicy {
  uint64_t initial_delay_ms = 100;
  uint64_t max_delay_ms = 30'000;
  unsigned burst = 5;
  uint64_t interval_ms = 10'000;
  uint64_t min_uptime_ms = 1'000;
};

class RestartTracker {
 public:
  struct Decision {
    enum Kind { Now, After, GiveUp } kind = Now;
    uint64_t delay_ms = 0;  // After only
  };

  explicit RestartTracker(RestartPolicy p = {}) : policy_(p) {}

  // A passt (or an attempt to start one) began at now_ms.
  void on_start(uint64_t now_ms);
  // The passt that began uptime_ms ago ended (or could not be started: 0).
  Decision on_exit(uint64_t now_ms, uint64_t uptime_ms);
  // Forget every failure: the next exit is judged afresh.
  void reset();

  unsigned failures() const { return failures_; }
  const RestartPolicy& policy() const { return policy_; }

 private:
  RestartPolicy policy_;
  unsigned failures_ = 0;           // failed starts in a row
  std::deque<uint64_t> starts_;     // start times of failed starts still within interval_ms
  uint64_t pending_start_ = 0;
  bool has_pending_ = false;
};

namespace passt_ev {

// QMP is up and relinkd has looked at what runs: `adopt` is a live passt of
// this binding left by a previous relinkd; stream_connected: QEMU's netdev
// reports a connected peer.
struct VmConnected {
  struct Adopt {
    uint64_t generation = 0;
    uint64_t started_ms = 0;  // when it started, on the events' clock (best effort)
  };
  std::optional<Adopt> adopt;
  bool stream_connected = false;
  uint64_t max_generation_seen = 0;  // highest generation found in pidfiles
  uint64_t now_ms = 0;
};
// A binding whose passt must listen before QEMU starts (vhost-user: QEMU's
// vhost-user netdev blocks QEMU's start until its backend listens) is
// registered: its passt is started now, or the one found is adopted. Same
// fields as VmConnected; other bindings (PasstBinding::starts_before_qemu
// false) ignore it.
struct Listen {
  std::optional<VmConnected::Adopt> adopt;
  uint64_t max_generation_seen = 0;
  uint64_t now_ms = 0;
};
// QMP is gone. vm_exited: the QEMU process is gone too (passt is stopped,
// but for one that starts before QEMU: it keeps listening for the next QEMU).
struct VmDisconnected { bool vm_exited = false; };
struct Spawned { uint64_t generation = 0; uint64_t now_ms = 0; };
struct SpawnFailed { uint64_t generation = 0; std::string error; uint64_t now_ms = 0; };
struct Exited { uint64_t generation = 0; std::string status; uint64_t now_ms = 0; };
// QEMU's NETDEV_STREAM_CONNECTED / NETDEV_STREAM_DISCONNECTED for this netdev.
struct StreamConnected { uint64_t now_ms = 0; };
struct StreamDisconnected { uint64_t now_ms = 0; };
struct TimerExpired { uint64_t now_ms = 0; };
// A reload, or relinkctl reattach: forget failures and start afresh.
struct ResetRequested { uint64_t now_ms = 0; };
// The installed passt cannot serve this binding (e.g. no --vhost-user).
struct Unsupported { std::string reason; };

}  // namespace passt_ev

using PasstEvent = std::variant<passt_ev::VmConnected, passt_ev::Listen, passt_ev::VmDisconnected, passt_ev::Spawned,
                                passt_ev::SpawnFailed, passt_ev::Exited, passt_ev::StreamConnected,
                                passt_ev::StreamDisconnected, passt_ev::TimerExpired, passt_ev::ResetRequested,
                                passt_ev::Unsupported>;

namespace passt_act {
// Start a passt as `generation` (stream-server: connect to QEMU's socket first).
struct Spawn { uint64_t generation = 0; };
// Stop generation's passt if it still runs.
struct Stop { uint64_t generation = 0; };
}  // namespace passt_act

using PasstAction = std::variant<passt_act::Spawn, passt_act::Stop, StartTimer, CancelTimer>;

// How QEMU tells that the VM is connected to passt.
enum class Readiness {
  StreamEvents,  // NETDEV_STREAM_CONNECTED (stream-server, stream-client)
  OnSpawn,       // no event exists (vhost-user): running once passt started
};

class PasstBinding {
 public:
  // server_side: QEMU listens and relinkd connects (stream-server). A drop of
  // the stream then needs a new passt; in the other modes passt keeps
  // listening and QEMU reconnects by itself. before_qemu (vhost-user): passt
  // runs, and is restarted, whether QEMU runs or not; such a binding is never
  // vm-offline once Listen has started it.
  PasstBinding(std::string name, Readiness readiness, bool server_side, RestartPolicy policy = {},
               bool before_qemu = false);

  [[nodiscard]] std::vector<PasstAction> handle(const PasstEvent& ev);

  State state() const { return state_; }
  Readiness readiness() const { return readiness_; }
  bool starts_before_qemu() const { return before_qemu_; }
  // QEMU turned out to report the connection (QEMU >= 10.0 for vhost-user):
  // from now on the binding is running once QEMU connects. A binding
  // already running keeps running (QEMU connected before it could tell).
  void set_readiness(Readiness r);
  uint64_t generation() const { return generation_; }
  // Generation of the passt believed alive (0: none).
  uint64_t live_generation() const { return live_; }
  unsigned restarts() const { return restarts_; }      // starts after the first one
  unsigned failures() const { return tracker_.failures(); }
  const std::string& last_error() const { return last_error_; }
  const std::string& last_exit() const { return last_exit_; }
  // exit (or stream drop) seen -> QEMU reports the stream connected again, ms.
  double last_recovery_ms() const { return last_recovery_ms_; }
  const std::string& name() const { return name_; }

 private:
  void set_state(State s);
  void spawn(uint64_t now_ms, std::vector<PasstAction>& out);
  void after_end(uint64_t now_ms, uint64_t uptime_ms, std::vector<PasstAction>& out);
  void stop_live(std::vector<PasstAction>& out);
  void start_or_adopt(const std::optional<passt_ev::VmConnected::Adopt>& adopt, bool stream_connected,
                      uint64_t max_generation_seen, uint64_t now_ms, std::vector<PasstAction>& out);

  std::string name_;
  Readiness readiness_;
  bool server_side_;
  bool before_qemu_;
  RestartTracker tracker_;
  State state_ = State::VmOffline;
  uint64_t generation_ = 0;
  uint64_t live_ = 0;            // generation of the passt believed alive
  uint64_t live_started_ms_ = 0;
  bool stream_up_ = false;       // QEMU reported the stream connected since live_ started
  bool unsupported_ = false;
  unsigned restarts_ = 0;
  bool started_once_ = false;
  uint64_t outage_since_ms_ = 0; // when the last exit/drop was seen (0: none pending)
  double last_recovery_ms_ = -1;
  std::string last_error_, last_exit_;
};

}  // namespace relink::engine
