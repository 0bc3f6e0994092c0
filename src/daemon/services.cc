// SPDX-License-Identifier: GPL-2.0-or-later
// The reporter of state changes, and one-shot timers on the loop.
#include "daemon/services.h"

#include <cstring>

#include "daemon/control_server.h"
#include "util/clock.h"
#include "util/log.h"

namespace relink::daemon {

const std::map<int, netlink::BridgePort>& Links::bridge_ports() const {
  static const std::map<int, netlink::BridgePort> none;
  return none;
}

bool Reporter::listening() const { return server_ && server_->monitoring(); }

void Reporter::publish(nlohmann::json event) {
  if (!listening()) return;
  event["time"] = static_cast<double>(realtime_us()) / 1e6;
  server_->publish(event);
}

void Reporter::state_changed(const std::string& vm, const std::string& kind, const std::string& id,
                             engine::State from, engine::State to, uint64_t generation, const std::string& error) {
  if (!listening()) return;
  nlohmann::json ev = {{"event", "state"},
                       {"vm", vm},
                       {"kind", kind},
                       {kind == "passt" ? "netdev" : "nic", id},
                       {"from", engine::state_name(from)},
                       {"state", engine::state_name(to)},
                       {"generation", generation}};
  ev["error"] = error.empty() || (to != engine::State::Backoff && to != engine::State::Failed) ? nlohmann::json(nullptr)
                                                                                                : nlohmann::json(error);
  publish(std::move(ev));
}

void run_after(sd_event* loop, uint64_t ms, std::function<void()> fn) {
  auto* heap = new std::function<void()>(std::move(fn));
  sd_event_source* s = nullptr;
  auto run = [](sd_event_source* src, uint64_t, void* userdata) -> int {
    auto* f = static_cast<std::function<void()>*>(userdata);
    (*f)();
    // Fired once: taking the loop's reference back drops the source's last
    // one, and sd-event frees it (and `f`, through the destroy callback)
    // once this callback has returned. One unref more would be one too many.
    sd_event_source_set_floating(src, 0);
    return 0;
  };
  if (int r = sd_event_add_time_relative(loop, &s, CLOCK_MONOTONIC, ms * 1000, 1000, run, heap); r < 0) {
    log::get("daemon")->error("cannot arm a timer: {}", std::strerror(-r));
    delete heap;
    return;
  }
  sd_event_source_set_destroy_callback(s, [](void* userdata) { delete static_cast<std::function<void()>*>(userdata); });
  // Freed with the loop if it never fires.
  sd_event_source_set_floating(s, 1);
  sd_event_source_unref(s);
}

}  // namespace relink::daemon
