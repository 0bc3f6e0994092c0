// SPDX-License-Identifier: GPL-2.0-or-later
// Pure decoding of rtnetlink link messages: bytes in, LinkMessages out.
// No sockets here, so captured fixtures and fuzzers can drive it.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "netlink/bridge_port.h"
#include "netlink/link.h"
#include "util/result.h"

namespace relink::netlink {

struct ParsedBatch {
  std::vector<LinkMessage> links;  // RTM_NEWLINK / RTM_DELLINK in order
  std::vector<BridgePortMessage> ports;  // the same of family AF_BRIDGE: bridge ports
  bool done = false;               // NLMSG_DONE seen (end of a dump)
  int error = 0;                   // positive errno from an NLMSG_ERROR with non-zero code, else 0
};

// Decodes one buffer as returned by one recv() on a NETLINK_ROUTE socket
// (one or more nlmsghdr). Messages of other types are skipped. Truncated or
// malformed messages yield an error, never a crash.
Result<ParsedBatch> parse_link_messages(std::span<const uint8_t> buf);

}  // namespace relink::netlink
