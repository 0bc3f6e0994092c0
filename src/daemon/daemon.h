// SPDX-License-Identifier: GPL-2.0-or-later
// relinkd: the event loop, signals, sd_notify, reload, and the wiring between
// the link dispatcher, the VM sources (config file, runtime registrations,
// libvirt), the VM table and the control socket. What happens to a VM or a
// binding is the business of its own object (vm.h, macvtap_runner.h,
// passt_runner.h).
#pragma once

#include <systemd/sd-event.h>

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "config/config.h"
#include "daemon/control_api.h"
#include "daemon/control_server.h"
#include "daemon/libvirt_domains.h"
#include "daemon/link_dispatcher.h"
#include "daemon/passt_supervisor.h"
#include "daemon/intent_journal.h"
#include "daemon/runtime_registry.h"
#include "daemon/services.h"
#include "daemon/vm_table.h"
#include "macvtap/macvtap_factory.h"
#include "netlink/link_watcher.h"
#include "util/defer_queue.h"
#include "util/sd_event.h"

namespace relink::daemon {

class Daemon {
 public:
  // log_level_override: the --log-level option, which wins over the config
  // file at start and on every reload (empty: the config decides).
  explicit Daemon(config::Config cfg, std::string log_level_override = {});
  ~Daemon();
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  // Sets everything up and runs the loop until SIGTERM/SIGINT. Returns the
  // process exit code.
  int run();

  // Re-reads the configuration file; keeps the running one if it is invalid.
  // Returns what changed: {"added","removed","changed"} lists of VM and
  // VM/binding names.
  Result<nlohmann::json> reload();
  nlohmann::json status() const;

 private:
  Result<void> setup();
  static int on_signal(sd_event_source*, const signalfd_siginfo*, void*);
  ControlApi make_control_api();
  std::unique_ptr<ControlServer> make_control_server();
  // The VMs of the file and those registered at runtime, in that order.
  std::vector<config::Vm> wanted_vms() const;
  // Every VM a new registration must not clash with: the file's, the
  // runtime ones, and libvirt's domains.
  std::vector<const config::Vm*> known_vms() const;
  // Which source other than libvirt has a VM of this name ("config",
  // "runtime"; "" none).
  std::string claim(const std::string& name) const;
  // Brings the running VMs in line with wanted_vms() (vm_plan.h); returns
  // what changed.
  nlohmann::json apply_vms(const config::Config& previous);
  // Stops the passt processes whose pidfiles no binding claims (at start and
  // after every change of the VMs).
  void stop_unclaimed_passts();
  nlohmann::json control_add(const std::string& toml);
  nlohmann::json control_remove(const std::string& name);

  config::Config cfg_;
  std::string log_level_override_;
  SdEventPtr loop_;
  std::unique_ptr<DeferQueue> defer_;
  std::vector<SdEventSourcePtr> signals_;
  Reporter reporter_;
  VmTable vms_;
  std::unique_ptr<netlink::LinkWatcher> links_;
  std::unique_ptr<LinkDispatcher> dispatcher_;
  std::unique_ptr<macvtap::MacvtapFactory> factory_;
  std::unique_ptr<PasstSupervisor> passt_;
  std::unique_ptr<RuntimeRegistry> runtime_;
  std::unique_ptr<IntentJournal> journal_;
  std::unique_ptr<LibvirtDomains> libvirt_;
  std::unique_ptr<ControlServer> control_;
  Services services_;
  uint64_t started_us_ = 0;
};

}  // namespace relink::daemon
