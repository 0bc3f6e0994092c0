// SPDX-License-Identifier: GPL-2.0-or-later
// Deleting relinkd's macvtaps that no process holds.
#include "daemon/macvtap_reconcile.h"

#include "daemon/attacher.h"
#include "macvtap/tap_holders.h"
#include "util/log.h"
#include "util/untrusted.h"

namespace relink::daemon {

size_t remove_unheld_macvtaps(macvtap::MacvtapFactory& factory, const std::string& vm, const std::string& why) {
  auto log = log::get("macvtap");
  const std::string prefix = vm.empty() ? std::string(kMacvtapAliasPrefix) : macvtap_alias(vm, "");
  auto ours = factory.list_marked(prefix);
  if (!ours) {
    log->warn("{}: listing relinkd's macvtaps: {}", why, ours.error().message);
    return 0;
  }
  size_t removed = 0;
  for (const auto& m : *ours) {
    if (macvtap::anyone_holds_live(m.dev, m.name)) continue;
    // The kernel may have given the ifindex to another link meanwhile:
    // remove() checks it is still a macvtap.
    if (auto r = factory.remove(m.ifindex); !r) {
      log->warn("{}: deleting macvtap {} ({}): {}", why, m.name, untrusted::safe_text(m.alias, 80), r.error().message);
      continue;
    }
    log->info("{}: deleted macvtap {} (ifindex {}, {}): no process holds it", why, m.name, m.ifindex,
              untrusted::safe_text(m.alias, 80));
    ++removed;
  }
  return removed;
}

}  // namespace relink::daemon
