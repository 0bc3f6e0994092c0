// relinkd: wires the link watcher, the QMP sessions and the control socket to
// the per-binding engines, and carries out what the engines decide.
#pragma once

#include <systemd/sd-event.h>

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <unordered_set>
#include <vector>

#include "config/config.h"
#include "daemon/control_server.h"
#include "daemon/hub_attach.h"
#include "engine/binding.h"
#include "macvtap/macvtap_factory.h"
#include "netlink/link_watcher.h"
#include "qemu/qmp_client.h"
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
  Result<void> reload();
  nlohmann::json status() const;

 private:
  struct VmRt;
  struct BindingRt {
    Daemon* daemon = nullptr;
    VmRt* owner = nullptr;
    std::string vm;
    config::MacvtapBinding cfg;
    engine::Binding engine;
    SdEventSourcePtr timer;
    uint64_t trigger_us = 0;        // when the event behind the current attach was seen
    double last_reattach_ms = -1;   // trigger -> NIC link up on the new tap
    uint64_t attaches = 0;          // successful attaches
    BindingRt(std::string v, config::MacvtapBinding c)
        : vm(std::move(v)), cfg(std::move(c)), engine(vm + "/" + cfg.nic) {}
  };
  struct VmRt {
    config::Vm cfg;
    std::unique_ptr<qemu::QmpClient> qmp;
    std::unique_ptr<HubAttacher> attacher;
    std::vector<std::unique_ptr<BindingRt>> bindings;
    pid_t qemu_pid = 0;
    uint64_t session = 0;  // bumped per QMP session, to drop stale probe results
  };

  Result<void> setup();
  void start_vm(const config::Vm& vm);
  void on_links(const std::vector<netlink::LinkEvent>& events);
  int resolve_parent(const config::MacvtapBinding& b) const;
  void feed(VmRt& vm, BindingRt& b, const engine::Event& ev, uint64_t trigger_us = 0);
  void execute(VmRt& vm, BindingRt& b, const engine::Action& a, uint64_t trigger_us);
  void run_attaches();
  std::function<void(AttachResult)> attach_done(const std::string& vm, const std::string& nic, uint64_t gen);
  VmRt* find_vm(const std::string& name);
  BindingRt* find_binding(VmRt& vm, const std::string& nic);
  nlohmann::json handle_control(const nlohmann::json& req);
  static int on_signal(sd_event_source*, const signalfd_siginfo*, void*);
  static int on_timer(sd_event_source*, uint64_t, void*);

  config::Config cfg_;
  std::string log_level_override_;
  SdEventPtr loop_;
  std::unique_ptr<DeferQueue> defer_;
  std::unique_ptr<netlink::LinkWatcher> links_;
  std::unique_ptr<macvtap::MacvtapFactory> factory_;
  std::unique_ptr<ControlServer> control_;
  std::vector<std::unique_ptr<VmRt>> vms_;
  std::vector<SdEventSourcePtr> signals_;
  // Parents the kernel has already unlisted while the link table, which
  // learns of it from the parent's own RTM_DELLINK, still holds them.
  std::unordered_set<int> dead_parents_;
  // Attach actions of one netlink batch, run together by run_attaches().
  struct QueuedAttach {
    std::string vm, nic;
    uint64_t generation = 0;
    int parent_ifindex = 0;
  };
  std::vector<QueuedAttach> queued_attaches_;
  bool in_link_batch_ = false;
  uint64_t started_us_ = 0;
};

}  // namespace relink::daemon
