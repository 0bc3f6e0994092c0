// SPDX-License-Identifier: GPL-2.0-or-later
// A running libvirt domain as a VM: one macvtap runner per <interface
// type='direct'>, kept in step with the domain's live XML, re-plugged through
// libvirt (LibvirtAttacher); one bridge port runner per <interface
// type='bridge'> (its tap goes back into a re-created bridge, with no call
// to libvirt at all). relinkd never talks to its QEMU.
#pragma once

#include <map>
#include <memory>
#include <string>

#include "daemon/libvirt_attach.h"
#include "daemon/vm.h"
#include "libvirt/libvirt_connection.h"

namespace relink::daemon {

class LibvirtVm final : public ManagedVm {
 public:
  LibvirtVm(const std::string& domain, libvirt::DomainRequests& libvirt, const Services& s);

  const char* origin() const override { return "libvirt"; }
  bool connected() const override { return live_; }
  std::string offline_reason() const override { return "libvirt not connected"; }
  nlohmann::json status() const override;
  Result<nlohmann::json> qemu_args() const override;
  const char* release_method() const override { return "libvirt detach"; }
  void before_release(MacvtapRunner& b) override { keep_resumable(b); }
  void describe(nlohmann::json& binding) const override;
  void macvtap_gone(MacvtapRunner& b, int ifindex, uint64_t now_us) override;
  void links_changed() override;
  std::shared_ptr<spdlog::logger> origin_logger() const override;

  // The domain's live description, over a live connection.
  void update(const libvirt::DomainInfo& info);
  // The connection is gone: what libvirt said is no longer known to be true.
  void connection_lost();
  // libvirt's DEVICE_REMOVED (or its failure) for `alias`.
  void device_removed(const std::string& alias, bool failed);

  // libvirt deletes the macvtap of an interface its owner detaches before it
  // reports the removal: that report gets this long before the loss counts
  // as a dead tap to replace.
  static constexpr uint64_t kRemovalGraceMs = 1000;

 protected:
  void unasked_release(MacvtapRunner& b) override;

 private:
  void add_binding(const libvirt::DirectInterface& iface, bool probe);
  void remove_binding(const std::string& nic);
  void rename_binding(MacvtapRunner& b, const libvirt::DirectInterface& i);
  void keep_resumable(MacvtapRunner& b);
  void update_taps(const libvirt::Domain& d);

  LibvirtAttacher attacher_;
  bool live_ = false;    // described over a live connection
  bool paused_ = false;  // not running guest code
  uint64_t session_ = 0;  // bumped per description over a new connection
  std::map<MacAddress, int> stand_in_parent_;  // the parent each interface's stand-in was made on
};

}  // namespace relink::daemon
