// SPDX-License-Identifier: GPL-2.0-or-later
// libvirt as a source of VMs: owns the connection to libvirtd, turns each
// followed running domain into a LibvirtVm in the VM table, and routes the
// connection's events (domains, device removals) to them. A domain whose name
// another source has claimed is not followed (and status says why).
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "daemon/libvirt_vm.h"
#include "daemon/services.h"
#include "daemon/vm_table.h"
#include "libvirt/libvirt_connection.h"

namespace relink::daemon {

class LibvirtDomains {
 public:
  // Which other source has the name ("config", "runtime"), "" when none has.
  using Claim = std::function<std::string(const std::string& name)>;
  LibvirtDomains(const Services& s, VmTable& vms, Claim claim);
  // Its VMs leave the table first: they use the connection.
  ~LibvirtDomains();
  LibvirtDomains(const LibvirtDomains&) = delete;
  LibvirtDomains& operator=(const LibvirtDomains&) = delete;

  Result<void> start();
  // Takes its VMs out of the table and ends the connection, waiting at
  // most `wait` for its thread (libvirt::Connection::retire). The
  // destructor does it without waiting.
  void stop(std::chrono::milliseconds wait);

  // A reload: takes this source's VMs out of the table, to be put back
  // (put_back) once the other sources' VMs are in place.
  std::vector<std::unique_ptr<ManagedVm>> take_vms();
  // Puts them back, but not one whose name another source now has.
  void put_back(std::vector<std::unique_ptr<ManagedVm>> vms);
  // Names another source held: if it no longer does, look at the domain again.
  void recheck_claims();

  // status' "libvirt" object (domains: null when libvirt is not followed).
  static nlohmann::json status(const LibvirtDomains* domains, const config::Libvirt& cfg);

 private:
  void on_connection(bool up, const std::string& error);
  void on_domain(const libvirt::DomainInfo& info);
  void on_domain_gone(const std::string& domain, const std::string& why);
  void on_listed(const std::vector<std::string>& running);
  void on_device_removed(const std::string& domain, const std::string& alias, bool failed);
  LibvirtVm* find(const std::string& domain);

  Services s_;
  VmTable& vms_;
  Claim claim_;
  // Domains of a name another source has: not followed (why).
  std::map<std::string, std::string> conflicts_;
  std::unique_ptr<libvirt::Connection> connection_;
};

}  // namespace relink::daemon
