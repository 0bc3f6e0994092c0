// SPDX-License-Identifier: GPL-2.0-or-later
// Reconciliation of relinkd's own macvtaps with what uses them. A macvtap
// relinkd made (marked by its alias, attacher.h's macvtap_alias) that no
// process holds serves nobody: its QEMU exited while relinkd was down, or
// relinkd died between making it and handing it over. It still holds the
// guest's MAC on its parent, and the kernel lets only one macvtap with a
// MAC be up there, so the VM's next start would fail: it is deleted. Run at
// start and when a QEMU goes away.
#pragma once

#include <cstddef>
#include <string>

#include "macvtap/macvtap_factory.h"

namespace relink::daemon {

// Deletes relinkd's macvtaps (of VM `vm` only, unless it is "") that no
// process holds through a live queue; returns how many. `why` is for the log.
size_t remove_unheld_macvtaps(macvtap::MacvtapFactory& factory, const std::string& vm, const std::string& why);

}  // namespace relink::daemon
