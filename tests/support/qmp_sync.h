// SPDX-License-Identifier: GPL-2.0-or-later
// A blocking QMP client for tests: the test's own view of QEMU, on a second
// QMP socket (QEMU accepts several -qmp options), independent of relinkd.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace relink::test {

class QmpSync {
 public:
  QmpSync() = default;
  ~QmpSync();
  QmpSync(const QmpSync&) = delete;
  QmpSync& operator=(const QmpSync&) = delete;

  // Connects (retrying up to timeout_ms while the socket appears) and negotiates.
  bool connect(const std::string& path, int timeout_ms = 10000);
  // Runs a command; returns the whole reply object ({"return":...} or {"error":...}),
  // or a null json on I/O failure. Events read meanwhile are kept in events().
  nlohmann::json execute(const std::string& command, const nlohmann::json& args = nlohmann::json::object(),
                         int timeout_ms = 10000);
  // `info network` text, or "" on failure.
  std::string info_network();
  std::vector<nlohmann::json>& events() { return events_; }
  // Reads until `count` events named `name` (counting those already in
  // events()) have arrived; false on timeout or I/O failure.
  bool wait_events(const std::string& name, size_t count, int timeout_ms);
  size_t count_events(const std::string& name) const;

 private:
  bool read_line(std::string& line, int timeout_ms);
  int fd_ = -1;
  std::string buf_;
  std::vector<nlohmann::json> events_;
};

}  // namespace relink::test
