// SPDX-License-Identifier: GPL-2.0-or-later
// Names relinkd gives to what it adds to QEMU, one set per generation, and
// which of them QEMU holds (read from "info network", qemu/info_network.h) to
// adopt a running attachment.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "qemu/info_network.h"

namespace relink::daemon {

std::string tap_id(const std::string& nic, uint64_t generation);     // "<nic>.tap<gen>"
std::string uplink_id(const std::string& nic, uint64_t generation);  // "<nic>.uplink<gen>"
std::string fd_name(const std::string& nic, uint64_t generation);    // "relink-<nic>-<gen>"

// What QEMU holds of one binding's generations.
struct GenerationPieces {
  bool tap = false;     // "<nic>.tap<gen>" exists
  bool uplink = false;  // "<nic>.uplink<gen>" exists
  int uplink_hub = -1;  // the hub that uplink hangs off
  bool uplink_peers_tap = false;  // the uplink's peer is this generation's tap
};
std::map<uint64_t, GenerationPieces> find_generations(const std::vector<qemu::NetClient>& clients,
                                                      const std::string& nic);

}  // namespace relink::daemon
