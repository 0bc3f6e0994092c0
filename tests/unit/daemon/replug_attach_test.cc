// SPDX-License-Identifier: GPL-2.0-or-later
// ReplugAttacher against the scripted fake QMP server and a fake macvtap
// factory: the exact commands, their order, the rollbacks, and what it makes
// of hostile replies. (tests/integration/qemu/replug_attach_test.cc runs it
// against a real QEMU.)
#include "daemon/replug_attach.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "support/fake_factory.h"
#include "support/fake_qmp.h"

namespace relink::daemon {
namespace {

using namespace std::chrono_literals;
using json = nlohmann::json;
using test::FakeFactory;
using test::FakeQmp;
using test::run_until;

TEST(ReplugHelpers, PciAddrArgIsSlotDotFunctionInHex) {
  EXPECT_EQ(pci_addr_arg(0), "0.0");
  EXPECT_EQ(pci_addr_arg(16), "2.0");
  EXPECT_EQ(pci_addr_arg(5 << 3), "5.0");
  EXPECT_EQ(pci_addr_arg(0x1f << 3 | 7), "1f.7");
}

TEST(ReplugHelpers, BusNameIsTheLastComponent) {
  EXPECT_EQ(bus_name_of("/machine/i440fx/pci.0"), "pci.0");
  EXPECT_EQ(bus_name_of("/machine/q35/pcie.0"), "pcie.0");
  EXPECT_EQ(bus_name_of("/machine/peripheral/rp1/rp1"), "rp1");
  EXPECT_EQ(bus_name_of("/machine/peripheral-anon/device[3]/x"), "x");
  EXPECT_EQ(bus_name_of(""), "");
  EXPECT_EQ(bus_name_of("/machine/"), "");
  EXPECT_EQ(bus_name_of("/machine/a b"), "");
  EXPECT_EQ(bus_name_of("/machine/device[0]"), "");
  EXPECT_EQ(bus_name_of("/x/bus,id=y"), "");
}

TEST(ReplugHelpers, MacvtapLinkFromSysDevChar) {
  auto l = parse_macvtap_link("../../devices/virtual/net/mvl0/macvtap/tap5");
  ASSERT_TRUE(l);
  EXPECT_EQ(l->name, "mvl0");
  EXPECT_EQ(l->ifindex, 5);
  auto m = parse_macvtap_link("../../devices/virtual/net/macvtap12/macvtap/tap1234");
  ASSERT_TRUE(m);
  EXPECT_EQ(m->name, "macvtap12");
  EXPECT_EQ(m->ifindex, 1234);
  for (const char* bad : {"../../devices/virtual/misc/tun", "../../devices/virtual/net/mvl0/macvtap/tapx",
                          "../../devices/virtual/net/mvl0/macvtap/tap0", "../../devices/virtual/net/mvl0/macvtap/tap",
                          "../../devices/virtual/net/mvl0/tap5", "../../devices/virtual/x/mvl0/macvtap/tap5",
                          "net/mvl0/macvtap/tap5", "../../devices/virtual/net/a-name-longer-than-15/macvtap/tap5",
                          "../../devices/virtual/net//macvtap/tap5", "", "/", "tap5",
                          "../../devices/virtual/net/mvl0/macvtap/tap5x", "../../devices/virtual/net/mvl0/macvtap/tap-5"})
    EXPECT_FALSE(parse_macvtap_link(bad)) << bad;
}

class ReplugAttachUnit : public ::testing::Test {
 protected:
  ReplugAttachUnit() {
    sd_event* e = nullptr;
    EXPECT_GE(sd_event_new(&e), 0);
    loop_.reset(e);
    defer_ = std::make_unique<DeferQueue>(loop_.get());
    fake_ = std::make_unique<FakeQmp>(loop_.get());
    qemu::QmpClient::Callbacks cbs;
    cbs.on_connected = [this] { connected_ = true; };
    client_ = std::make_unique<qemu::QmpClient>(loop_.get(), fake_->path(), std::move(cbs));
    client_->start();
    EXPECT_TRUE(run_until(loop_.get(), [&] { return connected_; }, 5s));
    attacher_ = std::make_unique<ReplugAttacher>(factory_, *client_, *defer_);
    b_.nic = "net0";
    b_.parent = "p0";
    b_.mac = *parse_mac("52:54:00:12:34:56");
    b_.attach = config::AttachMode::Replug;
    b_.macvtap = "rl0";
  }
  ~ReplugAttachUnit() override {
    attacher_.reset();
    client_.reset();
    fake_.reset();
  }

