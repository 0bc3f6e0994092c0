// SPDX-License-Identifier: GPL-2.0-or-later
// One tap binding at run time: a tap that is a port of a host bridge. While
// the tap is a port it remembers the port's options, VLANs and up state
// (from the link tables LinkWatcher keeps); when a bridge of that name
// appears again it puts the tap back with them (netlink::BridgePortControl),
// as its engine (engine::BridgePortBinding) decides. No QEMU involved: a
// libvirt VM's taps and a [bridge.NAME]'s unowned taps use it as they are.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "config/config.h"
#include "daemon/services.h"
#include "engine/bridge_port_binding.h"
#include "netlink/bridge_port_control.h"
#include "util/guard.h"
#include "util/result.h"
#include "util/sd_event.h"

namespace relink::daemon {

class ManagedVm;

class BridgePortRunner {
 public:
  BridgePortRunner(ManagedVm& vm, config::TapBinding cfg, const Services& s);
  BridgePortRunner(const BridgePortRunner&) = delete;
  BridgePortRunner& operator=(const BridgePortRunner&) = delete;

  const config::TapBinding& cfg() const { return cfg_; }
  const engine::BridgePortBinding& engine() const { return engine_; }
  std::string name() const;

  // After each netlink batch: looks at the tap, its master and the bridge,
  // remembers the port's settings while it is a port, and feeds the engine.
  // trigger_us: when the batch was read (0: now).
  void observe(uint64_t trigger_us = 0);
  // relinkctl reattach: put the tap into the bridge now. An error says why not.
  Result<void> reattach();
  // The port's settings as relinkd would restore them.
  const netlink::PortSnapshot& saved() const { return saved_; }
  nlohmann::json status() const;

 private:
  engine::PortObserved look();
  void remember(const engine::PortObserved& o, uint64_t now_us);
  void feed(const engine::PortEvent& ev, uint64_t trigger_us);
  void execute(const engine::PortAction& a, uint64_t trigger_us);
  void rejoin(const engine::Rejoin& r, uint64_t trigger_us);
  void report(engine::PortState before, engine::PortState after);
  static int on_timer(sd_event_source*, uint64_t, void* userdata);

  ManagedVm& vm_;
  config::TapBinding cfg_;
  Services s_;
  engine::BridgePortBinding engine_;
  SdEventSourcePtr timer_;
  netlink::PortSnapshot saved_;
  bool saved_known_ = false;     // saved_ was taken from the port (not only the defaults)
  uint64_t settle_until_us_ = 0;  // after a re-join: the kernel's echoes of its steps are not the port's settings
  int echo_bridge_ = 0;          // re-joined this bridge; the tables have not shown it yet
  uint64_t left_us_ = 0;         // when the tap was last seen leaving its bridge (0: it is a port)
  double last_rejoin_ms_ = -1;   // bridge seen -> tap back in it with its settings
  int64_t last_rejoin_unix_ = 0;  // when (seconds since the epoch)
  uint64_t rejoins_ = 0;
  std::string warning_;          // moved or detached by hand: what status says
  Guard guard_;
};

}  // namespace relink::daemon
