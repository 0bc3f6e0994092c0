// SPDX-License-Identifier: GPL-2.0-or-later
// libvirt's running domains as VMs: one binding per <interface type='direct'>,
// kept in step with the live XML, and re-plugged through libvirt.
#include <algorithm>

#include "daemon/daemon.h"
#include "util/clock.h"
#include "util/log.h"

namespace relink::daemon {
namespace {

auto logger() { return log::get("libvirt"); }

}  // namespace

Result<void> Daemon::start_libvirt() {
  libvirt::SourceOptions opts;
  opts.uri = cfg_.libvirt.uri;
  opts.domains = cfg_.libvirt.domains;
  opts.pid_dir = cfg_.libvirt.pid_dir;
  libvirt::Source::Callbacks cbs;
  cbs.on_connection = [this](bool up, const std::string& error) { on_libvirt_connection(up, error); };
  cbs.on_domain = [this](const libvirt::DomainInfo& info) { on_libvirt_domain(info); };
  cbs.on_domain_gone = [this](const std::string& d) { on_libvirt_domain_gone(d, "stopped"); };
  cbs.on_listed = [this](const std::vector<std::string>& running) { on_libvirt_listed(running); };
  cbs.on_device_removed = [this](const std::string& d, const std::string& a) { on_libvirt_device_removed(d, a, false); };
  cbs.on_device_removal_failed = [this](const std::string& d, const std::string& a) {
    on_libvirt_device_removed(d, a, true);
  };
  libvirt_ = std::make_unique<libvirt::Source>(loop_.get(), std::move(opts), std::move(cbs));
  if (auto r = libvirt_->start(); !r) {
    libvirt_.reset();
    return Error{r.error().code, "libvirt: " + r.error().message};
  }
  logger()->info("following libvirt's domains at {}", cfg_.libvirt.uri);
  return ok();
}

void Daemon::on_libvirt_connection(bool up, const std::string& error) {
  if (up) {
    logger()->info("connected to libvirt at {}", cfg_.libvirt.uri);
    return;
  }
  logger()->warn("{}; retrying", error);
  // What libvirt said before is no longer known to be true: every binding is
  // offline until the domain is described again over a new connection.
  for (auto& vm : vms_) {
    if (!vm->from_libvirt || !vm->libvirt_live) continue;
    vm->libvirt_live = false;
    ++vm->session;
    for (auto& b : vm->bindings) {
      b->release_sent_us = 0;
      feed(*vm, *b, engine::VmDisconnected{false});
    }
  }
}

void Daemon::add_libvirt_binding(VmRt& vm, const libvirt::DirectInterface& iface, bool probe) {
  config::MacvtapBinding cfg = libvirt_binding(iface, cfg_.libvirt);
  if (cfg.nic.empty()) {
    logger()->warn("{}: interface {} has no alias: not followed", vm.cfg.name, format_mac(iface.mac));
    return;
  }
  vm.libvirt_cfgs.push_back(cfg);
  vm.cfg.macvtaps.push_back(cfg);
  auto rt = std::make_unique<BindingRt>(vm.cfg.name, cfg);
  rt->daemon = this;
  rt->owner = &vm;
  (void)rt->engine.handle(parent_of(cfg));
  vm.bindings.push_back(std::move(rt));
  logger()->info("{}/{}: following {} on {} ({} mode{})", vm.cfg.name, cfg.nic, format_mac(cfg.mac), cfg.parent,
                 iface.mode, iface.target_dev.empty() ? "" : ", macvtap " + iface.target_dev);
  if (!probe) return;
  vm.libvirt->probe({cfg}, [this, name = vm.cfg.name, nic = cfg.nic, session = vm.session](
                               std::vector<engine::VmConnected> found) {
    VmRt* v = find_vm(name);
    BindingRt* bb = v ? find_binding(*v, nic) : nullptr;
    if (!bb || v->session != session || found.empty()) return;
    feed(*v, *bb, found.front());
  });
}

void Daemon::remove_binding(VmRt& vm, const std::string& nic) {
  auto it = std::find_if(vm.bindings.begin(), vm.bindings.end(), [&](const auto& b) { return b->cfg.nic == nic; });
  if (it == vm.bindings.end()) return;
  const config::MacvtapBinding cfg = (*it)->cfg;
  vm.bindings.erase(it);
  std::erase(vm.cfgs_for(cfg.attach), cfg);
  std::erase(vm.cfg.macvtaps, cfg);
}

void Daemon::on_libvirt_domain(const libvirt::DomainInfo& info) {
  const std::string& name = info.desc.name;
  if (cfg_.find_vm(name) || runtime_vm(name)) {
    const bool runtime = !cfg_.find_vm(name);
    if (!libvirt_conflicts_.count(name))
      logger()->error("libvirt domain {} has the name of a VM {}: not followed (rename one of them, or list "
                      "the others in [libvirt] domains)",
                      name, runtime ? "registered at runtime" : "in " + cfg_.path);
    libvirt_conflicts_[name] = runtime ? "a VM registered at runtime has this name" : "a VM of the config file has this name";
    return;
  }
  for (const auto& why : info.desc.skipped) logger()->warn("{}: {}", name, why);
  VmRt* vm = find_vm(name);
  if (!vm) {
    auto v = std::make_unique<VmRt>();
    v->cfg.name = name;
    v->from_libvirt = true;
    v->libvirt = std::make_unique<LibvirtAttacher>(*libvirt_, *factory_, *defer_, name);
    vm = v.get();
    vms_.push_back(std::move(v));
    logger()->info("{}: libvirt domain running (QEMU pid {}), {} direct interface{}", name, info.qemu_pid,
                   info.desc.interfaces.size(), info.desc.interfaces.size() == 1 ? "" : "s");
  }
  vm->libvirt->update(info);
  if (vm->paused != info.paused)
    logger()->info("{}: {}", name, info.paused ? "paused" : "running");
  vm->paused = info.paused;
  if (vm->paused)
    for (auto& b : vm->bindings)
      if (b->engine.state() != engine::State::Attached) keep_resumable(*vm, *b);
  const bool was_live = vm->libvirt_live;
  vm->libvirt_live = true;

  // Interfaces gone from the live XML: their owner detached them. One that
  // relinkd released itself (to plug it in again) is kept.
  std::vector<std::string> gone;
  for (auto& b : vm->bindings) {
    const libvirt::DirectInterface* i = vm->libvirt->interface(b->cfg.mac);
    if (i) {
      // libvirt may give a re-attached interface another alias.
      if (i->alias != b->cfg.nic && !i->alias.empty()) {
        logger()->info("{}/{}: now called {} by libvirt", name, b->cfg.nic, i->alias);
        config::MacvtapBinding next = b->cfg;
        next.nic = i->alias;
        next.macvtap = i->target_dev;
        std::replace(vm->libvirt_cfgs.begin(), vm->libvirt_cfgs.end(), b->cfg, next);
        std::replace(vm->cfg.macvtaps.begin(), vm->cfg.macvtaps.end(), b->cfg, next);
        b->cfg = next;
      } else if (i->target_dev != b->cfg.macvtap) {
        config::MacvtapBinding next = b->cfg;
        next.macvtap = i->target_dev;
        std::replace(vm->libvirt_cfgs.begin(), vm->libvirt_cfgs.end(), b->cfg, next);
        std::replace(vm->cfg.macvtaps.begin(), vm->cfg.macvtaps.end(), b->cfg, next);
        b->cfg = next;
      }
      continue;
    }
    const engine::State st = b->engine.state();
    if (!b->engine.nic_present() || st == engine::State::Releasing || st == engine::State::Attaching) continue;
    if (!was_live) continue;  // after a reconnect, the probe below says it is gone
    gone.push_back(b->cfg.nic);
  }
  for (const auto& nic : gone) {
    logger()->info("{}/{}: interface detached by its owner: no longer followed", name, nic);
    remove_binding(*vm, nic);
  }
  // Interfaces that are new to relinkd.
  for (const auto& i : info.desc.interfaces) {
    const bool known = std::any_of(vm->bindings.begin(), vm->bindings.end(),
                                   [&](const auto& b) { return b->cfg.mac == i.mac; });
    if (!known) add_libvirt_binding(*vm, i, was_live);
  }
  if (!was_live) {
    // First description over this connection: adopt what is attached, replug
    // what is not.
    probe_bindings(*vm, ++vm->session);
  }
}

void Daemon::on_libvirt_domain_gone(const std::string& domain, const std::string& why) {
  libvirt_conflicts_.erase(domain);
  auto it = std::find_if(vms_.begin(), vms_.end(),
                         [&](const auto& v) { return v->from_libvirt && v->cfg.name == domain; });
  if (it == vms_.end()) return;
  logger()->info("{}: libvirt domain {}: no longer followed", domain, why);
  // Its bindings' timers go with it; libvirt deletes its macvtaps itself.
  std::unique_ptr<VmRt> dead = std::move(*it);
  vms_.erase(it);
  defer_->post([dead = std::shared_ptr<VmRt>(std::move(dead))] {});
}

void Daemon::on_libvirt_listed(const std::vector<std::string>& running) {
  std::vector<std::string> gone;
  for (const auto& v : vms_)
    if (v->from_libvirt && std::find(running.begin(), running.end(), v->cfg.name) == running.end())
      gone.push_back(v->cfg.name);
  for (const auto& d : gone) on_libvirt_domain_gone(d, "no longer running");
}

void Daemon::on_libvirt_device_removed(const std::string& domain, const std::string& alias, bool failed) {
  VmRt* vm = find_vm(domain);
  if (!vm || !vm->from_libvirt) return;
  BindingRt* b = find_binding(*vm, alias);
  if (!b) return;
  if (failed) {
    if (b->engine.state() != engine::State::Releasing) return;
    b->release_sent_us = 0;
    feed(*vm, *b, engine::ReleaseFailed{"the guest refused to release " + alias + " (libvirt: device removal failed)"});
    return;
  }
  if (b->release_sent_us) {
    b->last_release_ms = static_cast<double>(monotonic_us() - b->release_sent_us) / 1000.0;
    b->round_release_ms = b->last_release_ms;
    b->release_sent_us = 0;
    logger()->info("{}/{}: the guest released the NIC in {:.0f} ms", domain, alias, b->last_release_ms);
  } else if (b->engine.state() == engine::State::Attached) {
    // Not asked for, and healthy: its owner detached it.
    logger()->info("{}/{}: interface detached by its owner: no longer followed", domain, alias);
    remove_binding(*vm, alias);
    return;
  }
  // Asked for, or a late answer to a release that timed out or was lost with
  // a libvirtd restart.
  feed(*vm, *b, engine::Released{});
}

// libvirt cannot resume a paused domain whose direct interface's macvtap is
// gone: it sets that name online first, and fails. A stand-in macvtap of the
// same name on the returned parent lets the user resume it; the guest then
// releases the NIC, libvirt deletes the stand-in with the interface, and the
// NIC is plugged in anew. QEMU never gets the stand-in's fd.
void Daemon::keep_resumable(VmRt& vm, BindingRt& b) {
  if (!vm.from_libvirt || !vm.paused) return;
  const libvirt::DirectInterface* i = vm.libvirt->interface(b.cfg.mac);
  if (!i || i->target_dev.empty() || links_->table().find_by_name(i->target_dev)) return;
  const int parent = resolve_parent(b.cfg);
  if (!parent) return;
  macvtap::MacvtapSpec spec{i->target_dev, parent, b.cfg.mode, b.cfg.mac, 1};
  auto made = factory_->create(spec);
  if (!made) {
    logger()->warn("{}/{}: cannot make a stand-in {} for libvirt to resume the domain with: {}", vm.cfg.name,
                   b.cfg.nic, i->target_dev, made.error().message);
    return;
  }
  logger()->info("{}/{}: made a stand-in macvtap {} so that libvirt can resume the paused domain", vm.cfg.name,
                 b.cfg.nic, i->target_dev);
}

nlohmann::json Daemon::libvirt_status() const {
  if (!cfg_.libvirt.enabled) return {{"enabled", false}};
  nlohmann::json j = {{"enabled", true},
                      {"uri", cfg_.libvirt.uri},
                      {"connected", libvirt_ && libvirt_->connected()}};
  j["last_error"] = libvirt_ && !libvirt_->last_error().empty() ? nlohmann::json(libvirt_->last_error())
                                                                 : nlohmann::json(nullptr);
  j["domains"] = cfg_.libvirt.domains;
  nlohmann::json conflicts = nlohmann::json::object();
  for (const auto& [d, why] : libvirt_conflicts_) conflicts[d] = why;
  j["not_followed"] = std::move(conflicts);
  return j;
}

}  // namespace relink::daemon
