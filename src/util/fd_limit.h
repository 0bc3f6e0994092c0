// SPDX-License-Identifier: GPL-2.0-or-later
// relinkd's fd limit. systemd starts services with a soft RLIMIT_NOFILE of
// 1024 (for select() users; relinkd has none) and a far higher hard one:
// relinkd takes the hard one, so that many VMs, passt processes and control
// clients fit. What it starts gets the soft limit relinkd itself started
// with (as its soft and hard limit: passt/process.h): the raise is for
// relinkd's own fds, not a budget to hand on to every passt.
#pragma once

#include <sys/resource.h>

#include <optional>
#include <string>

namespace relink::fdlimit {

// Remembers the soft limit the process started with, then raises it to the
// hard limit. Returns a line for the debug log. Call once, early in main().
std::string raise_to_hard();

// The soft limit the process started with (nullopt: raise_to_hard() was not
// called, or it did not raise anything: children inherit the right one).
std::optional<rlim_t> starting_soft();

}  // namespace relink::fdlimit
