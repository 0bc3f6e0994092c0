// SPDX-License-Identifier: GPL-2.0-or-later
// How a guest NIC gets its new tap: one Attacher per strategy (hub_attach.h,
// replug_attach.h), chosen per binding by `attach` in the config. The engine
// decides what to do; an attacher does it over the VM's QMP session and
// reports back from the event loop.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "config/config.h"
#include "engine/binding.h"
#include "macvtap/macvtap_factory.h"
#include "util/result.h"

namespace relink::qemu {
class QmpClient;
}

namespace relink::daemon {

struct AttachResult {
  bool ok = false;
  int macvtap_ifindex = 0;
  std::string error;
  // ok, but QEMU does not hold the new macvtap's device (libvirt opened
  // another namespace's /dev/tap<ifindex>): why, for the log and status.
  std::string wrong_tap;
};

class Attacher {
 public:
  virtual ~Attacher() = default;

  // Looks at a freshly connected QEMU: what each binding's NIC is wired to,
  // whether that is a live macvtap to adopt, and removes leftovers of ours.
  // `bindings` must outlive the call (the VM runtime owns them). Calls `done`
  // once, from the event loop, with one VmConnected per binding, in order;
  // or not at all when QEMU did not answer in time and the attacher reset
  // the session (the next session is probed anew).
  virtual void probe(const std::vector<config::MacvtapBinding>& bindings,
                     std::function<void(std::vector<engine::VmConnected>)> done) = 0;

  // The engine's Attach, in two steps so that a caller with many bindings can
  // create every macvtap before QEMU starts working on the first hand-over.
  // create(): the macvtap on the parent, with b.queues fds (an attacher whose
  // hand-over makes the macvtap itself, as libvirt does, returns an empty one).
  virtual Result<macvtap::Macvtap> create(const config::MacvtapBinding& b, int parent_ifindex) = 0;
  // hand_over(): gives the macvtap to QEMU as `generation`; the NIC's link
  // ends up `link_up`. Rolls back everything on failure (no fd or netdev
  // left in QEMU, the macvtap deleted). `done` is called later, from the loop.
  virtual void hand_over(const config::MacvtapBinding& b, uint64_t generation, macvtap::Macvtap mvt, bool link_up,
                         std::function<void(AttachResult)> done) = 0;

  // The engine's Detach: generation's tap side is no longer wanted. Pieces
  // already gone are fine. link_down: also set the NIC's link off.
  virtual void detach(const config::MacvtapBinding& b, uint64_t generation, int macvtap_ifindex,
                      bool link_down) = 0;

  // The engine's Release (replug only): ask the guest to let go of the NIC
  // (device_del). `done` reports, from the loop, an error that means the
  // release will never come (the device cannot be unplugged), or
  // already_gone when QEMU no longer has the NIC. Success means "asked": the
  // release itself is the DEVICE_DELETED event.
  struct ReleaseResult {
    bool already_gone = false;
    std::string error;  // non-empty: refused
  };
  virtual void release(const config::MacvtapBinding& b, uint64_t generation,
                       std::function<void(ReleaseResult)> done) = 0;

  // The engine's SetLink: the guest NIC's link state.
  virtual void set_link(const config::MacvtapBinding& b, bool up) = 0;

  // The VM the attacher works for: named in the alias of the macvtaps it
  // makes (macvtap_alias) and in the journal of intent.
  void set_vm(std::string vm) { vm_ = std::move(vm); }

 protected:
  std::string vm_;
};

// The interface alias (IFLA_IFALIAS) of the macvtaps relinkd makes,
// "relink:VM/NIC": what marks them as relinkd's when nothing else does (a
// QEMU that exited while relinkd was down leaves one behind).
constexpr const char* kMacvtapAliasPrefix = "relink:";
std::string macvtap_alias(const std::string& vm, const std::string& nic);

// What attachers share.
// QEMU's answer for an id it does not have (DeviceNotFound).
bool qmp_not_found(const Error& e);
// No answer in time: QEMU may have done it, or may still. Not a failure to
// roll back: the session is reset and the next probe sees what is there.
bool qmp_timed_out(const Error& e);
// netdev_del; a netdev that is already gone is fine, other errors are logged.
void delete_netdev(qemu::QmpClient& qmp, const std::string& id);
// Deletes the binding's macvtap (by its configured name: one of another name,
// a launcher's, is never relinkd's to delete). With an ifindex, only while
// that ifindex still carries the name: a freed ifindex may be someone else's.
void remove_macvtap_if_ours(macvtap::MacvtapFactory& factory, const config::MacvtapBinding& b, int ifindex);

}  // namespace relink::daemon
