// SPDX-License-Identifier: GPL-2.0-or-later
// The faults of a chaos run, carried out (see faults.h).
#include "faults.h"

#include <signal.h>

#include <thread>

namespace relink::chaos {

using namespace std::chrono_literals;

namespace {

void sleep_ms(int ms) {
  if (ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(ms));
}

// SIGKILL; a relinkd already gone when the fault wants it is an incident.
void kill9(World& w, const std::string& why) {
  if (!w.stop_relinkd(SIGKILL))
    w.incidents().push_back("relinkd was not running before " + why + " (it exited by itself); its log ends:" +
                            w.relinkd_last_words());
}

void flap(World& w, Vm& v, int gap_ms) {
  w.parent_down(v);
  sleep_ms(gap_ms);
  w.parent_up(v);
}

// Kills relinkd once the monitor says the binding entered `state` (after the
// fault's delay); then relinkd stays down for gap_ms and is started again.
void kill_on_state(World& w, const Fault& f, const std::string& state, FaultStats& stats, bool paused) {
  Vm& v = w.vm(f.target);
  w.monitor_start();
  if (paused) w.pause(v);
  // A gap long enough for relinkd to see the parent gone (waiting-parent).
  flap(w, v, 150);
  const bool seen = w.monitor_wait(v.name, v.nic, state, 20s);
  if (!seen) ++stats.trigger_missed[kind_name(f.kind)];
  sleep_ms(f.delay_ms);
  kill9(w, kind_name(f.kind));
  w.monitor_stop();
  if (paused) w.resume(v);  // the guest lets go of its NIC while no relinkd runs
  sleep_ms(f.gap_ms);
  w.start_relinkd();
}

void qemu_restart(World& w, const Fault& f) {
  Vm& v = w.vm(f.target);
  if (f.variant) kill9(w, "qemu-restart");
  w.kill_qemu(v);
  sleep_ms(f.gap_ms);
  w.launch(v);
  if (f.variant) w.start_relinkd();
}

}  // namespace

void run_fault(World& w, const Fault& f, FaultStats& stats) {
  Vm& v = w.vm(f.target);
  switch (f.kind) {
    case FaultKind::ParentFlapShort:
    case FaultKind::ParentFlapLong: flap(w, v, f.gap_ms); break;
    case FaultKind::CarrierFlap:
      w.carrier(v, false);
      sleep_ms(f.gap_ms);
      w.carrier(v, true);
      break;
    case FaultKind::KillRandom:
      sleep_ms(f.delay_ms);
      kill9(w, "kill9-random");
      sleep_ms(f.gap_ms);
      w.start_relinkd();
      break;
    case FaultKind::KillMidRelease: kill_on_state(w, f, "releasing", stats, false); break;
    case FaultKind::KillMidAttach: kill_on_state(w, f, "attaching", stats, false); break;
    case FaultKind::KillPausedRelease: kill_on_state(w, f, "releasing", stats, true); break;
    case FaultKind::KillAfterReturn:
      flap(w, v, 150);
      sleep_ms(f.delay_ms);
      kill9(w, "kill9-after-parent-return");
      sleep_ms(f.gap_ms);
      w.start_relinkd();
      break;
    case FaultKind::TermStart:
      if (!w.stop_relinkd(SIGTERM))
        w.incidents().push_back("relinkd was not running before sigterm-start (it exited by itself); its log ends:" +
                                w.relinkd_last_words());
      sleep_ms(f.gap_ms);
      w.start_relinkd();
      break;
    case FaultKind::Reload:
      if (auto err = w.reload(f.variant); !err.empty()) w.incidents().push_back("reload failed: " + err);
      break;
    case FaultKind::PauseResume:
      w.pause(v);
      if (f.variant) flap(w, v, 150);
      sleep_ms(f.gap_ms);
      w.resume(v);
      break;
    case FaultKind::PasstKill:
      for (int pid : w.passt_pids()) ::kill(pid, SIGKILL);
      break;
    case FaultKind::LibvirtdRestart:
      w.libvirt().stop();
      sleep_ms(f.gap_ms);
      w.libvirt().start();
      if (!w.libvirt().running()) throw SetupError("libvirtd did not start again\n" + w.libvirt().log());
      break;
    case FaultKind::QemuRestart: qemu_restart(w, f); break;
  }
  ++stats.done[kind_name(f.kind)];
  sleep_ms(f.after_ms);
}

void settle(World& w) {
  if (!w.relinkd_running()) {
    w.incidents().push_back("relinkd exited by itself during the window; its log ends:" + w.relinkd_last_words());
    w.start_relinkd();
  }
  for (Vm* v : w.vms()) {
    w.resume(*v);
    w.parent_up(*v);
    w.carrier(*v, true);
    if (!w.qemu_running(*v)) {
      w.incidents().push_back("QEMU of " + v->name + " is gone (nobody killed it); started again");
      if (v->target != Target::Libvirt) w.kill_qemu(*v);
      w.launch(*v);
    }
  }
}

}  // namespace relink::chaos
