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
  MacvtapRunner* find_macvtap(const std::string& nic);
  PasstRunner* find_passt(const std::string& netdev);

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
  Guard guard_;
};

// Control replies.
nlohmann::json refused(const std::string& why);
nlohmann::json done(nlohmann::json result = nlohmann::json::object());

}  // namespace relink::daemon
