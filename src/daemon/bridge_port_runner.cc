// SPDX-License-Identifier: GPL-2.0-or-later
// A tap binding's executor: what the link tables show fed to its engine, the
// port's settings remembered, re-joins carried out, timings kept for status.
#include "daemon/bridge_port_runner.h"

#include <net/if.h>

#include <cstring>

#include "daemon/vm.h"
#include "util/clock.h"
#include "util/log.h"

namespace relink::daemon {
namespace {

auto logger() { return log::get("daemon"); }

// How long the kernel's notifications of a re-join's own steps (the default
// VLAN, then ours, then the options) may take to arrive; until the port
// looks as restored, they are not taken as its settings.
constexpr uint64_t kSettleUs = 2'000'000;

bool same_settings(const netlink::BridgePort& port, const netlink::PortSnapshot& s) {
  return port.options == s.options && (!s.vlans_known || (port.vlans_known && port.vlans == s.vlans));
}

}  // namespace

BridgePortRunner::BridgePortRunner(ManagedVm& vm, config::TapBinding cfg, const Services& s)
    : vm_(vm), cfg_(std::move(cfg)), s_(s), engine_(vm.name() + "/" + cfg_.tap) {
  const auto o = look();
  remember(o, monotonic_us());
  (void)engine_.handle(o);
  if (engine_.state() == engine::PortState::Attached) {
    logger()->info("{}: tap {} is a port of {} ({})", name(), cfg_.tap, cfg_.bridge,
                   netlink::describe_vlans(saved_.vlans));
    logger()->debug("{}: port options {}", name(), netlink::describe_options(saved_.options));
  }
}

std::string BridgePortRunner::name() const { return vm_.name() + "/" + cfg_.tap; }

engine::PortObserved BridgePortRunner::look() {
  engine::PortObserved o;
  const netlink::LinkInfo* tap = s_.links->link_by_name(cfg_.tap);
  const netlink::LinkInfo* bridge = s_.links->link_by_name(cfg_.bridge);
  if (bridge && bridge->kind != "bridge") bridge = nullptr;
  if (tap) {
    o.tap = tap->ifindex;
    o.master = tap->master_ifindex;
  }
  if (bridge) o.bridge = bridge->ifindex;
  // A bridge being deleted drops its ports before the kernel reports it
  // gone, and it is unlisted by then: ask the kernel, so that the tap waits
  // for the next bridge instead of looking taken out by hand.
  char ifname[IF_NAMESIZE];
  if (o.tap && !o.master && o.bridge && o.bridge == engine_.joined_bridge() &&
      !if_indextoname(static_cast<unsigned>(o.bridge), ifname))
    o.bridge = 0;
  // Just re-joined: the kernel said yes, its notification may still be on
  // its way (behind those of other taps' re-joins).
  if (echo_bridge_) {
    if (o.master == echo_bridge_ || monotonic_us() > settle_until_us_) echo_bridge_ = 0;
    else if (!o.master && o.bridge == echo_bridge_) o.master = o.bridge;
  }
  return o;
}

// While the tap is a port of its bridge, its settings are the ones to restore.
void BridgePortRunner::remember(const engine::PortObserved& o, uint64_t now_us) {
  if (!o.tap || !o.bridge || o.master != o.bridge) return;
  const netlink::BridgePort* port = s_.links->bridge_port(o.tap);
  if (!port || port->master != o.bridge) return;
  if (settle_until_us_) {
    if (now_us < settle_until_us_ && !same_settings(*port, saved_)) return;
    settle_until_us_ = 0;
  }
  netlink::PortSnapshot next = saved_;
  next.options = port->options;
  if (port->vlans_known) {
    next.vlans_known = true;
    next.vlans = port->vlans;
  }
  if (const netlink::LinkInfo* tap = s_.links->link(o.tap)) next.up = tap->flags & IFF_UP;
  if (saved_known_ && next != saved_)
    logger()->debug("{}: port settings now {}; {}{}", name(), netlink::describe_vlans(next.vlans),
                    netlink::describe_options(next.options), next.up ? ", up" : ", down");
  saved_ = std::move(next);
  saved_known_ = true;
}

void BridgePortRunner::observe(uint64_t trigger_us) {
  const uint64_t now = monotonic_us();
  const auto o = look();
  remember(o, now);
  feed(o, trigger_us ? trigger_us : now);
}

Result<void> BridgePortRunner::reattach() {
  const auto o = look();
  if (!o.tap) return Error{ENODEV, "tap " + cfg_.tap + " does not exist"};
  if (!o.bridge) return Error{ENODEV, "no bridge named " + cfg_.bridge};
  feed(o, monotonic_us());
  feed(engine::RejoinRequested{}, monotonic_us());
  if (engine_.state() != engine::PortState::Attached) return Error{EIO, engine_.last_error()};
  return ok();
}

void BridgePortRunner::feed(const engine::PortEvent& ev, uint64_t trigger_us) {
  const engine::PortState before = engine_.state();
  const bool was_pending = engine_.detach_pending();
  auto actions = engine_.handle(ev);
  if (was_pending && !engine_.detach_pending() && engine_.state() == engine::PortState::Detached) {
    // The grace period is over and the bridge still stands: out by hand.
    warning_ = "tap " + cfg_.tap + " was taken out of " + cfg_.bridge + ", which still exists: left alone";
    logger()->warn("{}: {}", name(), warning_);
  }
  report(before, engine_.state());
  for (const auto& a : actions) execute(a, trigger_us);
}

void BridgePortRunner::report(engine::PortState before, engine::PortState after) {
  using engine::PortState;
  if (before == after) return;
  if (before == PortState::Attached) left_us_ = monotonic_us();
  const char* from = engine::port_state_name(before);
  const char* to = engine::port_state_name(after);
  warning_.clear();
  if (after == PortState::Moved) {
    const netlink::LinkInfo* tap = s_.links->link_by_name(cfg_.tap);
    const netlink::LinkInfo* m = tap ? s_.links->link(tap->master_ifindex) : nullptr;
    warning_ = "tap " + cfg_.tap + " is a port of " + (m ? m->name : "another master") + ", not of " + cfg_.bridge +
               ": left alone";
    logger()->warn("{}: {}", name(), warning_);
  } else if (after == PortState::Detached) {
    // Within the grace period this is most often a bridge on its way out.
    if (engine_.detach_pending())
      logger()->debug("{}: {} -> {} (out of {}, which the kernel still lists)", name(), from, to, cfg_.bridge);
    else
      logger()->info("{}: {} -> {} (not a port of {})", name(), from, to, cfg_.bridge);
  } else if (after == PortState::TapGone) {
    logger()->info("{}: {} -> {} (tap {} deleted: its VM is gone, it is not created again)", name(), from, to,
                   cfg_.tap);
  } else {
    const bool failed = after == PortState::Backoff || after == PortState::Failed;
    logger()->info("{}: {} -> {}{}", name(), from, to, failed ? " (" + engine_.last_error() + ")" : "");
  }
  if (!s_.reporter->listening()) return;
  s_.reporter->publish({{"event", "state"},
                        {"vm", vm_.name()},
                        {"kind", "bridge"},
                        {"tap", cfg_.tap},
                        {"bridge", cfg_.bridge},
                        {"from", from},
                        {"state", to},
                        {"generation", engine_.generation()},
                        {"error", after == PortState::Backoff || after == PortState::Failed
                                      ? nlohmann::json(engine_.last_error())
                                      : nlohmann::json(nullptr)}});
}

void BridgePortRunner::execute(const engine::PortAction& action, uint64_t trigger_us) {
  if (auto* r = std::get_if<engine::Rejoin>(&action)) return rejoin(*r, trigger_us);
  if (std::holds_alternative<engine::CancelPortTimer>(action)) {
    timer_.reset();
    return;
  }
  const auto& t = std::get<engine::StartPortTimer>(action);
  sd_event_source* src = nullptr;
  if (int r = sd_event_add_time_relative(s_.loop, &src, CLOCK_MONOTONIC, t.ms * 1000, 1000,
                                         &BridgePortRunner::on_timer, this);
      r < 0) {
    logger()->error("{}: cannot arm a timer: {}", name(), std::strerror(-r));
    return;
  }
  timer_.reset(src);
}

int BridgePortRunner::on_timer(sd_event_source*, uint64_t, void* userdata) {
  auto* self = static_cast<BridgePortRunner*>(userdata);
  // The engine decides on what the host shows now.
  const uint64_t now = monotonic_us();
  const auto o = self->look();
  self->remember(o, now);
  self->feed(o, now);
  self->feed(engine::PortTimerExpired{}, now);
  return 0;
}

void BridgePortRunner::rejoin(const engine::Rejoin& r, uint64_t trigger_us) {
  logger()->info("{}: bridge {} is back (ifindex {}): putting tap {} into it ({}, {} port options{}){}", name(),
                 cfg_.bridge, r.bridge, cfg_.tap, netlink::describe_vlans(saved_.vlans), saved_.options.size(),
                 saved_.up ? ", up" : "", saved_known_ ? "" : " [its settings were never seen: the bridge's defaults]");
  logger()->debug("{}: port options {}", name(), netlink::describe_options(saved_.options));
  auto result = s_.bridge_ports ? s_.bridge_ports->rejoin(r.tap, r.bridge, saved_)
                                : Result<void>(Error{ENOTSUP, "no bridge port control"});
  const uint64_t now = monotonic_us();
  if (!result) {
    feed(engine::RejoinFailed{r.generation, cfg_.tap + " into " + cfg_.bridge + ": " + result.error().message}, now);
    return;
  }
  settle_until_us_ = now + kSettleUs;
  echo_bridge_ = r.bridge;
  ++rejoins_;
  last_rejoin_ms_ = static_cast<double>(now - trigger_us) / 1000.0;
  last_rejoin_unix_ = static_cast<int64_t>(realtime_us() / 1'000'000);
  if (left_us_) s_.reporter->recovered("bridge", static_cast<double>(now - left_us_) / 1e6);
  left_us_ = 0;
  logger()->info("{}: tap {} is a port of {} again ({:.2f} ms after the bridge appeared)", name(), cfg_.tap,
                 cfg_.bridge, last_rejoin_ms_);
  feed(engine::RejoinSucceeded{r.generation}, now);
}

nlohmann::json BridgePortRunner::status() const {
  const netlink::LinkInfo* tap = s_.links->link_by_name(cfg_.tap);
  const netlink::LinkInfo* bridge = s_.links->link_by_name(cfg_.bridge);
  nlohmann::json vlans = nlohmann::json::array();
  for (const auto& v : saved_.vlans) vlans.push_back({{"vid", v.vid}, {"pvid", v.pvid}, {"untagged", v.untagged}});
  nlohmann::json options = nlohmann::json::object();
  for (const auto& [type, value] : saved_.options)
    if (const auto* o = netlink::find_port_option(type)) options[o->name] = value;
  return {{"kind", "bridge"},
          {"tap", cfg_.tap},
          {"bridge", cfg_.bridge},
          {"state", engine::port_state_name(engine_.state())},
          {"generation", engine_.generation()},
          {"tap_ifindex", tap ? tap->ifindex : 0},
          {"bridge_ifindex", bridge ? bridge->ifindex : 0},
          {"rejoins", rejoins_},
          {"last_rejoin_ms", last_rejoin_ms_ >= 0 ? nlohmann::json(last_rejoin_ms_) : nlohmann::json(nullptr)},
          {"last_rejoin_at", last_rejoin_unix_ ? nlohmann::json(last_rejoin_unix_) : nlohmann::json(nullptr)},
          {"last_error", engine_.last_error().empty() ? nlohmann::json(nullptr) : nlohmann::json(engine_.last_error())},
          {"warning", warning_.empty() ? nlohmann::json(nullptr) : nlohmann::json(warning_)},
          {"vlans", saved_.vlans_known ? std::move(vlans) : nlohmann::json(nullptr)},
          {"port_options", std::move(options)},
          {"tap_up", saved_.up}};
}

}  // namespace relink::daemon
