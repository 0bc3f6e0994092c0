// SPDX-License-Identifier: GPL-2.0-or-later
// Named spdlog loggers, one per subsystem. Libraries log at debug at most;
// the daemon decides what reaches info and above.
#pragma once

#include <spdlog/spdlog.h>

#include <memory>
#include <string>

namespace relink::log {

// Returns the logger for a subsystem ("netlink", "qmp", "macvtap", "engine",
// "daemon", ...), creating it on first use with the current sinks.
std::shared_ptr<spdlog::logger> get(const std::string& name);

// Sends every logger to stderr (default) or, under systemd, to journald-style
// stderr lines with <N> priority prefixes. Sets the level of all loggers.
void setup(spdlog::level::level_enum level, bool journal_prefix);

}  // namespace relink::log
