// SPDX-License-Identifier: GPL-2.0-or-later
#include "daemon/qemu_names.h"

#include <gtest/gtest.h>

#include "qemu/info_network.h"
#include "support/harness.h"

namespace relink::daemon {
namespace {

using qemu::parse_info_network;

TEST(QemuNames, PerGenerationIds) {
  EXPECT_EQ(tap_id("nic0", 3), "nic0.tap3");
  EXPECT_EQ(uplink_id("nic0", 3), "nic0.uplink3");
  EXPECT_EQ(fd_name("nic0", 3), "relink-nic0-3");
}

// Captured from QEMU 7.2 (human-monitor-command "info network") with a hub 0
// holding nic0's port and relinkd's uplink3 (peer nic0.tap3), and a hub 1.
TEST(QemuNames, GenerationsInCapturedHubOutput) {
  auto clients = parse_info_network(test::read_file(std::string(RELINK_FIXTURE_DIR) + "/qemu/info_network_hub.txt"));
  ASSERT_FALSE(clients.empty());
  auto gens = find_generations(clients, "nic0");
  ASSERT_EQ(gens.size(), 1u);
  const auto& g = gens.at(3);
  EXPECT_TRUE(g.tap);
  EXPECT_TRUE(g.uplink);
  EXPECT_TRUE(g.uplink_peers_tap);
  EXPECT_EQ(g.uplink_hub, 0);
  EXPECT_TRUE(find_generations(clients, "other").empty());
}

TEST(QemuNames, StrayAndPartialGenerations) {
  std::string text =
      "hub 2\r\n"
      " \\ nic1.uplink7: nic1.tap7: index=0,type=tap,fd=30\r\n"
      " \\ nic1.uplink9: index=0,type=hubport,hub=2\r\n"
      " \\ nic1.port: nic1: index=0,type=nic,model=virtio-net-pci,macaddr=52:54:00:00:00:01\r\n"
      "nic1.tap8: index=0,type=tap,fd=31\r\n"
      "nic1.tap08: index=0,type=tap,fd=32\r\n"
      "nic1.tapx: index=0,type=tap,fd=33\r\n"
      "garbage line\r\n"
      " - filter: type=filter-dump\r\n";
  auto gens = find_generations(parse_info_network(text), "nic1");
  ASSERT_EQ(gens.size(), 3u);
  EXPECT_TRUE(gens.at(7).tap && gens.at(7).uplink && gens.at(7).uplink_peers_tap);
  EXPECT_EQ(gens.at(7).uplink_hub, 2);
  EXPECT_TRUE(gens.at(8).tap);
  EXPECT_FALSE(gens.at(8).uplink);
  EXPECT_TRUE(gens.at(9).uplink);
  EXPECT_FALSE(gens.at(9).tap);
  EXPECT_FALSE(gens.at(9).uplink_peers_tap);
}

// Captured from QEMU 7.2 (-machine pc): a NIC peered directly with the
// launcher's tap holds no generation of ours.
TEST(QemuNames, NoGenerationsBesideALaunchersTap) {
  auto clients = parse_info_network(test::read_file(std::string(RELINK_FIXTURE_DIR) + "/qemu/info_network_tap.txt"));
  ASSERT_EQ(clients.size(), 2u);
  EXPECT_TRUE(find_generations(clients, "net0").empty());
}

// Captured from QEMU 7.2 (-machine pc): among NICs wired every way, a
// leftover tap of ours with no NIC is net0's generation 3.
TEST(QemuNames, LeftoverTapInMixedWiring) {
  auto clients = parse_info_network(test::read_file(std::string(RELINK_FIXTURE_DIR) + "/qemu/info_network_mixed.txt"));
  auto gens = find_generations(clients, "net0");
  ASSERT_EQ(gens.size(), 1u);
  EXPECT_TRUE(gens.at(3).tap);
}

}  // namespace
}  // namespace relink::daemon
