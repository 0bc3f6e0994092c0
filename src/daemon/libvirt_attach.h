// SPDX-License-Identifier: GPL-2.0-or-later
// Carries out the engine's replug for a libvirt domain's direct interface
// through libvirt's API, never through QMP: release is
// virDomainDetachDeviceAlias (DEVICE_REMOVED says when it is done), attach is
// virDomainAttachDeviceFlags with the interface's own XML (libvirt makes the
// macvtap, opens it and hands it to QEMU), the link is a live device update.
// The domain stays untainted and libvirt's view of it stays true.
#pragma once

#include <sys/types.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "config/config.h"
#include "daemon/attacher.h"
#include "daemon/intent_journal.h"
#include "libvirt/libvirt_connection.h"
#include "macvtap/macvtap_factory.h"
#include "util/defer_queue.h"

namespace relink::daemon {

class LibvirtAttacher final : public Attacher {
 public:
  LibvirtAttacher(libvirt::DomainRequests& source, macvtap::MacvtapFactory& factory, DeferQueue& defer, std::string domain)
      : source_(source), factory_(factory), defer_(defer), domain_(std::move(domain)) {}

  // The domain's latest live description. An interface that is missing from
  // it is remembered as last seen: after a release it is attached again from
  // that description.
  void update(const libvirt::DomainInfo& info);
  const libvirt::DirectInterface* interface(const MacAddress& mac) const;
  const libvirt::DomainInfo& info() const { return info_; }

  // Adopts an interface whose macvtap is alive and really held by QEMU (its
  // device among QEMU's open fds); a missing interface is reported absent.
  void probe(const std::vector<config::MacvtapBinding>& bindings,
             std::function<void(std::vector<engine::VmConnected>)> done) override;
  // libvirt creates the macvtap itself: nothing is made here.
  Result<macvtap::Macvtap> create(const config::MacvtapBinding& b, int parent_ifindex) override;
  // Attaches the interface again (same MAC, source, mode, model, PCI address,
  // queues; no target, so libvirt names a new macvtap). Succeeds with the new
  // macvtap's ifindex; if QEMU does not hold that macvtap's device (libvirt
  // opened /dev/tap<ifindex> of another namespace), the result says so in
  // `wrong_tap`. An interface that is plugged in with no macvtap (gone before
  // it was read back, or an attach refused because the NIC is there already)
  // succeeds with ifindex 0: the tap is lost, the NIC present.
  void hand_over(const config::MacvtapBinding& b, uint64_t generation, macvtap::Macvtap mvt, bool link_up,
                 std::function<void(AttachResult)> done) override;
  // The macvtap is libvirt's: only the link is set down when asked.
  void detach(const config::MacvtapBinding& b, uint64_t generation, int macvtap_ifindex, bool link_down) override;
  void release(const config::MacvtapBinding& b, uint64_t generation,
               std::function<void(ReleaseResult)> done) override;
  void set_link(const config::MacvtapBinding& b, bool up) override;

  // Where each release is written down first (the interface as libvirt
  // described it) and forgotten once it is attached again.
  void set_journal(IntentJournal* journal) { journal_ = journal; }
  // The interfaces an earlier relinkd released from this domain and did not
  // live to attach again, now missing from the live XML: each is remembered
  // as last seen (hand_over attaches it from there) and returned. Entries for
  // interfaces the live XML has are forgotten, but for one that still has
  // the macvtap it had then. Call with a fresh update().
  std::vector<libvirt::DirectInterface> resume_from_journal();
  // The journal has a release of this interface that an earlier relinkd
  // asked for: a DEVICE_REMOVED nobody here asked for is that release's.
  bool release_asked_before(const MacAddress& mac) const;

 private:
  bool plugged_in_already(const MacAddress& mac, const std::string& pci, const std::string& error) const;
  std::string journal_identity() const;
  Result<void> journal_release(const libvirt::DirectInterface& iface);
  void journal_forget(const MacAddress& mac);

  libvirt::DomainRequests& source_;
  macvtap::MacvtapFactory& factory_;
  DeferQueue& defer_;
  std::string domain_;
  IntentJournal* journal_ = nullptr;
  libvirt::DomainInfo info_;
  std::map<MacAddress, libvirt::DirectInterface> last_seen_;
  std::map<MacAddress, uint64_t> generations_;  // the generation each interface's macvtap is
  // Results of libvirt calls come back after the domain may have gone, and
  // this attacher with it.
  std::shared_ptr<int> alive_ = std::make_shared<int>(0);
};

// A direct interface as the journal keeps it, and back.
nlohmann::json interface_to_json(const libvirt::DirectInterface& iface);
Result<libvirt::DirectInterface> interface_from_json(const nlohmann::json& j);

// The binding relinkd makes for a direct interface of `domain`.
config::MacvtapBinding libvirt_binding(const libvirt::DirectInterface& iface, const config::Libvirt& cfg,
                                       const std::string& domain = {});

}  // namespace relink::daemon
