// SPDX-License-Identifier: GPL-2.0-or-later
// What relinkd knows about one host interface, and how the table of them changes.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "util/mac.h"

namespace relink::netlink {

struct LinkInfo {
  int ifindex = 0;
  std::string name;
  // IFLA_INFO_KIND ("veth", "bridge", "vlan", "macvlan", "macvtap", "bond",
  // "tun", ...), or "physical" when the kernel reports no link info.
  std::string kind;
  int parent_ifindex = 0;  // IFLA_LINK (lower device), 0 if none
  int master_ifindex = 0;  // IFLA_MASTER (bridge/bond port), 0 if none
  std::optional<MacAddress> mac;  // IFLA_ADDRESS when it is 6 bytes
  // IFLA_PERM_ADDRESS when it is 6 bytes and not all zero: the address the
  // driver read from the hardware, which survives MAC changes. Only devices
  // that have one report it (physical NICs; not veth, bridge, vlan, macvtap,
  // which get random, inherited or assigned MACs), and only since Linux 5.6.
  std::optional<MacAddress> perm_mac;
  unsigned flags = 0;             // ifi_flags (IFF_UP, IFF_RUNNING, ...)
  uint8_t operstate = 0;          // IFLA_OPERSTATE (IF_OPER_*)
  std::string macvlan_mode;       // macvtap/macvlan: "vepa" | "bridge" | "private" | "passthru" | "source"

  bool operator==(const LinkInfo&) const = default;
};

// The interface has carrier: it is up (IFF_UP) and its lower layer is up
// (IFF_LOWER_UP: the NIC has link, a veth's peer is up, a bridge has a port
// that forwards). The kernel notifies a change of either flag on RTNLGRP_LINK.
bool has_carrier(const LinkInfo& link);

// Whether the interface is a Wi-Fi one (cfg80211 gives it a "wireless" or
// "phy80211" entry in sysfs). A macvtap on a Wi-Fi station passes no
// traffic: the access point takes frames only from the station's own MAC.
bool is_wifi(const std::string& ifname, const std::string& sysfs_net = "/sys/class/net");
// The warning relinkd gives for a binding on such a parent.
std::string wifi_warning(const std::string& ifname);

// One RTM_NEWLINK / RTM_DELLINK message, decoded.
struct LinkMessage {
  bool deleted = false;  // RTM_DELLINK
  LinkInfo link;
};

enum class LinkEventType {
  Added,    // ifindex not in the table before
  Removed,  // ifindex gone
  Changed,  // same ifindex, some attribute changed (a rename sets old_name)
};

struct LinkEvent {
  LinkEventType type = LinkEventType::Added;
  LinkInfo link;         // for Removed: the last known state
  std::string old_name;  // Changed: the previous name when it was a rename, else empty
};

}  // namespace relink::netlink
