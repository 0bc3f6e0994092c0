// SPDX-License-Identifier: GPL-2.0-or-later
// BridgePortRunner and a [bridge.NAME]'s VM over fake link tables and a fake
// re-join: what a port had is what it gets back, a failed re-join backs off,
// the kernel's echoes of a re-join are not taken as the port's settings, and
// a deleted tap is dropped.
#include <linux/if.h>
#include <linux/if_link.h>

#include <gtest/gtest.h>

#include <map>

#include "daemon/bridge_taps.h"
#include "support/fake_qmp.h"
#include "support/fake_services.h"

namespace relink::daemon {
namespace {

// Links by name and ifindex, and bridge ports, as a test sets them.
class TableLinks final : public Links {
 public:
  int resolve_parent(const config::MacvtapBinding&) const override { return 0; }
  const netlink::LinkInfo* link(int ifindex) const override {
    auto it = links.find(ifindex);
    return it == links.end() ? nullptr : &it->second;
  }
  const netlink::LinkInfo* link_by_name(const std::string& name) const override {
    for (const auto& [i, l] : links)
      if (l.name == name) return &l;
    return nullptr;
  }
  const netlink::BridgePort* bridge_port(int ifindex) const override {
    auto it = ports.find(ifindex);
    return it == ports.end() ? nullptr : &it->second;
  }
  const std::map<int, netlink::BridgePort>& bridge_ports() const override { return ports; }
  void queue_attach(MacvtapRunner&, const engine::Attach&) override {}

  void add(int ifindex, const std::string& name, const std::string& kind, int master = 0) {
    netlink::LinkInfo l;
    l.ifindex = ifindex;
    l.name = name;
    l.kind = kind;
    l.master_ifindex = master;
    l.flags = IFF_UP;
    links[ifindex] = l;
  }
  // The tap becomes a port of `bridge` with these settings, as the kernel reports it.
  void port(int tap, int bridge, std::map<uint16_t, uint32_t> options, std::vector<netlink::PortVlan> vlans) {
    links[tap].master_ifindex = bridge;
    ports[tap] = netlink::BridgePort{tap, bridge, IFF_UP, std::move(options), true, std::move(vlans)};
  }
  // The bridge deleted: its ports left it.
  void delete_bridge(int bridge) {
    links.erase(bridge);
    for (auto it = ports.begin(); it != ports.end();)
      if (it->second.master == bridge) {
        links[it->first].master_ifindex = 0;
        it = ports.erase(it);
      } else {
        ++it;
      }
  }
  std::map<int, netlink::LinkInfo> links;
  std::map<int, netlink::BridgePort> ports;
};

// Records re-joins; the next one fails while `fail` is set.
class FakeControl final : public netlink::BridgePortControl {
 public:
  Result<void> rejoin(int tap, int bridge, const netlink::PortSnapshot& was) override {
    calls.push_back({tap, bridge, was});
    if (fail) return Error{EBUSY, "device busy"};
    return ok();
  }
  struct Call {
    int tap, bridge;
    netlink::PortSnapshot was;
  };
  std::vector<Call> calls;
  bool fail = false;
};

class BridgePortRunnerTest : public ::testing::Test {
 protected:
  BridgePortRunnerTest() {
    env.services.links = &links;
    env.services.bridge_ports = &control;
    links.add(10, "br0", "bridge");
    links.add(7, "tap0", "tun");
    links.add(8, "eth0", "physical");
    links.port(7, 10, kOptions, kVlans);
    links.port(8, 10, {}, {});
  }
  void update() {
    vm->links_changed();
    for (auto& t : vm->taps()) t->observe();
  }
  BridgePortRunner& tap0() { return *vm->find_tap("tap0"); }

