// SPDX-License-Identifier: GPL-2.0-or-later
// One passt binding at run time: its engine (engine::PasstBinding), the
// single copy of its configuration, its passt processes by generation, and
// the executor of what the engine decides (start passt through the
// supervisor, stop it, retry timers). QEMU's stream events and passt's exits
// come back to it.
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "config/config.h"
#include "daemon/passt_supervisor.h"
#include "daemon/services.h"
#include "engine/passt_binding.h"
#include "util/guard.h"
#include "util/sd_event.h"

namespace relink::qemu {
class QmpClient;
}

namespace relink::daemon {

class PasstRunner {
 public:
  PasstRunner(const std::string& vm, config::PasstBinding cfg, PasstSupervisor& supervisor, qemu::QmpClient& qmp,
              const Services& s);
  ~PasstRunner();
  PasstRunner(const PasstRunner&) = delete;
  PasstRunner& operator=(const PasstRunner&) = delete;

  const config::PasstBinding& cfg() const { return cfg_; }
  const engine::PasstBinding& engine() const { return engine_; }
  const std::string& name() const { return id_.name; }
  // The installed passt cannot serve this binding.
  bool refused() const { return refused_; }

  // Takes over the processes of the same binding's previous runner (a
  // reload restarted its VM with the binding unchanged).
  void carry_from(PasstRunner& previous);
  bool has_processes() const { return !procs_.empty(); }
  // Stops every passt of a binding that leaves the configuration.
  void retire();

  // A listening binding (vhost-user) starts its passt now, QEMU or not.
  void listen();
  // QMP is up; `info` is QEMU's `info network` (null: it failed).
  void vm_connected(const std::string* info, unsigned qemu_version);
  void vm_disconnected(bool exited);
  // QEMU's NETDEV_STREAM_* / NETDEV_VHOST_USER_* for this netdev.
  void stream_event(bool connected);
  // `relinkctl reattach`, or a reload's fresh start of a failed binding.
  void reset();
  void feed(const engine::PasstEvent& ev);

  // The supervisor: generation `gen`'s process exited.
  void on_exit(uint64_t gen, const passt::Process* proc, const passt::ExitStatus& st);
  nlohmann::json status() const;

 private:
  void execute(const engine::PasstAction& a);
  void spawn(uint64_t gen);
  void stop(uint64_t gen);
  void announce();
  // Feeds `ev` from the loop (never re-entrantly from an executor).
  void post(engine::PasstEvent ev);
  std::optional<engine::passt_ev::VmConnected::Adopt> running_adopt() const;
  static int on_timer(sd_event_source*, uint64_t, void* userdata);

  config::PasstBinding cfg_;
  PasstIdentity id_;
  PasstSupervisor& supervisor_;
  qemu::QmpClient& qmp_;
  Services s_;
  engine::PasstBinding engine_;
  SdEventSourcePtr timer_;
  std::map<uint64_t, OwnedPasst> procs_;  // by generation
  uint64_t pidfile_generation_ = 0;  // generation the pidfile names (0: none written)
  uint64_t live_started_ms_ = 0;     // start of the newest passt, on the monotonic clock
  bool refused_ = false;
  uint64_t failures_total_ = 0;      // failed starts since relinkd started
  std::string nic_;                  // the guest NIC peered with the netdev (from QEMU; "" unknown)
  Guard guard_;
};

}  // namespace relink::daemon
