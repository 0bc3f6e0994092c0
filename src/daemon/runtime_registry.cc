// SPDX-License-Identifier: GPL-2.0-or-later
// Runtime registrations: loaded at start, added and removed over the control
// socket, saved before they take effect.
#include "daemon/runtime_registry.h"

#include "util/log.h"
#include "util/untrusted.h"

namespace relink::daemon {
namespace {
auto logger() { return log::get("daemon"); }
}  // namespace

const config::RuntimeVm* RuntimeRegistry::find(const std::string& name) const {
  for (const auto& rv : vms_)
    if (rv.vm.name == name) return &rv;
  return nullptr;
}

void RuntimeRegistry::load(std::vector<const config::Vm*> known, const std::string& control_socket) {
  auto loaded = store_.load();
  if (!loaded) {
    logger()->error("runtime VMs: {}; starting without them", loaded.error().message);
    return;
  }
  vms_.reserve(loaded->size());  // `known` points into it
  for (auto& rv : *loaded) {
    if (const std::string why = config::runtime_conflict(known, rv.vm, control_socket); !why.empty()) {
      logger()->error("runtime VM {} from {} not registered again: {}", rv.vm.name, store_.path(), why);
      continue;
    }
    vms_.push_back(std::move(rv));
    known.push_back(&vms_.back().vm);
  }
  if (!vms_.empty())
    logger()->info("{} VM{} registered at runtime, from {}", vms_.size(), vms_.size() == 1 ? "" : "s", store_.path());
}

Result<std::vector<config::RuntimeVm>> RuntimeRegistry::add(const std::string& text,
                                                            std::vector<const config::Vm*> known,
                                                            const std::string& control_socket) {
  if (text.empty()) return Error{EINVAL, "add: no [[vm]] tables given"};
  std::vector<config::RuntimeVm> adding;
  try {
    adding = config::parse_runtime_vms(text, "add");
  } catch (const config::ConfigError& e) {
    return Error{EINVAL, untrusted::safe_text(e.what(), 2000)};
  }
  for (const auto& rv : adding) {
    if (const std::string why = config::runtime_conflict(known, rv.vm, control_socket); !why.empty())
      return Error{EEXIST, "add: VM '" + rv.vm.name + "': " + why};
    known.push_back(&rv.vm);
  }
  std::vector<config::RuntimeVm> next = vms_;
  next.insert(next.end(), adding.begin(), adding.end());
  if (auto r = store_.save(next); !r) return Error{r.error().code, "add: cannot keep the registration: " + r.error().message};
  vms_ = std::move(next);
  return adding;
}

Result<void> RuntimeRegistry::remove(const std::string& name) {
  std::vector<config::RuntimeVm> next;
  for (const auto& rv : vms_)
    if (rv.vm.name != name) next.push_back(rv);
  if (auto r = store_.save(next); !r)
    return Error{r.error().code, "remove: cannot update the registrations: " + r.error().message};
  vms_ = std::move(next);
  return ok();
}

}  // namespace relink::daemon
