// SPDX-License-Identifier: GPL-2.0-or-later
// Bridge ports as rtnetlink describes them (AF_BRIDGE RTM_NEWLINK/DELLINK:
// IFLA_MASTER, IFLA_PROTINFO's IFLA_BRPORT_* and the port's VLANs in
// IFLA_AF_SPEC), the table of them, and the pure builders of the requests
// that put a tap back into a bridge with those settings. No sockets here.
//
// libnl-route-3 (3.7) has a bridge API, but it knows only the port flags up
// to learning_sync (no mcast_flood, bcast_flood, neigh_suppress, isolated)
// and cannot set VLANs: so this is libmnl, like the link parser.
#pragma once

#include <linux/netlink.h>

#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "util/result.h"

namespace relink::netlink {

// One VLAN of a port (struct bridge_vlan_info, ranges expanded).
struct PortVlan {
  uint16_t vid = 0;
  bool pvid = false;      // BRIDGE_VLAN_INFO_PVID: untagged ingress lands in this VLAN
  bool untagged = false;  // BRIDGE_VLAN_INFO_UNTAGGED: egresses untagged

  bool operator==(const PortVlan&) const = default;
};

// The port options relinkd restores, by IFLA_BRPORT_* type. Only what the
// kernel reported is kept (and restored); the STP state is the kernel's.
struct PortOption {
  uint16_t type;     // IFLA_BRPORT_*
  uint8_t width;     // 1, 2 or 4 bytes
  const char* name;  // as `bridge -d link` / `ip -d link` name it
};
std::span<const PortOption> restored_port_options();
const PortOption* find_port_option(uint16_t type);

struct BridgePort {
  int ifindex = 0;
  int master = 0;  // the bridge's ifindex
  unsigned flags = 0;  // ifi_flags of the port
  std::map<uint16_t, uint32_t> options;  // IFLA_BRPORT_* type -> value (restored ones only)
  // `vlans` is the port's whole VLAN table (no IFLA_AF_SPEC: none; one with
  // only MRP or CFM in it: unknown).
  bool vlans_known = false;
  std::vector<PortVlan> vlans;  // sorted by vid

  bool operator==(const BridgePort&) const = default;
};

// One AF_BRIDGE link message about a port (or the bridge itself: ifindex == master).
struct BridgePortMessage {
  bool deleted = false;  // RTM_DELLINK: the port left its bridge
  BridgePort port;
};

// Decodes one AF_BRIDGE RTM_NEWLINK / RTM_DELLINK (the header must have
// passed framing checks). Malformed attributes yield an error.
Result<BridgePortMessage> parse_bridge_port(const nlmsghdr* nlh);

// "vlan 10 pvid untagged, 20; hairpin on, cost 100": for logs and status.
std::string describe_vlans(const std::vector<PortVlan>& vlans);
std::string describe_options(const std::map<uint16_t, uint32_t>& options);

// The ports the kernel reports, by the port's ifindex.
class BridgePortTable {
 public:
  // Returns true when the table changed.
  bool apply(const BridgePortMessage& msg);
  // After a dump: the whole table at once. Returns true when it changed.
  bool replace_all(std::vector<BridgePort> ports);
  const BridgePort* find(int ifindex) const;
  const std::map<int, BridgePort>& all() const { return ports_; }

 private:
  std::map<int, BridgePort> ports_;
};

// What a port's VLAN table must lose to become `wanted`: the VLANs it has
// that `wanted` lacks (adding `wanted` then sets the flags of the rest).
std::vector<PortVlan> vlans_to_delete(const std::vector<PortVlan>& current, const std::vector<PortVlan>& wanted);

// Requests (NLM_F_REQUEST | NLM_F_ACK), written into `buf`, which must be
// large enough (kRequestBufSize). Each returns the message's length.
inline constexpr size_t kRequestBufSize = 40960;
// RTM_NEWLINK: tap's master := bridge (`ip link set TAP master BR`).
size_t build_set_master(std::span<uint8_t> buf, uint32_t seq, int tap, int bridge);
// RTM_NEWLINK: IFF_UP on.
size_t build_set_up(std::span<uint8_t> buf, uint32_t seq, int tap);
// AF_BRIDGE RTM_SETLINK with IFLA_PROTINFO (`bridge link set`).
size_t build_port_options(std::span<uint8_t> buf, uint32_t seq, int tap, const std::map<uint16_t, uint32_t>& options);
// AF_BRIDGE RTM_SETLINK (add, with flags) or RTM_DELLINK (delete) of VLANs
// in IFLA_AF_SPEC; runs of equal flags go as ranges. `vlans` sorted by vid.
size_t build_vlans(std::span<uint8_t> buf, uint32_t seq, int tap, bool add, const std::vector<PortVlan>& vlans);
// AF_BRIDGE RTM_GETLINK dump with the VLAN tables (RTEXT_FILTER_BRVLAN).
size_t build_port_dump(std::span<uint8_t> buf, uint32_t seq);

}  // namespace relink::netlink
