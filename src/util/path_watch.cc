// SPDX-License-Identifier: GPL-2.0-or-later
// Waits for a path to appear with inotify, one directory level at a time.
#include "util/path_watch.h"

#include <sys/inotify.h>
#include <sys/stat.h>

#include <filesystem>

namespace relink {

PathWatch::PathWatch(sd_event* loop, std::string path, std::function<void()> on_change)
    : loop_(loop), path_(std::move(path)), on_change_(std::move(on_change)) {}

Result<void> PathWatch::arm() {
  source_.reset();
  namespace fs = std::filesystem;
  fs::path target = fs::path(path_).lexically_normal();
  fs::path dir = target.parent_path();
  fs::path next = target.filename();
  // The deepest directory that exists now.
  while (true) {
    struct stat st {};
    if (stat(dir.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) break;
    if (!dir.has_relative_path()) return Error{ENOENT, "no existing directory on the way to " + path_};
    next = dir.filename();
    dir = dir.parent_path();
  }
  sd_event_source* s = nullptr;
  const uint32_t mask = IN_CREATE | IN_MOVED_TO | IN_ATTRIB | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR;
  if (int r = sd_event_add_inotify(loop_, &s, dir.c_str(), mask, &PathWatch::on_inotify, this); r < 0)
    return Error::from_errno(-r, "inotify on " + dir.string());
  source_.reset(s);
  watched_ = dir.string();
  next_ = next.string();
  return ok();
}

int PathWatch::on_inotify(sd_event_source*, const struct inotify_event* ev, void* userdata) {
  auto* self = static_cast<PathWatch*>(userdata);
  if (ev->mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED | IN_Q_OVERFLOW)) {
    // The watched directory went away (or events were lost): look again.
    // A failure to re-arm leaves the owner's fallback polling in charge.
    (void)self->arm();
    self->on_change_();
    return 0;
  }
  if (ev->len == 0 || self->next_ != ev->name) return 0;
  const bool leaf = self->watched_ == std::filesystem::path(self->path_).lexically_normal().parent_path().string();
  if (!leaf) (void)self->arm();  // a missing directory appeared: watch further down
  // on_change_ may destroy this PathWatch: nothing after it.
  self->on_change_();
  return 0;
}

}  // namespace relink
