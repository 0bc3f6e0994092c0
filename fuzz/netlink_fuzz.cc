// SPDX-License-Identifier: GPL-2.0-or-later
// rtnetlink bytes (one recv() buffer) through the link parser, and the parsed
// messages through a LinkTable: what a netlink socket may deliver must never
// crash either, and the table must stay consistent.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>

#include "fuzz_check.h"
#include "netlink/bridge_port.h"
#include "netlink/link_parser.h"
#include "netlink/link_table.h"

using namespace relink::netlink;

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  relink::fuzz::quiet_logs();
  return 0;
}

namespace {

// find_by_mac() of a MAC that link l holds: some host interface holding it
// at the level reported, never a guest's macvtap/macvlan, never a wrong one.
void check_mac_lookup(const LinkTable& table, const LinkInfo& l,
                      const std::optional<relink::MacAddress>& mac) {
  if (!mac) return;
  const MacMatch m = table.find_by_mac(*mac);
  FUZZ_CHECK((m.link != nullptr) == (m.count > 0));
  if (*mac == relink::MacAddress{}) FUZZ_CHECK(!m);
  const bool guest = l.kind == "macvtap" || l.kind == "macvlan";
  if (!guest && *mac != relink::MacAddress{}) FUZZ_CHECK(m);
  if (!m) return;
  FUZZ_CHECK(m.link->kind != "macvtap" && m.link->kind != "macvlan");
  FUZZ_CHECK(m.by_perm ? m.link->perm_mac == *mac : m.link->mac == *mac);
  FUZZ_CHECK(table.find(m.link->ifindex) == m.link);
  // includes() names exactly the `count` matches, the first being `link`.
  size_t included = 0;
  const LinkInfo* first = nullptr;
  for (const auto& other : table.all()) {
    if (!m.includes(other)) continue;
    if (included++ == 0) first = table.find(other.ifindex);
  }
  FUZZ_CHECK(included == m.count);
  FUZZ_CHECK(first == m.link);
}

void check_table(const LinkTable& table) {
  auto all = table.all();
  FUZZ_CHECK(all.size() == table.size());
  for (const auto& l : all) {
    const LinkInfo* found = table.find(l.ifindex);
    FUZZ_CHECK(found != nullptr);
    FUZZ_CHECK(*found == l);
    if (const LinkInfo* by_name = table.find_by_name(l.name)) FUZZ_CHECK(by_name->name == l.name);
    if (l.perm_mac) FUZZ_CHECK(*l.perm_mac != relink::MacAddress{});  // the parser drops zeros
    check_mac_lookup(table, l, l.mac);
    check_mac_lookup(table, l, l.perm_mac);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto batch = parse_link_messages(std::span<const uint8_t>(data, size));
  if (!batch) return 0;

  // The messages in order, as the watcher applies them after each recv().
  LinkTable table;
  std::vector<LinkInfo> alive;
  for (const auto& msg : batch->links) {
    for (const auto& ev : table.apply(msg)) {
      if (ev.type == LinkEventType::Removed) FUZZ_CHECK(table.find(ev.link.ifindex) == nullptr);
      else FUZZ_CHECK(table.find(ev.link.ifindex) != nullptr);
    }
    check_table(table);
    if (!msg.deleted) alive.push_back(msg.link);
  }

  // The same links as a fresh dump after ENOBUFS: a table replaced with its
  // own contents changes nothing, and any replacement leaves exactly the dump.
  auto same = table.replace_all(table.all());
  FUZZ_CHECK(same.empty());
  table.replace_all(alive);
  check_table(table);

  // Bridge ports: VLANs in order and each once, no bridge as its own port,
  // and what a port would be restored with reads back the same.
  BridgePortTable ports;
  for (const auto& msg : batch->ports) {
    for (size_t i = 1; i < msg.port.vlans.size(); ++i) FUZZ_CHECK(msg.port.vlans[i - 1].vid < msg.port.vlans[i].vid);
    (void)ports.apply(msg);
    for (const auto& [ifindex, p] : ports.all()) FUZZ_CHECK(p.master != ifindex && p.master != 0);
    if (msg.deleted || msg.port.vlans.empty()) continue;
    std::vector<uint8_t> req(kRequestBufSize);
    build_vlans(req, 1, msg.port.ifindex, /*add=*/true, msg.port.vlans);
    auto back = parse_bridge_port(reinterpret_cast<const nlmsghdr*>(req.data()));
    FUZZ_CHECK(back && back->port.vlans == msg.port.vlans);
  }
  return 0;
}
