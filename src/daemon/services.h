// SPDX-License-Identifier: GPL-2.0-or-later
// What VM objects and binding runners use of relinkd, passed to them at
// construction: the loop, the macvtap factory, the host's links (parents and
// the attach batch), and where state changes are reported. A test hands in
// its own.
#pragma once

#include <systemd/sd-event.h>

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "config/config.h"
#include "daemon/metrics.h"
#include "engine/binding.h"
#include "macvtap/macvtap_factory.h"
#include "netlink/link.h"
#include "util/defer_queue.h"

namespace relink::daemon {

class ControlServer;
class IntentJournal;
class MacvtapRunner;

// Tells `relinkctl monitor` clients what happened, and keeps the recovery
// histograms `relinkctl metrics` shows.
class Reporter {
 public:
  // The server whose monitor subscribers get events (none: nobody listens).
  void set_server(ControlServer* server) { server_ = server; }
  bool listening() const;
  void publish(nlohmann::json event);
  void state_changed(const std::string& vm, const std::string& kind, const std::string& id, engine::State from,
                     engine::State to, uint64_t generation, const std::string& error);
  // A binding of `kind` ("macvtap", "passt") is back after an outage.
  void recovered(const std::string& kind, double seconds) { recovery_[kind].observe(seconds); }
  const std::map<std::string, RecoveryHistogram>& recovery() const { return recovery_; }

 private:
  ControlServer* server_ = nullptr;
  std::map<std::string, RecoveryHistogram> recovery_;
};

// The host's links as bindings see them.
class Links {
 public:
  virtual ~Links() = default;
  // The parent a binding follows now (by permanent MAC, else by name; 0: none).
  virtual int resolve_parent(const config::MacvtapBinding& b) const = 0;
  // The same, with the parent's carrier, as the engine takes it.
  engine::ParentChanged parent_of(const config::MacvtapBinding& b) const;
  virtual const netlink::LinkInfo* link(int ifindex) const = 0;
  virtual const netlink::LinkInfo* link_by_name(const std::string& name) const = 0;
  // An attach to run: within a netlink batch, once every macvtap of the
  // batch is made; otherwise at once.
  virtual void queue_attach(MacvtapRunner& runner, const engine::Attach& a) = 0;
};

struct Services {
  sd_event* loop = nullptr;
  DeferQueue* defer = nullptr;
  macvtap::MacvtapFactory* factory = nullptr;
  Links* links = nullptr;
  Reporter* reporter = nullptr;
  // The running configuration (replaced in place by a reload).
  const config::Config* config = nullptr;
  // The journal of intent (state_dir/intent.json; none in some unit tests).
  IntentJournal* journal = nullptr;
};

// Runs `fn` from the loop in `ms` milliseconds (guard it if it refers to an
// object that may be gone by then).
void run_after(sd_event* loop, uint64_t ms, std::function<void()> fn);

}  // namespace relink::daemon
