// SPDX-License-Identifier: GPL-2.0-or-later
// relinkd's names in QEMU, and its generations found in "info network".
#include "daemon/qemu_names.h"

#include <charconv>
#include <cstdint>
#include <optional>
#include <string_view>

namespace relink::daemon {

std::string tap_id(const std::string& nic, uint64_t generation) {
  return nic + ".tap" + std::to_string(generation);
}
std::string uplink_id(const std::string& nic, uint64_t generation) {
  return nic + ".uplink" + std::to_string(generation);
}
std::string fd_name(const std::string& nic, uint64_t generation) {
  return "relink-" + nic + "-" + std::to_string(generation);
}

namespace {

// "<prefix><digits>" -> digits
std::optional<uint64_t> suffix_number(std::string_view name, std::string_view prefix) {
  if (name.size() <= prefix.size() || name.substr(0, prefix.size()) != prefix) return std::nullopt;
  std::string_view digits = name.substr(prefix.size());
  uint64_t v = 0;
  auto [p, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), v);
  if (ec != std::errc() || p != digits.data() + digits.size() || digits[0] == '0') return std::nullopt;
  return v;
}

}  // namespace

std::map<uint64_t, GenerationPieces> find_generations(const std::vector<qemu::NetClient>& clients,
                                                      const std::string& nic) {
  std::map<uint64_t, GenerationPieces> gens;
  const std::string tap_prefix = nic + ".tap", uplink_prefix = nic + ".uplink";
  for (const auto& c : clients) {
    if (auto g = suffix_number(c.name, tap_prefix)) {
      gens[*g].tap = true;
    } else if (auto u = suffix_number(c.name, uplink_prefix)) {
      auto& p = gens[*u];
      p.uplink = true;
      if (c.hub >= 0) p.uplink_hub = c.hub;
      if (!c.peer.empty()) p.uplink_peers_tap = c.peer == tap_id(nic, *u);
    }
  }
  return gens;
}

}  // namespace relink::daemon
