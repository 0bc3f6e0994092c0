// SPDX-License-Identifier: GPL-2.0-or-later
// attach = "replug" end to end: a real guest (Debian kernel + busybox
// initramfs, TCG) whose NIC is peered directly with a tap, as a launcher
// wires it, with the launcher's own macvtap. relinkd adopts it; when the
// parent is deleted and re-created, it re-plugs the NIC on a new macvtap and
// the guest answers again. Also: a paused guest, carrier following for both
// attach styles, a parent found by its MAC, and the host's hands off the
// macvtaps' IPv6.
#include <sys/sysmacros.h>

#include <thread>

#include "test_guest.h"

namespace relink::test {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

class Replug : public ::testing::Test {
 protected:
  void SetUp() override {
    RELINK_REQUIRE_ROOT();
    ASSERT_FALSE(guest.dir().empty());
    vm.nic = "net0";
    vm.attach = "replug";
  }
  std::vector<std::string> guest_args(const std::string& tag) {
    return guest.qemu_args(tag, TestGuest::cmdline("relink.serve=8080"));
  }
  std::string explain() {
    return env.explain() + "\nguest console (tail):\n" + guest.console_tail() + "\ninfo network:\n" +
           env.test_qmp(vm.name).info_network();
  }
  json qom(const std::string& prop) {
    auto r = env.test_qmp(vm.name).execute("qom-get", {{"path", "/machine/peripheral/" + vm.nic}, {"property", prop}});
    return r.contains("return") ? r["return"] : json(nullptr);
  }
  // What identifies the NIC to the guest: the same before and after a replug.
  json identity() {
    return {{"type", qom("type")}, {"mac", qom("mac")}, {"addr", qom("addr")}, {"parent_bus", qom("parent_bus")}};
  }
  // The tap netdevs QEMU has: exactly one, peered with the NIC.
  size_t taps() {
    size_t n = 0;
    for (const auto& c : qemu::parse_info_network(env.test_qmp(vm.name).info_network()))
      if (c.name.find("tap") != std::string::npos || c.name == "hostnet0") ++n;
    return n;
  }
  // QEMU holds the device of the macvtap relinkd reports, and no other macvtap.
  void expect_qemu_holds_current_macvtap() {
    auto b = env.binding(vm.name, vm.nic);
    const std::string mvt = text_of(b, "macvtap");
    const int ifindex = env.ns().ifindex(mvt);
    ASSERT_GT(ifindex, 0) << mvt << " missing\n" << explain();
    EXPECT_EQ(b.value("macvtap_ifindex", 0), ifindex);
    auto dev = env.ns().run("cat /sys/class/net/" + mvt + "/macvtap/tap" + std::to_string(ifindex) + "/dev");
    unsigned maj = 0, min = 0;
    ASSERT_EQ(sscanf(dev.out.c_str(), "%u:%u", &maj, &min), 2) << dev.out;
    EXPECT_TRUE(daemon::process_holds_device(env.qemu(vm.name)->pid(), makedev(maj, min)));
    DaemonEnv::expect_only_tap_fds(env.qemu(vm.name)->pid(), makedev(maj, min), vm.queues);
    auto v6 = env.ns().run("ip -6 addr show dev " + mvt);
    EXPECT_EQ(v6.out.find("inet6"), std::string::npos) << "the host configured IPv6 on " << mvt << ":\n" << v6.out;
  }
  // Deletes the parent (the macvtap goes with it) and re-creates it; the
  // binding ends attached at `gen` and the guest answers on the new NIC.
  void flap(uint64_t gen) {
    const size_t down = guest.markers("RELINK-GUEST-CARRIER 0"), gone = guest.markers("RELINK-GUEST-LINK-GONE");
    env.ns().ip("link del p0");
    ASSERT_TRUE(env.wait_state("waiting-parent", 0, vm.name, 10s, vm.nic)) << explain();
    // release = "on-return": during the outage the guest keeps its NIC, without carrier.
    ASSERT_TRUE(guest.wait_for_marker("RELINK-GUEST-CARRIER 0", down + 1)) << explain();
    EXPECT_EQ(guest.markers("RELINK-GUEST-LINK-GONE"), gone) << explain();
    EXPECT_EQ(env.binding(vm.name, vm.nic)["nic_present"], true) << explain();
    guest.add_parent(env.ns());
    ASSERT_TRUE(env.wait_state("attached", gen, vm.name, 30s, vm.nic)) << explain();
    expect_qemu_holds_current_macvtap();
    ASSERT_TRUE(guest.answers(30s)) << "guest unreachable after replug " << gen << "\n" << explain();
    EXPECT_NE(guest.hello().find("RELINK-GUEST-HELLO"), std::string::npos) << explain();
  }