  // The probe's commands for `nic`: qom-get of each property, with `values`
  // (a missing key: the driver lacks it), then info network.
  // info_network null: the command fails.
  void expect_probe(const std::string& nic, const json& values, const char* info_network) {
    for (const char* p : {"type", "mac", "netdev", "addr", "parent_bus", "mq", "vectors", "host_mtu", "romfile",
                          "bootindex", "rx_queue_size", "tx_queue_size", "acpi-index"}) {
      auto& e = fake_->expect("qom-get", {{"path", "/machine/peripheral/" + nic}, {"property", p}});
      if (values.is_null()) e.error("DeviceNotFound", "Device '/machine/peripheral/" + nic + "' not found");
      else if (values.contains(p)) e.returns(values[p]);
      else e.error("GenericError", std::string("Property 'virtio-net-pci.") + p + "' not found");
    }
    auto& e = fake_->expect("human-monitor-command", {{"command-line", "info network"}});
    if (info_network) e.returns(info_network);
    else e.error("GenericError", "info network failed");
  }
  static json virtio_values() {
    return {{"type", "virtio-net-pci"}, {"mac", "52:54:00:12:34:56"}, {"netdev", "net0.tap4"},
            {"addr", 16},  // slot 2
            {"parent_bus", "/machine/i440fx/pci.0"}, {"mq", false}, {"vectors", 4}, {"host_mtu", 0},
            {"romfile", "efi-virtio.rom"}, {"bootindex", -1}, {"rx_queue_size", 256}, {"tx_queue_size", 1024},
            {"acpi-index", 0}};
  }
  static constexpr const char* kNetwork =
      "net0: index=0,type=nic,model=virtio-net-pci,macaddr=52:54:00:12:34:56\r\n"
      " \\ net0.tap4: index=0,type=tap,fd=9999\r\n"
      "net0.tap2: index=0,type=tap,fd=9998\r\n";

  std::vector<engine::VmConnected> probe(const std::vector<config::MacvtapBinding>& bs) {
    std::optional<std::vector<engine::VmConnected>> out;
    attacher_->probe(bs, [&](std::vector<engine::VmConnected> v) { out = std::move(v); });
    EXPECT_TRUE(run_until(loop_.get(), [&] { return out.has_value(); }, 5s));
    return out.value_or(std::vector<engine::VmConnected>{});
  }
  AttachResult hand_over(const config::MacvtapBinding& b, uint64_t gen, bool link_up) {
    auto m = factory_.create({b.macvtap, 2, b.mode, b.mac, b.queues});
    EXPECT_TRUE(m);
    std::optional<AttachResult> out;
    attacher_->hand_over(b, gen, std::move(m.value()), link_up, [&](AttachResult r) { out = std::move(r); });
    EXPECT_TRUE(run_until(loop_.get(), [&] { return out.has_value(); }, 5s));
    return out.value_or(AttachResult{});
  }
  Attacher::ReleaseResult release(const config::MacvtapBinding& b) {
    std::optional<Attacher::ReleaseResult> out;
    attacher_->release(b, 0, [&](Attacher::ReleaseResult r) { out = std::move(r); });
    EXPECT_TRUE(run_until(loop_.get(), [&] { return out.has_value(); }, 5s));
    return out.value_or(Attacher::ReleaseResult{false, "test: no answer"});
  }
  // Lets the client's remaining commands reach the fake (fire-and-forget ones).
  void drain() { test::run_for(loop_.get(), 50ms); }

