// SPDX-License-Identifier: GPL-2.0-or-later
// Putting a tap back into a bridge: master, VLANs exactly as they were, port
// options, and up. An interface at the OS boundary so that runners can be
// tested with a fake; RtnlBridgePortControl does it over rtnetlink (libmnl).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <vector>

#include "netlink/bridge_port.h"
#include "util/result.h"

struct mnl_socket;

namespace relink::netlink {

// What a port was, to be made again.
struct PortSnapshot {
  std::map<uint16_t, uint32_t> options;  // IFLA_BRPORT_* -> value
  bool vlans_known = false;              // the VLAN table below is the port's (else left as the bridge gives it)
  std::vector<PortVlan> vlans;
  bool up = false;  // the tap was up

  bool operator==(const PortSnapshot&) const = default;
};

class BridgePortControl {
 public:
  virtual ~BridgePortControl() = default;
  // Makes `tap` a port of `bridge` with `was`'s VLANs (exactly: what the
  // bridge gives a new port and `was` lacks is deleted), its options, and
  // brings it up if it was up.
  virtual Result<void> rejoin(int tap, int bridge, const PortSnapshot& was) = 0;
};

class RtnlBridgePortControl final : public BridgePortControl {
 public:
  RtnlBridgePortControl();
  ~RtnlBridgePortControl() override;
  Result<void> rejoin(int tap, int bridge, const PortSnapshot& was) override;

 private:
  Result<void> open();
  // Sends one request and waits for its ACK (1 s at most).
  Result<void> request(const uint8_t* msg, size_t len, const char* what);
  Result<std::vector<PortVlan>> port_vlans(int tap);

  struct Closer {
    void operator()(mnl_socket* s) const;
  };
  std::unique_ptr<mnl_socket, Closer> sock_;
  std::vector<uint8_t> req_, buf_;
  uint32_t seq_ = 1;
};

}  // namespace relink::netlink
