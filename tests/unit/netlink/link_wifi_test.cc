// SPDX-License-Identifier: GPL-2.0-or-later
// Wi-Fi detection reads sysfs (this kernel has no mac80211_hwsim to make a
// real Wi-Fi interface): a directory standing for /sys/class/net, shaped as
// cfg80211 shapes it.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>

#include "netlink/link.h"

namespace relink::netlink {
namespace {

TEST(IsWifi, WirelessOrPhy80211EntryMarksWifi) {
  char tmpl[] = "/tmp/relink-sysnet-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  const std::string root = tmpl;
  std::filesystem::create_directories(root + "/wlp2s0/wireless");
  std::filesystem::create_directories(root + "/wlan1/phy80211");
  std::filesystem::create_directories(root + "/enp0s31f6/queues");
  EXPECT_TRUE(is_wifi("wlp2s0", root));
  EXPECT_TRUE(is_wifi("wlan1", root));
  EXPECT_FALSE(is_wifi("enp0s31f6", root));
  EXPECT_FALSE(is_wifi("missing0", root));
  EXPECT_FALSE(is_wifi("../" + std::filesystem::path(root).filename().string() + "/wlp2s0", root));
  EXPECT_FALSE(is_wifi("", root));
  std::filesystem::remove_all(root);
  // This machine's loopback is not Wi-Fi.
  EXPECT_FALSE(is_wifi("lo"));
  EXPECT_NE(wifi_warning("wlp2s0").find("give this guest a passt backend instead"), std::string::npos);
}

}  // namespace
}  // namespace relink::netlink
