// SPDX-License-Identifier: GPL-2.0-or-later
// unique_ptr aliases for sd-event handles.
#pragma once

#include <systemd/sd-event.h>

#include <memory>

namespace relink {

struct SdEventSourceDeleter {
  void operator()(sd_event_source* s) const {
    if (s) {
      sd_event_source_disable_unref(s);
    }
  }
};
using SdEventSourcePtr = std::unique_ptr<sd_event_source, SdEventSourceDeleter>;

struct SdEventDeleter {
  void operator()(sd_event* e) const { sd_event_unref(e); }
};
using SdEventPtr = std::unique_ptr<sd_event, SdEventDeleter>;

}  // namespace relink
