// SPDX-License-Identifier: GPL-2.0-or-later
// Carries out the engine's actions for replug-attached NICs: NICs peered
// directly with a tap netdev, the way libvirt and launch scripts wire a
// macvtap (`-netdev tap,id=hostnet0,fd=N -device virtio-net-pci,
// netdev=hostnet0,id=net0,...`).
//
// QEMU cannot re-peer a NIC with a new backend (netdev_del leaves it
// peer_deleted for good, qom-set of `netdev` is refused), so a new macvtap
// reaches the guest only through a new NIC: device_del, the guest lets go
// (DEVICE_DELETED, routed by the daemon), then device_add of the same NIC on
// the new tap. probe() reads what that device_add needs (a NicTemplate) while
// the NIC is still there.
#pragma once

#include <sys/types.h>

#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "daemon/attacher.h"
#include "daemon/intent_journal.h"
#include "daemon/nic_template.h"
#include "qemu/info_network.h"
#include "qemu/qmp_client.h"
#include "util/defer_queue.h"
#include "util/mac.h"

namespace relink::daemon {

// The macvtap interface name and ifindex behind a /sys/dev/char link target
// ("../../devices/virtual/net/NAME/macvtap/tapIFINDEX"); nullopt for anything
// else (a tun/tap, another class of device).
struct MacvtapLink {
  std::string name;
  int ifindex = 0;
};
std::optional<MacvtapLink> parse_macvtap_link(const std::string& target);

class ReplugAttacher final : public Attacher {
 public:
  ReplugAttacher(macvtap::MacvtapFactory& factory, qemu::QmpClient& qmp, DeferQueue& defer)
      : factory_(factory), qmp_(qmp), defer_(defer) {}

  // Per binding, pipelined: qom-get of the NIC's type and the properties the
  // template needs, then "info network" for the NIC's backend. The tap's fd
  // is followed through /proc/<qemu>/fd and /sys/dev/char to a macvtap; one
  // that QEMU really holds and that has the binding's MAC is adopted,
  // whatever its name (it may be the launcher's). Our own taps that are not
  // the NIC's backend are deleted.
  void probe(const std::vector<config::MacvtapBinding>& bindings,
             std::function<void(std::vector<engine::VmConnected>)> done) override;

  // device_del of the NIC. DeviceNotFound: already gone.
  void release(const config::MacvtapBinding& b, uint64_t generation,
               std::function<void(ReleaseResult)> done) override;

  // Like HubAttacher::create. The kernel lets only one macvtap with a given
  // MAC be up on a parent: if the launcher's macvtap adopted for this NIC
  // still sits on the parent with the binding's MAC and release() has had
  // the NIC unplugged, it is deleted (only relinkd's new macvtap can take
  // its place).
  Result<macvtap::Macvtap> create(const config::MacvtapBinding& b, int parent_ifindex) override;

  // Checks the NIC is gone; netdev_del of its previous backend, getfd per
  // queue, netdev_add tap (pipelined); then device_add from the template and
  // set_link off when !link_up. Rolls back on any failure.
  void hand_over(const config::MacvtapBinding& b, uint64_t generation, macvtap::Macvtap mvt, bool link_up,
                 std::function<void(AttachResult)> done) override;

  // set_link off if asked; deletes the macvtap if it is ours (named
  // b.macvtap). The NIC stays peered with its tap until it is released:
  // hand_over deletes the old backend.
  void detach(const config::MacvtapBinding& b, uint64_t generation, int macvtap_ifindex, bool link_down) override;

  void set_link(const config::MacvtapBinding& b, bool up) override;

  // The NIC was released for a parent that is gone (release on loss):
  // netdev_del of its old backend now, so that closing the dead macvtap's
  // fd (which blocks QEMU's main loop) is not on the path of the return.
  void drop_backend(const std::string& nic);

  // The template probe() read for `nic` (nullptr: none).
  const NicTemplate* nic_template(const std::string& nic) const;

  // A release of `nic` that an earlier relinkd asked for may still be
  // pending in QEMU: the journal has it, and the NIC is on the backend it had
  // then. Its DEVICE_DELETED is that release's, not someone else's unplug.
  bool release_asked_before(const std::string& nic) const;
  // The launcher's macvtap adopted for `nic`, while it is still the one at
  // `ifindex` ("": the NIC uses relinkd's own, named in the config).
  std::string adopted_macvtap(const std::string& nic, int ifindex) const;
  // Where each release is written down first (the NIC's template) and
  // forgotten once the NIC is plugged in again; probe() takes the template
  // from there for a NIC QEMU no longer has.
  void set_journal(IntentJournal* journal) { journal_ = journal; }

 private:
  struct ProbeState;
  struct NicProbe;
  void finish_probe(const std::shared_ptr<ProbeState>& st, const qemu::QmpReply& info);
  // The steps of finish_probe for one NIC: the template for device_add, the
  // macvtap QEMU already uses, our leftovers beside it.
  void read_template(NicProbe& p);
  void adopt(NicProbe& p);
  void remove_leftovers(const NicProbe& p);

  struct HandOver;
  // The steps of hand_over, each sent when the one before has answered;
  // roll_back() on any failure.
  void add_tap(const std::shared_ptr<HandOver>& op, uint64_t generation);
  void plug_in(const std::shared_ptr<HandOver>& op);
  void plugged_in(const std::shared_ptr<HandOver>& op);
  void roll_back(const std::shared_ptr<HandOver>& op, bool del_tap);
  // A step got no answer in time: nothing is undone (QEMU may have plugged
  // the NIC onto the new tap), the session is reset, and the next probe
  // adopts what QEMU has or removes what it does not use.
  void unknown_outcome(const std::shared_ptr<HandOver>& op, const std::string& step, const Error& why);
  // create() found the binding's MAC taken on the parent by the macvtap
  // adopted from the launcher: deletes it if it still is that one.
  bool remove_adopted_rival(const config::MacvtapBinding& b, int parent_ifindex);

  // The journal's part: before device_del, after device_add, at probe.
  Result<void> journal_release(const std::string& nic, const NicTemplate& t);
  void journal_forget(const std::string& nic, pid_t pid);
  // The backend the journal's entry for `nic` had ("": no entry).
  std::string journalled_backend(const std::string& nic, pid_t pid) const;
  void drop_journalled_backend(const std::string& nic, pid_t pid, const std::string& netdev_now,
                               const std::vector<qemu::NetClient>* clients);
  bool template_from_journal(const std::string& nic, pid_t pid);

  macvtap::MacvtapFactory& factory_;
  qemu::QmpClient& qmp_;
  DeferQueue& defer_;
  IntentJournal* journal_ = nullptr;
  std::map<std::string, NicTemplate> templates_;  // by NIC id
  // A macvtap adopted by probe() that is not ours (the launcher's), by NIC id.
  struct Adopted {
    std::string name;
    int ifindex = 0;
    int parent_ifindex = 0;
    bool released = false;  // release() got the NIC unplugged (or asked QEMU to)
  };
  std::map<std::string, Adopted> adopted_;
};

}  // namespace relink::daemon