  SdEventPtr loop_;
  std::unique_ptr<DeferQueue> defer_;
  std::unique_ptr<FakeQmp> fake_;
  std::unique_ptr<qemu::QmpClient> client_;
  bool connected_ = false;
  FakeFactory factory_;
  std::unique_ptr<ReplugAttacher> attacher_;
  config::MacvtapBinding b_;
};

TEST_F(ReplugAttachUnit, ProbeReadsTheTemplateAndDeletesLeftoverTaps) {
  expect_probe("net0", virtio_values(), kNetwork);
  fake_->expect("netdev_del", {{"id", "net0.tap2"}});
  auto found = probe({b_});
  ASSERT_EQ(found.size(), 1u);
  EXPECT_TRUE(found[0].nic_present);
  EXPECT_EQ(found[0].max_generation_seen, 4u);
  // fd 99 of the fake's peer (this very process) is no macvtap.
  EXPECT_FALSE(found[0].adopt);
  const NicTemplate* t = attacher_->nic_template("net0");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->driver, "virtio-net-pci");
  EXPECT_EQ(t->netdev, "net0.tap4");
  EXPECT_EQ(t->bus, "pci.0");
  EXPECT_EQ(t->addr, 16);
  EXPECT_TRUE(t->has_mq);
  EXPECT_EQ(t->props, (json{{"tx_queue_size", 1024}, {"romfile", "efi-virtio.rom"}}));
  drain();
  EXPECT_EQ(fake_->expectations_left(), 0u);
}

// A replug a killed relinkd did not finish: the NIC is on its new tap and
// the journal names the backend it had before (the launcher's hostnet0).
// That backend is deleted only while nothing is peered with it.
TEST_F(ReplugAttachUnit, TheJournalledOldBackendIsDeletedOnlyWhenNothingUsesIt) {
  char tmpl[] = "/tmp/relink-ra-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  const std::string dir = tmpl;
  ASSERT_EQ(chmod(dir.c_str(), 0755), 0);
  IntentJournal journal(dir);
  ASSERT_TRUE(journal.load());
  attacher_->set_journal(&journal);
  auto record = [&] {
    uint64_t start = 0;
    auto identity = qemu_identity(getpid(), &start);  // the fake's peer: this process
    ASSERT_TRUE(identity);
    NicTemplate old;
    old.driver = "virtio-net-pci";
    old.id = "net0";
    old.mac = b_.mac;
    old.bus = "pci.0";
    old.addr = 16;
    old.netdev = "hostnet0";
    ASSERT_TRUE(journal.record(Intent{*identity, "net0", "vm1", getpid(), start, template_to_json(old), 0}));
  };
  ASSERT_NO_FATAL_FAILURE(record());
  // Another NIC was plugged onto hostnet0 meanwhile: kept.
  expect_probe("net0", virtio_values(),
               "net0: index=0,type=nic,model=virtio-net-pci,macaddr=52:54:00:12:34:56\r\n"
               " \\ net0.tap4: index=0,type=tap,fd=9999\r\n"
               "net9: index=0,type=nic,model=e1000,macaddr=52:54:00:00:00:09\r\n"
               " \\ hostnet0: index=0,type=tap,fd=9997\r\n");
  ASSERT_EQ(probe({b_}).size(), 1u);
  drain();
  EXPECT_EQ(fake_->expectations_left(), 0u);
  EXPECT_EQ(journal.entries().size(), 0u) << "the NIC is there: the entry is done with";
  // Peered with nothing: deleted.
  ASSERT_NO_FATAL_FAILURE(record());
  expect_probe("net0", virtio_values(),
               "net0: index=0,type=nic,model=virtio-net-pci,macaddr=52:54:00:12:34:56\r\n"
               " \\ net0.tap4: index=0,type=tap,fd=9999\r\n"
               "hostnet0: index=0,type=tap,fd=9997\r\n");
  fake_->expect("netdev_del", {{"id", "hostnet0"}});
  ASSERT_EQ(probe({b_}).size(), 1u);
  drain();
  EXPECT_EQ(fake_->expectations_left(), 0u);
  // info network failed: nothing is known to be unused, nothing deleted.
  ASSERT_NO_FATAL_FAILURE(record());
  expect_probe("net0", virtio_values(), nullptr);
  ASSERT_EQ(probe({b_}).size(), 1u);
  drain();
  EXPECT_EQ(fake_->expectations_left(), 0u);
  attacher_->set_journal(nullptr);
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
}

TEST_F(ReplugAttachUnit, AbsentNicHasNoTemplateAndIsAlreadyReleased) {
  expect_probe("net0", nullptr, "");
  auto found = probe({b_});
  ASSERT_EQ(found.size(), 1u);
  EXPECT_FALSE(found[0].nic_present);
  EXPECT_EQ(attacher_->nic_template("net0"), nullptr);
  fake_->expect("qom-get", {{"property", "type"}}).error("DeviceNotFound", "Device '/machine/peripheral/net0' not found");
  auto r = release(b_);
  EXPECT_TRUE(r.already_gone);
  EXPECT_TRUE(r.error.empty());
  // And no device_add without a template: nothing reaches QEMU.
  auto h = hand_over(b_, 5, true);
  EXPECT_FALSE(h.ok);
  EXPECT_NE(h.error.find("never read how the NIC was plugged in"), std::string::npos) << h.error;
  EXPECT_EQ(factory_.removed, std::vector<int>{40});
}

TEST_F(ReplugAttachUnit, HostileRepliesGiveNoTemplateAndNoRelease) {
  const std::vector<std::pair<std::string, json>> cases = {
      {"type", "virtio-net-pci\n,netdev=evil"},
      {"type", "virtio-n\u00e9t-pci"},
      {"type", 42},
      {"mac", "52:54:00:12:34"},
      {"netdev", "net0;rm"},
      {"addr", 300},
      {"addr", "16"},
      {"parent_bus", "/machine/pci.0,addr=3"},
      {"romfile", std::string("rom\x01")},
  };
  for (const auto& [prop, value] : cases) {
    SCOPED_TRACE(prop + " = " + value.dump(-1, ' ', true, json::error_handler_t::replace));
    json v = virtio_values();
    v[prop] = value;
    expect_probe("net0", v, "");
    auto found = probe({b_});
    ASSERT_EQ(found.size(), 1u);
    EXPECT_TRUE(found[0].nic_present);
    EXPECT_EQ(attacher_->nic_template("net0"), nullptr);
    // Present, but it could not come back: not unplugged.
    fake_->expect("qom-get", {{"property", "type"}}).returns("virtio-net-pci");
    auto r = release(b_);
    EXPECT_FALSE(r.already_gone);
    EXPECT_NE(r.error.find("not sent"), std::string::npos) << r.error;
  }
  // Numbers out of range are not carried (and break nothing).
  json v = virtio_values();
  v["vectors"] = json(static_cast<uint64_t>(1) << 40);
  v["bootindex"] = -7;
  v["rx_queue_size"] = -1;
  expect_probe("net0", v, "");
  probe({b_});
  ASSERT_NE(attacher_->nic_template("net0"), nullptr);
  EXPECT_EQ(attacher_->nic_template("net0")->props, (json{{"tx_queue_size", 1024}, {"romfile", "efi-virtio.rom"}}));
  EXPECT_EQ(fake_->expectations_left(), 0u);
}

TEST_F(ReplugAttachUnit, ReleaseAnswers) {
  expect_probe("net0", virtio_values(), kNetwork);
  fake_->expect("netdev_del", {{"id", "net0.tap2"}});
  probe({b_});
  fake_->expect("device_del", {{"id", "net0"}});
  auto ok = release(b_);
  EXPECT_TRUE(ok.error.empty());
  EXPECT_FALSE(ok.already_gone);
  fake_->expect("device_del", {{"id", "net0"}}).error("GenericError", "Device net0 is already in the process of unplug");
  auto again = release(b_);
  EXPECT_TRUE(again.error.empty()) << again.error;
  EXPECT_FALSE(again.already_gone);
  fake_->expect("device_del", {{"id", "net0"}}).error("DeviceNotFound", "Device 'net0' not found");
  EXPECT_TRUE(release(b_).already_gone);
  fake_->expect("device_del", {{"id", "net0"}}).error("GenericError", "Bus 'pci.0' does not support hotplugging");
  auto refused = release(b_);
  EXPECT_FALSE(refused.already_gone);
  EXPECT_EQ(refused.error, "device_del net0: GenericError: Bus 'pci.0' does not support hotplugging");
}

TEST_F(ReplugAttachUnit, HandOverMultiqueueInOrder) {
  expect_probe("net0", virtio_values(), kNetwork);
  fake_->expect("netdev_del", {{"id", "net0.tap2"}});
  probe({b_});
  b_.queues = 2;
  fake_->expect("getfd", {{"fdname", "relink-net0-5-q0"}});
  fake_->expect("getfd", {{"fdname", "relink-net0-5-q1"}});
  fake_->expect("netdev_add", {{"type", "tap"}, {"id", "net0.tap5"}, {"fds", "relink-net0-5-q0:relink-net0-5-q1"}});
  fake_->expect("device_add", {{"driver", "virtio-net-pci"},
                               {"id", "net0"},
                               {"netdev", "net0.tap5"},
                               {"mac", "52:54:00:12:34:56"},
                               {"bus", "pci.0"},
                               {"addr", "2.0"},
                               {"mq", true},
                               {"vectors", 6},
                               {"tx_queue_size", 1024},
                               {"romfile", "efi-virtio.rom"}});
  fake_->expect("set_link", {{"name", "net0"}, {"up", false}});
  // The old backend last, once the NIC is in: its close is slow.
  fake_->expect("netdev_del", {{"id", "net0.tap4"}});
  auto r = hand_over(b_, 5, false);
  EXPECT_TRUE(r.ok) << r.error;
  EXPECT_EQ(r.macvtap_ifindex, 40);
  drain();
  EXPECT_EQ(fake_->expectations_left(), 0u);
  EXPECT_TRUE(factory_.removed.empty());
  EXPECT_EQ(attacher_->nic_template("net0")->netdev, "net0.tap5");
  // device_add got nothing it should not have.
  const auto& cmds = fake_->received();
  const auto& add = cmds[cmds.size() - 3];
  ASSERT_EQ(add.name, "device_add");
  EXPECT_EQ(add.arguments.size(), 10u) << add.arguments.dump();
  EXPECT_EQ(cmds[cmds.size() - 6].fds.size(), 1u);
  EXPECT_EQ(cmds[cmds.size() - 5].fds.size(), 1u);
}

TEST_F(ReplugAttachUnit, DeviceAddFailureDeletesTheNewTap) {
  expect_probe("net0", virtio_values(), kNetwork);
  fake_->expect("netdev_del", {{"id", "net0.tap2"}});
  probe({b_});
  fake_->expect("getfd", {{"fdname", "relink-net0-5"}});
  fake_->expect("netdev_add", {{"type", "tap"}, {"id", "net0.tap5"}, {"fd", "relink-net0-5"}});
  fake_->expect("device_add", {{"netdev", "net0.tap5"}})
      .error("GenericError", "PCI: slot 2 function 0 not available for virtio-net-pci, in use by virtio-net-pci,id=x");
  fake_->expect("netdev_del", {{"id", "net0.tap5"}});
  // The NIC is gone: its old backend goes as well.
  fake_->expect("qom-get", {{"path", "/machine/peripheral/net0"}, {"property", "type"}})
      .error("DeviceNotFound", "Device '/machine/peripheral/net0' not found");
  fake_->expect("netdev_del", {{"id", "net0.tap4"}});
  auto r = hand_over(b_, 5, true);
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.error,
            "device_add: GenericError: PCI: slot 2 function 0 not available for virtio-net-pci, in use by "
            "virtio-net-pci,id=x");
  drain();
  EXPECT_EQ(fake_->expectations_left(), 0u);
  EXPECT_EQ(factory_.removed, std::vector<int>{40});
  // The old backend is gone: the next try does not delete it again.
  EXPECT_EQ(attacher_->nic_template("net0")->netdev, "");
}

