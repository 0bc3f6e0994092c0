// SPDX-License-Identifier: GPL-2.0-or-later
// One relinkd per state_dir. Two would both bind the control socket (the
// second unlinking the first's), adopt the same passt processes (one exit:
// two restarts, each passt unlinking the other's socket) and replug libvirt
// domains twice. The lock is taken before anything else touches state: a
// second instance exits without having changed a thing.
#pragma once

#include <sys/types.h>

#include <string>

#include "util/result.h"
#include "util/unique_fd.h"

namespace relink::daemon {

class InstanceLock {
 public:
  // Takes an exclusive flock on STATE_DIR/relinkd.lock (state_dir created
  // when missing, and checked like every trusted directory), and writes this
  // process's pid into it. Refused with EBUSY, the message naming the
  // holder's pid, when another relinkd holds it. The fd is O_CLOEXEC: passt
  // and other children never inherit the lock (they would keep it past
  // relinkd's death).
  static Result<InstanceLock> acquire(const std::string& state_dir);

  InstanceLock(InstanceLock&&) = default;
  InstanceLock& operator=(InstanceLock&&) = default;
  int fd() const { return fd_.get(); }

 private:
  explicit InstanceLock(UniqueFd fd) : fd_(std::move(fd)) {}
  UniqueFd fd_;  // the lock lives as long as this fd
};

inline constexpr const char* kInstanceLockName = "relinkd.lock";

}  // namespace relink::daemon
