// SPDX-License-Identifier: GPL-2.0-or-later
// Taps on a bridge that is deleted and created again, with a running relinkd
// in a throwaway namespace: the ports come back exactly as they were
// (options, VLANs, up), for [[vm.tap]] bindings and for a [bridge.NAME]
// without VMs; a tap moved or taken out by hand is left alone and reported;
// a deleted tap is not made again.
#include <gtest/gtest.h>

#include <thread>

#include "integration/daemon/bridge_env.h"

namespace relink::test {
namespace {

class BridgePorts : public ::testing::Test {
 protected:
  void SetUp() override {
    RELINK_REQUIRE_ROOT();
  }
  BridgeEnv b;
  DaemonEnv& env = b.env;
};

// Every option bridge(8) can set on a port, away from its default.
const char* kPortOptions =
    "isolated on hairpin on learning off cost 42 priority 7 flood off mcast_flood off bcast_flood off "
    "neigh_suppress on guard on root_block on fastleave on mcast_to_unicast on";

TEST_F(BridgePorts, PortOptionsAreRestoredExactly) {
  b.add_bridge("br0");
  b.add_tap("tap0", "br0");
  b.add_tap("tap1", "br0");
  env.ns().run_ok("bridge link set dev tap0 " + std::string(kPortOptions));
  env.ns().ip("link set tap1 down");
  b.write_config(b.vm_with_taps("vm1", {"tap0", "tap1"}, "br0"));
  env.start_relinkd();
  ASSERT_TRUE(b.wait_tap("vm1", "tap0", "attached")) << env.explain();
  ASSERT_TRUE(b.wait_tap("vm1", "tap1", "attached")) << env.explain();
  const auto before0 = b.port("tap0"), before1 = b.port("tap1");
  ASSERT_TRUE(before0.is_object());
  EXPECT_EQ(before0.value("isolated", false), true) << before0.dump();
  // Three times: each re-creation starts from what the last one restored.
  for (uint64_t gen = 1; gen <= 3; ++gen) {
    b.recreate_bridge("br0");
    ASSERT_TRUE(b.wait_tap("vm1", "tap0", "attached", gen)) << env.explain();
    ASSERT_TRUE(b.wait_tap("vm1", "tap1", "attached", gen)) << env.explain();
    EXPECT_EQ(b.port("tap0"), before0) << "round " << gen;
    // Down stays down: only a tap that was up is brought up.
    EXPECT_EQ(b.port("tap1"), before1) << "round " << gen;
  }
  const auto st = b.tap_binding("vm1", "tap0");
  EXPECT_EQ(st.value("rejoins", 0u), 3u);
  EXPECT_TRUE(st["last_rejoin_ms"].is_number()) << st.dump();
  EXPECT_TRUE(st["last_rejoin_at"].is_number()) << st.dump();
  EXPECT_EQ(st["port_options"].value("isolated", 0u), 1u) << st.dump();
  // relinkctl's table and metrics show it too.
  auto table = sh(relinkctl_bin() + " --socket " + env.control() + " status");
  EXPECT_NE(table.out.find("bridge  tap0"), std::string::npos) << table.out;
  auto metrics = sh(relinkctl_bin() + " --socket " + env.control() + " metrics");
  EXPECT_NE(metrics.out.find("relink_recovery_seconds_count{kind=\"bridge\"} 6"), std::string::npos) << metrics.out;
  EXPECT_NE(metrics.out.find("relink_bindings{kind=\"bridge\",state=\"attached\"} 2"), std::string::npos)
      << metrics.out;
}

TEST_F(BridgePorts, VlanFilteringBridgeIsRestoredExactly) {
  if (!kernel_has_vlan_filtering())
    GTEST_SKIP() << "this kernel has no bridge VLAN filtering (CONFIG_BRIDGE_VLAN_FILTERING)";
  b.add_bridge("br0", "vlan_filtering 1");
  b.add_tap("tap0", "br0");
  // PVID 10 untagged, 20-22 tagged, 30 untagged; the default VLAN 1 gone.
  env.ns().run_ok("bridge vlan add dev tap0 vid 10 pvid untagged && bridge vlan del dev tap0 vid 1 && "
                  "bridge vlan add dev tap0 vid 20-22 && bridge vlan add dev tap0 vid 30 untagged && "
                  "bridge link set dev tap0 isolated on hairpin on learning off");
  b.write_config(b.vm_with_taps("vm1", {"tap0"}, "br0"));
  env.start_relinkd();
  ASSERT_TRUE(b.wait_tap("vm1", "tap0", "attached")) << env.explain();
  const auto vlans = b.vlans("tap0"), port = b.port("tap0");
  ASSERT_FALSE(vlans.is_null());
  for (uint64_t gen = 1; gen <= 2; ++gen) {
    b.recreate_bridge("br0", "vlan_filtering 1");
    ASSERT_TRUE(b.wait_tap("vm1", "tap0", "attached", gen)) << env.explain();
    EXPECT_EQ(b.vlans("tap0"), vlans) << "round " << gen;
    EXPECT_EQ(b.port("tap0"), port) << "round " << gen;
  }
}

// [bridge.br0] with no VM: every tap of the bridge is followed, the uplink is not.
TEST_F(BridgePorts, TapsOnlyBridgeRejoins) {
  b.add_bridge("br0");
  env.add_veth_parent("up0");
  env.ns().ip("link set up0 master br0");
  b.add_tap("tap0", "br0");
  b.add_tap("tap1", "br0");
  env.ns().run_ok("bridge link set dev tap1 hairpin on cost 9");
  b.write_config("[bridge.br0]\nfollow_taps = true\n");
  env.start_relinkd();
  ASSERT_TRUE(b.wait_tap("bridge:br0", "tap0", "attached")) << env.explain();
  ASSERT_TRUE(b.wait_tap("bridge:br0", "tap1", "attached")) << env.explain();
  const auto before = b.port("tap1");
  for (uint64_t gen = 1; gen <= 3; ++gen) {
    b.recreate_bridge("br0", "", "up0");
    ASSERT_TRUE(b.wait_tap("bridge:br0", "tap0", "attached", gen)) << env.explain();
    ASSERT_TRUE(b.wait_tap("bridge:br0", "tap1", "attached", gen)) << env.explain();
    EXPECT_EQ(b.master_of("tap0"), "br0");
    EXPECT_EQ(b.port("tap1"), before);
  }
  // A tap made later is followed as soon as it is a port.
  b.add_tap("tap2", "br0");
  ASSERT_TRUE(b.wait_tap("bridge:br0", "tap2", "attached")) << env.explain();
  auto st = env.status();
  for (const auto& v : st["vms"])
    if (v["name"] == "bridge:br0") {
      EXPECT_EQ(v["bindings"].size(), 3u) << "the uplink is not a tap: " << v.dump();
      EXPECT_EQ(v.value("source", ""), "bridge");
    }
  // A deleted tap is dropped, and not made again when the bridge comes back.
  env.ns().ip("link del tap2");
  ASSERT_TRUE(wait_until([&] { return b.tap_binding("bridge:br0", "tap2").is_null(); }, std::chrono::seconds(5)))
      << env.explain();
  b.recreate_bridge("br0", "", "up0");
  ASSERT_TRUE(b.wait_tap("bridge:br0", "tap0", "attached", 4)) << env.explain();
  EXPECT_EQ(env.ns().ifindex("tap2"), 0);
  // relinkctl reattach works on it like on any VM.
  env.ns().ip("link set tap0 nomaster");
  auto r = sh(relinkctl_bin() + " --socket " + env.control() + " reattach bridge:br0 tap0");
  EXPECT_EQ(r.status, 0) << r.out;
  EXPECT_EQ(b.master_of("tap0"), "br0");
}

// A tap moved to another bridge by hand, or taken out by hand, is left
// where it is and reported; a deleted one is not made again.
TEST_F(BridgePorts, HandMadeChangesAreLeftAlone) {
  b.add_bridge("br0");
  b.add_bridge("br1");
  for (const char* t : {"tap0", "tap1", "tap2", "tap3"}) b.add_tap(t, "br0");
  b.write_config(b.vm_with_taps("vm1", {"tap0", "tap1", "tap2", "tap3"}, "br0"));
  env.start_relinkd();
  for (const char* t : {"tap0", "tap1", "tap2", "tap3"}) ASSERT_TRUE(b.wait_tap("vm1", t, "attached")) << env.explain();

  env.ns().ip("link set tap1 master br1");
  env.ns().ip("link set tap2 nomaster");
  env.ns().ip("link del tap3");
  ASSERT_TRUE(b.wait_tap("vm1", "tap1", "moved")) << env.explain();
  ASSERT_TRUE(b.wait_tap("vm1", "tap3", "tap-gone")) << env.explain();
  // Taken out of a live bridge counts as by hand after a grace period.
  ASSERT_TRUE(b.wait_tap("vm1", "tap2", "detached")) << env.explain();
  std::this_thread::sleep_for(std::chrono::milliseconds(1300));
  auto moved = b.tap_binding("vm1", "tap1");
  EXPECT_NE(moved.value("warning", "").find("tap1 is a port of br1"), std::string::npos) << moved.dump();
  EXPECT_NE(b.log().find("vm1/tap1: tap tap1 is a port of br1, not of br0: left alone"), std::string::npos) << b.log();
  auto table = sh(relinkctl_bin() + " --socket " + env.control() + " status");
  EXPECT_NE(table.out.find("vm1/tap1: warning: tap tap1 is a port of br1"), std::string::npos) << table.out;
  EXPECT_NE(b.tap_binding("vm1", "tap2").value("warning", "").find("taken out of br0, which still exists"),
            std::string::npos)
      << env.explain();

  b.recreate_bridge("br0");
  ASSERT_TRUE(b.wait_tap("vm1", "tap0", "attached", 1)) << env.explain();
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_EQ(b.master_of("tap1"), "br1");
  EXPECT_EQ(b.master_of("tap2"), "");
  EXPECT_EQ(env.ns().ifindex("tap3"), 0);
  EXPECT_EQ(b.tap_binding("vm1", "tap1").value("state", ""), "moved");
  EXPECT_EQ(b.tap_binding("vm1", "tap2").value("state", ""), "detached");
  EXPECT_EQ(b.tap_binding("vm1", "tap3").value("state", ""), "tap-gone");
  EXPECT_EQ(b.tap_binding("vm1", "tap1").value("generation", 9u), 0u);
  // By hand, relinkctl reattach puts a moved tap back.
  auto r = sh(relinkctl_bin() + " --socket " + env.control() + " reattach vm1 tap1");
  EXPECT_EQ(r.status, 0) << r.out;
  EXPECT_EQ(b.master_of("tap1"), "br0");
  EXPECT_TRUE(b.wait_tap("vm1", "tap1", "attached", 1)) << env.explain();
  // A reattach of a deleted tap says why not.
  r = sh(relinkctl_bin() + " --socket " + env.control() + " reattach vm1 tap3");
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.out.find("tap3 does not exist"), std::string::npos) << r.out;
}

// A reload that drops a [[vm.tap]] stops following it (its VM removed it):
// the next re-creation leaves it out.
TEST_F(BridgePorts, ATapTheVmRemovedIsDropped) {
  b.add_bridge("br0");
  b.add_tap("tap0", "br0");
  b.add_tap("tap1", "br0");
  b.write_config(b.vm_with_taps("vm1", {"tap0", "tap1"}, "br0"));
  env.start_relinkd();
  ASSERT_TRUE(b.wait_tap("vm1", "tap1", "attached")) << env.explain();
  b.write_config(b.vm_with_taps("vm1", {"tap0"}, "br0"));
  auto r = sh(relinkctl_bin() + " --socket " + env.control() + " reload");
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_TRUE(b.tap_binding("vm1", "tap1").is_null());
  b.recreate_bridge("br0");
  ASSERT_TRUE(b.wait_tap("vm1", "tap0", "attached", 1)) << env.explain();
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_EQ(b.master_of("tap1"), "");
}

}  // namespace
}  // namespace relink::test
