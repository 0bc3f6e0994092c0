// SPDX-License-Identifier: GPL-2.0-or-later
// The commands of the control socket: a table from a request's "command" to
// its handler. ControlServer reads and writes the lines (and serves
// `monitor` itself); the daemon fills the table.
#pragma once

#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

namespace relink::daemon {

class ControlApi {
 public:
  using Handler = std::function<nlohmann::json(const nlohmann::json& request)>;
  void add(std::string command, Handler handler);
  // A command served elsewhere (by the control server), named among the known ones.
  void mention(std::string command);
  // The reply: {"ok": true, "result": ...} or {"ok": false, "error": ...}.
  nlohmann::json handle(const nlohmann::json& request) const;

 private:
  std::vector<std::pair<std::string, Handler>> commands_;  // a null handler: mentioned only
};

// A request's string field ("" when missing or not a string).
std::string string_field(const nlohmann::json& request, const char* key);

}  // namespace relink::daemon
