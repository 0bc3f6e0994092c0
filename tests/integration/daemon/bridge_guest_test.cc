// SPDX-License-Identifier: GPL-2.0-or-later
// End to end: a hand-started QEMU (-netdev tap,ifname=...,script=no) whose
// tap is a port of a bridge, with the booted test guest, reached from a peer
// namespace through the bridge's uplink. The bridge is deleted and created
// again with its uplink put back, as NetworkManager does; relinkd puts the
// tap back ([[vm.tap]]) and the guest answers each time.
#include <thread>

#include "integration/daemon/bridge_env.h"
#include "integration/daemon/test_guest.h"

namespace relink::test {
namespace {

using namespace std::chrono_literals;

class BridgeGuest : public ::testing::Test {
 protected:
  void SetUp() override {
    RELINK_REQUIRE_ROOT();
    ASSERT_FALSE(guest.dir().empty());
  }
  std::string explain() {
    return b.env.explain() + "\nports: " + b.env.ns().run("bridge -d link show").out +
           "\nguest console (tail):\n" + guest.console_tail();
  }

  BridgeEnv b;
  TestGuest guest{b.env.dir() + "/console.log"};
};

TEST_F(BridgeGuest, GuestAnswersAfterEachBridgeRecreation) {
  DaemonEnv& env = b.env;
  b.add_bridge("br0");
  // The uplink: up0 in the bridge, its peer p1 on the other side with the peer's address.
  guest.add_parent(env.ns(), "up0");
  env.ns().ip("link set up0 master br0");
  b.write_config(b.vm_with_taps("vm1", {"tapg0"}, "br0"));
  // QEMU makes the tap itself, in relinkd's namespace; nobody's script puts it in the bridge: the test does.
  env.start_qemu_with("vm1",
                      {"-netdev", "tap,id=net0,ifname=tapg0,script=no,downscript=no", "-device",
                       "virtio-net-pci,netdev=net0,id=nic0,mac=52:54:00:12:34:56"},
                      guest.qemu_args("bridge", TestGuest::cmdline("relink.serve=8080")), "q35",
                      {"ip", "netns", "exec", env.ns().name()});
  ASSERT_TRUE(wait_until([&] { return env.ns().ifindex("tapg0") != 0; }, 10s)) << explain();
  env.ns().ip("link set tapg0 master br0");
  env.ns().ip("link set tapg0 up");
  env.start_relinkd();
  ASSERT_TRUE(b.wait_tap("vm1", "tapg0", "attached")) << explain();
  ASSERT_TRUE(guest.wait_ready()) << explain();
  ASSERT_TRUE(guest.answers(20s)) << "guest unreachable through the bridge\n" << explain();

  for (uint64_t gen = 1; gen <= 4; ++gen) {
    SCOPED_TRACE("re-creation " + std::to_string(gen));
    b.recreate_bridge("br0", "", "up0");
    ASSERT_TRUE(b.wait_tap("vm1", "tapg0", "attached", gen)) << explain();
    EXPECT_EQ(b.master_of("tapg0"), "br0");
    ASSERT_TRUE(guest.answers(20s)) << "guest unreachable after the bridge came back\n" << explain();
  }
  const auto st = b.tap_binding("vm1", "tapg0");
  EXPECT_TRUE(st["last_rejoin_ms"].is_number()) << st.dump();
  EXPECT_EQ(guest.console().find("RELINK-GUEST-ERROR"), std::string::npos) << explain();
}

}  // namespace
}  // namespace relink::test
