// SPDX-License-Identifier: GPL-2.0-or-later
// The control socket's command table.
#include "daemon/control_api.h"

#include "daemon/vm.h"
#include "util/untrusted.h"

namespace relink::daemon {

void ControlApi::add(std::string command, Handler handler) {
  commands_.emplace_back(std::move(command), std::move(handler));
}

void ControlApi::mention(std::string command) { commands_.emplace_back(std::move(command), nullptr); }

nlohmann::json ControlApi::handle(const nlohmann::json& request) const {
  const std::string cmd = string_field(request, "command");
  if (cmd.empty()) return refused("request has no \"command\"");
  std::string known;
  for (const auto& [name, handler] : commands_) {
    if (name == cmd && handler) return handler(request);
    known += (known.empty() ? "" : ", ") + name;
  }
  return refused("unknown command '" + untrusted::safe_text(cmd, 64) + "' (known: " + known + ")");
}

std::string string_field(const nlohmann::json& request, const char* key) {
  auto it = request.find(key);
  return it != request.end() && it->is_string() ? it->get<std::string>() : std::string();
}

}  // namespace relink::daemon
