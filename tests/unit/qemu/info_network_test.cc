// SPDX-License-Identifier: GPL-2.0-or-later
#include "qemu/info_network.h"

#include <gtest/gtest.h>

#include "support/harness.h"

namespace relink::qemu {
namespace {

// Captured from QEMU 7.2 (human-monitor-command "info network") with a hub 0
// holding nic0's port and relinkd's uplink3 (peer nic0.tap3), and a hub 1.
TEST(InfoNetwork, ParsesCapturedHubOutput) {
  auto text = test::read_file(std::string(RELINK_FIXTURE_DIR) + "/qemu/info_network_hub.txt");
  ASSERT_FALSE(text.empty());
  auto clients = parse_info_network(text);
  auto find = [&](const std::string& n) -> const NetClient* {
    for (const auto& c : clients)
      if (c.name == n) return &c;
    return nullptr;
  };
  ASSERT_NE(find("nic0.uplink3"), nullptr);
  EXPECT_EQ(find("nic0.uplink3")->hub, 0);
  EXPECT_EQ(find("nic0.uplink3")->peer, "nic0.tap3");
  ASSERT_NE(find("nic0.tap3"), nullptr);
  EXPECT_EQ(find("nic0.tap3")->hub, -1);
  ASSERT_NE(find("nic0.port"), nullptr);
  EXPECT_EQ(find("nic0.port")->peer, "nic0");
  ASSERT_NE(find("other.port"), nullptr);
  EXPECT_EQ(find("other.port")->hub, 1);
}

// Captured from QEMU 7.2 (-machine pc): a virtio NIC peered directly with a
// tap given as fd 3, the way libvirt and launch scripts wire a macvtap.
TEST(InfoNetwork, DirectlyPeeredTap) {
  auto clients =
      parse_info_network(test::read_file(std::string(RELINK_FIXTURE_DIR) + "/qemu/info_network_tap.txt"));
  ASSERT_EQ(clients.size(), 2u);
  EXPECT_EQ(clients[0].name, "net0");
  EXPECT_EQ(clients[0].type, "nic");
  EXPECT_EQ(clients[0].peer, "hostnet0");
  EXPECT_EQ(clients[0].fd, -1);
  EXPECT_EQ(clients[1].name, "hostnet0");
  EXPECT_EQ(clients[1].type, "tap");
  EXPECT_EQ(clients[1].peer, "net0");
  EXPECT_EQ(clients[1].fd, 3);
  EXPECT_EQ(clients[1].hub, -1);
  auto p = nic_peer(clients, "net0");
  ASSERT_TRUE(p);
  EXPECT_EQ(p->netdev, "hostnet0");
  EXPECT_EQ(p->type, "tap");
  EXPECT_EQ(p->fds, std::vector<int>{3});
  EXPECT_FALSE(nic_peer(clients, "hostnet0"));
  EXPECT_FALSE(nic_peer(clients, "net1"));
}

// Captured from QEMU 7.2 (-machine q35, the NIC on a pcie-root-port): a
// 4-queue tap (fds=3:4:5:6): one NIC line and one tap line per queue.
TEST(InfoNetwork, MultiqueueTap) {
  auto clients =
      parse_info_network(test::read_file(std::string(RELINK_FIXTURE_DIR) + "/qemu/info_network_tap_mq.txt"));
  ASSERT_EQ(clients.size(), 8u);
  EXPECT_EQ(clients[6].name, "net0");
  EXPECT_EQ(clients[6].index, 3);
  EXPECT_EQ(clients[7].index, 3);
  EXPECT_EQ(clients[7].fd, 6);
  auto p = nic_peer(clients, "net0");
  ASSERT_TRUE(p);
  EXPECT_EQ(p->netdev, "hostnet0");
  EXPECT_EQ(p->type, "tap");
  EXPECT_EQ(p->fds, (std::vector<int>{3, 4, 5, 6}));
}

// Captured from QEMU 7.2 (-machine pc): an e1000 on hub 0, a virtio NIC on a
// tap, a leftover tap of ours with no NIC, a NIC with no backend, and a NIC
// whose user backend was netdev_del'ed (QEMU still prints it as the peer).
TEST(InfoNetwork, MixedWiring) {
  auto clients =
      parse_info_network(test::read_file(std::string(RELINK_FIXTURE_DIR) + "/qemu/info_network_mixed.txt"));
  auto p = nic_peer(clients, "net0");
  ASSERT_TRUE(p);
  EXPECT_EQ(p->netdev, "hostnet0");
  EXPECT_EQ(p->fds, std::vector<int>{3});
  EXPECT_FALSE(nic_peer(clients, "nic1")) << "a hub port is not a direct peer";
  EXPECT_FALSE(nic_peer(clients, "nic9")) << "no backend";
  auto u = nic_peer(clients, "nic2");
  ASSERT_TRUE(u);
  EXPECT_EQ(u->netdev, "u2");
  EXPECT_EQ(u->type, "user");
  EXPECT_EQ(u->fds, std::vector<int>{-1});
  for (const auto& c : clients) {
    if (c.name == "net0.tap3") {
      EXPECT_EQ(c.fd, 13);
      EXPECT_TRUE(c.peer.empty());
    }
    if (c.name == "nic1") {
      EXPECT_EQ(c.type, "nic");
      EXPECT_EQ(c.peer, "nic1.port");
    }
  }
}

TEST(InfoNetwork, TapFdOnlyFromAnExactFdField) {
  auto clients = parse_info_network(
      "n0: index=0,type=nic,model=virtio-net-pci,macaddr=52:54:00:00:00:01\r\n"
      " \\ t0: index=0,type=tap,ifname=x,fd=7,script=no,downscript=no\r\n"
      "n1: index=0,type=nic,model=virtio-net-pci,macaddr=52:54:00:00:00:02\r\n"
      " \\ t1: index=0,type=tap,fd=9x\r\n"
      "n2: index=0,type=nic,model=virtio-net-pci,macaddr=52:54:00:00:00:03\r\n"
      " \\ t2: index=0,type=stream,fd=5\r\n"
      "n3: index=0,type=nic,model=virtio-net-pci,macaddr=52:54:00:00:00:04\r\n"
      " \\ t3: index=x,type=tap,fd=-4\r\n");
  for (const char* n : {"n0", "n1", "n2", "n3"}) {
    auto p = nic_peer(clients, n);
    ASSERT_TRUE(p) << n;
    EXPECT_EQ(p->fds, std::vector<int>{-1}) << n;
  }
}

TEST(InfoNetwork, GarbageNeverCrashes) {
  for (const char* t : {"", "\n\n", "hub\n", "hub x\n \\ : index=", ": : : index=0", "\\ a: b: c: index=0"})
    (void)parse_info_network(t);
  for (const char* t : {"a: index=", "a: index=1", "a: index=1,type=", " \\ b: index=0,type=tap,fd=", "a: index=99999999999,type=nic,\n \\ b: index=99999999999,type=tap,fd=3"}) {
    auto clients = parse_info_network(t);
    (void)nic_peer(clients, "a");
  }
  auto c = parse_info_network("\\ a: b: c: index=0");
  EXPECT_FALSE(c.empty());
}

// Captured from QEMU 7.2: a virtio NIC peered with a stream netdev
// (-netdev stream,server=on), once with a client connected, once listening.
TEST(StreamNetdevs, ConnectedAndListeningAsQemuPrintsThem) {
  const std::string dir = std::string(RELINK_FIXTURE_DIR) + "/qemu/";
  auto connected = parse_stream_netdevs(test::read_file(dir + "info_network_stream_connected.txt"));
  ASSERT_EQ(connected.size(), 1u);
  EXPECT_TRUE(connected.at("net1"));
  auto listening = parse_stream_netdevs(test::read_file(dir + "info_network_stream_listening.txt"));
  ASSERT_EQ(listening.size(), 1u);
  EXPECT_FALSE(listening.at("net1"));
  // Hubs and taps are not stream netdevs.
  EXPECT_TRUE(parse_stream_netdevs(test::read_file(dir + "info_network_hub.txt")).empty());
  EXPECT_TRUE(parse_stream_netdevs("").empty());
  // A top-level stream netdev (no NIC peer) counts too.
  auto top = parse_stream_netdevs("net9: index=0,type=stream,unix:/x\r\n");
  EXPECT_TRUE(top.at("net9"));
}

TEST(StreamNetdevs, NicOfNetdev) {
  const std::string dir = std::string(RELINK_FIXTURE_DIR) + "/qemu/";
  EXPECT_EQ(nic_of_netdev(test::read_file(dir + "info_network_stream_connected.txt"), "net1"), "nic1");
  EXPECT_EQ(nic_of_netdev(test::read_file(dir + "info_network_stream_listening.txt"), "net1"), "nic1");
  EXPECT_EQ(nic_of_netdev(test::read_file(dir + "info_network_stream_listening.txt"), "net2"), "");
  // Hub ports are not a NIC's direct peer.
  EXPECT_EQ(nic_of_netdev(test::read_file(dir + "info_network_hub.txt"), "nic0.tap3"), "");
  const std::string two =
      "nicA: index=0,type=nic,model=virtio-net-pci,macaddr=52:54:00:00:00:01\r\n \\ netA: index=0,type=stream,\r\n"
      "nicB: index=0,type=nic,model=virtio-net-pci,macaddr=52:54:00:00:00:02\r\n \\ netB: index=0,type=stream,unix:/b\r\n";
  EXPECT_EQ(nic_of_netdev(two, "netA"), "nicA");
  EXPECT_EQ(nic_of_netdev(two, "netB"), "nicB");
}

}  // namespace
}  // namespace relink::qemu
