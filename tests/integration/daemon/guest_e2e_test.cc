// SPDX-License-Identifier: GPL-2.0-or-later
// End to end: a real guest (Debian kernel + busybox initramfs, TCG) behind a
// relinkd-managed macvtap, reached from a peer namespace. The parent is
// deleted and re-created; the guest must answer again with no help from inside.
#include <signal.h>

#include <thread>

#include "test_guest.h"

namespace relink::test {
namespace {

using namespace std::chrono_literals;

class GuestE2E : public ::testing::Test {
 protected:
  void SetUp() override {
    RELINK_REQUIRE_ROOT();
    ASSERT_FALSE(guest.dir().empty());
  }
  std::string explain() { return env.explain() + "\nguest console (tail):\n" + guest.console_tail(); }

  DaemonEnv env;
  TestGuest guest{env.dir() + "/console.log"};
  VmSpec vm;
};

TEST_F(GuestE2E, GuestAnswersAgainAfterParentIsRecreated) {
  guest.add_parent(env.ns());
  env.write_config({vm});
  env.start_qemu(vm, guest.qemu_args("e2e", TestGuest::cmdline("relink.serve=8080")));
  env.start_relinkd();
  ASSERT_TRUE(env.wait_state("attached", 1)) << explain();
  ASSERT_TRUE(guest.wait_ready()) << explain();
  ASSERT_TRUE(guest.answers(20s)) << "guest unreachable through its first macvtap\n" << explain();
  EXPECT_NE(guest.hello().find("RELINK-GUEST-HELLO tag=e2e"), std::string::npos);

  for (uint64_t gen = 1; gen <= 3; ++gen) {
    SCOPED_TRACE("reattach " + std::to_string(gen));
    env.ns().ip("link del p0");  // takes p1 and the macvtap with it
    ASSERT_TRUE(env.wait_state("waiting-parent")) << explain();
    // relinkd told the guest: its NIC lost carrier.
    ASSERT_TRUE(guest.wait_for_marker("RELINK-GUEST-CARRIER 0", gen)) << explain();
    guest.add_parent(env.ns());
    ASSERT_TRUE(env.wait_state("attached", gen + 1)) << explain();
    env.expect_attached(gen + 1);
    // ...and that it has carrier again on the new tap.
    ASSERT_TRUE(guest.wait_for_marker("RELINK-GUEST-CARRIER 1", gen)) << explain();
    ASSERT_TRUE(guest.answers(20s)) << "guest unreachable after reattach\n" << explain();
    EXPECT_NE(guest.hello().find("RELINK-GUEST-HELLO tag=e2e"), std::string::npos) << explain();
  }
  EXPECT_EQ(guest.console().find("RELINK-GUEST-ERROR"), std::string::npos) << explain();
}

// A guest behind a relinkd-supervised passt (stream-server): it gets its
// address from passt's DHCP, passt forwards host port 8080 to it, and a
// client on the host reaches it before and after passt is killed. The guest
// only listens: the new passt learns its MAC from the announcement relinkd
// asks QEMU for.
TEST_F(GuestE2E, GuestReachedThroughPasstAgainAfterPasstIsKilled) {
  env.add_passt_uplink();
  const std::string sock = env.dir() + "/vm1-net1.sock";
  DaemonEnv::write_file(env.config_path(), "[daemon]\ncontrol_socket = \"" + env.control() + "\"\nstate_dir = \"" +
                                               env.dir() + "/state\"\nnode_dir = \"" + env.dir() +
                                               "/dev\"\nlog_level = \"debug\"\n\n[[vm]]\nname = \"vm1\"\nqmp = \"" +
                                               env.qmp_path("vm1") + "\"\n[[vm.passt]]\nnetdev = \"net1\"\nsocket = \"" +
                                               sock + "\"\nargs = [\"-t\", \"8080\"]\n");
  env.start_qemu_with("vm1",
                      {"-netdev", "stream,id=net1,server=on,addr.type=unix,addr.path=" + sock, "-device",
                       "virtio-net-pci,netdev=net1,id=nic0,mac=52:54:00:12:34:56"},
                      guest.qemu_args("passt", "relink.dhcp=1 relink.serve=8080 relink.poll=0.05"));
  env.start_relinkd();
  auto passt = [&] { return env.binding("vm1", "net1"); };
  ASSERT_TRUE(wait_until([&] { return passt().value("state", "") == "running"; }, 20s, 20ms)) << explain();
  ASSERT_TRUE(guest.wait_ready()) << explain();
  // The lease comes from passt: the host's own address, as passt hands out.
  ASSERT_TRUE(guest.wait_for_marker("RELINK-GUEST-DHCP event=bound", 1)) << explain();
  EXPECT_NE(guest.console().find("RELINK-GUEST-DHCP event=bound dev=eth0 ip=192.0.2.1/24"), std::string::npos)
      << explain();
  auto hello_via_passt = [&] {
    std::string out;
    wait_until(
        [&] {
          out = env.ns().run("busybox nc -w 2 127.0.0.1 8080 </dev/null").out;
          return out.find("RELINK-GUEST-HELLO tag=passt") != std::string::npos;
        },
        20s, 100ms);
    return out;
  };
  EXPECT_NE(hello_via_passt().find("RELINK-GUEST-HELLO tag=passt"), std::string::npos) << explain();

  for (int i = 1; i <= 2; ++i) {
    SCOPED_TRACE("kill " + std::to_string(i));
    const int pid = passt().value("pid", 0);
    ASSERT_GT(pid, 0) << explain();
    std::this_thread::sleep_for(1100ms);  // a healthy run: restarted at once
    ASSERT_EQ(::kill(pid, SIGKILL), 0);
    ASSERT_TRUE(wait_until(
        [&] {
          auto b = passt();
          return b.value("state", "") == "running" && b.value("generation", 0) == i + 1;
        },
        10s, 5ms))
        << explain();
    EXPECT_NE(hello_via_passt().find("RELINK-GUEST-HELLO tag=passt"), std::string::npos)
        << "guest unreachable through the new passt\n"
        << explain();
  }
  EXPECT_EQ(guest.console().find("RELINK-GUEST-ERROR"), std::string::npos) << explain();
}

}  // namespace
}  // namespace relink::test
