// SPDX-License-Identifier: GPL-2.0-or-later
// What one link is: up with carrier, or a Wi-Fi interface (where a macvtap passes no traffic).
#include "netlink/link.h"

#include <sys/stat.h>

#include <linux/if.h>

namespace relink::netlink {

bool is_wifi(const std::string& ifname, const std::string& sysfs_net) {
  if (ifname.empty() || ifname.find('/') != std::string::npos || ifname == "." || ifname == "..") return false;
  struct stat st {};
  const std::string dev = sysfs_net + "/" + ifname;
  return stat((dev + "/wireless").c_str(), &st) == 0 || stat((dev + "/phy80211").c_str(), &st) == 0;
}

std::string wifi_warning(const std::string& ifname) {
  return "parent " + ifname +
         " is a Wi-Fi interface: a macvtap on a Wi-Fi station passes no traffic (the access point accepts frames "
         "only from the station's own MAC); give this guest a passt backend instead";
}

bool has_carrier(const LinkInfo& link) {
  constexpr unsigned kUpWithCarrier = IFF_UP | IFF_LOWER_UP;
  return (link.flags & kUpWithCarrier) == kUpWithCarrier;
}

}  // namespace relink::netlink
