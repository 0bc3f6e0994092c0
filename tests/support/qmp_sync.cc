// SPDX-License-Identifier: GPL-2.0-or-later
#include "support/qmp_sync.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <thread>

namespace relink::test {

QmpSync::~QmpSync() {
  if (fd_ >= 0) close(fd_);
}

bool QmpSync::read_line(std::string& line, int timeout_ms) {
  auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (true) {
    size_t nl = buf_.find('\n');
    if (nl != std::string::npos) {
      line = buf_.substr(0, nl);
      buf_.erase(0, nl + 1);
      return true;
    }
    int left = static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                    end - std::chrono::steady_clock::now())
                                    .count());
    if (left <= 0) return false;
    pollfd p{fd_, POLLIN, 0};
    if (poll(&p, 1, left) <= 0) continue;
    char tmp[65536];
    ssize_t n = read(fd_, tmp, sizeof tmp);
    if (n <= 0) return false;
    buf_.append(tmp, static_cast<size_t>(n));
  }
}

bool QmpSync::connect(const std::string& path, int timeout_ms) {
  auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
  while (true) {
    fd_ = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) break;
    close(fd_);
    fd_ = -1;
    if (std::chrono::steady_clock::now() > end) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  std::string greeting;
  if (!read_line(greeting, timeout_ms)) return false;
  auto r = execute("qmp_capabilities");
  return r.is_object() && r.contains("return");
}

nlohmann::json QmpSync::execute(const std::string& command, const nlohmann::json& args, int timeout_ms) {
  if (fd_ < 0) return nullptr;
  nlohmann::json req = {{"execute", command}};
  if (!args.empty()) req["arguments"] = args;
  std::string msg = req.dump() + "\n";
  if (write(fd_, msg.data(), msg.size()) != static_cast<ssize_t>(msg.size())) return nullptr;
  std::string line;
  while (read_line(line, timeout_ms)) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded()) continue;
    if (j.contains("event")) {
      events_.push_back(j);
      continue;
    }
    return j;
  }
  return nullptr;
}

size_t QmpSync::count_events(const std::string& name) const {
  size_t n = 0;
  for (const auto& e : events_) n += e.value("event", "") == name;
  return n;
}

bool QmpSync::wait_events(const std::string& name, size_t count, int timeout_ms) {
  auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  std::string line;
  while (count_events(name) < count) {
    int left = static_cast<int>(
        std::chrono::duration_cast<std::chrono::milliseconds>(end - std::chrono::steady_clock::now()).count());
    if (left <= 0 || !read_line(line, left)) return false;
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (!j.is_discarded() && j.contains("event")) events_.push_back(j);
  }
  return true;
}

std::string QmpSync::info_network() {
  auto r = execute("human-monitor-command", {{"command-line", "info network"}});
  if (r.is_object() && r.contains("return") && r["return"].is_string()) return r["return"].get<std::string>();
  return "";
}

}  // namespace relink::test
