// SPDX-License-Identifier: GPL-2.0-or-later
// The table of managed VMs.
#include "daemon/vm_table.h"

#include <algorithm>

#include "util/untrusted.h"

namespace relink::daemon {

ManagedVm* VmTable::find(const std::string& name) {
  for (auto& vm : vms_)
    if (vm->name() == name) return vm.get();
  return nullptr;
}

const ManagedVm* VmTable::find(const std::string& name) const {
  for (const auto& vm : vms_)
    if (vm->name() == name) return vm.get();
  return nullptr;
}

ManagedVm& VmTable::add(std::unique_ptr<ManagedVm> vm) {
  vms_.push_back(std::move(vm));
  return *vms_.back();
}

std::unique_ptr<ManagedVm> VmTable::take(const std::string& name) {
  auto it = std::find_if(vms_.begin(), vms_.end(), [&](const auto& v) { return v->name() == name; });
  if (it == vms_.end()) return nullptr;
  auto vm = std::move(*it);
  vms_.erase(it);
  return vm;
}

std::vector<std::unique_ptr<ManagedVm>> VmTable::take_if(const std::function<bool(const ManagedVm&)>& pred) {
  std::vector<std::unique_ptr<ManagedVm>> out;
  for (auto& v : vms_)
    if (pred(*v)) out.push_back(std::move(v));
  std::erase(vms_, nullptr);
  return out;
}

std::string VmTable::no_such_vm(const std::string& name) const {
  std::string known;
  for (const auto& v : vms_) known += (known.empty() ? "" : ", ") + v->name();
  return "no VM named '" + untrusted::safe_text(name, 80) + "'" +
         (known.empty() ? " (relinkd manages none)" : " (known: " + known + ")");
}

void destroy_later(DeferQueue& defer, std::unique_ptr<ManagedVm> vm) {
  defer.post([dead = std::shared_ptr<ManagedVm>(std::move(vm))] {});
}

}  // namespace relink::daemon
