// SPDX-License-Identifier: GPL-2.0-or-later
// From the host's links to the bindings: each netlink batch is turned into
// the engine events of every macvtap binding it concerns (its parent's new
// ifindex or carrier, its parent or its macvtap gone), and the attaches it
// causes run together, every macvtap made before any is handed to its QEMU.
// The hand-over waits until the link events queued meanwhile are read: a
// parent that came up while its macvtaps were being made (NetworkManager
// creates a VLAN or bridge, then sets it up) gets its NICs' link up in the
// hand-over itself instead of in a set_link of its own afterwards.
#pragma once

#include <cstdint>
#include <unordered_set>
#include <vector>

#include "daemon/services.h"
#include "daemon/vm_table.h"
#include "netlink/link_table.h"
#include "netlink/link_watcher.h"
#include "util/guard.h"
#include "util/sd_event.h"

namespace relink::daemon {

class LinkDispatcher final : public Links {
 public:
  LinkDispatcher(sd_event* loop, const netlink::LinkTable& table, VmTable& vms, macvtap::MacvtapFactory& factory,
                 const netlink::BridgePortTable* ports = nullptr)
      : loop_(loop), table_(table), vms_(vms), factory_(factory), ports_(ports) {}

  // One netlink batch (LinkWatcher's callback).
  void on_links(const std::vector<netlink::LinkEvent>& events);
  // The bridge ports changed (LinkWatcher's port callback).
  void on_ports();

  int resolve_parent(const config::MacvtapBinding& b) const override;
  const netlink::LinkInfo* link(int ifindex) const override { return ifindex ? table_.find(ifindex) : nullptr; }
  const netlink::LinkInfo* link_by_name(const std::string& name) const override { return table_.find_by_name(name); }
  const netlink::BridgePort* bridge_port(int ifindex) const override { return ports_ ? ports_->find(ifindex) : nullptr; }
  const std::map<int, netlink::BridgePort>& bridge_ports() const override {
    return ports_ ? ports_->all() : Links::bridge_ports();
  }
  void queue_attach(MacvtapRunner& runner, const engine::Attach& a) override;

 private:
  void parent_changed(MacvtapRunner& b, uint64_t now);
  void link_removed(ManagedVm& vm, MacvtapRunner& b, int ifindex, uint64_t now);
  void run_attaches();
  void hand_over_made();
  static int on_hand_over(sd_event_source*, uint64_t, void* userdata);
  // Every VM's taps look at the tables again.
  void update_taps(uint64_t now);

  sd_event* loop_;
  const netlink::LinkTable& table_;
  VmTable& vms_;
  macvtap::MacvtapFactory& factory_;
  const netlink::BridgePortTable* ports_;
  // Parents the kernel has already unlisted while the link table, which
  // learns of it from the parent's own RTM_DELLINK, still holds them.
  std::unordered_set<int> dead_parents_;
  struct QueuedAttach {
    MacvtapRunner* runner = nullptr;
    std::weak_ptr<char> alive;
    uint64_t generation = 0;
    int parent_ifindex = 0;
  };
  std::vector<QueuedAttach> queued_;
  bool in_batch_ = false;
  // Macvtaps made, waiting for the link events queued meanwhile to be read
  // (the hand-over timer runs after the netlink source, at a lower priority),
  // or for kMaxHoldUs when link events keep coming.
  static constexpr uint64_t kMaxHoldUs = 5000;
  std::vector<std::pair<QueuedAttach, Result<macvtap::Macvtap>>> made_;
  uint64_t made_us_ = 0;
  SdEventSourcePtr hand_over_timer_;
};

}  // namespace relink::daemon
