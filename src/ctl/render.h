// SPDX-License-Identifier: GPL-2.0-or-later
// What relinkctl prints: pure functions from relinkd's JSON replies to text.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace relink::ctl {

struct Style {
  bool colour = false;  // ANSI colours (a terminal, and NO_COLOR unset or empty)
};

// Whether to colour what goes to `fd`: a terminal, and no NO_COLOR
// (https://no-color.org: present and not empty disables colour).
bool want_colour(int fd);

// The status table: one row per binding, columns as wide as their widest
// cell; then one line per VM or libvirt problem. `vm`: only that VM.
std::string render_status(const nlohmann::json& status, const Style& style, const std::string& vm = {});

// "added web2, web1/nic1; removed web3" or "nothing changed".
std::string render_changes(const nlohmann::json& changes);

// One line for a monitor event.
std::string render_event(const nlohmann::json& event, const Style& style);

// Settled: a state a reattach ends in (rather than passes through).
bool settled_state(const std::string& kind, const std::string& state);

}  // namespace relink::ctl
