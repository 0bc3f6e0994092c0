// SPDX-License-Identifier: GPL-2.0-or-later
// The plan of a reload, an add or a remove, as data: which VMs are kept,
// restarted (and which passt bindings keep their passt), started and
// stopped, and the change report.
#include "daemon/vm_plan.h"

#include <gtest/gtest.h>

namespace relink::daemon {
namespace {

config::Vm vm(const std::string& name, std::vector<std::string> nics = {"nic0"},
              std::vector<std::string> netdevs = {}) {
  config::Vm v;
  v.name = name;
  v.qmp = "/run/qemu/" + name + ".qmp";
  unsigned char last = 1;
  for (const auto& nic : nics) {
    config::MacvtapBinding b;
    b.nic = nic;
    b.parent = "eth0";
    b.mac = MacAddress{0x52, 0x54, 0, 0, static_cast<unsigned char>(name.size()), last++};
    v.macvtaps.push_back(b);
  }
  for (const auto& nd : netdevs) {
    config::PasstBinding p;
    p.netdev = nd;
    p.socket = "/run/relinkd/" + name + "-" + nd + ".sock";
    v.passts.push_back(p);
  }
  return v;
}

using Kind = VmStep::Kind;
nlohmann::json list(std::initializer_list<const char*> items) {
  nlohmann::json j = nlohmann::json::array();
  for (const char* i : items) j.push_back(i);
  return j;
}

TEST(VmPlan, UnchangedVmsAreKeptAndNothingIsReported) {
  const auto p = plan_vms({vm("a"), vm("b")}, {vm("a"), vm("b")}, false, false);
  ASSERT_EQ(p.steps.size(), 2u);
  EXPECT_EQ(p.steps[0].kind, Kind::Keep);
  EXPECT_EQ(p.steps[1].kind, Kind::Keep);
  EXPECT_TRUE(p.stop.empty());
  EXPECT_EQ(p.changes, (nlohmann::json{{"added", list({})}, {"removed", list({})}, {"changed", list({})}}));
  EXPECT_EQ(describe_changes(p.changes), "");
}

TEST(VmPlan, NewVmsStartInTheWantedOrderAndLeftOnesStop) {
  const auto p = plan_vms({vm("a"), vm("gone")}, {vm("new"), vm("a")}, false, false);
  ASSERT_EQ(p.steps.size(), 2u);
  EXPECT_EQ(p.steps[0].name, "new");
  EXPECT_EQ(p.steps[0].kind, Kind::Start);
  EXPECT_EQ(p.steps[1].kind, Kind::Keep);
  EXPECT_EQ(p.stop, std::vector<std::string>{"gone"});
  EXPECT_EQ(p.changes["added"], list({"new"}));
  EXPECT_EQ(p.changes["removed"], list({"gone"}));
  EXPECT_EQ(describe_changes(p.changes), "added new; removed gone");
}

TEST(VmPlan, AChangedVmRestartsAndItsBindingsAreReportedById) {
  config::Vm before = vm("a", {"nic0", "nic1"}, {"net1"});
  config::Vm after = vm("a", {"nic0", "nic2"}, {"net1"});
  after.macvtaps[0].mode = macvtap::Mode::Vepa;
  after.qmp = "/run/qemu/other.qmp";
  const auto p = plan_vms({before}, {after}, false, false);
  ASSERT_EQ(p.steps.size(), 1u);
  EXPECT_EQ(p.steps[0].kind, Kind::Restart);
  // The passt binding did not change: its passt keeps running.
  EXPECT_EQ(p.steps[0].carry, std::vector<std::string>{"net1"});
  EXPECT_EQ(p.changes["changed"], list({"a (qmp)", "a/nic0"}));
  EXPECT_EQ(p.changes["removed"], list({"a/nic1"}));
  EXPECT_EQ(p.changes["added"], list({"a/nic2"}));
}

TEST(VmPlan, AChangedPasstBindingIsNotCarried) {
  config::Vm before = vm("a", {}, {"net1", "net2"});
  config::Vm after = before;
  after.passts[1].args = {"--tcp-ports", "10001"};
  const auto p = plan_vms({before}, {after}, false, false);
  ASSERT_EQ(p.steps.size(), 1u);
  EXPECT_EQ(p.steps[0].carry, std::vector<std::string>{"net1"});
  EXPECT_EQ(p.changes["changed"], list({"a/net2"}));
}

TEST(VmPlan, AChangedPasstBinaryRestartsEveryVmAndCarriesNoPasst) {
  const auto p = plan_vms({vm("a", {}, {"net1"}), vm("b")}, {vm("a", {}, {"net1"}), vm("b")}, true, false);
  ASSERT_EQ(p.steps.size(), 2u);
  EXPECT_EQ(p.steps[0].kind, Kind::Restart);
  EXPECT_TRUE(p.steps[0].carry.empty());
  EXPECT_EQ(p.steps[1].kind, Kind::Restart);
  EXPECT_EQ(p.changes["changed"], list({"a/net1"}));
}

TEST(VmPlan, ALibvirtChangeIsReportedFirst) {
  const auto p = plan_vms({vm("a")}, {vm("a", {"nic0", "nic1"})}, false, true);
  EXPECT_EQ(p.changes["changed"], list({"[libvirt]"}));
  EXPECT_EQ(p.changes["added"], list({"a/nic1"}));
  EXPECT_EQ(describe_changes(p.changes), "added a/nic1; changed [libvirt]");
}

}  // namespace
}  // namespace relink::daemon
