// SPDX-License-Identifier: GPL-2.0-or-later
// The table of host interfaces: applies link messages, reports what changed, finds by name or MAC.
#include "netlink/link_table.h"

#include <utility>

namespace relink::netlink {

std::vector<LinkEvent> LinkTable::apply(const LinkMessage& msg) {
  const LinkInfo& link = msg.link;
  auto it = by_index_.find(link.ifindex);

  if (msg.deleted) {
    if (it == by_index_.end()) return {};
    LinkEvent ev{LinkEventType::Removed, std::move(it->second), {}};
    by_index_.erase(it);
    unindex_name(ev.link.name, ev.link.ifindex);
    return {std::move(ev)};
  }

  if (it == by_index_.end()) {
    by_index_.emplace(link.ifindex, link);
    // Names are unique in a namespace, so another ifindex still holding this
    // name means a stale entry (a rename or delete not applied yet): the
    // newest claim wins.
    by_name_[link.name] = link.ifindex;
    return {LinkEvent{LinkEventType::Added, link, {}}};
  }

  // The same ifindex is the same device, whatever its name (renames keep it).
  std::vector<LinkEvent> events;
  if (it->second != link) {
    LinkEvent ev{LinkEventType::Changed, link, {}};
    if (it->second.name != link.name) {
      ev.old_name = it->second.name;
      it->second = link;
      unindex_name(ev.old_name, link.ifindex);
    } else {
      it->second = link;
    }
    events.push_back(std::move(ev));
  }
  by_name_[link.name] = link.ifindex;
  return events;
}

std::vector<LinkEvent> LinkTable::replace_all(const std::vector<LinkInfo>& links) {
  std::map<int, LinkInfo> fresh;
  for (const auto& l : links) fresh.insert_or_assign(l.ifindex, l);

  std::vector<LinkEvent> removed, changed, added;
  for (auto& [ifindex, old] : by_index_) {
    auto it = fresh.find(ifindex);
    if (it == fresh.end()) {
      removed.push_back(LinkEvent{LinkEventType::Removed, std::move(old), {}});
    } else if (it->second != old) {
      changed.push_back(LinkEvent{LinkEventType::Changed, it->second,
                                  it->second.name != old.name ? old.name : std::string()});
    }
  }
  for (const auto& [ifindex, l] : fresh) {
    if (!by_index_.contains(ifindex)) added.push_back(LinkEvent{LinkEventType::Added, l, {}});
  }

  by_index_ = std::move(fresh);
  by_name_.clear();
  for (const auto& [ifindex, l] : by_index_) by_name_[l.name] = ifindex;

  std::vector<LinkEvent> events = std::move(removed);
  events.insert(events.end(), std::make_move_iterator(changed.begin()),
                std::make_move_iterator(changed.end()));
  events.insert(events.end(), std::make_move_iterator(added.begin()),
                std::make_move_iterator(added.end()));
  return events;
}

const LinkInfo* LinkTable::find(int ifindex) const {
  auto it = by_index_.find(ifindex);
  return it == by_index_.end() ? nullptr : &it->second;
}

const LinkInfo* LinkTable::find_by_name(const std::string& name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : find(it->second);
}

namespace {

bool is_guest_side(const LinkInfo& l) { return l.kind == "macvtap" || l.kind == "macvlan"; }

}  // namespace

bool MacMatch::includes(const LinkInfo& l) const {
  if (!link || is_guest_side(l)) return false;
  return by_perm ? l.perm_mac == mac : l.mac == mac;
}

MacMatch LinkTable::find_by_mac(const MacAddress& mac) const {
  MacMatch perm, current;
  perm.mac = current.mac = mac;
  perm.by_perm = true;
  if (mac == MacAddress{}) return current;
  auto note = [](MacMatch& m, const LinkInfo& l) {
    if (m.count++ == 0) m.link = &l;  // by_index_ is in ifindex order
  };
  for (const auto& [ifindex, l] : by_index_) {
    if (is_guest_side(l)) continue;
    if (l.perm_mac == mac) note(perm, l);
    if (l.mac == mac) note(current, l);
  }
  return perm ? perm : current;
}

std::vector<LinkInfo> LinkTable::all() const {
  std::vector<LinkInfo> out;
  out.reserve(by_index_.size());
  for (const auto& [ifindex, l] : by_index_) out.push_back(l);
  return out;
}

void LinkTable::unindex_name(const std::string& name, int ifindex) {
  auto it = by_name_.find(name);
  if (it == by_name_.end() || it->second != ifindex) return;
  by_name_.erase(it);
  // Highest ifindex first: the kernel hands out increasing ifindexes, so it
  // is the most recently created of the remaining claimants.
  for (auto e = by_index_.rbegin(); e != by_index_.rend(); ++e) {
    if (e->second.name == name) {
      by_name_.emplace(name, e->first);
      return;
    }
  }
}

}  // namespace relink::netlink
