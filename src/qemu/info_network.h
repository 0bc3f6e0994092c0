// SPDX-License-Identifier: GPL-2.0-or-later
// Parsers for the text of QEMU's HMP "info network": the net clients, a NIC's
// directly peered backend, and the state of stream netdevs.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace relink::qemu {

// One netdev line of HMP "info network": the client's name, the name of its
// peer (if any: the tap behind a hubport, the backend of a NIC and the NIC of
// a backend), the hub it hangs off (-1 when it is not on a hub), and what the
// line says of the client itself. A multiqueue client has one line per queue.
struct NetClient {
  std::string name;
  std::string peer;
  int hub = -1;
  std::string type;  // "nic", "tap", "hubport", "user", "stream", ... ("" for a hub port's own entry)
  int index = 0;     // queue index
  // A tap given to QEMU as an fd prints exactly "fd=N": QEMU's own fd number
  // (-1 for anything else, e.g. a tap QEMU opened itself by ifname).
  int fd = -1;
};

// Parses the text of `human-monitor-command info network` (QEMU 7.2 format:
// "hub N" headers, " \ port: peer: index=..." port lines, "name: index=..."
// lines, a NIC's directly peered backend as " \ name: index=..." under the
// NIC's line). Unknown lines are skipped.
std::vector<NetClient> parse_info_network(std::string_view text);

// The backend a NIC is peered with directly (`-netdev tap,id=X,fd=N -device
// ...,netdev=X`), as "info network" shows it. QEMU keeps printing a backend
// that was netdev_del'ed while the NIC lives (the NIC is then orphaned).
struct NicPeer {
  std::string netdev;
  std::string type;
  std::vector<int> fds;  // tap: QEMU's fd of each queue, in queue order (-1: none printed)
};
// nullopt: no NIC of that name, or it has no direct peer (a hub port counts as
// no direct peer).
std::optional<NicPeer> nic_peer(const std::vector<NetClient>& clients, const std::string& nic);

// The stream netdevs of HMP "info network" and whether each has a peer:
// QEMU 7.2 prints "net1: index=0,type=stream,unix:/path" when connected and
// "net1: index=0,type=stream," while it listens (or before a client connects).
std::map<std::string, bool> parse_stream_netdevs(std::string_view text);

// The guest NIC peered directly with `netdev` ("nic0: index=0,type=nic,..."
// followed by " \ net1: index=0,type=stream,..."), or "" if there is none.
std::string nic_of_netdev(std::string_view text, const std::string& netdev);

}  // namespace relink::qemu
