// SPDX-License-Identifier: GPL-2.0-or-later
// The passt processes relinkd runs, whichever binding they serve: what the
// installed passt supports, the spawner and the binary run, pidfiles, the
// adoption of a passt a previous relinkd left, and the processes being
// stopped after their binding left. A process's exit goes to the binding
// runner that holds it now (a reload may hand it to the binding's next
// runner), or, retired, is only logged.
#pragma once

#include <systemd/sd-event.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "config/config.h"
#include "passt/passt.h"
#include "passt/pidfile.h"
#include "passt/process.h"
#include "util/defer_queue.h"
#include "util/result.h"

namespace relink::daemon {

class PasstRunner;

// Where a process's exit goes: the runner that holds it (none: retired).
struct PasstRoute {
  PasstRunner* runner = nullptr;
  uint64_t generation = 0;
  const passt::Process* proc = nullptr;
  std::string name;  // "VM/NETDEV", for the log
};

// One passt process and its route.
struct OwnedPasst {
  std::unique_ptr<passt::Process> proc;
  std::shared_ptr<PasstRoute> route;
};

// Identifies a binding's passt: its names and its pidfile.
struct PasstIdentity {
  std::string vm;       // the VM's name
  std::string name;     // "VM/NETDEV", for the log
  std::string pidfile;  // "<state_dir>/passt/<vm>/<netdev>.pid"
};

class PasstSupervisor {
 public:
  PasstSupervisor(sd_event* loop, DeferQueue& defer, std::unique_ptr<passt::Spawner> spawner);
  ~PasstSupervisor();
  PasstSupervisor(const PasstSupervisor&) = delete;
  PasstSupervisor& operator=(const PasstSupervisor&) = delete;

  // Runs `passt --help` (as the first passt binding's user) to learn what
  // the installed passt supports; with no passt binding, nothing is run.
  void probe(const std::vector<config::Vm>& wanted, const std::string& configured_passt);
  bool probed() const { return probed_; }
  // Why a binding of `mode` cannot be served by the installed passt (none: it can).
  std::optional<std::string> refusal(passt::Mode mode) const;
  // What a binding runs: the proof an adopted passt must match.
  passt::Expected expected(const config::PasstBinding& cfg) const;

  // Starts generation `gen` of a binding's passt: connects to QEMU's socket
  // (stream-server) or readies passt's (listening modes), spawns passt,
  // writes the pidfile and watches the process. Its exit goes to `runner`.
  Result<OwnedPasst> start(PasstRunner& runner, const config::PasstBinding& cfg, const PasstIdentity& id,
                           uint64_t gen, bool& pidfile_written);

  // A passt a previous relinkd left, named by the binding's pidfile: adopted
  // when it proves to be that passt (passt::decide_adoption), stopped when
  // it is ours with an older configuration, never signalled otherwise.
  struct Adopted {
    OwnedPasst proc;
    uint64_t generation = 0;
    uint64_t started_ms = 0;  // on the monotonic clock
  };
  std::optional<Adopted> adopt(PasstRunner& runner, const config::PasstBinding& cfg, const PasstIdentity& id,
                               uint64_t& max_generation_seen);

  // The pidfiles under state_dir/passt that no binding claims: `claimed`
  // holds "VM/NETDEV" of every passt binding there is, `claimed_vms` the
  // VMs whose bindings are not known now (a registration held aside): their
  // pidfiles are left as they are. Each other pidfile goes through
  // passt::decide_orphan: a passt it proves relinkd's is stopped (SIGTERM,
  // SIGKILL after 1 s) and its socket removed; one it cannot prove is left
  // running and logged. The pidfile goes either way. Returns how many were
  // stopped. (passt_orphans.cc)
  size_t stop_unclaimed(const std::string& state_dir, const std::set<std::string>& claimed,
                        const std::set<std::string>& claimed_vms);

  // Stops a process whose binding is gone; its exit is logged.
  void retire(OwnedPasst p);
  void remove_pidfile(const PasstIdentity& id);

 private:
  // Connects or readies the socket, then spawns passt.
  // intent_written: the pidfile naming the child was written before its exec.
  Result<passt::Spawned> spawn(const config::PasstBinding& cfg, const PasstIdentity& id, uint64_t gen,
                               bool& intent_written);
  OwnedPasst route_to(PasstRunner& runner, uint64_t gen, const std::string& name);
  // One unclaimed pidfile of stop_unclaimed: true when its passt is stopped.
  bool stop_orphan(int vm_dir, const std::string& file, const std::string& name, const std::string& shown);
  void on_exit(const std::shared_ptr<PasstRoute>& route, const passt::ExitStatus& st);

  sd_event* loop_;
  DeferQueue& defer_;
  std::unique_ptr<passt::Spawner> spawner_;
  passt::Features features_;
  std::string exec_;  // the binary run for [daemon] passt (passt::exec_path)
  std::string exec_real_;  // exec_ with symlinks resolved: what /proc/PID/exe reads
  std::string features_error_;  // why passt could not be run at all
  bool probed_ = false;         // probed for the bindings there are (none: not run)
  // passt processes being stopped after their binding left.
  std::vector<OwnedPasst> retiring_;
};

// Logs how a passt exited (one level per kind of exit).
void log_passt_exit(const passt::Process& proc, const passt::ExitStatus& st, const std::string& what);

}  // namespace relink::daemon
