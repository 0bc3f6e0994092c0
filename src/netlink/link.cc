// SPDX-License-Identifier: GPL-2.0-or-later
#include "netlink/link.h"

#include <linux/if.h>

namespace relink::netlink {

bool has_carrier(const LinkInfo& link) {
  constexpr unsigned kUpWithCarrier = IFF_UP | IFF_LOWER_UP;
  return (link.flags & kUpWithCarrier) == kUpWithCarrier;
}

}  // namespace relink::netlink
