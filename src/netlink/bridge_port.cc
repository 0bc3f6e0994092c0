// SPDX-License-Identifier: GPL-2.0-or-later
// AF_BRIDGE port messages decoded (pure, fuzzed through the link parser),
// the port table, and the requests that restore a port.
#include "netlink/bridge_port.h"

#include <libmnl/libmnl.h>
#include <linux/if_bridge.h>
#include <linux/if_link.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <cstring>

#include "netlink/nl_attr.h"

namespace relink::netlink {
namespace {

// The options `bridge link set` can change on any port and that say how the
// port forwards. Not the STP state (the kernel's), nor per-port multicast
// limits and the backup port (another port's ifindex, gone with the bridge).
constexpr std::array kOptions{
    PortOption{IFLA_BRPORT_COST, 4, "cost"},
    PortOption{IFLA_BRPORT_PRIORITY, 2, "priority"},
    PortOption{IFLA_BRPORT_MODE, 1, "hairpin"},
    PortOption{IFLA_BRPORT_GUARD, 1, "guard"},
    PortOption{IFLA_BRPORT_PROTECT, 1, "root_block"},
    PortOption{IFLA_BRPORT_FAST_LEAVE, 1, "fastleave"},
    PortOption{IFLA_BRPORT_LEARNING, 1, "learning"},
    PortOption{IFLA_BRPORT_UNICAST_FLOOD, 1, "flood"},
    PortOption{IFLA_BRPORT_MCAST_FLOOD, 1, "mcast_flood"},
    PortOption{IFLA_BRPORT_BCAST_FLOOD, 1, "bcast_flood"},
    PortOption{IFLA_BRPORT_MCAST_TO_UCAST, 1, "mcast_to_unicast"},
    PortOption{IFLA_BRPORT_NEIGH_SUPPRESS, 1, "neigh_suppress"},
    PortOption{IFLA_BRPORT_ISOLATED, 1, "isolated"},
    PortOption{IFLA_BRPORT_PROXYARP, 1, "proxy_arp"},
    PortOption{IFLA_BRPORT_PROXYARP_WIFI, 1, "proxy_arp_wifi"},
    PortOption{IFLA_BRPORT_GROUP_FWD_MASK, 2, "group_fwd_mask"},
    PortOption{IFLA_BRPORT_MULTICAST_ROUTER, 1, "mcast_router"},
    PortOption{IFLA_BRPORT_LOCKED, 1, "locked"},
};

Error malformed(const std::string& what) { return Error{EBADMSG, "malformed bridge port message: " + what}; }

bool get_option(const nlattr* a, const PortOption& o, uint32_t& out) {
  if (mnl_attr_get_payload_len(a) < o.width) return false;
  switch (o.width) {
    case 1: out = mnl_attr_get_u8(a); return true;
    case 2: out = mnl_attr_get_u16(a); return true;
    default: out = mnl_attr_get_u32(a); return true;
  }
}

// IFLA_AF_SPEC: the port's VLANs, one bridge_vlan_info each, or ranges
// (RANGE_BEGIN ... RANGE_END, as RTEXT_FILTER_BRVLAN_COMPRESSED gives them).
// `other`: it holds something else (MRP, CFM) instead.
bool parse_vlans(const nlattr* spec, std::vector<PortVlan>& out, bool& other) {
  int range_start = -1;  // the open range's first VLAN
  bool ok = for_each_nested(spec, [&](const nlattr* a) {
    if (mnl_attr_get_type(a) != IFLA_BRIDGE_VLAN_INFO) {
      other = true;
      return true;
    }
    if (mnl_attr_get_payload_len(a) < sizeof(bridge_vlan_info)) return false;
    bridge_vlan_info vi{};
    std::memcpy(&vi, mnl_attr_get_payload(a), sizeof vi);
    if (vi.vid == 0 || vi.vid >= 4095) return false;
    const bool pvid = vi.flags & BRIDGE_VLAN_INFO_PVID, untagged = vi.flags & BRIDGE_VLAN_INFO_UNTAGGED;
    if (vi.flags & BRIDGE_VLAN_INFO_RANGE_BEGIN) {
      if (range_start >= 0) return false;
      range_start = vi.vid;
      return true;
    }
    uint16_t first = vi.vid;
    if (vi.flags & BRIDGE_VLAN_INFO_RANGE_END) {
      if (range_start < 0 || range_start > vi.vid) return false;
      first = static_cast<uint16_t>(range_start);
      range_start = -1;
    } else if (range_start >= 0) {
      return false;
    }
    for (uint32_t v = first; v <= vi.vid; ++v) out.push_back({static_cast<uint16_t>(v), pvid, untagged});
    return true;
  });
  if (!ok || range_start >= 0) return false;
  std::sort(out.begin(), out.end(), [](const PortVlan& x, const PortVlan& y) { return x.vid < y.vid; });
  // A VLAN listed twice is a corrupt table, not a port's.
  return std::adjacent_find(out.begin(), out.end(),
                            [](const PortVlan& x, const PortVlan& y) { return x.vid == y.vid; }) == out.end();
}

bool parse_protinfo(const nlattr* info, std::map<uint16_t, uint32_t>& out) {
  return for_each_nested(info, [&](const nlattr* a) {
    const PortOption* o = find_port_option(mnl_attr_get_type(a));
    if (!o) return true;
    uint32_t v = 0;
    if (!get_option(a, *o, v)) return false;
    out[o->type] = v;
    return true;
  });
}

nlmsghdr* put_header(std::span<uint8_t> buf, uint16_t type, uint16_t flags, uint32_t seq, uint8_t family, int ifindex) {
  std::fill(buf.begin(), buf.begin() + static_cast<std::ptrdiff_t>(MNL_ALIGN(sizeof(nlmsghdr) + sizeof(ifinfomsg))), 0);
  nlmsghdr* nlh = mnl_nlmsg_put_header(buf.data());
  nlh->nlmsg_type = type;
  nlh->nlmsg_flags = NLM_F_REQUEST | flags;
  nlh->nlmsg_seq = seq;
  auto* ifi = static_cast<ifinfomsg*>(mnl_nlmsg_put_extra_header(nlh, sizeof(ifinfomsg)));
  ifi->ifi_family = family;
  ifi->ifi_index = ifindex;
  return nlh;
}

void put_vlan(nlmsghdr* nlh, uint16_t flags, uint16_t vid) {
  bridge_vlan_info vi{flags, vid};
  mnl_attr_put(nlh, IFLA_BRIDGE_VLAN_INFO, sizeof vi, &vi);
}

}  // namespace

std::span<const PortOption> restored_port_options() { return kOptions; }

const PortOption* find_port_option(uint16_t type) {
  for (const auto& o : kOptions)
    if (o.type == type) return &o;
  return nullptr;
}

Result<BridgePortMessage> parse_bridge_port(const nlmsghdr* nlh) {
  BridgePortMessage msg;
  msg.deleted = nlh->nlmsg_type == RTM_DELLINK;
  auto* ifi = static_cast<const ifinfomsg*>(mnl_nlmsg_get_payload(nlh));
  BridgePort& p = msg.port;
  p.ifindex = ifi->ifi_index;
  p.flags = ifi->ifi_flags;
  if (p.ifindex <= 0) return malformed("ifindex " + std::to_string(p.ifindex));
  // The kernel's port notifications (br_ifinfo_notify) and relinkd's dumps
  // ask for the VLANs, and a port without any gets no IFLA_AF_SPEC at all:
  // absent means none. Only a message about something else (an MRP or CFM
  // change) leaves them unknown.
  bool other = false;
  const auto* attrs = static_cast<const uint8_t*>(mnl_nlmsg_get_payload_offset(nlh, sizeof(ifinfomsg)));
  const auto* tail = reinterpret_cast<const uint8_t*>(nlh) + nlh->nlmsg_len;
  bool ok = for_each_attr(attrs, static_cast<int>(tail - attrs), [&](const nlattr* a) {
    switch (mnl_attr_get_type(a)) {
      case IFLA_MASTER:
        if (mnl_attr_validate(a, MNL_TYPE_U32) < 0) return false;
        p.master = static_cast<int>(mnl_attr_get_u32(a));
        return true;
      case IFLA_PROTINFO: return parse_protinfo(a, p.options);
      case IFLA_AF_SPEC: return parse_vlans(a, p.vlans, other);
      default: return true;
    }
  });
  if (!ok) return malformed("bad attribute for ifindex " + std::to_string(p.ifindex));
  p.vlans_known = !other || !p.vlans.empty();
  return msg;
}

std::string describe_vlans(const std::vector<PortVlan>& vlans) {
  if (vlans.empty()) return "no VLANs";
  std::string out = "vlan ";
  for (size_t i = 0; i < vlans.size(); ++i) {
    // Runs of plain VLANs as ranges: a trunk port has hundreds.
    size_t j = i;
    while (j + 1 < vlans.size() && vlans[j + 1].vid == vlans[j].vid + 1 && !vlans[i].pvid && !vlans[j + 1].pvid &&
           vlans[j + 1].untagged == vlans[i].untagged)
      ++j;
    if (i) out += ", ";
    out += std::to_string(vlans[i].vid) + (j > i ? "-" + std::to_string(vlans[j].vid) : "");
    if (vlans[i].pvid) out += " pvid";
    if (vlans[i].untagged) out += " untagged";
    i = j;
  }
  return out;
}

std::string describe_options(const std::map<uint16_t, uint32_t>& options) {
  std::string out;
  for (const auto& [type, value] : options) {
    const PortOption* o = find_port_option(type);
    if (!o) continue;
    if (!out.empty()) out += ", ";
    const bool flag = o->width == 1 && o->type != IFLA_BRPORT_MULTICAST_ROUTER;
    out += std::string(o->name) + " " + (flag ? (value ? "on" : "off") : std::to_string(value));
  }
  return out;
}

bool BridgePortTable::apply(const BridgePortMessage& msg) {
  const int ifindex = msg.port.ifindex;
  if (msg.deleted) return ports_.erase(ifindex) > 0;
  // The bridge's own entry (its VLANs as "self") is not a port.
  if (msg.port.master == ifindex || msg.port.master == 0) return ports_.erase(ifindex) > 0;
  auto it = ports_.find(ifindex);
  BridgePort next = msg.port;
  // A message about MRP or CFM says nothing about the VLANs.
  if (!next.vlans_known && it != ports_.end() && it->second.master == next.master) {
    next.vlans_known = it->second.vlans_known;
    next.vlans = it->second.vlans;
  }
  if (it != ports_.end() && it->second == next) return false;
  ports_[ifindex] = std::move(next);
  return true;
}

bool BridgePortTable::replace_all(std::vector<BridgePort> ports) {
  std::map<int, BridgePort> next;
  for (auto& p : ports)
    if (p.master != 0 && p.master != p.ifindex) next[p.ifindex] = std::move(p);
  if (next == ports_) return false;
  ports_ = std::move(next);
  return true;
}

const BridgePort* BridgePortTable::find(int ifindex) const {
  auto it = ports_.find(ifindex);
  return it == ports_.end() ? nullptr : &it->second;
}

std::vector<PortVlan> vlans_to_delete(const std::vector<PortVlan>& current, const std::vector<PortVlan>& wanted) {
  std::vector<PortVlan> out;
  for (const auto& v : current)
    if (std::none_of(wanted.begin(), wanted.end(), [&](const PortVlan& w) { return w.vid == v.vid; }))
      out.push_back(v);
  return out;
}

size_t build_set_master(std::span<uint8_t> buf, uint32_t seq, int tap, int bridge) {
  nlmsghdr* nlh = put_header(buf, RTM_NEWLINK, NLM_F_ACK, seq, AF_UNSPEC, tap);
  mnl_attr_put_u32(nlh, IFLA_MASTER, static_cast<uint32_t>(bridge));
  return nlh->nlmsg_len;
}

size_t build_set_up(std::span<uint8_t> buf, uint32_t seq, int tap) {
  nlmsghdr* nlh = put_header(buf, RTM_NEWLINK, NLM_F_ACK, seq, AF_UNSPEC, tap);
  auto* ifi = static_cast<ifinfomsg*>(mnl_nlmsg_get_payload(nlh));
  ifi->ifi_flags = IFF_UP;
  ifi->ifi_change = IFF_UP;
  return nlh->nlmsg_len;
}

size_t build_port_options(std::span<uint8_t> buf, uint32_t seq, int tap, const std::map<uint16_t, uint32_t>& options) {
  nlmsghdr* nlh = put_header(buf, RTM_SETLINK, NLM_F_ACK, seq, AF_BRIDGE, tap);
  // The bridge takes IFLA_PROTINFO's port options only when it is marked nested.
  nlattr* nest = mnl_attr_nest_start(nlh, IFLA_PROTINFO | NLA_F_NESTED);
  for (const auto& [type, value] : options) {
    const PortOption* o = find_port_option(type);
    if (!o) continue;
    if (o->width == 1) mnl_attr_put_u8(nlh, type, static_cast<uint8_t>(value));
    else if (o->width == 2) mnl_attr_put_u16(nlh, type, static_cast<uint16_t>(value));
    else mnl_attr_put_u32(nlh, type, value);
  }
  mnl_attr_nest_end(nlh, nest);
  return nlh->nlmsg_len;
}

size_t build_vlans(std::span<uint8_t> buf, uint32_t seq, int tap, bool add, const std::vector<PortVlan>& vlans) {
  nlmsghdr* nlh = put_header(buf, add ? RTM_SETLINK : RTM_DELLINK, NLM_F_ACK, seq, AF_BRIDGE, tap);
  nlattr* nest = mnl_attr_nest_start(nlh, IFLA_AF_SPEC);
  auto flags_of = [add](const PortVlan& v) {
    return static_cast<uint16_t>((add && v.pvid ? BRIDGE_VLAN_INFO_PVID : 0) |
                                 (add && v.untagged ? BRIDGE_VLAN_INFO_UNTAGGED : 0));
  };
  for (size_t i = 0; i < vlans.size(); ++i) {
    size_t j = i;
    // The kernel refuses a range that holds the PVID.
    while (j + 1 < vlans.size() && vlans[j + 1].vid == vlans[j].vid + 1 && !vlans[i].pvid && !vlans[j + 1].pvid &&
           flags_of(vlans[j + 1]) == flags_of(vlans[i]))
      ++j;
    const uint16_t f = flags_of(vlans[i]);
    if (j == i) {
      put_vlan(nlh, f, vlans[i].vid);
    } else {
      put_vlan(nlh, f | BRIDGE_VLAN_INFO_RANGE_BEGIN, vlans[i].vid);
      put_vlan(nlh, f | BRIDGE_VLAN_INFO_RANGE_END, vlans[j].vid);
    }
    i = j;
  }
  mnl_attr_nest_end(nlh, nest);
  return nlh->nlmsg_len;
}

size_t build_port_dump(std::span<uint8_t> buf, uint32_t seq) {
  nlmsghdr* nlh = put_header(buf, RTM_GETLINK, NLM_F_DUMP, seq, AF_BRIDGE, 0);
  mnl_attr_put_u32(nlh, IFLA_EXT_MASK, RTEXT_FILTER_BRVLAN);
  return nlh->nlmsg_len;
}

}  // namespace relink::netlink
