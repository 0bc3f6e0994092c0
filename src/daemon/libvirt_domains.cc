// SPDX-License-Identifier: GPL-2.0-or-later
// libvirt's running domains as VMs: followed, updated and dropped as the
// connection reports them.
#include "daemon/libvirt_domains.h"

#include <algorithm>

#include "util/log.h"

namespace relink::daemon {
namespace {

auto logger() { return log::get("libvirt"); }

}  // namespace

LibvirtDomains::LibvirtDomains(const Services& s, VmTable& vms, Claim claim)
    : s_(s), vms_(vms), claim_(std::move(claim)) {}

LibvirtDomains::~LibvirtDomains() { stop(std::chrono::milliseconds(0)); }

void LibvirtDomains::stop(std::chrono::milliseconds wait) {
  if (!connection_) return;
  take_vms();
  // A libvirtd that accepted the connection and never answers holds the
  // thread in a call: it is left to end by itself, never waited for here.
  if (!libvirt::Connection::retire(std::move(connection_), wait))
    logger()->warn("libvirt: the connection's thread did not end within {} ms (libvirtd does not answer); "
                   "leaving it to end by itself",
                   wait.count());
}

Result<void> LibvirtDomains::start() {
  const config::Libvirt& cfg = s_.config->libvirt;
  libvirt::ConnectionOptions opts;
  opts.uri = cfg.uri;
  opts.domains = cfg.domains;
  opts.pid_dir = cfg.pid_dir;
  libvirt::Connection::Callbacks cbs;
  cbs.on_connection = [this](bool up, const std::string& error) { on_connection(up, error); };
  cbs.on_domain = [this](const libvirt::DomainInfo& info) { on_domain(info); };
  cbs.on_domain_gone = [this](const std::string& d) { on_domain_gone(d, "stopped"); };
  cbs.on_listed = [this](const std::vector<std::string>& running) { on_listed(running); };
  cbs.on_device_removed = [this](const std::string& d, const std::string& a) { on_device_removed(d, a, false); };
  cbs.on_device_removal_failed = [this](const std::string& d, const std::string& a) { on_device_removed(d, a, true); };
  connection_ = std::make_unique<libvirt::Connection>(s_.loop, std::move(opts), std::move(cbs));
  if (auto r = connection_->start(); !r) {
    connection_.reset();
    return Error{r.error().code, "libvirt: " + r.error().message};
  }
  logger()->info("following libvirt's domains at {}", cfg.uri);
  return ok();
}

LibvirtVm* LibvirtDomains::find(const std::string& domain) { return dynamic_cast<LibvirtVm*>(vms_.find(domain)); }

std::vector<std::unique_ptr<ManagedVm>> LibvirtDomains::take_vms() {
  return vms_.take_if([](const ManagedVm& v) { return dynamic_cast<const LibvirtVm*>(&v) != nullptr; });
}

void LibvirtDomains::put_back(std::vector<std::unique_ptr<ManagedVm>> vms) {
  for (auto& v : vms) {
    if (vms_.find(v->name())) {
      conflicts_[v->name()] = "a VM of the config file has this name";
      logger()->error("libvirt domain {} has the name of a VM in {}: not followed", v->name(), s_.config->path);
      continue;
    }
    vms_.add(std::move(v));
  }
}

void LibvirtDomains::recheck_claims() {
  for (auto it = conflicts_.begin(); it != conflicts_.end();) {
    if (vms_.find(it->first)) {
      ++it;
      continue;
    }
    connection_->refresh(it->first);
    it = conflicts_.erase(it);
  }
}

void LibvirtDomains::on_connection(bool up, const std::string& error) {
  if (up) {
    logger()->info("connected to libvirt at {}", s_.config->libvirt.uri);
    return;
  }
  logger()->warn("{}; retrying", error);
  // What libvirt said before is no longer known to be true: every binding is
  // offline until the domain is described again over a new connection.
  for (auto& vm : vms_.all())
    if (auto* v = dynamic_cast<LibvirtVm*>(vm.get())) v->connection_lost();
}

void LibvirtDomains::on_domain(const libvirt::DomainInfo& info) {
  const std::string& name = info.desc.name;
  if (const std::string origin = claim_(name); !origin.empty()) {
    const bool runtime = origin == "runtime";
    if (!conflicts_.count(name))
      logger()->error("libvirt domain {} has the name of a VM {}: not followed (rename one of them, or list "
                      "the others in [libvirt] domains)",
                      name, runtime ? "registered at runtime" : "in " + s_.config->path);
    conflicts_[name] = runtime ? "a VM registered at runtime has this name" : "a VM of the config file has this name";
    return;
  }
  for (const auto& why : info.desc.skipped) logger()->warn("{}: {}", name, why);
  LibvirtVm* vm = find(name);
  if (!vm) {
    vm = static_cast<LibvirtVm*>(&vms_.add(std::make_unique<LibvirtVm>(name, *connection_, s_)));
    logger()->info("{}: libvirt domain running (QEMU pid {}), {} direct interface{}", name, info.qemu_pid,
                   info.desc.interfaces.size(), info.desc.interfaces.size() == 1 ? "" : "s");
  }
  vm->update(info);
}

void LibvirtDomains::on_domain_gone(const std::string& domain, const std::string& why) {
  conflicts_.erase(domain);
  if (!find(domain)) return;
  logger()->info("{}: libvirt domain {}: no longer followed", domain, why);
  // Its bindings' timers go with it; libvirt deletes its macvtaps itself.
  destroy_later(*s_.defer, vms_.take(domain));
}

void LibvirtDomains::on_listed(const std::vector<std::string>& running) {
  std::vector<std::string> gone;
  for (const auto& v : vms_.all())
    if (dynamic_cast<const LibvirtVm*>(v.get()) && std::find(running.begin(), running.end(), v->name()) == running.end())
      gone.push_back(v->name());
  for (const auto& d : gone) on_domain_gone(d, "no longer running");
}

void LibvirtDomains::on_device_removed(const std::string& domain, const std::string& alias, bool failed) {
  if (LibvirtVm* vm = find(domain)) vm->device_removed(alias, failed);
}

nlohmann::json LibvirtDomains::status(const LibvirtDomains* d, const config::Libvirt& cfg) {
  if (!cfg.enabled) return {{"enabled", false}};
  const libvirt::Connection* c = d ? d->connection_.get() : nullptr;
  nlohmann::json j = {{"enabled", true}, {"uri", cfg.uri}, {"connected", c && c->connected()}};
  j["last_error"] = c && !c->last_error().empty() ? nlohmann::json(c->last_error()) : nlohmann::json(nullptr);
  j["waiting_for_socket"] = c && c->waiting_for_socket();
  j["domains"] = cfg.domains;
  nlohmann::json conflicts = nlohmann::json::object();
  if (d)
    for (const auto& [name, why] : d->conflicts_) conflicts[name] = why;
  j["not_followed"] = std::move(conflicts);
  return j;
}

}  // namespace relink::daemon
