// SPDX-License-Identifier: GPL-2.0-or-later
// A VM relinkd manages, whatever it comes from: its bindings (macvtap and
// passt runners) and what differs by origin, as virtual functions: a QMP VM
// (qmp_vm.h: the config file, relinkctl add) talks to QEMU itself; a libvirt
// VM (libvirt_vm.h) goes through libvirt.
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>
#include <string>
#include <vector>

#include "config/config.h"
#include "daemon/bridge_port_runner.h"
#include "daemon/macvtap_runner.h"
#include "daemon/passt_runner.h"
#include "daemon/services.h"
#include "util/guard.h"
#include "util/result.h"

namespace relink::daemon {

class ManagedVm {
 public:
  ManagedVm(config::Vm cfg, const Services& s) : cfg_(std::move(cfg)), s_(s) {}
  virtual ~ManagedVm() = default;
  ManagedVm(const ManagedVm&) = delete;
  ManagedVm& operator=(const ManagedVm&) = delete;

  const std::string& name() const { return cfg_.name; }
  // Its configuration (a libvirt VM's: built from the domain's interfaces).
  const config::Vm& cfg() const { return cfg_; }
  // Where it comes from, as status says: "config", "runtime", "libvirt".
  virtual const char* origin() const = 0;
  // Something relinkd can hand taps to: QMP connected, or libvirt describing the domain.
  virtual bool connected() const = 0;
  // Why it is not connected, for a refused reattach.
  virtual std::string offline_reason() const = 0;
  // Starts following the VM (connecting to QMP, ...).
  virtual void start() {}
  // The VM's part of status (bindings included).
  virtual nlohmann::json status() const;
  // `relinkctl qemu-args`: the QEMU arguments this VM needs.
  virtual Result<nlohmann::json> qemu_args() const = 0;

  // For the binding runners.
  // How a release is asked for, as the log says it ("device_del").
  virtual const char* release_method() const = 0;
  // Called before a release is asked for.
  virtual void before_release(MacvtapRunner&) {}
  // The logger of what is particular to the VM's origin.
  virtual std::shared_ptr<spdlog::logger> origin_logger() const;
  // What status adds to each macvtap binding.
  virtual void describe(nlohmann::json&) const {}
  // The binding's macvtap is gone and its parent is alive.
  virtual void macvtap_gone(MacvtapRunner& b, int ifindex, uint64_t now_us);

  std::vector<std::unique_ptr<MacvtapRunner>>& macvtaps() { return macvtaps_; }
  std::vector<std::unique_ptr<PasstRunner>>& passts() { return passts_; }
  // Its taps on host bridges (config::Vm::taps).
  std::vector<std::unique_ptr<BridgePortRunner>>& taps() { return taps_; }
  MacvtapRunner* find_macvtap(const std::string& nic);
  PasstRunner* find_passt(const std::string& netdev);
  BridgePortRunner* find_tap(const std::string& tap);
  // Follows one more tap (a libvirt domain's interface, a [bridge.NAME]'s
  // new port), or stops following one (its VM removed it).
  BridgePortRunner& add_tap(const config::TapBinding& cfg);
  void remove_tap(const std::string& tap);
  // The host's links changed (each netlink batch), before the taps look:
  // a VM whose taps are found on the host adds them here.
  virtual void links_changed() {}

  // The guest let go of a NIC (DEVICE_DELETED, DEVICE_REMOVED).
  void released(MacvtapRunner& b);
  // `relinkctl reattach VM [NIC]`.
  nlohmann::json reattach(const std::string& nic);
  // A reload kept the VM: failed bindings get a fresh start.
  virtual void restart_failed();

 protected:
  // The guest let go of an attached NIC nobody here asked for.
  virtual void unasked_release(MacvtapRunner& b) = 0;
  MacvtapRunner& add_macvtap(const config::MacvtapBinding& cfg, Attacher& attacher);

  config::Vm cfg_;
  Services s_;
  std::vector<std::unique_ptr<MacvtapRunner>> macvtaps_;
  std::vector<std::unique_ptr<PasstRunner>> passts_;
  std::vector<std::unique_ptr<BridgePortRunner>> taps_;
  Guard guard_;
};

// Control replies.
nlohmann::json refused(const std::string& why);
nlohmann::json done(nlohmann::json result = nlohmann::json::object());

}  // namespace relink::daemon
