// SPDX-License-Identifier: GPL-2.0-or-later
// The VMs relinkd manages, by name, in the order status lists them. Names are
// unique across sources: the config file and runtime registrations claim
// theirs first (libvirt_domains.h leaves a domain of such a name alone).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "daemon/vm.h"
#include "util/defer_queue.h"

namespace relink::daemon {

class VmTable {
 public:
  ManagedVm* find(const std::string& name);
  const ManagedVm* find(const std::string& name) const;
  ManagedVm& add(std::unique_ptr<ManagedVm> vm);
  // Takes a VM out of the table (null: none of that name).
  std::unique_ptr<ManagedVm> take(const std::string& name);
  // Takes every VM out for which `pred` holds, in order.
  std::vector<std::unique_ptr<ManagedVm>> take_if(const std::function<bool(const ManagedVm&)>& pred);
  void clear() { vms_.clear(); }

  std::vector<std::unique_ptr<ManagedVm>>& all() { return vms_; }
  const std::vector<std::unique_ptr<ManagedVm>>& all() const { return vms_; }
  size_t size() const { return vms_.size(); }
  // "no VM named 'x' (known: a, b)", for control replies.
  std::string no_such_vm(const std::string& name) const;

 private:
  std::vector<std::unique_ptr<ManagedVm>> vms_;
};

// Destroys a VM from the loop: the caller may be one of its own callbacks.
void destroy_later(DeferQueue& defer, std::unique_ptr<ManagedVm> vm);

}  // namespace relink::daemon