TEST_F(ReplugAttachUnit, NetdevAddFailureClosesTheFds) {
  expect_probe("net0", virtio_values(), kNetwork);
  fake_->expect("netdev_del", {{"id", "net0.tap2"}});
  probe({b_});
  b_.queues = 2;
  fake_->expect("getfd", {{"fdname", "relink-net0-5-q0"}});
  fake_->expect("getfd", {{"fdname", "relink-net0-5-q1"}}).error("GenericError", "No file descriptor supplied via SCM_RIGHTS");
  fake_->expect("netdev_add").error("GenericError", "File descriptor named 'relink-net0-5-q1' has not been found");
  fake_->expect("closefd", {{"fdname", "relink-net0-5-q0"}});
  fake_->expect("qom-get", {{"property", "type"}}).error("DeviceNotFound", "Device '/machine/peripheral/net0' not found");
  fake_->expect("netdev_del", {{"id", "net0.tap4"}});
  auto r = hand_over(b_, 5, true);
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.error, "getfd: GenericError: No file descriptor supplied via SCM_RIGHTS");
  drain();
  EXPECT_EQ(fake_->expectations_left(), 0u);
  EXPECT_EQ(factory_.removed, std::vector<int>{40});
}

// A NIC that is still plugged in makes device_add fail on its id: its
// backend is never touched (deleting it would orphan the NIC for good).
TEST_F(ReplugAttachUnit, NoHandOverWhileTheNicIsPlugged) {
  expect_probe("net0", virtio_values(), kNetwork);
  fake_->expect("netdev_del", {{"id", "net0.tap2"}});
  probe({b_});
  fake_->expect("getfd", {{"fdname", "relink-net0-5"}});
  fake_->expect("netdev_add", {{"type", "tap"}, {"id", "net0.tap5"}, {"fd", "relink-net0-5"}});
  fake_->expect("device_add", {{"id", "net0"}}).error("GenericError", "Duplicate device ID 'net0' for device");
  fake_->expect("netdev_del", {{"id", "net0.tap5"}});
  fake_->expect("qom-get", {{"property", "type"}}).returns("virtio-net-pci");
  auto r = hand_over(b_, 5, true);
  EXPECT_FALSE(r.ok);
  EXPECT_NE(r.error.find("Duplicate device ID"), std::string::npos) << r.error;
  drain();
  for (const auto& c : fake_->received())
    EXPECT_FALSE(c.name == "netdev_del" && c.arguments.value("id", "") == "net0.tap4") << "the NIC's backend was deleted";
  EXPECT_EQ(fake_->expectations_left(), 0u);
  EXPECT_EQ(factory_.removed, std::vector<int>{40});
  EXPECT_EQ(attacher_->nic_template("net0")->netdev, "net0.tap4");
}

TEST_F(ReplugAttachUnit, DetachLeavesTheTapAndOnlyDeletesOurMacvtap) {
  fake_->expect("set_link", {{"name", "net0"}, {"up", false}});
  attacher_->detach(b_, 3, 17, true);
  drain();
  EXPECT_EQ(fake_->expectations_left(), 0u);
  // find() said there is no "rl0": ifindex 17 is someone else's.
  EXPECT_EQ(factory_.found, std::vector<std::string>{"rl0"});
  EXPECT_TRUE(factory_.removed.empty());
}

}  // namespace
}  // namespace relink::daemon
