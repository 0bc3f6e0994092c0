// SPDX-License-Identifier: GPL-2.0-or-later
// Host interfaces keyed by ifindex, with a name index. A same-named interface
// with a new ifindex is a new interface; a rename is a change of name.
#pragma once

#include <cstddef>
#include <map>
#include <string>
#include <unordered_map>
#include <vector>

#include "netlink/link.h"

namespace relink::netlink {

// The answer of LinkTable::find_by_mac().
struct MacMatch {
  const LinkInfo* link = nullptr;  // the lowest ifindex among the matches, or nullptr
  size_t count = 0;                // how many interfaces matched at that level
  bool by_perm = false;            // matched a permanent MAC, not a current one

  MacAddress mac{};                // what was looked up

  explicit operator bool() const { return link != nullptr; }
  // Several interfaces match equally well: `link` is only the first of them.
  bool ambiguous() const { return count > 1; }
  // `l` is one of the `count` matches (to prefer another of them than `link`,
  // say the one with a configured name): it holds the MAC at the level
  // matched, permanent or current, and is no macvtap/macvlan.
  bool includes(const LinkInfo& l) const;
};

class LinkTable {
 public:
  // Applies one message; returns the events it caused (none if nothing changed).
  std::vector<LinkEvent> apply(const LinkMessage& msg);
  // Replaces the whole table with a fresh dump (after ENOBUFS) and returns the
  // events that turn the old table into the new one: removals first, then
  // changes, then additions. A name that moved to a new ifindex shows up as a
  // removal and an addition, never lost.
  std::vector<LinkEvent> replace_all(const std::vector<LinkInfo>& links);

  const LinkInfo* find(int ifindex) const;
  const LinkInfo* find_by_name(const std::string& name) const;
  // The interface that owns a MAC: one whose permanent MAC (perm_mac) it is,
  // else, when no interface has it as permanent MAC, one whose current MAC it
  // is. macvtap and macvlan devices are never matched (their MACs are
  // guests'), nor is the all-zero MAC (lo and others without an address).
  // A bridge or vlan usually carries the MAC of a port or lower device, so a
  // current-MAC match can be ambiguous: see MacMatch.
  MacMatch find_by_mac(const MacAddress& mac) const;
  size_t size() const { return by_index_.size(); }
  std::vector<LinkInfo> all() const;

 private:
  // Drops name -> ifindex unless a newer claim took the name over, then hands
  // the name to any other entry still holding it (possible only while stale
  // messages are being applied).
  void unindex_name(const std::string& name, int ifindex);

  std::map<int, LinkInfo> by_index_;
  std::unordered_map<std::string, int> by_name_;
};

}  // namespace relink::netlink
