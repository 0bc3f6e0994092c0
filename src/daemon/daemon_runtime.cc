// SPDX-License-Identifier: GPL-2.0-or-later
// VMs registered at runtime (relinkctl add / remove): the same keys as the
// config file, kept in state_dir/runtime.toml across restarts.
#include <algorithm>

#include "daemon/daemon.h"
#include "util/log.h"
#include "util/untrusted.h"

namespace relink::daemon {
namespace {
auto logger() { return log::get("daemon"); }
}  // namespace

// Every VM a new registration must not clash with: the file's, the runtime
// ones, and libvirt's domains.
std::vector<const config::Vm*> Daemon::known_vms() const {
  std::vector<const config::Vm*> known;
  for (const auto& v : cfg_.vms) known.push_back(&v);
  for (const auto& r : runtime_vms_) known.push_back(&r.vm);
  for (const auto& v : vms_)
    if (v->from_libvirt) known.push_back(&v->cfg);
  return known;
}

const config::RuntimeVm* Daemon::runtime_vm(const std::string& name) const {
  for (const auto& rv : runtime_vms_)
    if (rv.vm.name == name) return &rv;
  return nullptr;
}

void Daemon::load_runtime_vms() {
  runtime_store_ = std::make_unique<RuntimeStore>(cfg_.daemon.state_dir);
  auto loaded = runtime_store_->load();
  if (!loaded) {
    logger()->error("runtime VMs: {}; starting without them", loaded.error().message);
    return;
  }
  for (auto& rv : *loaded) {
    if (const std::string why = config::runtime_conflict(known_vms(), rv.vm, cfg_.daemon.control_socket);
        !why.empty()) {
      // The file may have gained the same VM since: it wins; the runtime
      // registration is dropped (and said so) rather than refusing to start.
      logger()->error("runtime VM {} from {} not registered again: {}", rv.vm.name, runtime_store_->path(), why);
      continue;
    }
    runtime_vms_.push_back(std::move(rv));
  }
  if (!runtime_vms_.empty())
    logger()->info("{} VM{} registered at runtime, from {}", runtime_vms_.size(), runtime_vms_.size() == 1 ? "" : "s",
                   runtime_store_->path());
}

nlohmann::json Daemon::control_add(const std::string& text) {
  if (text.empty()) return {{"ok", false}, {"error", "add: no [[vm]] tables given"}};
  std::vector<config::RuntimeVm> adding;
  try {
    adding = config::parse_runtime_vms(text, "add");
  } catch (const config::ConfigError& e) {
    return {{"ok", false}, {"error", untrusted::safe_text(e.what(), 2000)}};
  }
  std::vector<const config::Vm*> existing = known_vms();
  for (const auto& rv : adding) {
    if (const std::string why = config::runtime_conflict(existing, rv.vm, cfg_.daemon.control_socket); !why.empty())
      return {{"ok", false}, {"error", "add: VM '" + rv.vm.name + "': " + why}};
    existing.push_back(&rv.vm);
  }
  std::vector<config::RuntimeVm> next = runtime_vms_;
  next.insert(next.end(), adding.begin(), adding.end());
  if (auto r = runtime_store_->save(next); !r)
    return {{"ok", false}, {"error", "add: cannot keep the registration: " + r.error().message}};
  runtime_vms_ = std::move(next);
  // The first passt binding there is: find out what the installed passt can do.
  if (!passt_probed_ && std::any_of(adding.begin(), adding.end(), [](auto& rv) { return !rv.vm.passts.empty(); }))
    probe_passt_features();
  nlohmann::json changes = apply_vms(cfg_);
  logger()->info("registered at runtime: {}", describe_changes(changes));
  return {{"ok", true}, {"result", std::move(changes)}};
}

nlohmann::json Daemon::control_remove(const std::string& name) {
  if (!runtime_vm(name)) {
    if (cfg_.find_vm(name))
      return {{"ok", false},
              {"error", "VM '" + name + "' comes from " + cfg_.path + ", not from relinkctl add: edit the file and reload"}};
    VmRt* v = find_vm(name);
    if (v && v->from_libvirt)
      return {{"ok", false}, {"error", "VM '" + name + "' is a libvirt domain: see [libvirt] domains to stop following it"}};
    return {{"ok", false}, {"error", no_such_vm(name)}};
  }
  std::vector<config::RuntimeVm> next;
  for (const auto& rv : runtime_vms_)
    if (rv.vm.name != name) next.push_back(rv);
  if (auto r = runtime_store_->save(next); !r)
    return {{"ok", false}, {"error", "remove: cannot update the registrations: " + r.error().message}};
  runtime_vms_ = std::move(next);
  nlohmann::json changes = apply_vms(cfg_);
  logger()->info("unregistered at runtime: {}", describe_changes(changes));
  return {{"ok", true}, {"result", std::move(changes)}};
}

}  // namespace relink::daemon
