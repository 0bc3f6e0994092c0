// SPDX-License-Identifier: GPL-2.0-or-later
// The passt binding's state machine and its restart policy.
#include "engine/passt_binding.h"

#include <algorithm>

#include "util/log.h"

namespace relink::engine {

// --- RestartTracker -----------------------------------------------------------

void RestartTracker::on_start(uint64_t now_ms) {
  pending_start_ = now_ms;
  has_pending_ = true;
}

RestartTracker::Decision RestartTracker::on_exit(uint64_t now_ms, uint64_t uptime_ms) {
  const uint64_t started = has_pending_ ? pending_start_ : now_ms - std::min(now_ms, uptime_ms);
  has_pending_ = false;
  if (uptime_ms >= policy_.min_uptime_ms) {
    reset();
    return {Decision::Now, 0};
  }
  ++failures_;
  starts_.push_back(started);
  while (!starts_.empty() && now_ms - starts_.front() > policy_.interval_ms) starts_.pop_front();
  if (starts_.size() >= policy_.burst) return {Decision::GiveUp, 0};
  // The backoff code of macvtap bindings.
  const RetryPolicy retry{policy_.initial_delay_ms, policy_.max_delay_ms, 0};
  return {Decision::After, retry.delay_after(failures_)};
}

void RestartTracker::reset() {
  failures_ = 0;
  starts_.clear();
}

// --- PasstBinding -------------------------------------------------------------

PasstBinding::PasstBinding(std::string name, Readiness readiness, bool server_side, RestartPolicy policy,
                           bool before_qemu)
    : name_(std::move(name)),
      readiness_(readiness),
      server_side_(server_side),
      before_qemu_(before_qemu && !server_side),
      tracker_(policy) {}

void PasstBinding::set_state(State s) {
  if (s == state_) return;
  log::get("engine")->debug("{}: {} -> {}", name_, state_name(state_), state_name(s));
  state_ = s;
}

void PasstBinding::spawn(uint64_t now_ms, std::vector<PasstAction>& out) {
  ++generation_;
  if (started_once_) ++restarts_;
  started_once_ = true;
  live_ = generation_;
  live_started_ms_ = now_ms;
  stream_up_ = false;
  tracker_.on_start(now_ms);
  out.push_back(passt_act::Spawn{generation_});
  set_state(State::Starting);
}

void PasstBinding::stop_live(std::vector<PasstAction>& out) {
  if (live_) out.push_back(passt_act::Stop{live_});
  live_ = 0;
  stream_up_ = false;
}

void PasstBinding::set_readiness(Readiness r) {
  if (r == Readiness::StreamEvents && readiness_ == Readiness::OnSpawn && state_ == State::Running) stream_up_ = true;
  readiness_ = r;
}

// Adopts the passt found (a previous relinkd's, or this one's across a QMP
// reconnection or a reload) or starts one.
void PasstBinding::start_or_adopt(const std::optional<passt_ev::VmConnected::Adopt>& adopt, bool stream_connected,
                                  uint64_t max_generation_seen, uint64_t now_ms, std::vector<PasstAction>& out) {
  generation_ = std::max(generation_, max_generation_seen);
  if (adopt) {
    generation_ = std::max(generation_, adopt->generation);
    started_once_ = true;
    live_ = adopt->generation;
    live_started_ms_ = adopt->started_ms;
    if (server_side_ && !stream_connected) {
      // passt lives but QEMU listens for a new peer: it serves nobody.
      stop_live(out);
      spawn(now_ms, out);
      return;
    }
    stream_up_ = stream_connected;
    set_state(stream_up_ || readiness_ == Readiness::OnSpawn ? State::Running : State::Starting);
    return;
  }
  stop_live(out);
  spawn(now_ms, out);
}

// The live passt ended (or could not start): start another now, later, or
// give up, as the restart policy says.
void PasstBinding::after_end(uint64_t now_ms, uint64_t uptime_ms, std::vector<PasstAction>& out) {
  const auto d = tracker_.on_exit(now_ms, uptime_ms);
  switch (d.kind) {
    case RestartTracker::Decision::Now:
      spawn(now_ms, out);
      return;
    case RestartTracker::Decision::After:
      out.push_back(StartTimer{d.delay_ms});
      set_state(State::Backoff);
      return;
    case RestartTracker::Decision::GiveUp:
      last_error_ = "gave up after " + std::to_string(tracker_.policy().burst) + " failed starts within " +
                    std::to_string(tracker_.policy().interval_ms / 1000) + " s (last: " + last_error_ + ")";
      set_state(State::Failed);
      return;
  }
}

std::vector<PasstAction> PasstBinding::handle(const PasstEvent& ev) {
  namespace ev_ = passt_ev;
  std::vector<PasstAction> out;
  std::visit(
      [&](const auto& e) {
        using T = std::decay_t<decltype(e)>;
        if constexpr (std::is_same_v<T, ev_::Unsupported>) {
          unsupported_ = true;
          last_error_ = e.reason;
          if (state_ == State::Backoff) out.push_back(CancelTimer{});
          stop_live(out);
          set_state(State::Failed);
        } else if (unsupported_) {
          // Nothing starts a binding the installed passt cannot serve; the
          // executor builds a new one when a reload finds a capable passt.
          return;
        } else if constexpr (std::is_same_v<T, ev_::VmConnected>) {
          if (state_ != State::VmOffline) return;
          start_or_adopt(e.adopt, e.stream_connected, e.max_generation_seen, e.now_ms, out);
        } else if constexpr (std::is_same_v<T, ev_::Listen>) {
          if (state_ != State::VmOffline || !before_qemu_) return;
          start_or_adopt(e.adopt, false, e.max_generation_seen, e.now_ms, out);
        } else if constexpr (std::is_same_v<T, ev_::VmDisconnected>) {
          if (state_ == State::VmOffline) return;
          if (before_qemu_) {
            // This passt serves the next QEMU too (a vhost-user QEMU cannot
            // even start without it): keep it, and keep restarting it.
            if (e.vm_exited && stream_up_ && state_ == State::Running && readiness_ == Readiness::StreamEvents) {
              stream_up_ = false;
              set_state(State::Starting);
            }
            return;
          }
          if (state_ == State::Backoff) out.push_back(CancelTimer{});
          // A QEMU that is gone needs no passt; one that still runs keeps its
          // passt, and the next QMP session adopts it.
          if (e.vm_exited) stop_live(out);
          outage_since_ms_ = 0;
          set_state(State::VmOffline);
        } else if constexpr (std::is_same_v<T, ev_::Spawned>) {
          if (e.generation != live_ || state_ != State::Starting) return;
          if (readiness_ == Readiness::OnSpawn) {
            if (outage_since_ms_) last_recovery_ms_ = static_cast<double>(e.now_ms - outage_since_ms_);
            outage_since_ms_ = 0;
            last_error_.clear();
            set_state(State::Running);
          }
        } else if constexpr (std::is_same_v<T, ev_::SpawnFailed>) {
          if (e.generation != live_ || state_ != State::Starting) return;
          live_ = 0;
          last_error_ = e.error;
          after_end(e.now_ms, 0, out);
        } else if constexpr (std::is_same_v<T, ev_::Exited>) {
          last_exit_ = e.status;
          if (e.generation != live_) return;  // already replaced, or stopped on purpose
          live_ = 0;
          stream_up_ = false;
          if (state_ != State::Starting && state_ != State::Running) return;
          if (!outage_since_ms_) outage_since_ms_ = e.now_ms;
          last_error_ = "passt " + e.status;
          after_end(e.now_ms, e.now_ms - std::min(e.now_ms, live_started_ms_), out);
        } else if constexpr (std::is_same_v<T, ev_::StreamConnected>) {
          if (!live_ || (state_ != State::Starting && state_ != State::Running)) return;
          stream_up_ = true;
          if (state_ == State::Starting) {
            if (outage_since_ms_) last_recovery_ms_ = static_cast<double>(e.now_ms - outage_since_ms_);
            outage_since_ms_ = 0;
            last_error_.clear();
            set_state(State::Running);
          }
        } else if constexpr (std::is_same_v<T, ev_::StreamDisconnected>) {
          // A drop before the live passt's own connection was reported is the
          // previous connection's: QEMU accepts connections in order.
          if (!stream_up_ || state_ != State::Running) return;
          stream_up_ = false;
          outage_since_ms_ = e.now_ms;
          if (!server_side_) {
            set_state(State::Starting);  // passt still listens; QEMU reconnects
            return;
          }
          // QEMU listens again: this passt's connection is over.
          const uint64_t uptime = e.now_ms - std::min(e.now_ms, live_started_ms_);
          last_error_ = "QEMU reported the stream disconnected";
          stop_live(out);
          after_end(e.now_ms, uptime, out);
        } else if constexpr (std::is_same_v<T, ev_::TimerExpired>) {
          if (state_ != State::Backoff) return;
          spawn(e.now_ms, out);
        } else if constexpr (std::is_same_v<T, ev_::ResetRequested>) {
          tracker_.reset();
          if (state_ == State::VmOffline) return;
          if (state_ == State::Backoff) out.push_back(CancelTimer{});
          stop_live(out);
          spawn(e.now_ms, out);
        }
      },
      ev);
  return out;
}

}  // namespace relink::engine
