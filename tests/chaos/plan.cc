// SPDX-License-Identifier: GPL-2.0-or-later
// Drawing a chaos run's faults from its seed (see plan.h).
#include "plan.h"

#include <algorithm>
#include <sstream>

namespace relink::chaos {

uint64_t Rng::next() {
  uint64_t z = (s_ += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

int Rng::range(int lo, int hi) {
  if (hi <= lo) return lo;
  return lo + static_cast<int>(next() % static_cast<uint64_t>(hi - lo + 1));
}

namespace {

struct KindInfo {
  FaultKind kind;
  const char* name;
  int weight;      // cheap faults are drawn more often than expensive ones
  bool expensive;  // reboots a guest or restarts libvirtd: left out of cheap-only runs
};

constexpr KindInfo kKinds[] = {
    {FaultKind::ParentFlapShort, "parent-flap-short", 14, false},
    {FaultKind::ParentFlapLong, "parent-flap-long", 5, false},
    {FaultKind::CarrierFlap, "carrier-flap", 18, false},
    {FaultKind::KillRandom, "kill9-random", 7, false},
    {FaultKind::KillMidRelease, "kill9-mid-release", 6, false},
    {FaultKind::KillMidAttach, "kill9-mid-attach", 6, false},
    {FaultKind::KillAfterReturn, "kill9-after-parent-return", 5, false},
    {FaultKind::KillPausedRelease, "kill9-paused-release", 3, false},
    {FaultKind::TermStart, "sigterm-start", 4, false},
    {FaultKind::Reload, "reload", 6, false},
    {FaultKind::PauseResume, "pause-resume", 6, false},
    {FaultKind::PasstKill, "passt-kill", 8, false},
    {FaultKind::LibvirtdRestart, "libvirtd-restart", 3, true},
    {FaultKind::QemuRestart, "qemu-restart", 3, true},
};

Target any_target(Rng& r) { return static_cast<Target>(r.range(0, 2)); }
// The VMs with a booted guest that releases its NIC (replug, libvirt).
Target guest_target(Rng& r) { return r.chance(50) ? Target::Replug : Target::Libvirt; }

FaultKind draw_kind(Rng& r, bool cheap_only) {
  int total = 0;
  for (const auto& k : kKinds)
    if (!cheap_only || !k.expensive) total += k.weight;
  int pick = r.range(0, total - 1);
  for (const auto& k : kKinds) {
    if (cheap_only && k.expensive) continue;
    if (pick < k.weight) return k.kind;
    pick -= k.weight;
  }
  return FaultKind::CarrierFlap;
}

// Every parameter is drawn whatever the kind uses, so that one kind's needs
// never shift the numbers the next fault gets.
Fault draw_fault(Rng& r, bool cheap_only) {
  Fault f;
  f.kind = draw_kind(r, cheap_only);
  const Target any = any_target(r), guest = guest_target(r);
  const int gap_short = r.range(0, 400), gap_long = r.range(2000, 6000), gap_mid = r.range(200, 2500);
  const int delay_kill = r.range(0, 60), delay_random = r.range(0, 3000), variant3 = r.range(0, 2),
            coin = r.range(0, 1);
  f.after_ms = r.range(0, 800);
  switch (f.kind) {
    case FaultKind::ParentFlapShort: f.target = any; f.gap_ms = gap_short; break;
    case FaultKind::ParentFlapLong: f.target = any; f.gap_ms = gap_long; break;
    case FaultKind::CarrierFlap: f.target = any; f.gap_ms = gap_mid / 2; break;
    case FaultKind::KillRandom: f.delay_ms = delay_random; f.gap_ms = gap_short * 3; break;
    case FaultKind::KillMidRelease: f.target = guest; f.delay_ms = delay_kill; f.gap_ms = gap_short * 3; break;
    case FaultKind::KillMidAttach: f.target = any; f.delay_ms = delay_kill / 4; f.gap_ms = gap_short * 3; break;
    case FaultKind::KillAfterReturn: f.target = any; f.delay_ms = delay_kill * 3; f.gap_ms = gap_short * 3; break;
    case FaultKind::KillPausedRelease: f.target = guest; f.delay_ms = delay_kill; f.gap_ms = gap_mid; break;
    case FaultKind::TermStart: f.gap_ms = gap_short * 3; break;
    case FaultKind::Reload: f.variant = variant3; break;
    case FaultKind::PauseResume: f.target = guest; f.gap_ms = gap_mid; f.variant = coin; break;
    case FaultKind::PasstKill: f.target = Target::Hub; break;
    case FaultKind::LibvirtdRestart: f.target = Target::Libvirt; f.gap_ms = gap_mid; break;
    case FaultKind::QemuRestart: f.target = any; f.gap_ms = gap_short; f.variant = coin; break;
  }
  return f;
}

}  // namespace

const char* kind_name(FaultKind k) {
  for (const auto& i : kKinds)
    if (i.kind == k) return i.name;
  return "?";
}

std::vector<FaultKind> all_kinds() {
  std::vector<FaultKind> out;
  for (const auto& i : kKinds) out.push_back(i.kind);
  return out;
}

const char* target_name(Target t) {
  switch (t) {
    case Target::Hub: return "hub";
    case Target::Replug: return "replug";
    case Target::Libvirt: return "libvirt";
  }
  return "?";
}

std::string Fault::describe() const {
  std::ostringstream o;
  o << kind_name(kind);
  switch (kind) {
    case FaultKind::ParentFlapShort:
    case FaultKind::ParentFlapLong: o << " " << target_name(target) << " gap=" << gap_ms << "ms"; break;
    case FaultKind::CarrierFlap: o << " " << target_name(target) << " down=" << gap_ms << "ms"; break;
    case FaultKind::KillRandom: o << " after=" << delay_ms << "ms down=" << gap_ms << "ms"; break;
    case FaultKind::KillMidRelease:
    case FaultKind::KillMidAttach:
    case FaultKind::KillAfterReturn:
      o << " " << target_name(target) << " delay=" << delay_ms << "ms down=" << gap_ms << "ms";
      break;
    case FaultKind::KillPausedRelease:
      o << " " << target_name(target) << " delay=" << delay_ms << "ms resumed-for=" << gap_ms << "ms";
      break;
    case FaultKind::TermStart: o << " down=" << gap_ms << "ms"; break;
    case FaultKind::Reload:
      o << (variant == 0 ? " unchanged" : variant == 1 ? " replug-vm-changed" : " libvirt-changed");
      break;
    case FaultKind::PauseResume:
      o << " " << target_name(target) << " paused=" << gap_ms << "ms" << (variant ? " with-parent-flap" : "");
      break;
    case FaultKind::PasstKill: break;
    case FaultKind::LibvirtdRestart: o << " down=" << gap_ms << "ms"; break;
    case FaultKind::QemuRestart:
      o << " " << target_name(target) << " down=" << gap_ms << "ms" << (variant ? " relinkd-down" : "");
      break;
  }
  o << " then=" << after_ms << "ms";
  return o.str();
}

std::vector<Window> make_plan(const PlanOptions& o) {
  Rng r(o.seed);
  std::vector<Window> plan;
  int left = o.faults;
  while (left > 0) {
    Window w;
    const int n = std::min(left, r.range(1, std::max(1, o.max_per_window)));
    for (int i = 0; i < n; ++i) w.faults.push_back(draw_fault(r, o.cheap_only));
    left -= n;
    plan.push_back(std::move(w));
  }
  return plan;
}

std::string describe(const std::vector<Window>& plan) {
  std::ostringstream o;
  for (size_t i = 0; i < plan.size(); ++i) {
    o << "window " << i + 1 << ":";
    for (size_t j = 0; j < plan[i].faults.size(); ++j) o << (j ? "; " : " ") << plan[i].faults[j].describe();
    o << "\n";
  }
  return o.str();
}

}  // namespace relink::chaos
