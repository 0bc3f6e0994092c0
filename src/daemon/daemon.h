// SPDX-License-Identifier: GPL-2.0-or-later
// relinkd: wires the link watcher, the QMP sessions and the control socket to
// the per-binding engines, and carries out what the engines decide.
#pragma once

#include <systemd/sd-event.h>

#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <unordered_set>
#include <vector>

#include "config/config.h"
#include "config/qemu_args.h"
#include "config/runtime_vms.h"
#include "daemon/attacher.h"
#include "daemon/control_server.h"
#include "daemon/libvirt_attach.h"
#include "daemon/metrics.h"
#include "daemon/runtime_store.h"
#include "engine/binding.h"
#include "engine/passt_binding.h"
#include "libvirt/libvirt_source.h"
#include "macvtap/macvtap_factory.h"
#include "netlink/link_watcher.h"
#include "passt/passt.h"
#include "passt/process.h"
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
  // Returns what changed: {"added","removed","changed"} lists of VM and
  // VM/binding names.
  Result<nlohmann::json> reload();
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
    uint64_t failures_total = 0;    // failed attempts since relinkd started (engine's failures() resets)
    uint64_t release_sent_us = 0;   // replug: when device_del was sent (0: none pending)
    double last_release_ms = -1;    // replug: device_del -> DEVICE_DELETED, the last time
    double round_release_ms = -1;   // replug: the release of the attach in progress (-1: none)
    double last_own_ms = -1;        // replug: last_reattach_ms without the guest's release
    std::string wrong_tap;          // libvirt: QEMU does not hold the macvtap libvirt made (why)
    std::string warning;            // what makes the binding useless though it works (a Wi-Fi parent)
    unsigned wrong_tap_retries = 0; // libvirt: replugs in a row for a wrong tap
    BindingRt(std::string v, config::MacvtapBinding c);
  };
  // A passt binding: its engine, and the passt processes of its generations
  // (normally one; a stopped one stays until it is gone).
  struct PasstRt {
    Daemon* daemon = nullptr;
    VmRt* owner = nullptr;
    std::string vm;
    config::PasstBinding cfg;
    engine::PasstBinding engine;
    SdEventSourcePtr timer;
    std::map<uint64_t, std::unique_ptr<passt::Process>> procs;  // by generation
    std::string pidfile;
    uint64_t pidfile_generation = 0;  // generation the pidfile names (0: none written)
    uint64_t live_started_ms = 0;     // start of the newest passt, on the monotonic clock
    bool refused = false;             // the installed passt cannot serve this binding
    uint64_t failures_total = 0;      // failed starts since relinkd started
    std::string nic;                  // the guest NIC peered with the netdev (from QEMU; "" unknown)
    PasstRt(std::string v, config::PasstBinding c, const std::string& state_dir);
    std::string name() const { return vm + "/" + cfg.netdev; }
  };
  struct VmRt {
    config::Vm cfg;
    // Where the VM comes from: the config file (a QMP socket), or libvirt (a
    // running domain; no QMP session: relinkd never talks to its QEMU).
    bool from_libvirt = false;
    bool runtime = false;  // registered with relinkctl add (a QMP socket, like the config file's)
    std::unique_ptr<qemu::QmpClient> qmp;  // config VMs only
    bool libvirt_live = false;             // libvirt VMs: described over a live connection
    bool paused = false;                   // libvirt VMs: not running guest code
    // One attacher per strategy, and the bindings each serves (in config order).
    std::unique_ptr<Attacher> hub, replug;
    std::unique_ptr<LibvirtAttacher> libvirt;
    std::vector<config::MacvtapBinding> hub_cfgs, replug_cfgs, libvirt_cfgs;
    Attacher& attacher_for(const config::MacvtapBinding& b) { return attacher_for(b.attach); }
    Attacher& attacher_for(config::AttachMode m) {
      switch (m) {
        case config::AttachMode::Replug: return *replug;
        case config::AttachMode::Libvirt: return *libvirt;
        case config::AttachMode::Hub: break;
      }
      return *hub;
    }
    std::vector<config::MacvtapBinding>& cfgs_for(config::AttachMode m) {
      switch (m) {
        case config::AttachMode::Replug: return replug_cfgs;
        case config::AttachMode::Libvirt: return libvirt_cfgs;
        case config::AttachMode::Hub: break;
      }
      return hub_cfgs;
    }
    // Something relinkd can hand taps to: QMP connected, or libvirt describing the domain.
    bool connected() const { return qmp ? qmp->connected() : libvirt_live; }
    std::vector<std::unique_ptr<BindingRt>> bindings;
    std::vector<std::unique_ptr<PasstRt>> passts;
    pid_t qemu_pid = 0;
    uint64_t session = 0;  // bumped per QMP session, to drop stale probe results
    std::string last_refusal;  // why the QMP peer was last refused (logged once per reason)
    // Replug NICs whose presence check (qom-get after an unasked-for
    // DEVICE_DELETED) is in flight, with the session it was sent on: one at
    // a time per NIC, however many events QEMU sends.
    std::map<std::string, uint64_t> presence_checks;
  };

  Result<void> setup();
  // carry: passt bindings of the VM's previous incarnation that keep running
  // (same configuration), by netdev.
  void start_vm(const config::Vm& vm, std::map<std::string, std::unique_ptr<PasstRt>> carry = {});
  void on_links(const std::vector<netlink::LinkEvent>& events);
  int resolve_parent(const config::MacvtapBinding& b) const;
  engine::ParentChanged parent_of(const config::MacvtapBinding& b) const;
  void probe_bindings(VmRt& vm, uint64_t session);
  // Probes the strategies from `index` on, then feeds what they found.
  struct ProbeFound;
  void probe_from(const std::string& vm, uint64_t session, size_t index, std::shared_ptr<ProbeFound> found);
  // libvirt VMs (daemon_libvirt.cc).
  Result<void> start_libvirt();
  void on_libvirt_connection(bool up, const std::string& error);
  void on_libvirt_domain(const libvirt::DomainInfo& info);
  void on_libvirt_domain_gone(const std::string& domain, const std::string& why);
  void on_libvirt_listed(const std::vector<std::string>& running);
  void on_libvirt_device_removed(const std::string& domain, const std::string& alias, bool failed);
  void add_libvirt_binding(VmRt& vm, const libvirt::DirectInterface& iface, bool probe);
  void remove_binding(VmRt& vm, const std::string& nic);
  void keep_resumable(VmRt& vm, BindingRt& b);
  nlohmann::json libvirt_status() const;
  void on_device_deleted(VmRt& vm, const nlohmann::json& data);
  void feed(VmRt& vm, BindingRt& b, const engine::Event& ev, uint64_t trigger_us = 0);
  void execute(VmRt& vm, BindingRt& b, const engine::Action& a, uint64_t trigger_us);
  void run_attaches();
  std::function<void(AttachResult)> attach_done(const std::string& vm, const std::string& nic, uint64_t gen);
  // passt bindings (daemon_passt.cc).
  void probe_passt_features();
  std::unique_ptr<PasstRt> make_passt(VmRt& vm, const config::PasstBinding& cfg);
  void passt_vm_connected(VmRt& vm, uint64_t session);
  void passt_listen(VmRt& vm);
  void adopt_from_pidfile(PasstRt& p, std::optional<engine::passt_ev::VmConnected::Adopt>& adopt,
                          uint64_t& max_generation_seen);
  void passt_stream_event(VmRt& vm, const std::string& event, const nlohmann::json& data);
  void feed_passt(VmRt& vm, PasstRt& p, const engine::PasstEvent& ev);
  void post_passt(const std::string& vm_name, const std::string& netdev, engine::PasstEvent ev);
  void announce(VmRt& vm, PasstRt& p);
  void execute_passt(VmRt& vm, PasstRt& p, const engine::PasstAction& a);
  Result<passt::Spawned> spawn_passt(PasstRt& p, uint64_t generation);
  void on_passt_exit(const std::string& vm, const std::string& netdev, uint64_t generation,
                     const passt::Process* proc, const passt::ExitStatus& st);
  // Stops every passt of a binding that leaves the configuration.
  void retire_passt(PasstRt& p);
  nlohmann::json passt_status(const PasstRt& p) const;
  static int on_passt_timer(sd_event_source*, uint64_t, void*);
  PasstRt* find_passt(VmRt& vm, const std::string& netdev);

  VmRt* find_vm(const std::string& name);
  BindingRt* find_binding(VmRt& vm, const std::string& nic);
  nlohmann::json handle_control(const nlohmann::json& req);
  std::unique_ptr<ControlServer> make_control_server();
  nlohmann::json control_reattach(const std::string& vm, const std::string& nic);
  std::string no_such_vm(const std::string& name) const;
  // The VMs of the file and those registered at runtime, in that order.
  std::vector<config::Vm> wanted_vms() const;
  // Brings the running VMs in line with wanted_vms(); returns what changed.
  nlohmann::json apply_vms(const config::Config& previous);
  static std::string describe_changes(const nlohmann::json& changes);
  // Runtime registrations (daemon_runtime.cc).
  void load_runtime_vms();
  const config::RuntimeVm* runtime_vm(const std::string& name) const;
  std::vector<const config::Vm*> known_vms() const;
  nlohmann::json control_add(const std::string& toml);
  nlohmann::json control_remove(const std::string& name);
  // Tells `relinkctl monitor` clients what happened.
  void publish(nlohmann::json event);
  void publish_state(const VmRt& vm, const std::string& kind, const std::string& id, engine::State from,
                     engine::State to, uint64_t generation, const std::string& error);
  std::string metrics_text() const;
  // A Wi-Fi parent cannot carry a macvtap's traffic: say so (once per parent).
  void warn_if_wifi(VmRt& vm, BindingRt& b, int ifindex);
  static int on_signal(sd_event_source*, const signalfd_siginfo*, void*);
  static int on_timer(sd_event_source*, uint64_t, void*);
  // Runs `fn` from the loop in `ms` milliseconds (it must look up what it needs).
  void after(uint64_t ms, std::function<void()> fn);
  static constexpr uint64_t kLibvirtRemovalGraceMs = 1000;

  config::Config cfg_;
  std::string log_level_override_;
  SdEventPtr loop_;
  std::unique_ptr<DeferQueue> defer_;
  std::unique_ptr<netlink::LinkWatcher> links_;
  std::unique_ptr<macvtap::MacvtapFactory> factory_;
  std::unique_ptr<ControlServer> control_;
  std::vector<std::unique_ptr<VmRt>> vms_;
  std::vector<config::RuntimeVm> runtime_vms_;
  std::unique_ptr<RuntimeStore> runtime_store_;
  std::map<std::string, RecoveryHistogram> recovery_;  // by binding kind
  std::unique_ptr<libvirt::Source> libvirt_;
  // libvirt domains that are also VMs of the config file: not followed (why).
  std::map<std::string, std::string> libvirt_conflicts_;
  std::vector<SdEventSourcePtr> signals_;
  std::unique_ptr<passt::Spawner> spawner_;
  // What the installed passt supports (probed at start and on reload);
  // features_error_: why it could not be run at all.
  passt::Features passt_features_;
  std::string passt_exec_;  // the binary run for [daemon] passt (passt::exec_path)
  std::string passt_features_error_;
  bool passt_probed_ = false;  // probed for the bindings there are (none: not run)
  // passt processes being stopped after their binding left the configuration.
  std::vector<std::unique_ptr<passt::Process>> retiring_;
  // Parents the kernel has already unlisted while the link table, which
  // learns of it from the parent's own RTM_DELLINK, still holds them.
  std::unordered_set<int> dead_parents_;
  // Attach actions of one netlink batch, run together by run_attaches().
  struct QueuedAttach {
    std::string vm, nic;
    uint64_t generation = 0;
    int parent_ifindex = 0;
    bool link_up = true;
  };
  std::vector<QueuedAttach> queued_attaches_;
  bool in_link_batch_ = false;
  uint64_t started_us_ = 0;
};

}  // namespace relink::daemon
