// SPDX-License-Identifier: GPL-2.0-or-later
// Runs deferred closures from an sd-event source, in order.
#include "util/defer_queue.h"

namespace relink {

void DeferQueue::post(std::function<void()> fn) {
  queue_.push_back(std::move(fn));
  if (!source_) {
    sd_event_source* s = nullptr;
    if (sd_event_add_defer(loop_, &s, &DeferQueue::on_defer, this) >= 0) source_.reset(s);
  }
  if (source_) sd_event_source_set_enabled(source_.get(), SD_EVENT_ON);
}

int DeferQueue::on_defer(sd_event_source* s, void* userdata) {
  auto* self = static_cast<DeferQueue*>(userdata);
  // Run only what is queued now; what these closures post runs next time.
  auto batch = std::move(self->queue_);
  self->queue_.clear();
  sd_event_source_set_enabled(s, SD_EVENT_OFF);
  for (auto& fn : batch) fn();
  return 0;
}

}  // namespace relink
