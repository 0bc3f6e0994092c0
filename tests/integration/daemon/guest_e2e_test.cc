// End to end: a real guest (Debian kernel + busybox initramfs, TCG) behind a
// relinkd-managed macvtap, reached from a peer namespace. The parent is
// deleted and re-created; the guest must answer again with no help from inside.
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
    guest_dir_ = binary_dir() + "/guest";
    auto r = sh("bash " + source_dir() + "/tests/guest/build-guest.sh " + guest_dir_);
    ASSERT_EQ(r.status, 0) << "building the test guest failed:\n" << r.out;
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

}  // namespace
}  // namespace relink::test
