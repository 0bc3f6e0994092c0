// SPDX-License-Identifier: GPL-2.0-or-later
// Runs closures on the next event-loop iteration, in order: results that are
// known at once are still delivered from the loop, never re-entrantly.
#pragma once

#include <systemd/sd-event.h>

#include <deque>
#include <functional>

#include "util/sd_event.h"

namespace relink {

class DeferQueue {
 public:
  explicit DeferQueue(sd_event* loop) : loop_(loop) {}
  DeferQueue(const DeferQueue&) = delete;
  DeferQueue& operator=(const DeferQueue&) = delete;

  void post(std::function<void()> fn);

 private:
  static int on_defer(sd_event_source*, void* userdata);
  sd_event* loop_;
  std::deque<std::function<void()>> queue_;
  SdEventSourcePtr source_;
};

}  // namespace relink
