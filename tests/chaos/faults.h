// SPDX-License-Identifier: GPL-2.0-or-later
// Carrying out one fault of the plan against the world, and putting the
// world back in shape at the end of a window (relinkd running, guests
// resumed, parents present) before the checks.
#pragma once

#include <map>
#include <string>

#include "plan.h"
#include "world.h"

namespace relink::chaos {

struct FaultStats {
  std::map<std::string, int> done;            // faults carried out, per kind
  std::map<std::string, int> trigger_missed;  // kills whose monitor trigger never came (killed anyway)
};

void run_fault(World& w, const Fault& f, FaultStats& stats);

// relinkd running (an exit it was not asked for is an incident), guests
// resumed, parents present with carrier, QEMUs running.
void settle(World& w);

}  // namespace relink::chaos
