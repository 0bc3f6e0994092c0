// SPDX-License-Identifier: GPL-2.0-or-later
// A macvtap binding's executor: engine actions carried out by its attacher,
// results fed back, timings kept for status.
#include "daemon/macvtap_runner.h"

#include <net/if.h>

#include <algorithm>
#include <cstring>

#include "daemon/vm.h"
#include "util/clock.h"
#include "util/log.h"

namespace relink::daemon {
namespace {

auto logger() { return log::get("daemon"); }

engine::Style style_of(const config::MacvtapBinding& cfg) {
  engine::Style st;
  st.replug = cfg.attach != config::AttachMode::Hub;
  st.release_timeout_ms = cfg.release_timeout_ms;
  st.follow_carrier = cfg.follow_carrier;
  st.release_on_loss = st.replug && cfg.release == config::Release::OnLoss;
  st.nic = cfg.nic;
  return st;
}

nlohmann::json ms_or_null(double ms) { return ms >= 0 ? nlohmann::json(ms) : nlohmann::json(nullptr); }

}  // namespace

MacvtapRunner::MacvtapRunner(ManagedVm& vm, config::MacvtapBinding cfg, Attacher& attacher, const Services& s)
    : vm_(vm),
      cfg_(std::move(cfg)),
      attacher_(attacher),
      s_(s),
      engine_(vm.name() + "/" + cfg_.nic, engine::RetryPolicy{}, style_of(cfg_)) {
  (void)engine_.handle(s_.links->parent_of(cfg_));
}

std::string MacvtapRunner::name() const { return vm_.name() + "/" + cfg_.nic; }

void MacvtapRunner::feed(const engine::Event& ev, uint64_t trigger_us) {
  const engine::State before = engine_.state();
  auto actions = engine_.handle(ev);
  const engine::State after = engine_.state();
  const bool failed_now = after == engine::State::Backoff || after == engine::State::Failed;
  if (after != before && failed_now && before != engine::State::Backoff) ++failures_total_;
  if (after != before) {
    s_.reporter->state_changed(vm_.name(), "macvtap", cfg_.nic, before, after, engine_.generation(),
                               engine_.last_error());
    logger()->info("{}: {} -> {}{}", name(), engine::state_name(before), engine::state_name(after),
                   failed_now ? " (" + engine_.last_error() + ")" : "");
  }
  for (const auto& a : actions) execute(a, trigger_us ? trigger_us : monotonic_us());
}

void MacvtapRunner::execute(const engine::Action& action, uint64_t trigger_us) {
  std::visit(
      [&](const auto& a) {
        using T = std::decay_t<decltype(a)>;
        if constexpr (std::is_same_v<T, engine::Attach>) {
          // After a release, the attach is timed from what started the release.
          if (round_release_ms_ < 0) trigger_us_ = trigger_us;
          logger()->debug("{}: attaching generation {} on ifindex {}", name(), a.generation, a.parent_ifindex);
          s_.links->queue_attach(*this, a);
        } else if constexpr (std::is_same_v<T, engine::Detach>) {
          attacher_.detach(cfg_, a.generation, a.macvtap_ifindex, a.link_down);
        } else if constexpr (std::is_same_v<T, engine::Release>) {
          release(a.generation, trigger_us);
        } else if constexpr (std::is_same_v<T, engine::SetLink>) {
          logger()->debug("{}: link {}", name(), a.up ? "on" : "off");
          attacher_.set_link(cfg_, a.up);
        } else if constexpr (std::is_same_v<T, engine::StartTimer>) {
          sd_event_source* src = nullptr;
          if (int r = sd_event_add_time_relative(s_.loop, &src, CLOCK_MONOTONIC, a.delay_ms * 1000, 1000,
                                                 &MacvtapRunner::on_timer, this);
              r < 0) {
            logger()->error("{}: cannot arm retry timer: {}", name(), std::strerror(-r));
            return;
          }
          timer_.reset(src);
          logger()->info("{}: retrying in {} ms", name(), a.delay_ms);
        } else if constexpr (std::is_same_v<T, engine::CancelTimer>) {
          timer_.reset();
        }
      },
      action);
}

void MacvtapRunner::release(uint64_t generation, uint64_t trigger_us) {
  trigger_us_ = trigger_us;
  round_release_ms_ = -1;
  release_sent_us_ = monotonic_us();
  logger()->info("{}: asking the guest to release the NIC ({})", name(), vm_.release_method());
  vm_.before_release(*this);
  attacher_.release(cfg_, generation, guarded(guard_, [this](Attacher::ReleaseResult r) {
                      if (r.already_gone) {
                        release_sent_us_ = 0;
                        feed(engine::Released{});
                      } else if (!r.error.empty()) {
                        release_sent_us_ = 0;
                        feed(engine::ReleaseFailed{r.error});
                      }
                    }));
}

bool MacvtapRunner::released() {
  if (release_sent_us_) {
    last_release_ms_ = static_cast<double>(monotonic_us() - release_sent_us_) / 1000.0;
    round_release_ms_ = last_release_ms_;
    release_sent_us_ = 0;
    vm_.origin_logger()->info("{}: the guest released the NIC in {:.0f} ms", name(), last_release_ms_);
  } else if (engine_.state() == engine::State::Attached) {
    return false;
  }
  // Asked for, or a late answer to a release that timed out or was lost.
  feed(engine::Released{});
  // Released on the loss of the parent: the attach to come is timed from
  // the parent's return, and the release is no part of it.
  if (engine_.state() == engine::State::WaitingParent) round_release_ms_ = -1;
  return true;
}

void MacvtapRunner::release_failed(const std::string& why) {
  release_sent_us_ = 0;
  feed(engine::ReleaseFailed{why});
}

bool MacvtapRunner::attach_still_wanted(uint64_t generation) const {
  return engine_.generation() == generation && engine_.state() == engine::State::Attaching;
}

Result<macvtap::Macvtap> MacvtapRunner::create(int parent_ifindex) { return attacher_.create(cfg_, parent_ifindex); }

void MacvtapRunner::hand_over(uint64_t generation, Result<macvtap::Macvtap> made) {
  const bool link_up = engine_.link_target();
  auto done = guarded(guard_, [this, generation, link_up](const AttachResult& r) { attach_done(generation, link_up, r); });
  if (made) attacher_.hand_over(cfg_, generation, std::move(made.value()), link_up, std::move(done));
  else s_.defer->post([done, err = made.error().message] { done(AttachResult{false, 0, err}); });
}

void MacvtapRunner::attach_done(uint64_t gen, bool link_up, const AttachResult& r) {
  const bool current = gen == engine_.generation();
  if (!r.ok) {
    if (current) round_release_ms_ = -1;
    feed(engine::AttachFailed{gen, r.error});
    return;
  }
  if (current) {
    last_reattach_ms_ = static_cast<double>(monotonic_us() - trigger_us_) / 1000.0;
    if (cfg_.attach != config::AttachMode::Hub) last_own_ms_ = last_reattach_ms_ - std::max(0.0, round_release_ms_);
    round_release_ms_ = -1;
    // The first attach is not a recovery.
    if (++attaches_ > 1) s_.reporter->recovered("macvtap", last_reattach_ms_ / 1000.0);
  }
  feed(engine::AttachSucceeded{gen, r.macvtap_ifindex, link_up});
  if (engine_.state() == engine::State::Attached) {
    // The parent's own name: a parent_mac binding's may be anything.
    const netlink::LinkInfo* parent = s_.links->link(engine_.parent_ifindex());
    logger()->info("{}: attached generation {} on {} in {:.2f} ms", name(), gen, parent ? parent->name : cfg_.parent,
                   last_reattach_ms_);
  }
  if (!r.wrong_tap.empty() && gen == engine_.generation()) {
    // The guest's NIC has some other tap: plug it in again (libvirt's next
    // macvtap gets another ifindex), a few times.
    wrong_tap_ = r.wrong_tap;
    logger()->error("{}: {}", name(), r.wrong_tap);
    if (++wrong_tap_retries_ <= 3) feed(engine::ReattachRequested{});
    return;
  }
  if (r.wrong_tap.empty() && gen == engine_.generation()) {
    wrong_tap_.clear();
    wrong_tap_retries_ = 0;
  }
  // The macvtap may have vanished while QEMU was being told about it,
  // before the link watcher saw it appear at all.
  char ifname[IF_NAMESIZE];
  if (engine_.macvtap_ifindex() == r.macvtap_ifindex &&
      !if_indextoname(static_cast<unsigned>(r.macvtap_ifindex), ifname))
    feed(engine::LinkRemoved{r.macvtap_ifindex});
}

int MacvtapRunner::on_timer(sd_event_source*, uint64_t, void* userdata) {
  auto* self = static_cast<MacvtapRunner*>(userdata);
  self->timer_.reset();  // sd-event keeps the source alive until this callback returns
  self->feed(engine::TimerExpired{});
  return 0;
}

void MacvtapRunner::warn_if_wifi(int ifindex) {
  const netlink::LinkInfo* l = s_.links->link(ifindex);
  if (!l) return;
  if (!netlink::is_wifi(l->name)) {
    warning_.clear();
    return;
  }
  const std::string w = netlink::wifi_warning(l->name);
  if (warning_ == w) return;
  warning_ = w;
  logger()->warn("{}: {}", name(), w);
}

nlohmann::json MacvtapRunner::status() const {
  const auto& e = engine_;
  nlohmann::json j = {
      {"kind", "macvtap"},
      {"nic", cfg_.nic},
      {"state", engine::state_name(e.state())},
      {"generation", e.generation()},
      {"parent", cfg_.parent},
      {"parent_ifindex", e.parent_ifindex()},
      {"parent_name", nullptr},
      {"macvtap", cfg_.macvtap},
      {"macvtap_ifindex", e.macvtap_ifindex()},
      {"mode", macvtap::mode_name(cfg_.mode)},
      {"mac", format_mac(cfg_.mac)},
      {"attach", config::attach_mode_name(cfg_.attach)},
      {"attaches", attaches_},
      {"failures", e.failures()},
      {"failures_total", failures_total_},
      {"follow_carrier", cfg_.follow_carrier},
  };
  j["last_error"] = e.last_error().empty() ? nlohmann::json(nullptr) : nlohmann::json(e.last_error());
  j["warning"] = warning_.empty() ? nlohmann::json(nullptr) : nlohmann::json(warning_);
  if (cfg_.macvtap.empty()) j["macvtap"] = nullptr;
  j["last_reattach_ms"] = ms_or_null(last_reattach_ms_);
  // What the parent is called now (a parent_mac binding follows a NIC
  // whatever its name).
  if (const netlink::LinkInfo* l = s_.links->link(e.parent_ifindex())) j["parent_name"] = l->name;
  // The parent's carrier as relinkd last saw it (null: no parent).
  j["carrier"] = e.parent_ifindex() ? nlohmann::json(e.carrier()) : nlohmann::json(nullptr);
  j["link"] = e.link_up() ? nlohmann::json(*e.link_up() ? "up" : "down") : nlohmann::json(nullptr);
  j["parent_mac"] = cfg_.parent_mac ? nlohmann::json(format_mac(*cfg_.parent_mac)) : nlohmann::json(nullptr);
  vm_.describe(j);
  if (!wrong_tap_.empty()) j["wrong_tap"] = wrong_tap_;
  if (cfg_.attach == config::AttachMode::Hub) {
    j["hub"] = cfg_.hub;
  } else {
    j["queues"] = cfg_.queues;
    j["release_timeout_s"] = cfg_.release_timeout_ms / 1000;
    j["release"] = config::release_name(cfg_.release);
    // false: the guest has no NIC (released; plugged in when the parent is back).
    j["nic_present"] = e.nic_present();
    j["last_release_ms"] = ms_or_null(last_release_ms_);
    // relinkd's own part of the last replug: all of it but the guest's release.
    j["last_own_ms"] = ms_or_null(last_own_ms_);
  }
  return j;
}

}  // namespace relink::daemon
