// SPDX-License-Identifier: GPL-2.0-or-later
// The client side of relinkd's control socket (daemon/control_server.h): one
// JSON request line out, one JSON reply line back.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "util/result.h"

namespace relink::ctl {

// Sends one request to the control socket at `path` and waits for the reply
// (at most timeout_ms to connect, and as long again for each read).
Result<nlohmann::json> control_request(const std::string& path, const nlohmann::json& request,
                                       int timeout_ms = 10000);

}  // namespace relink::ctl
