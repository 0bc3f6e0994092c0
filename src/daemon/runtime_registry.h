// SPDX-License-Identifier: GPL-2.0-or-later
// VMs registered at runtime (relinkctl add / remove) as a source of VMs: the
// same keys as the config file, kept in state_dir/runtime.toml across
// restarts (RuntimeStore), checked against every other VM before they join.
// A registration that cannot be loaded at start (a runas nothing resolves,
// a clash with the file's VMs) is held aside alone: kept in runtime.toml,
// shown by status, retried at every reload.
#pragma once

#include <string>
#include <vector>

#include "config/runtime_vms.h"
#include "daemon/runtime_store.h"
#include "util/result.h"

namespace relink::daemon {

class RuntimeRegistry {
 public:
  explicit RuntimeRegistry(const std::string& state_dir) : store_(state_dir) {}

  // Reads runtime.toml. A registration that clashes with `known` (the file
  // may have gained the same VM since) is held, and said so: the file wins.
  void load(std::vector<const config::Vm*> known, const std::string& control_socket);
  // Loads the held registrations again; those that load now and clash with
  // none of `others` (the VMs of the other sources) join. Returns how many.
  size_t retry_held(std::vector<const config::Vm*> others, const std::string& control_socket);
  const std::vector<config::RuntimeVm>& vms() const { return vms_; }
  const std::vector<config::HeldVm>& held() const { return held_; }
  const config::RuntimeVm* find(const std::string& name) const;
  bool holds(const std::string& name) const;

  // Registers the [[vm]] tables of `text` (kept before they count); `known`:
  // every VM they must not clash with. Returns the VMs added.
  Result<std::vector<config::RuntimeVm>> add(const std::string& text, std::vector<const config::Vm*> known,
                                             const std::string& control_socket);
  // Unregisters `name` (which must be registered or held).
  Result<void> remove(const std::string& name);

 private:
  void hold(config::HeldVm h);

  RuntimeStore store_;
  std::vector<config::RuntimeVm> vms_;
  std::vector<config::HeldVm> held_;
  std::string stuck_;  // why runtime.toml must not be written (it could not be set aside)
};

}  // namespace relink::daemon
