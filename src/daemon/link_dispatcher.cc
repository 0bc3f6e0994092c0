// SPDX-License-Identifier: GPL-2.0-or-later
// Netlink batches turned into binding events; the cross-VM attach batch.
#include "daemon/link_dispatcher.h"

#include <net/if.h>

#include <utility>

#include "util/clock.h"
#include "util/log.h"

namespace relink::daemon {
namespace {

auto logger() { return log::get("daemon"); }

}  // namespace

engine::ParentChanged Links::parent_of(const config::MacvtapBinding& b) const {
  const int ifindex = resolve_parent(b);
  const netlink::LinkInfo* l = ifindex ? link(ifindex) : nullptr;
  return engine::ParentChanged{ifindex, l && netlink::has_carrier(*l)};
}

int LinkDispatcher::resolve_parent(const config::MacvtapBinding& b) const {
  if (b.parent_mac) {
    const auto m = table_.find_by_mac(*b.parent_mac);
    if (m && !dead_parents_.count(m.link->ifindex)) {
      // Several interfaces share the MAC (a bridge and its port): the one
      // with the configured name wins if it is among them.
      const netlink::LinkInfo* named = table_.find_by_name(b.parent);
      if (m.ambiguous() && named && m.includes(*named) && !dead_parents_.count(named->ifindex))
        return named->ifindex;
      return m.link->ifindex;
    }
  }
  const netlink::LinkInfo* l = table_.find_by_name(b.parent);
  return l && !dead_parents_.count(l->ifindex) ? l->ifindex : 0;
}

void LinkDispatcher::on_links(const std::vector<netlink::LinkEvent>& events) {
  const uint64_t now = monotonic_us();
  in_batch_ = true;
  for (const auto& ev : events)
    if (ev.type == netlink::LinkEventType::Removed) dead_parents_.erase(ev.link.ifindex);
  // Parents first: a name may have moved to a new ifindex within the batch.
  // Only the batch's end state is fed, so a carrier that flapped within it
  // costs the guest nothing.
  for (auto& vm : vms_.all())
    for (auto& b : vm->macvtaps()) parent_changed(*b, now);
  for (const auto& ev : events) {
    if (ev.type != netlink::LinkEventType::Removed) continue;
    for (auto& vm : vms_.all())
      for (size_t i = 0; i < vm->macvtaps().size(); ++i) link_removed(*vm, *vm->macvtaps()[i], ev.link.ifindex, now);
  }
  in_batch_ = false;
  // Link events that never stop (a storm) must not hold the hand-over back.
  if (!made_.empty() && now - made_us_ >= kMaxHoldUs) hand_over_made();
  run_attaches();
  update_taps(now);
}

void LinkDispatcher::on_ports() { update_taps(monotonic_us()); }

void LinkDispatcher::update_taps(uint64_t now) {
  for (size_t i = 0; i < vms_.all().size(); ++i) {
    ManagedVm& vm = *vms_.all()[i];
    vm.links_changed();
    for (size_t t = 0; t < vm.taps().size(); ++t) vm.taps()[t]->observe(now);
  }
}

void LinkDispatcher::parent_changed(MacvtapRunner& b, uint64_t now) {
  const engine::ParentChanged pc = parent_of(b.cfg());
  const auto& e = b.engine();
  if (pc.ifindex == e.parent_ifindex() && (!pc.ifindex || pc.carrier == e.carrier())) return;
  if (pc.ifindex && pc.ifindex != e.parent_ifindex()) {
    const netlink::LinkInfo* l = table_.find(pc.ifindex);
    const auto& cfg = b.cfg();
    const bool by_mac = cfg.parent_mac && l && (l->perm_mac == cfg.parent_mac || l->mac == cfg.parent_mac);
    logger()->info("{}: parent is {} (ifindex {}){}", b.name(), l ? l->name : "?", pc.ifindex,
                   by_mac ? " by its MAC " + format_mac(*cfg.parent_mac) : " by its name");
    if (l) b.warn_if_wifi(pc.ifindex);
  } else if (pc.ifindex) {
    logger()->info("{}: parent {} {} carrier", b.name(), b.cfg().parent, pc.carrier ? "has" : "lost");
  }
  b.feed(pc, now);
}

void LinkDispatcher::link_removed(ManagedVm& vm, MacvtapRunner& b, int ifindex, uint64_t now) {
  if (b.engine().attached_parent_ifindex() == ifindex) {
    b.feed(engine::ParentRemoved{ifindex}, now);
    return;
  }
  if (b.engine().macvtap_ifindex() != ifindex) return;
  // The kernel unlists a parent before it deletes the macvtaps on it, and
  // only then reports the parent gone: ask the kernel now, so the binding
  // waits for the parent instead of trying the dying one.
  char name[IF_NAMESIZE];
  const int parent = b.engine().attached_parent_ifindex();
  if (parent && !if_indextoname(static_cast<unsigned>(parent), name)) {
    dead_parents_.insert(parent);
    if (b.engine().parent_ifindex() == parent) b.feed(engine::ParentChanged{0, false}, now);
    return;
  }
  vm.macvtap_gone(b, ifindex, now);
}

void LinkDispatcher::queue_attach(MacvtapRunner& runner, const engine::Attach& a) {
  queued_.push_back({&runner, runner.guard().watch(), a.generation, a.parent_ifindex});
  if (!in_batch_) run_attaches();
}

// A parent shared by many VMs comes back as one event: make every macvtap
// first, then hand them to their QEMUs.
void LinkDispatcher::run_attaches() {
  const bool holding = !made_.empty();
  for (auto& q : queued_) {
    // A later event of the same batch may have moved the binding on already.
    if (q.alive.expired() || !q.runner->attach_still_wanted(q.generation)) continue;
    made_.emplace_back(q, q.runner->create(q.parent_ifindex));
  }
  queued_.clear();
  if (made_.empty() || holding) return;
  made_us_ = monotonic_us();
  sd_event_source* s = nullptr;
  if (sd_event_add_time_relative(loop_, &s, CLOCK_MONOTONIC, 0, 1, on_hand_over, this) < 0) {
    hand_over_made();
    return;
  }
  hand_over_timer_.reset(s);
  // After every input source that is ready, the netlink socket first.
  sd_event_source_set_priority(s, SD_EVENT_PRIORITY_NORMAL + 1);
}

int LinkDispatcher::on_hand_over(sd_event_source*, uint64_t, void* userdata) {
  static_cast<LinkDispatcher*>(userdata)->hand_over_made();
  return 0;
}

void LinkDispatcher::hand_over_made() {
  hand_over_timer_.reset();
  auto made = std::exchange(made_, {});
  for (auto& [q, mvt] : made) {
    if (!q.alive.expired()) {
      q.runner->hand_over(q.generation, std::move(mvt));
    } else if (mvt && mvt->ifindex > 0) {
      // Its binding is gone (its VM removed meanwhile): nobody will use it.
      if (auto r = factory_.remove(mvt->ifindex); !r)
        logger()->warn("deleting an unused macvtap: {}", r.error().message);
    }
  }
}

}  // namespace relink::daemon
