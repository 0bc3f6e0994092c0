// SPDX-License-Identifier: GPL-2.0-or-later
// End to end: a real guest (Debian kernel + busybox initramfs, TCG) behind a
// relinkd-managed macvtap, reached from a peer namespace. The parent is
// deleted and re-created; the guest must answer again with no help from inside.
#include <signal.h>

#include <thread>

#include "daemon_env.h"

namespace relink::test {
namespace {

using namespace std::chrono_literals;

constexpr const char* kGuestIp = "192.0.2.2";
constexpr const char* kPeerIp = "192.0.2.1";

class GuestE2E : public ::testing::Test {
 protected:
  void SetUp() override {
    RELINK_REQUIRE_ROOT();
    guest_dir_ = test_guest_dir();
    ASSERT_FALSE(guest_dir_.empty());
  }

  // Parent p0 in the host namespace; its veth peer p1 in the peer namespace
  // with the peer's address, as a switch port would be.
  void add_parent() {
    env.ns().ip("link add p0 type veth peer name p1 netns " + peer.name());
    env.ns().ip("link set p0 up");
    peer.ip("addr add " + std::string(kPeerIp) + "/24 dev p1");
    peer.ip("link set p1 up");
  }
  bool guest_answers(std::chrono::seconds timeout) {
    return wait_until([&] { return peer.run(std::string("busybox ping -c1 -W1 ") + kGuestIp).status == 0; },
                      timeout, 200ms);
  }
  std::string hello() {
    return peer.run(std::string("busybox nc -w 3 ") + kGuestIp + " 8080 </dev/null").out;
  }
  std::string console() { return read_file(env.dir() + "/console.log"); }
  // Waits until the guest console shows `marker` at least `count` times.
  bool wait_for_marker(const std::string& marker, size_t count) {
    return wait_until(
        [&] {
          const std::string c = console();
          size_t n = 0;
          for (size_t p = c.find(marker); p != std::string::npos; p = c.find(marker, p + 1)) ++n;
          return n >= count;
        },
        10s, 20ms);
  }
  std::string explain() { return env.explain() + "\nguest console (tail):\n" + DaemonEnv::tail(console(), 2000); }

  DaemonEnv env;
  Netns peer{"peer"};
  VmSpec vm;
  std::string guest_dir_;
};

TEST_F(GuestE2E, GuestAnswersAgainAfterParentIsRecreated) {
  add_parent();
  env.write_config({vm});
  const std::string kernel = std::filesystem::exists(guest_dir_ + "/vmlinux") ? "/vmlinux" : "/vmlinuz";
  env.start_qemu(vm, {"-no-reboot", "-serial", "file:" + env.dir() + "/console.log", "-kernel", guest_dir_ + kernel,
                      "-initrd", guest_dir_ + "/initramfs.cpio.gz", "-append",
                      "console=ttyS0 quiet panic=-1 relink.tag=e2e relink.ip=" + std::string(kGuestIp) +
                          "/24 relink.serve=8080 relink.poll=0.05"});
  env.start_relinkd();
  ASSERT_TRUE(env.wait_state("attached", 1)) << explain();
  ASSERT_TRUE(wait_until([&] { return console().find("RELINK-GUEST-READY") != std::string::npos; }, 120s, 100ms))
      << explain();
  ASSERT_TRUE(guest_answers(20s)) << "guest unreachable through its first macvtap\n" << explain();
  EXPECT_NE(hello().find("RELINK-GUEST-HELLO tag=e2e"), std::string::npos);

  for (uint64_t gen = 1; gen <= 3; ++gen) {
    SCOPED_TRACE("reattach " + std::to_string(gen));
    env.ns().ip("link del p0");  // takes p1 and the macvtap with it
    ASSERT_TRUE(env.wait_state("waiting-parent")) << explain();
    // relinkd told the guest: its NIC lost carrier.
    ASSERT_TRUE(wait_for_marker("RELINK-GUEST-CARRIER 0", gen)) << explain();
    add_parent();
    ASSERT_TRUE(env.wait_state("attached", gen + 1)) << explain();
    env.expect_attached(gen + 1);
    // ...and that it has carrier again on the new tap.
    ASSERT_TRUE(wait_for_marker("RELINK-GUEST-CARRIER 1", gen)) << explain();
    ASSERT_TRUE(guest_answers(20s)) << "guest unreachable after reattach\n" << explain();
    EXPECT_NE(hello().find("RELINK-GUEST-HELLO tag=e2e"), std::string::npos) << explain();
  }
  EXPECT_EQ(console().find("RELINK-GUEST-ERROR"), std::string::npos) << explain();
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
  const std::string kernel = std::filesystem::exists(guest_dir_ + "/vmlinux") ? "/vmlinux" : "/vmlinuz";
  env.start_qemu_with("vm1",
                      {"-netdev", "stream,id=net1,server=on,addr.type=unix,addr.path=" + sock, "-device",
                       "virtio-net-pci,netdev=net1,id=nic0,mac=52:54:00:12:34:56"},
                      {"-no-reboot", "-serial", "file:" + env.dir() + "/console.log", "-kernel", guest_dir_ + kernel,
                       "-initrd", guest_dir_ + "/initramfs.cpio.gz", "-append",
                       "console=ttyS0 quiet panic=-1 relink.tag=passt relink.dhcp=1 relink.serve=8080 relink.poll=0.05"});
  env.start_relinkd();
  auto passt = [&] { return env.binding("vm1", "net1"); };
  ASSERT_TRUE(wait_until([&] { return passt().value("state", "") == "running"; }, 20s, 20ms)) << explain();
  ASSERT_TRUE(wait_until([&] { return console().find("RELINK-GUEST-READY") != std::string::npos; }, 120s, 100ms))
      << explain();
  // The lease comes from passt: the host's own address, as passt hands out.
  ASSERT_TRUE(wait_for_marker("RELINK-GUEST-DHCP event=bound", 1)) << explain();
  EXPECT_NE(console().find("RELINK-GUEST-DHCP event=bound dev=eth0 ip=192.0.2.1/24"), std::string::npos)
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
  EXPECT_EQ(console().find("RELINK-GUEST-ERROR"), std::string::npos) << explain();
}

}  // namespace
}  // namespace relink::test