  void carrier_follows(uint64_t gen);

  DaemonEnv env;
  TestGuest guest{env.dir() + "/console.log"};
  VmSpec vm;
};

TEST_F(Replug, AdoptsTheLaunchersTapThenReplugsOnQ35RootPort) {
  guest.add_parent(env.ns());
  env.write_config({vm});
  env.start_qemu_direct(vm, "q35", "lmv0", guest_args("q35"));
  env.start_relinkd();
  ASSERT_TRUE(env.wait_state("attached", 0, vm.name, 10s, vm.nic)) << explain();
  EXPECT_NE(read_file(env.log_path()).find("adopt"), std::string::npos) << explain();
  ASSERT_TRUE(guest.wait_ready()) << explain();
  ASSERT_TRUE(guest.answers(30s)) << "guest unreachable through the launcher's macvtap\n" << explain();
  // Status names the macvtap the NIC uses: the launcher's.
  auto adopted = env.binding(vm.name, vm.nic);
  EXPECT_EQ(text_of(adopted, "macvtap"), "lmv0") << adopted.dump();
  EXPECT_EQ(adopted.value("macvtap_ifindex", 0), env.ns().ifindex("lmv0")) << adopted.dump();
  const json before = identity();
  ASSERT_TRUE(before["type"].is_string()) << before.dump();
  for (uint64_t gen = 1; gen <= 3; ++gen) {
    SCOPED_TRACE("replug " + std::to_string(gen));
    flap(gen);
    EXPECT_EQ(identity(), before) << "the NIC came back different";
    EXPECT_EQ(taps(), 1u) << env.test_qmp(vm.name).info_network();
  }
  auto b = env.binding(vm.name, vm.nic);
  EXPECT_EQ(b.value("attach", ""), "replug");
  ASSERT_TRUE(b["last_release_ms"].is_number()) << b.dump();
  ASSERT_TRUE(b["last_own_ms"].is_number()) << b.dump();
  // Timed from the parent's return: the guest's release is part of it.
  EXPECT_GE(b["last_reattach_ms"].get<double>(), b["last_release_ms"].get<double>()) << b.dump();
  EXPECT_GT(b["last_own_ms"].get<double>(), 0) << b.dump();
  EXPECT_EQ(env.ns().ifindex("lmv0"), 0) << "the launcher's macvtap went with its parent";
  // And now relinkd's own, by the name it has.
  EXPECT_EQ(env.ns().ifindex(text_of(b, "macvtap")), b.value("macvtap_ifindex", -1)) << b.dump();
  EXPECT_EQ(guest.console().find("RELINK-GUEST-ERROR"), std::string::npos) << explain();
}

TEST_F(Replug, AdoptsAndReplugsOnI440fx) {
  guest.add_parent(env.ns());
  env.write_config({vm});
  env.start_qemu_direct(vm, "pc", "lmv0", guest_args("pc"));
  env.start_relinkd();
  ASSERT_TRUE(env.wait_state("attached", 0, vm.name, 10s, vm.nic)) << explain();
  ASSERT_TRUE(guest.wait_ready()) << explain();
  ASSERT_TRUE(guest.answers(30s)) << explain();
  const json before = identity();
  flap(1);
  EXPECT_EQ(identity(), before);
  EXPECT_EQ(taps(), 1u) << env.test_qmp(vm.name).info_network();
}

// A paused guest cannot release its NIC: the binding gives up after
// release_timeout with a reason, leaves nothing behind, and goes on as soon
// as the guest runs again.
TEST_F(Replug, PausedGuestTimesOutThenContinuesWhenResumed) {
  vm.extra = "release_timeout = 2\n";
  guest.add_parent(env.ns());
  env.write_config({vm});
  env.start_qemu_direct(vm, "q35", "lmv0", guest_args("paused"));
  env.start_relinkd();
  ASSERT_TRUE(env.wait_state("attached", 0, vm.name, 10s, vm.nic)) << explain();
  ASSERT_TRUE(guest.wait_ready()) << explain();
  ASSERT_TRUE(guest.answers(30s)) << explain();

  ASSERT_TRUE(env.test_qmp(vm.name).execute("stop").contains("return"));
  env.ns().ip("link del p0");
  ASSERT_TRUE(env.wait_state("waiting-parent", 0, vm.name, 10s, vm.nic)) << explain();
  guest.add_parent(env.ns());
  ASSERT_TRUE(env.wait_state("releasing", 0, vm.name, 10s, vm.nic)) << explain();
  ASSERT_TRUE(env.wait_state("backoff", 0, vm.name, 10s, vm.nic)) << explain();
  const std::string err = text_of(env.binding(vm.name, vm.nic), "last_error");
  EXPECT_EQ(err, "the guest did not release net0 within 2 s: is it paused or without PCI hotplug?");
  // Nothing was made while the old NIC is there: no macvtap of relinkd's, no new tap in QEMU.
  const std::string mvt = text_of(env.binding(vm.name, vm.nic), "macvtap");
  EXPECT_EQ(env.ns().ifindex(mvt), 0) << explain();
  EXPECT_EQ(taps(), 1u) << env.test_qmp(vm.name).info_network();
  EXPECT_TRUE(env.relinkd().running());

  ASSERT_TRUE(env.test_qmp(vm.name).execute("cont").contains("return"));
  ASSERT_TRUE(env.wait_state("attached", 1, vm.name, 30s, vm.nic)) << explain();
  expect_qemu_holds_current_macvtap();
  EXPECT_TRUE(guest.answers(30s)) << "guest unreachable after it was resumed\n" << explain();
}

// The far end of the parent's veth goes down and up: the parent loses and
// regains carrier, the guest's link follows, and nothing is re-plugged.
void Replug::carrier_follows(uint64_t gen) {
  ASSERT_TRUE(env.wait_state("attached", gen, vm.name, 10s, vm.nic)) << explain();
  ASSERT_TRUE(guest.wait_ready()) << explain();
  ASSERT_TRUE(guest.answers(30s)) << explain();
  const size_t down0 = guest.markers("RELINK-GUEST-CARRIER 0"), up0 = guest.markers("RELINK-GUEST-CARRIER 1");
  for (size_t i = 1; i <= 2; ++i) {
    guest.peer().ip("link set p1 down");
    ASSERT_TRUE(guest.wait_for_marker("RELINK-GUEST-CARRIER 0", down0 + i)) << explain();
    EXPECT_EQ(env.binding(vm.name, vm.nic)["carrier"], false) << explain();
    guest.peer().ip("link set p1 up");
    ASSERT_TRUE(guest.wait_for_marker("RELINK-GUEST-CARRIER 1", up0 + i)) << explain();
    EXPECT_EQ(env.binding(vm.name, vm.nic)["carrier"], true) << explain();
  }
  // A fast flap ends in the parent's final state, with nothing re-plugged.
  for (int i = 0; i < 5; ++i) {
    guest.peer().ip("link set p1 down");
    guest.peer().ip("link set p1 up");
  }
  std::this_thread::sleep_for(500ms);
  EXPECT_EQ(env.binding(vm.name, vm.nic)["link"], "up") << explain();
  EXPECT_EQ(env.binding(vm.name, vm.nic).value("generation", 99u), gen) << explain();
  EXPECT_TRUE(guest.answers(20s)) << explain();
}

TEST_F(Replug, GuestLinkFollowsTheParentsCarrier) {
  guest.add_parent(env.ns());
  env.write_config({vm});
  env.start_qemu_direct(vm, "q35", "lmv0", guest_args("carrier"));
  env.start_relinkd();
  carrier_follows(0);
}

TEST_F(Replug, HubAttachedGuestLinkFollowsTheParentsCarrierToo) {
  vm.attach = "hub";
  vm.nic = "nic0";
  guest.add_parent(env.ns());
  env.write_config({vm});
  env.start_qemu(vm, guest_args("hubcarrier"));
  env.start_relinkd();
  carrier_follows(1);
}

// parent_mac: the parent comes back under another name with the same MAC
// (a dock's NIC re-enumerated): relinkd follows it there.
TEST_F(Replug, ParentFoundByItsMacUnderANewName) {
  vm.attach = "hub";
  vm.nic = "nic0";
  const std::string parent_mac = "02:00:00:00:0a:01";
  vm.extra = "parent_mac = \"" + parent_mac + "\"\n";
  env.ns().ip("link add p0 address " + parent_mac + " type veth peer name q0");
  env.ns().ip("link set p0 up");
  env.ns().ip("link set q0 up");
  env.write_config({vm});
  env.start_qemu(vm);
  env.start_relinkd();
  ASSERT_TRUE(env.wait_state("attached", 1)) << env.explain();
  env.ns().ip("link del p0");
  ASSERT_TRUE(env.wait_state("waiting-parent", 0, vm.name, 10s, vm.nic)) << env.explain();
  env.ns().ip("link add eth7 address " + parent_mac + " type veth peer name q7");
  env.ns().ip("link set eth7 up");
  env.ns().ip("link set q7 up");
  ASSERT_TRUE(env.wait_state("attached", 2)) << env.explain();
  auto b = env.binding("vm1", "nic0");
  EXPECT_EQ(b.value("parent_ifindex", 0), env.ns().ifindex("eth7"));
  const std::string mvt = text_of(b, "macvtap");
  EXPECT_NE(env.ns().run("ip -o link show " + mvt).out.find("@eth7"), std::string::npos);
  EXPECT_NE(read_file(env.log_path()).find("parent is eth7 (ifindex " + std::to_string(env.ns().ifindex("eth7")) +
                                           ") by its MAC " + parent_mac),
            std::string::npos)
      << env.explain();
  // The host configured no IPv6 on relinkd's macvtap.
  std::this_thread::sleep_for(1500ms);
  EXPECT_EQ(env.ns().run("ip -6 addr show dev " + mvt).out.find("inet6"), std::string::npos);
}

}  // namespace
}  // namespace relink::test

