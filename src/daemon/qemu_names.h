// Names relinkd gives to what it adds to QEMU, one set per generation, and
// what it reads back from QEMU to adopt a running attachment.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace relink::daemon {

std::string tap_id(const std::string& nic, uint64_t generation);     // "<nic>.tap<gen>"
std::string uplink_id(const std::string& nic, uint64_t generation);  // "<nic>.uplink<gen>"
std::string fd_name(const std::string& nic, uint64_t generation);    // "relink-<nic>-<gen>"

// One netdev line of HMP "info network": the client's name, the name of its
// peer (if any, e.g. the tap behind a hubport) and the hub it hangs off (-1
// when it is not on a hub).
struct NetClient {
  std::string name;
  std::string peer;
  int hub = -1;
};

// Parses the text of `human-monitor-command info network` (QEMU 7.2 format:
// "hub N" headers, " \ port: peer: index=..." port lines, "name: index=..."
// lines). Unknown lines are skipped.
std::vector<NetClient> parse_info_network(std::string_view text);

// What QEMU holds of one binding's generations.
struct GenerationPieces {
  bool tap = false;     // "<nic>.tap<gen>" exists
  bool uplink = false;  // "<nic>.uplink<gen>" exists
  int uplink_hub = -1;  // the hub that uplink hangs off
  bool uplink_peers_tap = false;  // the uplink's peer is this generation's tap
};
std::map<uint64_t, GenerationPieces> find_generations(const std::vector<NetClient>& clients,
                                                      const std::string& nic);

}  // namespace relink::daemon

namespace relink::daemon {

// The stream netdevs of HMP "info network" and whether each has a peer:
// QEMU 7.2 prints "net1: index=0,type=stream,unix:/path" when connected and
// "net1: index=0,type=stream," while it listens (or before a client connects).
std::map<std::string, bool> parse_stream_netdevs(std::string_view text);

// The guest NIC peered directly with `netdev` ("nic0: index=0,type=nic,..."
// followed by " \ net1: index=0,type=stream,..."), or "" if there is none.
std::string nic_of_netdev(std::string_view text, const std::string& netdev);

// The id of the passt binding's stream netdev in QEMU events
// (NETDEV_STREAM_CONNECTED / NETDEV_STREAM_DISCONNECTED carry "netdev-id").
inline constexpr const char* kStreamConnected = "NETDEV_STREAM_CONNECTED";
inline constexpr const char* kStreamDisconnected = "NETDEV_STREAM_DISCONNECTED";

}  // namespace relink::daemon
