// SPDX-License-Identifier: GPL-2.0-or-later
// release = "on-loss" for attach = "replug", end to end with the booted test
// guest (TCG) and a real QEMU: the guest's NIC is gone (in the guest and in
// QEMU) while the parent is away and back, answering, once it returns, flap
// after flap on q35 and i440fx; a carrier loss keeps the NIC; a reattach
// during the outage says the parent is gone; a paused guest and a parent
// back while the release is in flight; relinkd stopped (SIGTERM, kill -9)
// during the outage plugs the NIC back from the journal of intent.
#include <thread>

#include "test_guest.h"

namespace relink::test {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

class ReleaseOnLoss : public ::testing::Test {
 protected:
  void SetUp() override {
    RELINK_REQUIRE_ROOT();
    ASSERT_FALSE(guest.dir().empty());
    vm.nic = "net0";
    vm.attach = "replug";
    vm.extra = "release = \"on-loss\"\n";
  }
  // The launcher's QEMU with its own macvtap, adopted by relinkd, and the
  // guest up and answering.
  void boot(const std::string& machine) {
    guest.add_parent(env.ns());
    env.write_config({vm});
    env.start_qemu_direct(vm, machine, "lmv0", guest.qemu_args(machine));
    env.start_relinkd();
    ASSERT_TRUE(env.wait_state("attached", 0, vm.name, 10s, vm.nic)) << explain();
    ASSERT_TRUE(guest.wait_ready()) << explain();
    ASSERT_TRUE(guest.answers(30s)) << explain();
  }
  bool qemu_has_nic() {
    auto r = env.test_qmp(vm.name).execute("qom-get", {{"path", "/machine/peripheral/" + vm.nic}, {"property", "type"}});
    return r.contains("return");
  }
  json binding() { return env.binding(vm.name, vm.nic); }
  // The tap netdevs QEMU has (the launcher's hostnet0, relinkd's NIC.tapN).
  size_t taps() {
    size_t n = 0;
    for (const auto& c : qemu::parse_info_network(env.test_qmp(vm.name).info_network()))
      if (c.name.find("tap") != std::string::npos || c.name == "hostnet0") ++n;
    return n;
  }
  // The binding waits for its parent with the NIC out of the guest.
  bool wait_released(std::chrono::seconds timeout = 20s) {
    return wait_until(
        [&] {
          auto b = binding();
          return b.is_object() && b.value("state", "") == "waiting-parent" && b["nic_present"] == false;
        },
        timeout, 10ms);
  }
  std::string journal() { return env.dir() + "/state/intent.json"; }
  bool journal_has_entry() { return read_file(journal()).find("\"" + vm.nic + "\"") != std::string::npos; }
  std::string explain() {
    return env.explain() + "\njournal: " + read_file(journal()) + "\nguest console (tail):\n" +
           guest.console_tail(1500) + "\ninfo network:\n" + env.test_qmp(vm.name).info_network();
  }
  // The parent is deleted: the guest lets go of its NIC before the parent
  // returns; then it is back, plugged in at `gen`, and answers.
  void flap(uint64_t gen) {
    const size_t gone = guest.markers("RELINK-GUEST-LINK-GONE");
    env.ns().ip("link del p0");
    ASSERT_TRUE(wait_released()) << explain();
    EXPECT_FALSE(qemu_has_nic()) << explain();
    EXPECT_TRUE(wait_until([&] { return guest.markers("RELINK-GUEST-LINK-GONE") > gone; }, 10s, 20ms))
        << "the guest still has its NIC\n" << explain();
    EXPECT_EQ(binding().value("release", ""), "on-loss");
    // The old backend went with the release, not on the return's path.
    EXPECT_TRUE(wait_until([&] { return taps() == 0; }, 5s, 20ms)) << explain();
    guest.add_parent(env.ns());
    ASSERT_TRUE(env.wait_state("attached", gen, vm.name, 30s, vm.nic)) << explain();
    EXPECT_TRUE(qemu_has_nic());
    EXPECT_EQ(taps(), 1u) << explain();
    ASSERT_TRUE(guest.answers(30s)) << "guest unreachable after return " << gen << "\n" << explain();
    EXPECT_EQ(binding()["nic_present"], true);
  }
  void five_flaps() {
    for (uint64_t gen = 1; gen <= 5; ++gen) {
      SCOPED_TRACE("flap " + std::to_string(gen));
      flap(gen);
      if (HasFatalFailure()) return;
    }
    EXPECT_EQ(guest.markers("RELINK-GUEST-LINK-NEW"), 5u) << explain();
    EXPECT_EQ(guest.console().find("RELINK-GUEST-ERROR"), std::string::npos) << explain();
    // Timed from the parent's return, which no longer waits for the release.
    auto b = binding();
    ASSERT_TRUE(b["last_reattach_ms"].is_number()) << b.dump();
    EXPECT_LT(b["last_reattach_ms"].get<double>(), 10'000) << b.dump();
  }

  DaemonEnv env;
  TestGuest guest{env.dir() + "/console.log"};
  VmSpec vm;
};

TEST_F(ReleaseOnLoss, FiveFlapsOnQ35AndNotOnCarrierLoss) {
  boot("q35");
  // During an outage: reattach says the parent is gone; status says the
  // NIC is out.
  env.ns().ip("link del p0");
  ASSERT_TRUE(wait_released()) << explain();
  auto r = sh(relinkctl_bin() + " --socket " + env.control() + " reattach vm1 net0 2>&1");
  EXPECT_NE(r.status, 0) << r.out;
  EXPECT_NE(r.out.find("its parent p0 is gone"), std::string::npos) << r.out;
  auto text = sh(relinkctl_bin() + " --socket " + env.control() + " status 2>&1");
  EXPECT_NE(text.out.find("nic=released"), std::string::npos) << text.out;
  guest.add_parent(env.ns());
  ASSERT_TRUE(env.wait_state("attached", 1, vm.name, 30s, vm.nic)) << explain();
  ASSERT_TRUE(guest.answers(30s)) << explain();
  for (uint64_t gen = 2; gen <= 5; ++gen) {
    SCOPED_TRACE("flap " + std::to_string(gen));
    flap(gen);
    if (HasFatalFailure()) return;
  }
  // The carrier goes and comes: the NIC's link follows, nothing is released.
  const size_t gone = guest.markers("RELINK-GUEST-LINK-GONE");
  const size_t down = guest.markers("RELINK-GUEST-CARRIER 0");
  guest.peer().ip("link set p1 down");
  ASSERT_TRUE(wait_until([&] { return binding()["link"] == "down"; }, 10s, 20ms)) << "relinkd missed it\n"
                                                                                  << explain();
  ASSERT_TRUE(wait_until([&] { return guest.markers("RELINK-GUEST-CARRIER 0") > down; }, 20s, 20ms))
      << "the guest missed it\n" << explain();
  EXPECT_EQ(binding().value("state", ""), "attached");
  EXPECT_EQ(binding()["nic_present"], true);
  guest.peer().ip("link set p1 up");
  ASSERT_TRUE(guest.answers(30s)) << explain();
  EXPECT_EQ(binding().value("generation", 0u), 5u);
  EXPECT_EQ(guest.markers("RELINK-GUEST-LINK-GONE"), gone);
  EXPECT_TRUE(qemu_has_nic());
}

TEST_F(ReleaseOnLoss, FiveFlapsOnI440fx) {
  boot("pc");
  five_flaps();
}

// A paused guest cannot release: the parent returns while the release is in
// flight (nothing is plugged in beside the old NIC), and a release that
// times out backs off; both go on once the guest runs again.
TEST_F(ReleaseOnLoss, PausedGuestAndAParentBackDuringTheRelease) {
  vm.extra += "release_timeout = 2\n";
  boot("q35");
  ASSERT_TRUE(env.test_qmp(vm.name).execute("stop").contains("return"));
  env.ns().ip("link del p0");
  ASSERT_TRUE(env.wait_state("releasing", 0, vm.name, 10s, vm.nic)) << explain();
  guest.add_parent(env.ns());
  std::this_thread::sleep_for(200ms);  // the parent's return is seen (no event to wait on: nothing may change)
  // Still waiting for the release (backoff too, on a machine slow enough to pass release_timeout meanwhile).
  const std::string st = binding().value("state", "");
  EXPECT_TRUE(st == "releasing" || st == "backoff") << explain();
  EXPECT_EQ(binding().value("parent_ifindex", 0), env.ns().ifindex("p0")) << explain();
  EXPECT_EQ(env.ns().ifindex(text_of(binding(), "macvtap")), 0) << "a macvtap made before the release\n" << explain();
  ASSERT_TRUE(env.test_qmp(vm.name).execute("cont").contains("return"));
  ASSERT_TRUE(env.wait_state("attached", 1, vm.name, 30s, vm.nic)) << explain();
  ASSERT_TRUE(guest.answers(30s)) << explain();

  // Paused through the whole release timeout: backoff, with the reason.
  ASSERT_TRUE(env.test_qmp(vm.name).execute("stop").contains("return"));
  env.ns().ip("link del p0");
  ASSERT_TRUE(env.wait_state("backoff", 0, vm.name, 10s, vm.nic)) << explain();
  EXPECT_EQ(text_of(binding(), "last_error"),
            "the guest did not release net0 within 2 s: is it paused or without PCI hotplug?");
  EXPECT_TRUE(qemu_has_nic());
  ASSERT_TRUE(env.test_qmp(vm.name).execute("cont").contains("return"));
  ASSERT_TRUE(wait_released()) << explain();
  guest.add_parent(env.ns());
  ASSERT_TRUE(env.wait_state("attached", 2, vm.name, 30s, vm.nic)) << explain();
  ASSERT_TRUE(guest.answers(30s)) << explain();
  EXPECT_TRUE(env.relinkd().running());
}

// relinkd stops during the outage with the NIC released (SIGTERM, then as
// a crash would: kill -9); the next one finds the NIC's template in the
// journal and plugs it in when the parent returns.
TEST_F(ReleaseOnLoss, RestartDuringTheOutagePlugsTheNicBack) {
  boot("q35");
  for (int sig : {SIGTERM, SIGKILL}) {
    SCOPED_TRACE(sig == SIGTERM ? "SIGTERM" : "SIGKILL");
    env.ns().ip("link del p0");
    ASSERT_TRUE(wait_released()) << explain();
    ASSERT_TRUE(journal_has_entry()) << explain();
    ASSERT_NE(env.relinkd().stop(sig, 10s), -1);
    std::filesystem::remove(env.control());  // kill -9 leaves it; start_relinkd waits for a new one
    env.start_relinkd();
    ASSERT_TRUE(wait_released()) << explain();
    EXPECT_FALSE(qemu_has_nic());
    guest.add_parent(env.ns());
    ASSERT_TRUE(env.wait_state("attached", 0, vm.name, 30s, vm.nic)) << explain();
    EXPECT_EQ(binding().value("attaches", 0u), 1u) << "not plugged in by the new relinkd\n" << explain();
    ASSERT_TRUE(guest.answers(30s)) << "the guest's NIC did not come back\n" << explain();
    EXPECT_TRUE(wait_until([&] { return !journal_has_entry(); }, 5s)) << explain();
  }
  EXPECT_NE(read_file(env.log_path()).find("finishing a replug begun before"), std::string::npos) << explain();
}

}  // namespace
}  // namespace relink::test
