// SPDX-License-Identifier: GPL-2.0-or-later
// Carries out the engine's Attach and Detach actions for hub-attached NICs,
// and looks at a freshly connected QEMU to adopt what a previous relinkd left.
//
// Wiring (see docs/architecture.md): the NIC is peered with a hubport
// "<nic>.port" on hub H; relinkd hangs the tap "<nic>.tap<gen>" off a second
// hubport "<nic>.uplink<gen>" on H, and toggles the NIC's link.
#pragma once

#include <sys/types.h>

#include <functional>
#include <vector>

#include "config/config.h"
#include "daemon/attacher.h"
#include "engine/binding.h"
#include "macvtap/macvtap_factory.h"
#include "qemu/qmp_client.h"
#include "util/defer_queue.h"

namespace relink::daemon {

class HubAttacher final : public Attacher {
 public:
  HubAttacher(macvtap::MacvtapFactory& factory, qemu::QmpClient& qmp, DeferQueue& defer)
      : factory_(factory), qmp_(qmp), defer_(defer) {}

  Result<macvtap::Macvtap> create(const config::MacvtapBinding& b, int parent_ifindex) override;
  // getfd, netdev_add tap, netdev_add hubport, set_link, pipelined. Rolls back
  // whatever was done on any failure.
  void hand_over(const config::MacvtapBinding& b, uint64_t generation, macvtap::Macvtap mvt, bool link_up,
                 std::function<void(AttachResult)> done) override;

  // Removes generation's uplink and tap from QEMU (when connected) and deletes
  // the macvtap if it is still the binding's. Pieces already gone are fine.
  void detach(const config::MacvtapBinding& b, uint64_t generation, int macvtap_ifindex, bool link_down) override;

  // Reads what QEMU holds of every binding of the VM; adopts a generation whose
  // uplink, tap and macvtap are all alive and whose device QEMU really holds
  // open; removes every other piece of ours. One VmConnected per binding.
  void probe(const std::vector<config::MacvtapBinding>& bindings,
             std::function<void(std::vector<engine::VmConnected>)> done) override;

  // A hub-attached NIC is never unplugged: the engine does not ask.
  void release(const config::MacvtapBinding& b, uint64_t generation,
               std::function<void(ReleaseResult)> done) override;
  void set_link(const config::MacvtapBinding& b, bool up) override;

 private:

  macvtap::MacvtapFactory& factory_;
  qemu::QmpClient& qmp_;
  DeferQueue& defer_;
};

// True if process `pid` has a character device `dev` open.
bool process_holds_device(pid_t pid, dev_t dev);
// True if `pid` exists and is not a zombie.
bool process_alive(pid_t pid);

}  // namespace relink::daemon
