// SPDX-License-Identifier: GPL-2.0-or-later
// One macvtap binding at run time: its engine (engine::Binding), the single
// copy of its configuration, and the executor of what the engine decides,
// carried out by the attacher of its strategy (hub, replug, libvirt). Results
// come back as events to the same runner; callbacks hold its guard.
#pragma once

#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>

#include "config/config.h"
#include "daemon/attacher.h"
#include "daemon/services.h"
#include "engine/binding.h"
#include "util/guard.h"
#include "util/sd_event.h"

namespace relink::daemon {

class ManagedVm;

class MacvtapRunner {
 public:
  MacvtapRunner(ManagedVm& vm, config::MacvtapBinding cfg, Attacher& attacher, const Services& s);
  MacvtapRunner(const MacvtapRunner&) = delete;
  MacvtapRunner& operator=(const MacvtapRunner&) = delete;

  const config::MacvtapBinding& cfg() const { return cfg_; }
  // libvirt renamed the interface or its macvtap.
  void set_cfg(config::MacvtapBinding next) { cfg_ = std::move(next); }
  const engine::Binding& engine() const { return engine_; }
  const Guard& guard() const { return guard_; }
  std::string name() const;

  // Feeds the engine and carries out its actions. trigger_us: when what
  // caused the event was seen (0: now).
  void feed(const engine::Event& ev, uint64_t trigger_us = 0);

  // The guest let go of the NIC (QMP's DEVICE_DELETED, libvirt's
  // DEVICE_REMOVED). Returns false, doing nothing, when relinkd did not ask
  // for it and the binding is attached: the VM decides what that means.
  bool released();
  // A release asked for will never be answered (the connection is gone).
  void forget_release() { release_sent_us_ = 0; }
  // The release failed for good (libvirt reports the removal failed).
  void release_failed(const std::string& why);

  // The attach batch (LinkDispatcher): make the macvtap, then hand it over.
  bool attach_still_wanted(uint64_t generation) const;
  Result<macvtap::Macvtap> create(int parent_ifindex);
  // The NIC's link is what the binding wants now (the parent's carrier may
  // have come since the attach was decided).
  void hand_over(uint64_t generation, Result<macvtap::Macvtap> made);

  // A Wi-Fi parent cannot carry a macvtap's traffic: say so (once per parent).
  void warn_if_wifi(int ifindex);
  nlohmann::json status() const;

 private:
  void execute(const engine::Action& a, uint64_t trigger_us);
  void attach_done(uint64_t generation, bool link_up, const AttachResult& r);
  void release(uint64_t generation, uint64_t trigger_us);
  static int on_timer(sd_event_source*, uint64_t, void* userdata);

  ManagedVm& vm_;
  config::MacvtapBinding cfg_;
  Attacher& attacher_;
  Services s_;
  engine::Binding engine_;
  SdEventSourcePtr timer_;
  uint64_t trigger_us_ = 0;        // when the event behind the current attach was seen
  double last_reattach_ms_ = -1;   // trigger -> NIC link up on the new tap
  uint64_t attaches_ = 0;          // successful attaches
  uint64_t failures_total_ = 0;    // failed attempts since relinkd started (engine's failures() resets)
  uint64_t release_sent_us_ = 0;   // replug: when the release was asked for (0: none pending)
  double last_release_ms_ = -1;    // replug: release -> released, the last time
  double round_release_ms_ = -1;   // replug: the release of the attach in progress (-1: none)
  double last_own_ms_ = -1;        // replug: last_reattach_ms without the guest's release
  std::string wrong_tap_;          // libvirt: QEMU does not hold the macvtap libvirt made (why)
  std::string warning_;            // what makes the binding useless though it works (a Wi-Fi parent)
  unsigned wrong_tap_retries_ = 0; // libvirt: replugs in a row for a wrong tap
  Guard guard_;
};

}  // namespace relink::daemon
