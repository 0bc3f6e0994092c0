// SPDX-License-Identifier: GPL-2.0-or-later
// Runtime registrations: loaded at start (each alone: one that does not
// load is held), retried at reload, added and removed over the control
// socket, saved before they take effect.
#include "daemon/runtime_registry.h"

#include <algorithm>

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

bool RuntimeRegistry::holds(const std::string& name) const {
  return std::any_of(held_.begin(), held_.end(), [&](const config::HeldVm& h) { return h.name == name; });
}

void RuntimeRegistry::hold(config::HeldVm h) {
  logger()->error("runtime VM {} held aside (kept in {}, retried at every reload): {}",
                  h.name.empty() ? "without a name" : "'" + h.name + "'", store_.path(), h.error);
  held_.push_back(std::move(h));
}

void RuntimeRegistry::load(std::vector<const config::Vm*> known, const std::string& control_socket) {
  bool stuck = false;
  auto loaded = store_.load(&stuck);
  if (!loaded) {
    logger()->error("runtime VMs: {}; starting without them", loaded.error().message);
    if (stuck) stuck_ = loaded.error().message;
    return;
  }
  for (const auto& note : loaded->notes) logger()->warn("{}", note);
  vms_.reserve(loaded->vms.size());  // `known` points into it
  for (auto& rv : loaded->vms) {
    if (const std::string why = config::runtime_conflict(known, rv.vm, control_socket); !why.empty()) {
      std::vector<config::ResolvedIds> ids;
      for (const auto& p : rv.vm.passts) ids.push_back({rv.vm.name, p.netdev, p.runas, p.uid, p.gid});
      hold(config::HeldVm{rv.vm.name, rv.toml, why, std::move(ids)});
      continue;
    }
    vms_.push_back(std::move(rv));
    known.push_back(&vms_.back().vm);
  }
  for (auto& h : loaded->held) hold(std::move(h));
  if (!vms_.empty())
    logger()->info("{} VM{} registered at runtime, from {}", vms_.size(), vms_.size() == 1 ? "" : "s", store_.path());
}

size_t RuntimeRegistry::retry_held(std::vector<const config::Vm*> others, const std::string& control_socket) {
  if (held_.empty()) return 0;
  std::vector<config::HeldVm> still;
  std::vector<config::RuntimeVm> joining;
  joining.reserve(held_.size());
  for (const auto& rv : vms_) others.push_back(&rv.vm);
  for (auto& h : held_) {
    std::vector<std::string> notes;
    try {
      config::RuntimeVm rv = config::load_runtime_vm(h.toml, h.ids, store_.path(), notes);
      if (std::string why = config::runtime_conflict(others, rv.vm, control_socket); !why.empty()) {
        h.error = why;
        still.push_back(std::move(h));
        continue;
      }
      for (const auto& note : notes) logger()->warn("{}", note);
      logger()->info("runtime VM '{}' is no longer held aside: registered again", rv.vm.name);
      joining.push_back(std::move(rv));
      others.push_back(&joining.back().vm);
    } catch (const config::ConfigError& e) {
      h.error = e.what();
      still.push_back(std::move(h));
    }
  }
  held_ = std::move(still);
  for (auto& rv : joining) vms_.push_back(std::move(rv));
  return joining.size();
}

Result<std::vector<config::RuntimeVm>> RuntimeRegistry::add(const std::string& text,
                                                            std::vector<const config::Vm*> known,
                                                            const std::string& control_socket) {
  if (!stuck_.empty()) return Error{EBUSY, "add: runtime.toml cannot be written: " + stuck_};
  if (text.empty()) return Error{EINVAL, "add: no [[vm]] tables given"};
  std::vector<config::RuntimeVm> adding;
  try {
    adding = config::parse_runtime_vms(text, "add");
  } catch (const config::ConfigError& e) {
    return Error{EINVAL, untrusted::safe_text(e.what(), 2000)};
  }
  for (const auto& rv : adding) {
    if (holds(rv.vm.name))
      return Error{EEXIST, "add: VM '" + rv.vm.name + "' is registered already but held aside (see relinkctl "
                           "status; relinkctl remove " + rv.vm.name + " first)"};
    if (const std::string why = config::runtime_conflict(known, rv.vm, control_socket); !why.empty())
      return Error{EEXIST, "add: VM '" + rv.vm.name + "': " + why};
    known.push_back(&rv.vm);
  }
  std::vector<config::RuntimeVm> next = vms_;
  next.insert(next.end(), adding.begin(), adding.end());
  if (auto r = store_.save(next, held_); !r)
    return Error{r.error().code, "add: cannot keep the registration: " + r.error().message};
  vms_ = std::move(next);
  return adding;
}

Result<void> RuntimeRegistry::remove(const std::string& name) {
  if (!stuck_.empty()) return Error{EBUSY, "remove: runtime.toml cannot be written: " + stuck_};
  std::vector<config::RuntimeVm> next;
  for (const auto& rv : vms_)
    if (rv.vm.name != name) next.push_back(rv);
  std::vector<config::HeldVm> held;
  for (const auto& h : held_)
    if (h.name != name) held.push_back(h);
  if (auto r = store_.save(next, held); !r)
    return Error{r.error().code, "remove: cannot update the registrations: " + r.error().message};
  vms_ = std::move(next);
  held_ = std::move(held);
  return ok();
}

}  // namespace relink::daemon