  const std::map<uint16_t, uint32_t> kOptions = {{IFLA_BRPORT_ISOLATED, 1}, {IFLA_BRPORT_COST, 42}};
  const std::vector<netlink::PortVlan> kVlans = {{10, true, true}, {20, false, false}};
  test::FakeServices env;
  TableLinks links;
  FakeControl control;
  std::unique_ptr<BridgeTapsVm> vm;
};

TEST_F(BridgePortRunnerTest, FollowsTapsOfTheBridgeAndRestoresThem) {
  vm = std::make_unique<BridgeTapsVm>(config::Bridge{"br0", true}, env.services, [](const std::string&) { return false; });
  // The uplink is no tap: not followed.
  ASSERT_EQ(vm->taps().size(), 1u);
  EXPECT_EQ(tap0().engine().state(), engine::PortState::Attached);
  EXPECT_EQ(tap0().saved().options, kOptions);
  EXPECT_EQ(tap0().saved().vlans, kVlans);
  EXPECT_TRUE(tap0().saved().up);

  links.delete_bridge(10);
  update();
  EXPECT_EQ(tap0().engine().state(), engine::PortState::WaitingBridge);
  EXPECT_EQ(tap0().saved().vlans, kVlans);  // kept while away
  links.add(11, "br0", "bridge");
  update();
  ASSERT_EQ(control.calls.size(), 1u);
  EXPECT_EQ(control.calls[0].tap, 7);
  EXPECT_EQ(control.calls[0].bridge, 11);
  EXPECT_EQ(control.calls[0].was.options, kOptions);
  EXPECT_EQ(control.calls[0].was.vlans, kVlans);
  EXPECT_TRUE(control.calls[0].was.up);
  EXPECT_EQ(tap0().engine().state(), engine::PortState::Attached);
  const auto st = tap0().status();
  EXPECT_EQ(st["state"], "attached");
  EXPECT_EQ(st["generation"], 1u);
  EXPECT_EQ(st["rejoins"], 1u);
  EXPECT_TRUE(st["last_rejoin_ms"].is_number());
  EXPECT_EQ(st["vlans"].size(), 2u);
  EXPECT_EQ(st["port_options"]["isolated"], 1u);

  // The kernel's notifications of the re-join's steps (its default VLAN
  // first) arrive after it: they are not the port's settings.
  links.port(7, 11, {{IFLA_BRPORT_ISOLATED, 0}, {IFLA_BRPORT_COST, 2}}, {{1, true, true}});
  update();
  EXPECT_EQ(tap0().saved().vlans, kVlans);
  // Once the port shows what was restored, later changes are followed again.
  links.port(7, 11, kOptions, kVlans);
  update();
  links.port(7, 11, kOptions, {{30, true, false}});
  update();
  EXPECT_EQ(tap0().saved().vlans, (std::vector<netlink::PortVlan>{{30, true, false}}));
}

TEST_F(BridgePortRunnerTest, FailedRejoinBacksOffAndDeletedTapIsDropped) {
  vm = std::make_unique<BridgeTapsVm>(config::Bridge{"br0", true}, env.services, [](const std::string&) { return false; });
  links.delete_bridge(10);
  update();
  control.fail = true;
  links.add(11, "br0", "bridge");
  update();
  ASSERT_EQ(control.calls.size(), 1u);
  EXPECT_EQ(tap0().engine().state(), engine::PortState::Backoff);
  EXPECT_EQ(tap0().status()["last_error"], "tap0 into br0: device busy");
  // The retry comes from the timer, 100 ms later.
  control.fail = false;
  ASSERT_TRUE(test::run_until(env.loop.get(), [&] { return control.calls.size() == 2; }, std::chrono::seconds(2)));
  EXPECT_EQ(tap0().engine().state(), engine::PortState::Attached);
  // Deleted: dropped, never made again.
  links.links.erase(7);
  links.ports.erase(7);
  update();
  EXPECT_TRUE(vm->taps().empty());
  EXPECT_TRUE(vm->status()["bindings"].empty());
}

TEST_F(BridgePortRunnerTest, ATapAVmFollowsIsThatVms) {
  bool owned = false;
  vm = std::make_unique<BridgeTapsVm>(config::Bridge{"br0", true}, env.services,
                                      [&](const std::string& t) { return owned && t == "tap0"; });
  ASSERT_EQ(vm->taps().size(), 1u);
  owned = true;
  update();
  EXPECT_TRUE(vm->taps().empty());
  EXPECT_FALSE(vm->qemu_args());
  EXPECT_EQ(vm->status()["source"], "bridge");
}

}  // namespace
}  // namespace relink::daemon
