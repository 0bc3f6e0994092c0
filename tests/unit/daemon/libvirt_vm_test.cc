// SPDX-License-Identifier: GPL-2.0-or-later
// A libvirt VM against a fake libvirt (DomainRequests), a fake factory and
// fake links, no root: the first description follows each direct interface;
// one whose macvtap is not QEMU's is released through libvirt and attached
// again from its live XML; an interface its owner detached is dropped; a
// lost connection takes the bindings offline.
#include "daemon/libvirt_vm.h"

#include <gtest/gtest.h>

#include <deque>

#include "support/fake_services.h"
#include "support/fake_qmp.h"

namespace relink::daemon {
namespace {

using namespace std::chrono_literals;

// Records each request; the test answers them.
class FakeLibvirt final : public libvirt::DomainRequests {
 public:
  void detach(const std::string& domain, const std::string& alias, std::function<void(DetachResult)> done) override {
    calls.push_back("detach " + domain + " " + alias);
    detaches.push_back(std::move(done));
  }
  void attach(const std::string& domain, const std::string& xml,
              std::function<void(Result<libvirt::DomainInfo>)> done) override {
    calls.push_back("attach " + domain);
    attached_xml = xml;
    attaches.push_back(std::move(done));
  }
  void update(const std::string& domain, const std::string& xml, std::function<void(Result<void>)> done) override {
    calls.push_back("update " + domain);
    updated_xml = xml;
    done(ok());
  }
  const std::string& pid_dir() const override { return dir; }

  std::vector<std::string> calls;
  std::deque<std::function<void(DetachResult)>> detaches;
  std::deque<std::function<void(Result<libvirt::DomainInfo>)>> attaches;
  std::string attached_xml, updated_xml, dir = "/nonexistent";
};

class LibvirtVmTest : public ::testing::Test {
 protected:
  test::FakeServices env;

  LibvirtVmTest() {
    env.cfg.libvirt.enabled = true;
    iface.mac = MacAddress{0x52, 0x54, 0, 0xab, 0xcd, 0xef};
    iface.source_dev = "eth0";
    iface.mode = "bridge";
    iface.model = "virtio";
    iface.alias = "net0";
    iface.target_dev = "macvtap0";
    info.desc.name = "dom1";
    info.desc.interfaces = {iface};
  }
  nlohmann::json binding() { return vm->status()["bindings"][0]; }
  void run_loop() { test::run_for(env.loop.get(), 20ms); }

