// SPDX-License-Identifier: GPL-2.0-or-later
// A QMP VM against the scripted fake QMP server, a fake macvtap factory and
// fake links, no root: a connection probes and attaches its bindings over
// QMP, an unasked DEVICE_DELETED is checked before it counts, a lost session
// takes the bindings offline, and status says so.
#include "daemon/qmp_vm.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

#include "passt/process.h"
#include "support/fake_services.h"
#include "support/fake_qmp.h"

namespace relink::daemon {
namespace {

using namespace std::chrono_literals;
using test::FakeQmp;
using test::run_until;

// Never asked to run anything here: the VMs have no passt binding.
class NoSpawner final : public passt::Spawner {
 public:
  Result<passt::Spawned> spawn(const passt::SpawnRequest&) override {
    ADD_FAILURE() << "unexpected spawn";
    return Error{EPERM, "no spawning in this test"};
  }
};

class QmpVmTest : public ::testing::Test {
 protected:
  test::FakeServices env;

  QmpVmTest() {
    fake = std::make_unique<FakeQmp>(env.loop.get());
    // The fake's peer is this test program: let it receive fds.
    env.cfg.daemon.qemu_binaries = {std::filesystem::read_symlink("/proc/self/exe").string()};
    env.cfg.daemon.state_dir = "/nonexistent";
    passt = std::make_unique<PasstSupervisor>(env.loop.get(), *env.defer, std::make_unique<NoSpawner>());
    env.factory.next_ifindex = 1;  // lo: the runner checks that the macvtap it was told of exists
    vm.name = "vm1";
    vm.qmp = fake->path();
    config::MacvtapBinding b;
    b.nic = "nic0";
    b.parent = "eth0";
    b.mac = MacAddress{0x52, 0x54, 0, 0x12, 0x34, 0x56};
    b.macvtap = "rl0";
    vm.macvtaps.push_back(b);
  }
  ~QmpVmTest() override {
    qvm.reset();
    fake.reset();
  }
  const nlohmann::json binding() { return qvm->status()["bindings"][0]; }
  void expect_hub_attach(uint64_t gen) {
    const std::string g = std::to_string(gen);
    fake->expect("getfd", {{"fdname", "relink-nic0-" + g}});
    fake->expect("netdev_add", {{"type", "tap"}, {"id", "nic0.tap" + g}, {"fd", "relink-nic0-" + g}});
    fake->expect("netdev_add", {{"type", "hubport"}, {"id", "nic0.uplink" + g}, {"hubid", 0}, {"netdev", "nic0.tap" + g}});
    fake->expect("set_link", {{"name", "nic0"}, {"up", true}});
  }

  std::unique_ptr<FakeQmp> fake;
  std::unique_ptr<PasstSupervisor> passt;
  config::Vm vm;
  std::unique_ptr<QmpVm> qvm;
};

TEST_F(QmpVmTest, ConnectionProbesThenAttachesOnTheHubAndALostSessionGoesOffline) {
  fake->expect("human-monitor-command", {{"command-line", "info network"}}).returns("");
  expect_hub_attach(1);
  qvm = std::make_unique<QmpVm>(vm, "config", env.services, *passt);
  EXPECT_EQ(binding()["state"], "vm-offline");
  qvm->start();
  ASSERT_TRUE(run_until(env.loop.get(), [&] { return binding()["state"] == "attached"; }, 5s)) << qvm->status().dump();
  EXPECT_EQ(fake->expectations_left(), 0u);
  ASSERT_EQ(env.factory.specs.size(), 1u);
  EXPECT_EQ(env.factory.specs[0].parent_ifindex, 5);
  EXPECT_EQ(env.factory.specs[0].name, "rl0");
  const auto st = qvm->status();
  EXPECT_EQ(st["source"], "config");
  EXPECT_EQ(st["qmp"], "connected");
  EXPECT_EQ(st["qemu_pid"], getpid());
  EXPECT_EQ(binding()["generation"], 1);

  // A DEVICE_DELETED for a hub NIC's backend is no release.
  fake->emit_event("DEVICE_DELETED", {{"path", "/machine/peripheral/nic0/virtio-backend"}});
  test::run_for(env.loop.get(), 50ms);
  EXPECT_EQ(binding()["state"], "attached");

  fake->drop_client();
  ASSERT_TRUE(run_until(env.loop.get(), [&] { return binding()["state"] == "vm-offline"; }, 5s)) << qvm->status().dump();
  EXPECT_EQ(qvm->status()["qmp"], "disconnected");
}

TEST_F(QmpVmTest, AReattachRequestAttachesANewGeneration) {
  fake->expect("human-monitor-command", {{"command-line", "info network"}}).returns("");
  expect_hub_attach(1);
  qvm = std::make_unique<QmpVm>(vm, "runtime", env.services, *passt);
  qvm->start();
  ASSERT_TRUE(run_until(env.loop.get(), [&] { return binding()["state"] == "attached"; }, 5s)) << qvm->status().dump();
  EXPECT_EQ(qvm->status()["source"], "runtime");
  // Generation 1 is taken down, generation 2 put up.
  fake->expect("netdev_del", {{"id", "nic0.uplink1"}});
  fake->expect("netdev_del", {{"id", "nic0.tap1"}});
  expect_hub_attach(2);
  const auto reply = qvm->reattach("nic0");
  EXPECT_EQ(reply["ok"], true) << reply.dump();
  ASSERT_TRUE(run_until(env.loop.get(), [&] { return binding()["generation"] == 2 && binding()["state"] == "attached"; }, 5s))
      << qvm->status().dump();
  test::run_for(env.loop.get(), 50ms);
  EXPECT_EQ(fake->expectations_left(), 0u);
  // An unknown NIC is refused, naming the ones there are.
  EXPECT_EQ(qvm->reattach("nic9")["error"], "VM 'vm1' has no binding for NIC or netdev 'nic9' (it has: nic0)");
}

}  // namespace
}  // namespace relink::daemon
