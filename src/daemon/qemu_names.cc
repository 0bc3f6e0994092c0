#include "daemon/qemu_names.h"

#include <charconv>

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

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\r' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

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

std::vector<NetClient> parse_info_network(std::string_view text) {
  std::vector<NetClient> out;
  int hub = -1;
  while (!text.empty()) {
    size_t nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view{} : text.substr(nl + 1);
    bool port = false;
    std::string_view l = trim(line);
    if (l.substr(0, 4) == "hub ") {
      int id = -1;
      auto digits = l.substr(4);
      auto [p, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), id);
      hub = (ec == std::errc() && p == digits.data() + digits.size()) ? id : -1;
      continue;
    }
    if (l.substr(0, 2) == "\\ ") {
      port = true;
      l = trim(l.substr(2));
    } else {
      hub = -1;  // a top-level client ends the hub's port list
    }
    // "a: b: index=..." or "a: index=..."; filter lines (" - ...") have no "index=".
    std::vector<std::string_view> names;
    while (true) {
      size_t colon = l.find(": ");
      if (colon == std::string_view::npos) break;
      std::string_view name = l.substr(0, colon);
      if (name.empty() || name.find(' ') != std::string_view::npos || name.find('=') != std::string_view::npos) break;
      names.push_back(name);
      l = l.substr(colon + 2);
      if (l.substr(0, 6) == "index=") break;
    }
    if (names.empty() || l.substr(0, 6) != "index=") continue;
    // The peer of a hub port (the tap behind an uplink) is a client in its own right.
    if (names.size() > 1) out.push_back(NetClient{std::string(names[1]), std::string(names[0]), -1});
    out.push_back(NetClient{std::string(names[0]), names.size() > 1 ? std::string(names[1]) : "",
                            port ? hub : -1});
  }
  return out;
}

std::map<uint64_t, GenerationPieces> find_generations(const std::vector<NetClient>& clients,
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

namespace relink::daemon {

std::map<std::string, bool> parse_stream_netdevs(std::string_view text) {
  std::map<std::string, bool> out;
  while (!text.empty()) {
    size_t nl = text.find('\n');
    std::string_view l = trim(text.substr(0, nl));
    text = nl == std::string_view::npos ? std::string_view{} : text.substr(nl + 1);
    if (l.substr(0, 2) == "\\ ") l = trim(l.substr(2));
    const size_t colon = l.find(": index=");
    if (colon == std::string_view::npos || colon == 0) continue;
    const std::string_view info = l.substr(colon + 2);
    const size_t type = info.find(",type=stream,");
    if (type == std::string_view::npos) continue;
    out[std::string(l.substr(0, colon))] = !trim(info.substr(type + 13)).empty();
  }
  return out;
}

std::string nic_of_netdev(std::string_view text, const std::string& netdev) {
  std::string nic;  // the last top-level NIC line
  while (!text.empty()) {
    size_t nl = text.find('\n');
    std::string_view l = trim(text.substr(0, nl));
    text = nl == std::string_view::npos ? std::string_view{} : text.substr(nl + 1);
    const bool peer = l.substr(0, 2) == "\\ ";
    if (peer) l = trim(l.substr(2));
    const size_t colon = l.find(": index=");
    if (colon == std::string_view::npos || colon == 0) {
      if (!peer) nic.clear();
      continue;
    }
    const std::string name(l.substr(0, colon));
    if (!peer) {
      nic = l.find(",type=nic,") != std::string_view::npos ? name : "";
      continue;
    }
    if (name == netdev && !nic.empty()) return nic;
  }
  return "";
}

}  // namespace relink::daemon
