// SPDX-License-Identifier: GPL-2.0-or-later
// What must hold after every fault window, once relinkd has gone quiet:
// the invariants of the chaos run, checked against the kernel, QEMU's own
// monitor, /proc and the guests rather than relinkd's word alone.
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "world.h"

namespace relink::chaos {

struct CheckLimits {
  std::chrono::seconds quiet_for{3};     // unchanged status this long counts as quiet
  std::chrono::seconds quiet_bound{120}; // not quiet by then: a violation
  std::chrono::seconds stuck_for{30};    // unsettled and unchanged this long: a violation at once
  std::chrono::seconds ping_bound{30};
  int max_fds = 96;                      // relinkd's open fds
  long max_rss_kib = 64 * 1024;          // relinkd's VmRSS
};

// One broken invariant: its kind ("qemu-fds", "stray-macvtap", ...), the
// VM it concerns ("" for relinkd itself) and what was seen.
struct Violation {
  std::string kind, vm, detail;
};

struct CheckResult {
  int checks = 0;                    // invariants checked
  std::vector<Violation> failed;
  int relinkd_fds = 0;
  long relinkd_rss_kib = 0;
  double quiet_s = 0;                // how long the quiet wait took
};

// Waits for quiet, then checks every invariant; incidents recorded by the
// world while the faults ran come first.
CheckResult check_world(World& w, const CheckLimits& lim);

// Puts right what a violation left behind, so that the next window starts
// clean and its violations are its own: a binding not attached is asked to
// reattach, stray macvtaps and passt processes are removed, a VM whose NIC
// is still wrong is started again by its launcher.
void repair(World& w, const CheckResult& r);

}  // namespace relink::chaos
