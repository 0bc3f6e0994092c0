// SPDX-License-Identifier: GPL-2.0-or-later
// The chaos run's world: one relinkd following VMs of every kind at once, in
// a throwaway network namespace, and the levers the faults pull.
//
//   hub1  a QEMU (-S, no guest) whose nic0 hangs off hub 0 (attach = "hub")
//         and whose nic1 is peered with a stream-server netdev net1: the
//         passt binding
//   rep1  a QEMU with the booted test guest, started as a launcher starts
//         one: its own macvtap on the parent, passed as fd 3, the NIC on a
//         pcie-root-port of its own (attach = "replug")
//   lv1   a domain of a private libvirtd (tests/support/libvirt_env.h) with
//         the booted test guest and an <interface type='direct'>, followed
//         through [libvirt]
//
// Each VM's parent (ph, pr, pl) is a veth whose far end sits in a peer
// namespace of its own (192.0.2.1; a guest is 192.0.2.2), so one VM's
// faults never touch another's path. Everything (namespaces, QEMUs,
// libvirtd, passt, relinkd, /tmp/relink-chaos-*) is removed on exit.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "plan.h"
#include "support/harness.h"
#include "support/libvirt_env.h"
#include "support/qmp_sync.h"

namespace relink::chaos {

// Thrown when the world cannot be set up or repaired: the run stops (its
// destructors clean up) and reports what it found so far.
struct SetupError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct Vm {
  Target target = Target::Hub;
  std::string name, nic, parent, mac;
  std::unique_ptr<test::Netns> peer;   // the parent's far end, the guest's peer
  std::unique_ptr<test::Child> qemu;   // hub1, rep1 (libvirt runs lv1's)
  std::unique_ptr<test::QmpSync> qmp;  // the harness's own monitor (hub1, rep1)
  bool guest = false;                  // a booted test guest that answers ping
  bool paused = false;
  int launches = 0;
  std::string launcher_macvtap;        // rep1: the launcher's macvtap of the current QEMU
};

class World {
 public:
  explicit World(bool keep_logs);
  ~World();
  World(const World&) = delete;
  World& operator=(const World&) = delete;

  // Namespaces, parents, libvirtd, the three VMs, relinkd; waits for the
  // guests to boot and every binding to be attached once.
  void init();

  Vm& vm(Target t) { return *vms_.at(static_cast<size_t>(t)); }
  std::vector<Vm*> vms();
  test::Netns& ns() { return ns_; }
  test::LibvirtEnv& libvirt() { return *lv_; }
  const std::string& dir() const { return dir_; }
  std::string control() const { return dir_ + "/control.sock"; }
  std::string relinkd_log() const { return dir_ + "/relinkd.log"; }

  // ---- levers
  bool parent_exists(const Vm& v);
  void parent_down(Vm& v);
  void parent_up(Vm& v);
  void carrier(Vm& v, bool up);
  void pause(Vm& v);
  void resume(Vm& v);
  // QEMU (or the domain) killed with SIGKILL; the launcher's leftovers removed.
  void kill_qemu(Vm& v);
  // Started again by its launcher (for lv1: libvirt).
  void launch(Vm& v);
  pid_t qemu_pid(Vm& v);
  bool qemu_running(Vm& v);
  bool guest_booted(Vm& v);
  void reconnect_qmp(Vm& v);

  void start_relinkd();
  // SIGKILL (or SIGTERM, then waits up to 10 s); false if relinkd was not
  // running when asked (it died by itself: an incident).
  bool stop_relinkd(int sig);
  bool relinkd_running();
  pid_t relinkd_pid() const { return relinkd_ ? relinkd_->pid() : -1; }
  // Rewrites the config (a replug VM's or [libvirt]'s release_timeout
  // toggled) and asks relinkd to reload; the reply's error, or "".
  std::string reload(int variant);

  // relinkctl monitor --json into a file, from now on.
  void monitor_start();
  // Waits until the monitor has reported binding (vm, nic) entering `state`.
  bool monitor_wait(const std::string& vm, const std::string& nic, const std::string& state,
                    std::chrono::milliseconds timeout);
  void monitor_stop();

  std::optional<nlohmann::json> status(int timeout_ms = 3000);
  bool ping(Vm& v, std::chrono::seconds timeout);
  std::set<int> passt_pids();

  // What went wrong while a fault was carried out (a launcher that could
  // not bring its macvtap up, relinkd gone by itself, ...): drained by the
  // checks as violations.
  std::vector<std::string>& incidents() { return incidents_; }
  std::string tails();
  // The last lines of relinkd's log: why an instance nobody stopped ended.
  std::string relinkd_last_words();

 private:
  void write_config();
  void launch_qmp(Vm& v);
  std::string kernel() const;

  bool keep_logs_;
  test::Netns ns_{"chaos"};
  std::string dir_;
  std::string guest_dir_;
  std::unique_ptr<test::LibvirtEnv> lv_;
  std::vector<std::unique_ptr<Vm>> vms_;
  std::unique_ptr<test::Child> relinkd_;
  std::unique_ptr<test::Child> monitor_;
  std::string monitor_file_;
  int monitors_ = 0;
  int replug_release_timeout_ = 5, libvirt_release_timeout_ = 5;
  std::vector<std::string> incidents_;
};

}  // namespace relink::chaos
