// SPDX-License-Identifier: GPL-2.0-or-later
// What a reload, an add or a remove changes, as a pure function of the QMP
// VMs that run and those wanted: each wanted VM kept (same configuration:
// its session and state stay), restarted (changed: started anew, with the
// passt bindings that did not change keeping their passt) or started (new);
// each running VM no longer wanted stopped; and the change report. Planned
// first, carried out after (Daemon::apply_vms).
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "config/config.h"

namespace relink::daemon {

struct VmStep {
  enum class Kind { Keep, Restart, Start };
  Kind kind = Kind::Start;
  std::string name;
  // Restart: the passt bindings (netdevs) whose passt keeps running.
  std::vector<std::string> carry;
};

struct VmPlan {
  std::vector<VmStep> steps;      // in the wanted order
  std::vector<std::string> stop;  // running, no longer wanted
  // {"added","removed","changed"}: lists of "VM" and "VM/NIC" names.
  nlohmann::json changes;
};

// passt_changed: [daemon] passt changed, which restarts every running VM
// (and reports each passt binding changed). libvirt_changed: [libvirt]
// changed (reported first among the changes).
VmPlan plan_vms(const std::vector<config::Vm>& running, const std::vector<config::Vm>& wanted, bool passt_changed,
                bool libvirt_changed);

// "added vm2; changed vm1/nic0", for the log ("" when nothing changed).
std::string describe_changes(const nlohmann::json& changes);

}  // namespace relink::daemon
