// SPDX-License-Identifier: GPL-2.0-or-later
// The libvirt attacher: replugs a domain's direct interface through libvirt's API.
#include "daemon/libvirt_attach.h"

#include <dirent.h>
#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <memory>
#include <string_view>

#include "macvtap/tap_holders.h"
#include "util/log.h"

namespace relink::daemon {
namespace {

auto logger() { return log::get("libvirt"); }

// QEMU holds the macvtap `name` (device `dev`) through a queue that is still
// attached to it: a macvtap's minor number is reused as soon as it is
// deleted, so QEMU's fd of a macvtap that went with its parent can carry the
// very major:minor of a new one (macvtap/tap_holders.h).
bool holds_live_device(pid_t pid, dev_t dev, const std::string& name) {
  return pid > 0 && macvtap::holds_live(pid, dev, name);
}

}  // namespace

config::MacvtapBinding libvirt_binding(const libvirt::DirectInterface& iface, const config::Libvirt& cfg,
                                       const std::string& domain) {
  config::MacvtapBinding b;
  b.nic = iface.alias;
  b.parent = iface.source_dev;
  // libvirt says "passthrough" where the kernel says "passthru".
  b.mode = macvtap::parse_mode(iface.mode == "passthrough" ? "passthru" : iface.mode).value_or(macvtap::Mode::Vepa);
  b.mac = iface.mac;
  b.queues = iface.queues ? iface.queues : 1;
  b.attach = config::AttachMode::Libvirt;
  b.macvtap = iface.target_dev;
  b.follow_carrier = cfg.follow_carrier;
  b.release_timeout_ms = cfg.release_timeout_ms;
  b.release = cfg.release_of(domain);
  return b;
}

void LibvirtAttacher::update(const libvirt::DomainInfo& info) {
  info_ = info;
  for (const auto& i : info.desc.interfaces) last_seen_[i.mac] = i;
}

const libvirt::DirectInterface* LibvirtAttacher::interface(const MacAddress& mac) const {
  for (const auto& i : info_.desc.interfaces)
    if (i.mac == mac) return &i;
  return nullptr;
}

void LibvirtAttacher::probe(const std::vector<config::MacvtapBinding>& bindings,
                            std::function<void(std::vector<engine::VmConnected>)> done) {
  std::vector<engine::VmConnected> out;
  for (const auto& b : bindings) {
    engine::VmConnected vc;
    const libvirt::DirectInterface* i = interface(b.mac);
    vc.nic_present = i != nullptr;
    uint64_t& gen = generations_[b.mac];
    vc.max_generation_seen = gen;
    if (i && !i->target_dev.empty()) {
      // The macvtap the live XML names must be alive, carry the interface's
      // MAC, and be the device QEMU holds: after its parent went away, the
      // name may already be another domain's new macvtap.
      auto found = factory_.find(i->target_dev);
      if (found && found.value() && found.value()->mac == b.mac && found.value()->parent_ifindex > 0 &&
          info_.qemu_pid > 0 && holds_live_device(info_.qemu_pid, found.value()->dev, i->target_dev)) {
        if (!gen) gen = 1;
        vc.adopt = engine::VmConnected::Adopt{gen, found.value()->ifindex, found.value()->parent_ifindex};
      }
    }
    out.push_back(vc);
  }
  defer_.post([done = std::move(done), out = std::move(out)] { done(out); });
}

Result<macvtap::Macvtap> LibvirtAttacher::create(const config::MacvtapBinding&, int) {
  return macvtap::Macvtap{};
}

void LibvirtAttacher::hand_over(const config::MacvtapBinding& b, uint64_t generation, macvtap::Macvtap,
                                bool link_up, std::function<void(AttachResult)> done) {
  auto it = last_seen_.find(b.mac);
  if (it == last_seen_.end()) {
    defer_.post([done, nic = b.nic] { done(AttachResult{false, 0, "libvirt never described " + nic, {}}); });
    return;
  }
  auto xml = libvirt::attach_xml(it->second, link_up);
  if (!xml) {
    defer_.post([done, err = xml.error().message] { done(AttachResult{false, 0, err, {}}); });
    return;
  }
  logger()->debug("{}: attaching {} again: {}", domain_, b.nic, xml.value());
  source_.attach(domain_, xml.value(), [this, alive = std::weak_ptr<int>(alive_), mac = b.mac, generation,
                                        pci = it->second.pci_address, done](Result<libvirt::DomainInfo> r) {
    if (alive.expired()) return;
    if (!r) {
      if (plugged_in_already(mac, pci, r.error().message)) {
        logger()->warn("{}: libvirt refused to attach the interface {} again ({}): it is plugged in already; "
                       "releasing it to plug it in anew",
                       domain_, format_mac(mac), r.error().message);
        done(AttachResult{true, 0, {}, {}});
        return;
      }
      done(AttachResult{false, 0, r.error().message, {}});
      return;
    }
    update(r.value());
    const libvirt::DirectInterface* i = interface(mac);
    if (!i || i->target_dev.empty()) {
      done(AttachResult{false, 0, "libvirt attached the interface but its live XML names no macvtap", {}});
      return;
    }
    generations_[mac] = generation;
    journal_forget(mac);
    auto found = factory_.find(i->target_dev);
    if (!found || !found.value()) {
      // The interface IS plugged in (a failure would make the engine take it
      // as absent, and every attach after would be refused as a double use
      // of its PCI address). With no macvtap (ifindex 0), the runner reports
      // the tap lost at once, and the engine releases the NIC and attaches
      // it again on the parent of that time.
      logger()->warn("{}: the macvtap {} libvirt made for {} is already gone{}", domain_, i->target_dev,
                     format_mac(mac), found ? "" : ": " + found.error().message);
      done(AttachResult{true, 0, {}, {}});
      return;
    }
    AttachResult res{true, found.value()->ifindex, {}, {}};
    const int pid = info_.qemu_pid;
    if (pid <= 0)
      // Nothing to compare with: not a reason to unplug a NIC that may work.
      logger()->warn("{}: cannot check which tap QEMU holds: no QEMU pid in {} (see [libvirt] pid_dir)", domain_,
                     source_.pid_dir());
    else if (!holds_live_device(pid, found.value()->dev, i->target_dev))
      res.wrong_tap = "QEMU (pid " + std::to_string(pid) + ") does not hold the device of " + i->target_dev +
                      " (ifindex " + std::to_string(found.value()->ifindex) +
                      "): libvirt opened /dev/tap" + std::to_string(found.value()->ifindex) +
                      ", which is another network namespace's macvtap";
    done(res);
  });
}

// libvirt refuses to attach an interface at a PCI address a device already
// uses; when the live XML has this very interface (its MAC) at that address,
// the attach is refused because the NIC is plugged in: an attach of an
// earlier round that libvirt carried out and relinkd took as failed.
bool LibvirtAttacher::plugged_in_already(const MacAddress& mac, const std::string& pci,
                                         const std::string& error) const {
  if (error.find("double use of PCI Address") == std::string::npos) return false;
  const libvirt::DirectInterface* i = interface(mac);
  return i && !pci.empty() && i->pci_address == pci;
}

void LibvirtAttacher::detach(const config::MacvtapBinding& b, uint64_t, int, bool link_down) {
  if (link_down) set_link(b, false);
}

void LibvirtAttacher::release(const config::MacvtapBinding& b, uint64_t, std::function<void(ReleaseResult)> done) {
  auto it = last_seen_.find(b.mac);
  const std::string alias = it != last_seen_.end() ? it->second.alias : b.nic;
  // Written down first: a relinkd that dies before the interface is back
  // leaves the next one what it needs to attach it again.
  if (it != last_seen_.end())
    if (auto j = journal_release(it->second); !j) {
      defer_.post([done, why = j.error().message] { done(ReleaseResult{false, "detach not asked: " + why}); });
      return;
    }
  source_.detach(domain_, alias, [done](libvirt::DomainRequests::DetachResult r) {
    if (r.ok) done({});
    else if (r.not_found) done(ReleaseResult{true, {}});
    // Asked before (a release that timed out, or one from before a libvirtd
    // restart) and still pending in QEMU: still asked.
    else if (r.error.find("is already in the process of unplug") != std::string::npos) done({});
    else done(ReleaseResult{false, r.error});
  });
}

std::string LibvirtAttacher::journal_identity() const {
  return info_.desc.uuid.empty() ? "" : "libvirt:" + info_.desc.uuid;
}

Result<void> LibvirtAttacher::journal_release(const libvirt::DirectInterface& iface) {
  const std::string identity = journal_identity();
  if (!journal_ || identity.empty()) return ok();
  uint64_t start = 0;
  const pid_t pid = info_.qemu_pid > 0 && qemu_identity(info_.qemu_pid, &start) ? info_.qemu_pid : 0;
  Intent e{identity, format_mac(iface.mac), domain_, pid, pid ? start : 0, interface_to_json(iface), 0};
  if (auto r = journal_->record(std::move(e)); !r)
    return Error{r.error().code, "the journal of intent cannot be written (" + r.error().message + ")"};
  return ok();
}

void LibvirtAttacher::journal_forget(const MacAddress& mac) {
  const std::string identity = journal_identity();
  if (!journal_ || identity.empty() || !journal_->find(identity, format_mac(mac))) return;
  if (auto r = journal_->forget(identity, format_mac(mac)); !r)
    logger()->warn("{}: {}, ignoring", domain_, r.error().message);
}

std::vector<libvirt::DirectInterface> LibvirtAttacher::resume_from_journal() {
  std::vector<libvirt::DirectInterface> out;
  const std::string identity = journal_identity();
  if (!journal_ || identity.empty()) return out;
  std::vector<Intent> mine;
  for (const auto& e : journal_->entries())
    if (e.identity == identity) mine.push_back(e);
  for (const auto& e : mine) {
    auto iface = interface_from_json(e.what);
    if (!iface || format_mac(iface->mac) != e.nic) {
      logger()->warn("{}: a journal entry for {} cannot be used: {}", domain_, e.nic,
                     iface ? "its MAC differs" : iface.error().message);
      journal_forget(parse_mac(e.nic).value_or(MacAddress{}));
      continue;
    }
    if (const libvirt::DirectInterface* live = interface(iface->mac)) {
      // Still with the macvtap it had when the release was asked: a paused
      // guest may still let go of it (release_asked_before). Otherwise it
      // was attached again (by libvirt's owner, or before the crash).
      if (live->target_dev.empty() || live->target_dev != iface->target_dev) journal_forget(iface->mac);
      continue;
    }
    last_seen_[iface->mac] = *iface;
    out.push_back(std::move(*iface));
  }
  return out;
}

bool LibvirtAttacher::release_asked_before(const MacAddress& mac) const {
  const std::string identity = journal_identity();
  return journal_ && !identity.empty() && journal_->find(identity, format_mac(mac));
}

nlohmann::json interface_to_json(const libvirt::DirectInterface& i) {
  return {{"mac", format_mac(i.mac)}, {"source_dev", i.source_dev}, {"mode", i.mode},
          {"model", i.model},         {"alias", i.alias},           {"target_dev", i.target_dev},
          {"queues", i.queues},       {"link_up", i.link_up},       {"pci_address", i.pci_address},
          {"xml", i.xml}};
}

Result<libvirt::DirectInterface> interface_from_json(const nlohmann::json& j) {
  libvirt::DirectInterface i;
  if (!j.is_object()) return Error{EINVAL, "not an object"};
  auto str = [&](const char* k, std::string& out, size_t max) {
    if (!j.contains(k) || !j[k].is_string() || j[k].get_ref<const std::string&>().size() > max) return false;
    out = j[k].get<std::string>();
    return true;
  };
  std::string mac;
  const bool fine = str("mac", mac, 32) && str("source_dev", i.source_dev, 64) && str("mode", i.mode, 32) &&
                    str("model", i.model, 64) && str("alias", i.alias, 128) && str("target_dev", i.target_dev, 64) &&
                    str("pci_address", i.pci_address, 64) && str("xml", i.xml, 64 << 10) &&
                    j.value("queues", nlohmann::json()).is_number_unsigned() &&
                    j.value("link_up", nlohmann::json()).is_boolean();
  auto parsed = parse_mac(mac);
  if (!fine || !parsed || !config::valid_ifname(i.source_dev)) return Error{EINVAL, "an interface field is missing or wrong"};
  i.mac = *parsed;
  i.queues = static_cast<unsigned>(std::min<uint64_t>(j["queues"].get<uint64_t>(), 256));
  i.link_up = j["link_up"].get<bool>();
  return i;
}

void LibvirtAttacher::set_link(const config::MacvtapBinding& b, bool up) {
  const libvirt::DirectInterface* i = interface(b.mac);
  if (!i) return;  // released: attached again with the link it needs
  auto xml = libvirt::link_update_xml(*i, up);
  if (!xml) {
    logger()->warn("{}/{}: link {}: {}", domain_, b.nic, up ? "up" : "down", xml.error().message);
    return;
  }
  source_.update(domain_, xml.value(), [domain = domain_, nic = b.nic, up](Result<void> r) {
    if (!r) logger()->warn("{}/{}: link {}: {}", domain, nic, up ? "up" : "down", r.error().message);
  });
}

}  // namespace relink::daemon
