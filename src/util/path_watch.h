// SPDX-License-Identifier: GPL-2.0-or-later
// Waits, without polling, for a path to appear: inotify on the deepest
// directory of the path that exists now, moving down as the missing
// directories appear. relinkd uses it for QMP sockets of VMs that are not
// running, so that an offline VM costs no periodic wakeups.
#pragma once

#include <systemd/sd-event.h>

#include <functional>
#include <string>

#include "util/result.h"
#include "util/sd_event.h"

namespace relink {

class PathWatch {
 public:
  // `on_change` runs on the loop when an entry named like the path's last
  // component is created, moved in or changes attributes (a socket QEMU
  // re-creates, a chmod), and when the path's directory itself appears.
  PathWatch(sd_event* loop, std::string path, std::function<void()> on_change);
  PathWatch(const PathWatch&) = delete;
  PathWatch& operator=(const PathWatch&) = delete;

  // Starts watching (or re-arms after the tree changed). An error means the
  // kernel cannot watch here (no inotify, out of watches): poll instead.
  Result<void> arm();
  void disarm() { source_.reset(); }
  bool armed() const { return static_cast<bool>(source_); }
  // The directory watched now (for logs and tests).
  const std::string& watched() const { return watched_; }

 private:
  static int on_inotify(sd_event_source*, const struct inotify_event*, void*);

  sd_event* loop_;
  std::string path_;
  std::function<void()> on_change_;
  std::string watched_;
  std::string next_;  // the component below watched_ on the way to path_
  SdEventSourcePtr source_;
};

}  // namespace relink
