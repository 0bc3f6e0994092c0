// SPDX-License-Identifier: GPL-2.0-or-later
// [bridge.NAME] with follow_taps: a source of VMs for hosts without libvirt
// or [[vm]] entries. Each such bridge is one VM ("bridge:NAME", origin
// "bridge") with no QEMU behind it, whose taps are found on the host: every
// tun/tap device that becomes a port of the bridge gets a BridgePortRunner,
// dropped when the tap is deleted (its VM is gone) or when a VM's own
// [[vm.tap]] claims it.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "daemon/vm.h"
#include "daemon/vm_table.h"

namespace relink::daemon {

class BridgeTapsVm final : public ManagedVm {
 public:
  // owned(tap): another VM follows this tap itself.
  BridgeTapsVm(const config::Bridge& bridge, const Services& s, std::function<bool(const std::string&)> owned);

  static std::string vm_name(const std::string& bridge) { return "bridge:" + bridge; }
  const std::string& bridge() const { return bridge_; }
  const char* origin() const override { return "bridge"; }
  bool connected() const override { return true; }
  std::string offline_reason() const override { return "no VM behind it"; }
  Result<nlohmann::json> qemu_args() const override;
  const char* release_method() const override { return "none"; }
  void links_changed() override;
  nlohmann::json status() const override;

 protected:
  void unasked_release(MacvtapRunner&) override {}

 private:
  std::string bridge_;
  std::function<bool(const std::string&)> owned_;
};

// The [bridge.NAME] VMs in the VM table.
class BridgeTaps {
 public:
  BridgeTaps(const Services& s, VmTable& vms) : s_(s), vms_(vms) {}

  // Brings the table's bridge VMs in line with `bridges` (start, reload).
  void apply(const std::vector<config::Bridge>& bridges);
  // Around a reload's plan, which handles QMP VMs only.
  std::vector<std::unique_ptr<ManagedVm>> take_vms();
  void put_back(std::vector<std::unique_ptr<ManagedVm>> vms);

 private:
  bool owned_elsewhere(const std::string& tap) const;

  Services s_;
  VmTable& vms_;
};

}  // namespace relink::daemon
