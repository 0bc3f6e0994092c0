// SPDX-License-Identifier: GPL-2.0-or-later
// The plan of a reload, an add or a remove.
#include "daemon/vm_plan.h"

#include <algorithm>

namespace relink::daemon {
namespace {

// Bindings by their QEMU id: gone, new, or different.
template <typename B, typename Id>
void diff(const std::string& vm, const std::vector<B>& before, const std::vector<B>& after, Id id, bool all_changed,
          nlohmann::json& added, nlohmann::json& removed, nlohmann::json& changed) {
  for (const auto& b : before) {
    auto now = std::find_if(after.begin(), after.end(), [&](const auto& x) { return id(x) == id(b); });
    if (now == after.end()) removed.push_back(vm + "/" + id(b));
    else if (!(*now == b) || all_changed) changed.push_back(vm + "/" + id(b));
  }
  for (const auto& b : after)
    if (std::none_of(before.begin(), before.end(), [&](const auto& x) { return id(x) == id(b); }))
      added.push_back(vm + "/" + id(b));
}

}  // namespace

VmPlan plan_vms(const std::vector<config::Vm>& running, const std::vector<config::Vm>& wanted, bool passt_changed,
                bool libvirt_changed) {
  nlohmann::json added = nlohmann::json::array(), removed = nlohmann::json::array(),
                 changed = nlohmann::json::array();
  if (libvirt_changed) changed.push_back("[libvirt]");
  VmPlan plan;
  std::vector<bool> claimed(running.size(), false);
  for (const auto& want : wanted) {
    auto it = std::find_if(running.begin(), running.end(), [&](const auto& v) { return v.name == want.name; });
    VmStep step;
    step.name = want.name;
    if (it == running.end()) {
      step.kind = VmStep::Kind::Start;
      added.push_back(want.name);
      plan.steps.push_back(std::move(step));
      continue;
    }
    claimed[static_cast<size_t>(it - running.begin())] = true;
    if (*it == want && !passt_changed) {
      step.kind = VmStep::Kind::Keep;
      plan.steps.push_back(std::move(step));
      continue;
    }
    step.kind = VmStep::Kind::Restart;
    if (it->qmp != want.qmp) changed.push_back(want.name + " (qmp)");
    diff(want.name, it->macvtaps, want.macvtaps, [](const config::MacvtapBinding& b) { return b.nic; }, false, added,
         removed, changed);
    diff(want.name, it->passts, want.passts, [](const config::PasstBinding& b) { return b.netdev; }, passt_changed,
         added, removed, changed);
    if (!passt_changed)
      for (const auto& p : it->passts)
        if (std::find(want.passts.begin(), want.passts.end(), p) != want.passts.end()) step.carry.push_back(p.netdev);
    plan.steps.push_back(std::move(step));
  }
  for (size_t i = 0; i < running.size(); ++i)
    if (!claimed[i]) {
      plan.stop.push_back(running[i].name);
      removed.push_back(running[i].name);
    }
  plan.changes = {{"added", std::move(added)}, {"removed", std::move(removed)}, {"changed", std::move(changed)}};
  return plan;
}

std::string describe_changes(const nlohmann::json& changes) {
  std::string out;
  for (const char* what : {"added", "removed", "changed"}) {
    const auto& list = changes.value(what, nlohmann::json::array());
    if (list.empty()) continue;
    if (!out.empty()) out += "; ";
    out += std::string(what) + " ";
    for (size_t i = 0; i < list.size(); ++i) out += (i ? ", " : "") + list[i].get<std::string>();
  }
  return out;
}

}  // namespace relink::daemon