namespace relink::test {
namespace {

// A bridge carries the MAC of its port: both match parent_mac, and the one
// named `parent` is chosen, not merely the lowest ifindex (the port).
TEST_F(Replug, AmbiguousParentMacPrefersTheNamedInterface) {
  vm.attach = "hub";
  vm.nic = "nic0";
  vm.parent = "br0";
  const std::string mac = "02:00:00:00:0b:01";
  vm.extra = "parent_mac = \"" + mac + "\"\n";
  env.ns().ip("link add pv0 address " + mac + " type veth peer name pv1");
  env.ns().ip("link add br0 type bridge");
  env.ns().ip("link set br0 address " + mac);
  env.ns().ip("link set pv0 master br0");
  for (const char* l : {"pv0", "pv1", "br0"}) env.ns().ip(std::string("link set ") + l + " up");
  ASSERT_LT(env.ns().ifindex("pv0"), env.ns().ifindex("br0"));
  env.write_config({vm});
  env.start_qemu(vm);
  env.start_relinkd();
  ASSERT_TRUE(env.wait_state("attached", 1)) << env.explain();
  EXPECT_EQ(env.binding("vm1", "nic0").value("parent_ifindex", 0), env.ns().ifindex("br0")) << env.explain();
}

}  // namespace
}  // namespace relink::test
