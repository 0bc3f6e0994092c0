// SPDX-License-Identifier: GPL-2.0-or-later
// Parsers for HMP "info network" (QEMU 7.2's text format): pure functions
// over the text, fuzzed by fuzz/info_network_fuzz.cc.
#include "qemu/info_network.h"

#include <charconv>
#include <cstdint>

namespace relink::qemu {
namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\r' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// The fields of "index=0,type=tap,fd=3" that NetClient keeps.
void parse_client_info(std::string_view info, NetClient& c) {
  auto number = [](std::string_view digits, int& out) {
    int v = 0;
    auto [p, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), v);
    if (ec != std::errc() || p != digits.data() + digits.size() || v < 0) return false;
    out = v;
    return true;
  };
  // "index=N," comes first, then "type=T," and the client's own text.
  size_t comma = info.find(',');
  if (!number(info.substr(6, comma == std::string_view::npos ? std::string_view::npos : comma - 6), c.index))
    c.index = 0;
  if (comma == std::string_view::npos) return;
  std::string_view rest = info.substr(comma + 1);
  if (rest.substr(0, 5) != "type=") return;
  rest.remove_prefix(5);
  comma = rest.find(',');
  c.type = std::string(rest.substr(0, comma));
  if (comma == std::string_view::npos) return;
  rest = rest.substr(comma + 1);
  // Only an fd-backed tap prints exactly "fd=N"; a tap QEMU opened itself
  // prints "ifname=...,script=...", where a name could contain ",fd=".
  if (c.type == "tap" && rest.substr(0, 3) == "fd=" && !number(rest.substr(3), c.fd)) c.fd = -1;
}

}  // namespace

std::vector<NetClient> parse_info_network(std::string_view text) {
  std::vector<NetClient> out;
  int hub = -1;
  // The last top-level client outside any hub (a NIC), whose directly peered
  // backend QEMU prints on the next line as " \ name: index=...".
  constexpr size_t kNone = SIZE_MAX;
  size_t top = kNone;
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
      top = kNone;
      continue;
    }
    if (l.substr(0, 2) == "\\ ") {
      port = true;
      l = trim(l.substr(2));
    } else {
      hub = -1;  // a top-level client ends the hub's port list
      top = kNone;
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
    if (port && hub < 0 && names.size() == 1) {
      // A NIC's direct backend: the two are each other's peer.
      NetClient c{std::string(names[0]), "", -1};
      parse_client_info(l, c);
      if (top != kNone) {
        c.peer = out[top].name;
        out[top].peer = c.name;
        top = kNone;
      }
      out.push_back(std::move(c));
      continue;
    }
    // The peer of a hub port (the tap behind an uplink) is a client in its own
    // right; the line's fields are the last name's.
    if (names.size() > 1) {
      NetClient c{std::string(names[1]), std::string(names[0]), -1};
      parse_client_info(l, c);
      out.push_back(std::move(c));
      out.push_back(NetClient{std::string(names[0]), std::string(names[1]), port ? hub : -1});
    } else {
      NetClient c{std::string(names[0]), "", port ? hub : -1};
      parse_client_info(l, c);
      out.push_back(std::move(c));
    }
    if (!port) top = out.size() - 1;
  }
  return out;
}

std::optional<NicPeer> nic_peer(const std::vector<NetClient>& clients, const std::string& nic) {
  std::optional<NicPeer> out;
  for (const auto& c : clients) {
    if (c.name != nic || c.type != "nic" || c.hub >= 0 || c.peer.empty() || c.index != 0) continue;
    out = NicPeer{c.peer, "", {}};
    break;
  }
  if (!out) return out;
  // The backend's queues are the lines of that name peered with this NIC.
  for (const auto& c : clients) {
    if (c.name != out->netdev || c.peer != nic || c.hub >= 0) continue;
    if (c.index == 0) out->type = c.type;
    if (c.index < 0 || c.index > 1024) continue;
    const size_t i = static_cast<size_t>(c.index);
    if (out->fds.size() <= i) out->fds.resize(i + 1, -1);
    out->fds[i] = c.fd;
  }
  if (out->type.empty()) return std::nullopt;  // a hub port, or no backend line
  return out;
}

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

}  // namespace relink::qemu
