// SPDX-License-Identifier: GPL-2.0-or-later
// The chaos run's plan: every fault of a run, drawn from its seed before the
// run starts, so that a seed replays the same sequence whatever the machine's
// timing did to the previous windows. Pure: no clock, no I/O.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace relink::chaos {

// A small, portable generator (SplitMix64): the same numbers for a seed on
// every compiler and standard library, unlike std::uniform_int_distribution.
class Rng {
 public:
  explicit Rng(uint64_t seed) : s_(seed) {}
  uint64_t next();
  // Uniform in [lo, hi].
  int range(int lo, int hi);
  bool chance(int percent) { return range(0, 99) < percent; }

 private:
  uint64_t s_;
};

enum class FaultKind {
  ParentFlapShort,   // parent deleted, re-created after a short gap
  ParentFlapLong,    // the same with a gap of seconds
  CarrierFlap,       // the parent's far end down, then up
  KillRandom,        // relinkd SIGKILLed at a random instant, started again
  KillMidRelease,    // SIGKILL once the monitor reports `releasing` for the binding
  KillMidAttach,     // SIGKILL once the monitor reports `attaching` for the binding
  KillAfterReturn,   // SIGKILL a few ms after the parent came back
  KillPausedRelease, // guest paused, parent flapped, SIGKILL while releasing, guest resumed, start
  TermStart,         // SIGTERM, wait, start
  Reload,            // relinkctl reload (unchanged, a replug VM changed, [libvirt] changed)
  PauseResume,       // guest paused and resumed (its parent optionally flapped meanwhile)
  PasstKill,         // the passt binding's passt SIGKILLed
  LibvirtdRestart,   // libvirtd stopped and started
  QemuRestart,       // QEMU SIGKILLed and started again by its launcher (optionally with relinkd down)
};
const char* kind_name(FaultKind k);
std::vector<FaultKind> all_kinds();

// Which VM (and so which parent) a fault is aimed at.
enum class Target { Hub, Replug, Libvirt };
const char* target_name(Target t);

struct Fault {
  FaultKind kind = FaultKind::CarrierFlap;
  Target target = Target::Hub;
  int gap_ms = 0;      // parent absent / carrier down / relinkd down / guest paused / libvirtd down
  int delay_ms = 0;    // before a kill (after its trigger); before the fault for KillRandom
  int variant = 0;     // Reload: 0 unchanged, 1 replug VM changed, 2 [libvirt] changed;
                       // PauseResume: 1 = flap the parent while paused; QemuRestart: 1 = relinkd down meanwhile
  int after_ms = 0;    // pause before the next fault of the window
  std::string describe() const;
};

struct Window {
  std::vector<Fault> faults;
};

struct PlanOptions {
  uint64_t seed = 1;
  int faults = 20;          // total faults of the run
  int max_per_window = 4;   // a window holds 1..max_per_window faults
  bool cheap_only = false;  // no QEMU restarts, no libvirtd restarts (short runs)
};

// Draws the run: the same options give the same windows, fault for fault.
std::vector<Window> make_plan(const PlanOptions& o);

// Text of the whole plan, one line per window ("window 3: ...; ...").
std::string describe(const std::vector<Window>& plan);

}  // namespace relink::chaos
