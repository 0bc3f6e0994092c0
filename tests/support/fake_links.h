// SPDX-License-Identifier: GPL-2.0-or-later
// The host's links for unit tests of VMs and runners: one parent, eth0 with
// ifindex 5, up with carrier; attaches run at once, or when the test says
// (hold).
#pragma once

#include <linux/if.h>

#include <string>
#include <utility>
#include <vector>

#include "daemon/macvtap_runner.h"
#include "daemon/services.h"

namespace relink::test {

class FakeLinks final : public daemon::Links {
 public:
  FakeLinks() {
    eth0.ifindex = 5;
    eth0.name = "eth0";
    eth0.flags = IFF_UP | IFF_LOWER_UP;
  }
  int resolve_parent(const config::MacvtapBinding& b) const override { return present && b.parent == "eth0" ? 5 : 0; }
  const netlink::LinkInfo* link(int ifindex) const override { return present && ifindex == 5 ? &eth0 : nullptr; }
  const netlink::LinkInfo* link_by_name(const std::string& n) const override { return link(n == "eth0" ? 5 : 0); }
  void queue_attach(daemon::MacvtapRunner& r, const engine::Attach& a) override {
    if (hold) held.emplace_back(&r, a);
    else if (r.attach_still_wanted(a.generation)) r.hand_over(a.generation, r.create(a.parent_ifindex));
  }
  // Makes the held attaches' macvtaps and hands them over, as the link
  // dispatcher does once the link events queued meanwhile are read.
  void run_held() {
    for (auto& [r, a] : std::exchange(held, {}))
      if (r->attach_still_wanted(a.generation)) r->hand_over(a.generation, r->create(a.parent_ifindex));
  }
  netlink::LinkInfo eth0;
  bool present = true;
  bool hold = false;
  std::vector<std::pair<daemon::MacvtapRunner*, engine::Attach>> held;
};

}  // namespace relink::test