  FakeLibvirt libvirt;
  libvirt::DirectInterface iface;
  libvirt::DomainInfo info;
  std::unique_ptr<LibvirtVm> vm;
};

TEST_F(LibvirtVmTest, ADeadMacvtapIsReleasedAndAttachedAgainThroughLibvirt) {
  vm = std::make_unique<LibvirtVm>("dom1", libvirt, env.services);
  vm->update(info);
  ASSERT_EQ(vm->status()["bindings"].size(), 1u);
  EXPECT_EQ(binding()["nic"], "net0");
  EXPECT_EQ(binding()["source"], "libvirt");
  EXPECT_EQ(binding()["parent"], "eth0");
  EXPECT_EQ(vm->status()["libvirt"], "connected");
  // macvtap0 does not exist: nothing to adopt, the NIC is released first.
  run_loop();
  EXPECT_EQ(binding()["state"], "releasing");
  ASSERT_EQ(libvirt.calls, (std::vector<std::string>{"detach dom1 net0"}));
  libvirt.detaches.front()(libvirt::DomainRequests::DetachResult{true, false, ""});
  libvirt.detaches.pop_front();
  // libvirt's DEVICE_REMOVED: the guest let go; the interface is attached again.
  info.desc.interfaces.clear();
  vm->update(info);
  EXPECT_EQ(vm->status()["bindings"].size(), 1u) << "an interface relinkd released is kept";
  vm->device_removed("net0", false);
  run_loop();
  ASSERT_EQ(libvirt.calls.size(), 2u);
  EXPECT_EQ(libvirt.calls[1], "attach dom1");
  EXPECT_NE(libvirt.attached_xml.find("52:54:00:ab:cd:ef"), std::string::npos) << libvirt.attached_xml;
  EXPECT_EQ(libvirt.attached_xml.find("macvtap0"), std::string::npos) << "no <target>: libvirt names a new macvtap";
  // libvirt made macvtap1 (ifindex 1 here: the runner asks the kernel whether it exists).
  iface.target_dev = "macvtap1";
  info.desc.interfaces = {iface};
  env.factory.existing["macvtap1"] = macvtap::ExistingMacvtap{1, 5, iface.mac, 0};
  libvirt.attaches.front()(info);
  libvirt.attaches.pop_front();
  run_loop();
  EXPECT_EQ(binding()["state"], "attached") << vm->status().dump();
  EXPECT_EQ(binding()["macvtap_ifindex"], 1);
  EXPECT_TRUE(binding()["last_release_ms"].is_number());

  // Its owner detaches it: DEVICE_REMOVED nobody asked for.
  vm->device_removed("net0", false);
  EXPECT_TRUE(vm->status()["bindings"].empty());
}

// The first replug up to libvirt's attach: released, the guest let go.
void reach_attach(LibvirtVm& vm, FakeLibvirt& libvirt, libvirt::DomainInfo info, test::FakeServices& env) {
  vm.update(info);
  test::run_for(env.loop.get(), 20ms);
  ASSERT_EQ(libvirt.detaches.size(), 1u);
  libvirt.detaches.front()(libvirt::DomainRequests::DetachResult{true, false, ""});
  libvirt.detaches.pop_front();
  info.desc.interfaces.clear();
  vm.update(info);
  vm.device_removed("net0", false);
  test::run_for(env.loop.get(), 20ms);
  ASSERT_EQ(libvirt.attaches.size(), 1u);
}

// libvirt attached the interface, but its parent went away before relinkd
// read the new macvtap back: the NIC is plugged in, so the next round
// releases it (an attach would be refused as a double use of its PCI address).
TEST_F(LibvirtVmTest, AnAttachWhoseMacvtapIsAlreadyGoneCountsTheNicAsPresent) {
  iface.pci_address = "0000:01:00.0";
  info.desc.interfaces = {iface};
  vm = std::make_unique<LibvirtVm>("dom1", libvirt, env.services);
  reach_attach(*vm, libvirt, info, env);
  iface.target_dev = "macvtap1";  // libvirt's, already deleted with its parent
  info.desc.interfaces = {iface};
  libvirt.attaches.front()(info);
  libvirt.attaches.pop_front();
  run_loop();
  EXPECT_EQ(binding()["state"], "releasing") << vm->status().dump();
  EXPECT_EQ(binding()["failures"], 0);
  ASSERT_EQ(libvirt.calls.back(), "detach dom1 net0");
  libvirt.detaches.front()(libvirt::DomainRequests::DetachResult{true, false, ""});
  libvirt.detaches.pop_front();
  info.desc.interfaces.clear();
  vm->update(info);
  vm->device_removed("net0", false);
  run_loop();
  ASSERT_EQ(libvirt.attaches.size(), 1u);
  iface.target_dev = "macvtap2";
  info.desc.interfaces = {iface};
  env.factory.existing["macvtap2"] = macvtap::ExistingMacvtap{1, 5, iface.mac, 0};
  libvirt.attaches.front()(info);
  libvirt.attaches.pop_front();
  run_loop();
  EXPECT_EQ(binding()["state"], "attached") << vm->status().dump();
  EXPECT_EQ(binding()["macvtap_ifindex"], 1);
}

// An attach refused because the interface is plugged in at that PCI address
// (the live XML has it): released and attached anew, not retried blindly.
TEST_F(LibvirtVmTest, AnAttachRefusedBecauseTheNicIsPluggedInReleasesIt) {
  iface.pci_address = "0000:01:00.0";
  info.desc.interfaces = {iface};
  vm = std::make_unique<LibvirtVm>("dom1", libvirt, env.services);
  reach_attach(*vm, libvirt, info, env);
  // libvirt's DEVICE_ADDED of an attach relinkd took as failed came first.
  iface.target_dev = "macvtap1";
  info.desc.interfaces = {iface};
  vm->update(info);
  libvirt.attaches.front()(Error{EINVAL, "XML error: Attempted double use of PCI Address 0000:01:00.0"});
  libvirt.attaches.pop_front();
  run_loop();
  EXPECT_EQ(binding()["state"], "releasing") << vm->status().dump();
  EXPECT_EQ(libvirt.calls.back(), "detach dom1 net0");
}

// The same refusal with the interface not in the live XML (another device
// holds the address): a failure, retried after a backoff.
TEST_F(LibvirtVmTest, AnAttachRefusedForAnotherDevicesAddressIsAFailure) {
  iface.pci_address = "0000:01:00.0";
  info.desc.interfaces = {iface};
  vm = std::make_unique<LibvirtVm>("dom1", libvirt, env.services);
  reach_attach(*vm, libvirt, info, env);
  libvirt.attaches.front()(Error{EINVAL, "XML error: Attempted double use of PCI Address 0000:01:00.0"});
  libvirt.attaches.pop_front();
  run_loop();
  EXPECT_EQ(binding()["state"], "backoff") << vm->status().dump();
  EXPECT_EQ(binding()["last_error"], "XML error: Attempted double use of PCI Address 0000:01:00.0");
}

TEST_F(LibvirtVmTest, ALostConnectionTakesTheBindingsOfflineAndANewOneProbesAgain) {
  vm = std::make_unique<LibvirtVm>("dom1", libvirt, env.services);
  vm->update(info);
  run_loop();
  EXPECT_EQ(binding()["state"], "releasing");
  vm->connection_lost();
  EXPECT_EQ(binding()["state"], "vm-offline");
  EXPECT_EQ(vm->status()["libvirt"], "disconnected");
  EXPECT_EQ(vm->reattach("")["error"], "VM 'dom1' is offline (libvirt not connected)");
  // Described again over a new connection: probed again.
  vm->update(info);
  run_loop();
  EXPECT_EQ(binding()["state"], "releasing");
  EXPECT_EQ(vm->qemu_args().error().message, "libvirt runs VM 'dom1' and wires its NICs itself: no QEMU arguments to add");
}

// [libvirt.domain_release] reaches the domain it names: found with its
// parent gone and the NIC still in the live XML, that domain's interface is
// released at once (on loss), another domain's waits for the parent.
TEST_F(LibvirtVmTest, ReleaseIsPerDomain) {
  env.cfg.libvirt.domain_release["dom1"] = config::Release::OnLoss;
  env.links.present = false;
  vm = std::make_unique<LibvirtVm>("dom1", libvirt, env.services);
  vm->update(info);
  run_loop();
  EXPECT_EQ(binding()["state"], "releasing") << vm->status().dump();
  EXPECT_EQ(libvirt.calls, (std::vector<std::string>{"update dom1", "detach dom1 net0"}));

  FakeLibvirt other_libvirt;
  info.desc.name = "dom2";
  auto other = std::make_unique<LibvirtVm>("dom2", other_libvirt, env.services);
  other->update(info);
  run_loop();
  EXPECT_EQ(other->status()["bindings"][0]["state"], "waiting-parent") << other->status().dump();
  EXPECT_EQ(other_libvirt.calls, (std::vector<std::string>{"update dom2"})) << "only the link set down";
}

}  // namespace
}  // namespace relink::daemon
