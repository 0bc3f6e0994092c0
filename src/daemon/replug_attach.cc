// SPDX-License-Identifier: GPL-2.0-or-later
// The replug attacher: probe (template, adoption), release, and hand-over by device_add of the NIC anew.
#include "daemon/replug_attach.h"

#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cctype>
#include <charconv>
#include <cstdio>
#include <memory>
#include <optional>

#include "config/config.h"
#include "daemon/qemu_names.h"
#include "macvtap/tap_holders.h"
#include "qemu/info_network.h"
#include "util/log.h"
#include "util/untrusted.h"

namespace relink::daemon {
namespace {

using nlohmann::json;

auto logger() { return log::get("replug"); }

// qom-get of a property the driver does not have.
bool is_no_such_property(const Error& e) {
  return e.message.rfind("GenericError: Property '", 0) == 0 && e.message.find("' not found") != std::string::npos;
}
// QEMU 7.2 refuses a second device_del while the first is pending.
bool is_unplug_pending(const Error& e) {
  return e.message.find("is already in the process of unplug") != std::string::npos;
}

// What probe() reads of every NIC, in this order. Beyond what identifies the
// NIC (type, mac, netdev, addr, parent_bus), these are carried over to the
// new device, each only where the driver has it and only when it is not what
// device_add would pick by itself:
//   mq            on only (multiqueue for the guest)
//   vectors       MSI-X vectors; QEMU's default is 2 * queues + 2 for the
//                 backend it is plugged on, so only another value is carried
//   host_mtu      non-zero (the MTU the guest is told)
//   rx_queue_size, tx_queue_size   other than 256 (ring sizes)
//   romfile       always (the same file, or "" for no option ROM)
//   bootindex     set (not -1)
//   acpi-index    non-zero (guest interface naming, e.g. systemd's "eno1")
// Everything else the new device gets from its driver's defaults and the
// machine's compat properties, as at start-up. Offload switches, speed and
// duplex set on the original command line are not carried.
constexpr const char* kProps[] = {"type",          "mac",           "netdev",  "addr",      "parent_bus",
                                  "mq",            "vectors",       "host_mtu", "romfile",   "bootindex",
                                  "rx_queue_size", "tx_queue_size", "acpi-index"};

// The char device behind QEMU's fd `fd`, if it is one.
std::optional<dev_t> fd_device(pid_t pid, int fd) {
  struct stat st {};
  const std::string path = "/proc/" + std::to_string(pid) + "/fd/" + std::to_string(fd);
  if (stat(path.c_str(), &st) != 0 || !S_ISCHR(st.st_mode)) return std::nullopt;
  return st.st_rdev;
}

}  // namespace

std::optional<MacvtapLink> parse_macvtap_link(const std::string& target) {
  // ".../net/NAME/macvtap/tapIFINDEX"
  const size_t tap = target.rfind('/');
  if (tap == std::string::npos || target.compare(tap + 1, 3, "tap") != 0) return std::nullopt;
  const std::string digits = target.substr(tap + 4);
  int ifindex = 0;
  auto [p, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), ifindex);
  if (digits.empty() || ec != std::errc() || p != digits.data() + digits.size() || ifindex <= 0) return std::nullopt;
  const std::string suffix = "/macvtap";
  const std::string head = target.substr(0, tap);
  if (head.size() <= suffix.size() || head.compare(head.size() - suffix.size(), suffix.size(), suffix) != 0)
    return std::nullopt;
  const std::string dir = head.substr(0, head.size() - suffix.size());  // ".../net/NAME"
  const size_t name_at = dir.rfind('/');
  if (name_at == std::string::npos || name_at < 4 || dir.compare(name_at - 4, 4, "/net") != 0) return std::nullopt;
  std::string name = dir.substr(name_at + 1);
  if (!config::valid_ifname(name)) return std::nullopt;
  return MacvtapLink{std::move(name), ifindex};
}

const NicTemplate* ReplugAttacher::nic_template(const std::string& nic) const {
  auto it = templates_.find(nic);
  return it == templates_.end() ? nullptr : &it->second;
}

// --- probe --------------------------------------------------------------------

struct ReplugAttacher::ProbeState {
  const std::vector<config::MacvtapBinding>* bindings = nullptr;
  std::function<void(std::vector<engine::VmConnected>)> done;
  pid_t pid = 0;
  struct Nic {
    bool absent = false;        // DeviceNotFound: QEMU has no such device
    std::string error;          // the first other failure
    std::map<std::string, json> values;  // property -> value, for the properties the driver has
  };
  std::vector<Nic> nics;
};

void ReplugAttacher::probe(const std::vector<config::MacvtapBinding>& bindings,
                           std::function<void(std::vector<engine::VmConnected>)> done) {
  auto st = std::make_shared<ProbeState>();
  st->bindings = &bindings;
  st->done = std::move(done);
  st->pid = qmp_.peer_pid();
  st->nics.resize(bindings.size());
  // Pipelined: QMP runs commands in order, so when "info network" answers,
  // every qom-get before it has been answered.
  for (size_t i = 0; i < bindings.size(); ++i) {
    const std::string path = "/machine/peripheral/" + bindings[i].nic;
    for (const char* prop : kProps) {
      qmp_.execute("qom-get", {{"path", path}, {"property", prop}}, [st, i, p = std::string(prop)](qemu::QmpReply r) {
        auto& nic = st->nics[i];
        if (r) nic.values[p] = std::move(*r);
        else if (qmp_not_found(r.error())) nic.absent = true;
        else if (!is_no_such_property(r.error()) && nic.error.empty()) nic.error = "qom-get " + p + ": " + r.error().message;
      });
    }
  }
  qmp_.execute("human-monitor-command", {{"command-line", "info network"}},
               [this, st](qemu::QmpReply r) { finish_probe(st, r); });
}

// What probe() found of one NIC, step by step.
struct ReplugAttacher::NicProbe {
  const config::MacvtapBinding& b;
  const ProbeState::Nic& nic;
  pid_t pid = 0;
  std::map<uint64_t, GenerationPieces> gens;
  std::optional<qemu::NicPeer> peer;
  engine::VmConnected vc;
  std::optional<dev_t> peer_dev;  // the char device behind the NIC's tap
  const std::vector<qemu::NetClient>* clients = nullptr;  // info network, when it answered
  // Whether what the NIC uses is known for sure (then anything else of ours is a leftover).
  bool known = false;
};

namespace {

// The one char device behind every queue fd of the NIC's tap (in QEMU
// `pid`), or nullopt and why_not. `known` drops when an fd is not that device.
std::optional<dev_t> tap_device(pid_t pid, const qemu::NicPeer& peer, const std::string& netdev,
                                std::string& why_not, bool& known) {
  if (peer.type != "tap" || peer.fds.empty() || peer.fds[0] < 0) {
    why_not = "its backend " + netdev + " is not a tap QEMU got as an fd";
    return std::nullopt;
  }
  std::optional<dev_t> dev;
  for (int fd : peer.fds) {
    auto d = fd < 0 ? std::nullopt : fd_device(pid, fd);
    if (!d || (dev && *d != *dev)) {
      known = false;
      why_not = "QEMU's fd " + std::to_string(fd) + " of tap " + netdev + " is not the same character device";
      return std::nullopt;
    }
    dev = d;
  }
  return dev;
}

// Which of QEMU's queue fds is not attached to the macvtap `name` ("" when
// all are): one of a macvtap that is gone carries the same major:minor as
// the macvtap that got its minor after it.
std::string dead_fd(pid_t pid, const std::vector<int>& fds, const std::string& name) {
  for (int fd : fds)
    if (macvtap::fd_liveness(pid, fd, name) == macvtap::Liveness::Dead)
      return "QEMU's fd " + std::to_string(fd) + " has the device number of macvtap " + name +
             " but belongs to a macvtap that is gone";
  return "";
}

// The macvtap a tap's char device belongs to, through /sys/dev/char.
std::optional<MacvtapLink> macvtap_of_device(dev_t dev, const std::string& netdev, std::string& why_not) {
  char target[512];
  const std::string sys = "/sys/dev/char/" + std::to_string(major(dev)) + ":" + std::to_string(minor(dev));
  const ssize_t n = readlink(sys.c_str(), target, sizeof target - 1);
  std::optional<MacvtapLink> link;
  if (n > 0) link = parse_macvtap_link(std::string(target, static_cast<size_t>(n)));
  if (!link) why_not = "tap " + netdev + "'s device " + sys.substr(14) + " is not a macvtap";
  return link;
}

}  // namespace

void ReplugAttacher::finish_probe(const std::shared_ptr<ProbeState>& st, const qemu::QmpReply& info) {
  std::vector<qemu::NetClient> clients;
  if (info && info->is_string()) clients = qemu::parse_info_network(info->get<std::string>());
  else logger()->warn("info network: {}; not adopting", info ? "not a string" : info.error().message);
  const bool have_network = info && info->is_string();
  // Not knowing what the NICs use is no reason to unplug them: look again
  // over a new session.
  if (!info && qmp_timed_out(info.error())) {
    qmp_.reset(Error{ETIMEDOUT, "the adoption probe's info network got no answer; QMP session reset"});
    return;
  }

  std::vector<engine::VmConnected> out;
  for (size_t i = 0; i < st->bindings->size(); ++i) {
    NicProbe p{.b = (*st->bindings)[i], .nic = st->nics[i], .pid = st->pid};
    if (have_network) p.clients = &clients;
    p.gens = find_generations(clients, p.b.nic);
    if (!p.gens.empty()) p.vc.max_generation_seen = p.gens.rbegin()->first;
    if (!p.nic.absent) p.peer = qemu::nic_peer(clients, p.b.nic);
    read_template(p);
    p.known = have_network && p.pid > 0 && p.nic.error.empty();
    if (p.peer && have_network && p.pid > 0) adopt(p);
    else if (p.vc.nic_present && have_network && !p.peer)
      logger()->info("{}: not adopting: the NIC has no backend of its own", p.b.nic);
    remove_leftovers(p);
    out.push_back(p.vc);
  }
  st->done(std::move(out));
}

void ReplugAttacher::read_template(NicProbe& p) {
  const auto& b = p.b;
  std::optional<NicTemplate> tmpl;
  std::string why_no_template;
  if (p.nic.absent) {
    p.vc.nic_present = false;
    why_no_template = "QEMU has no device " + b.nic;
  } else if (!p.nic.error.empty()) {
    why_no_template = p.nic.error;
  } else {
    const size_t queues = p.peer && !p.peer->fds.empty() ? p.peer->fds.size() : 1;
    tmpl = template_from_qom(p.nic.values, b.nic, p.pid, queues, why_no_template);
  }
  if (tmpl) {
    if (tmpl->mac != b.mac)
      logger()->warn("{}: the NIC's MAC is {}, the binding's {}: the NIC keeps its own when plugged in again", b.nic,
                     format_mac(tmpl->mac), format_mac(b.mac));
    logger()->debug("{}: template: {} mac {} bus {} addr {} netdev {} props {}", b.nic, tmpl->driver,
                    format_mac(tmpl->mac), tmpl->bus, tmpl->addr >= 0 ? pci_addr_arg(tmpl->addr) : "-",
                    tmpl->netdev, untrusted::dump_json(tmpl->props));
    // The NIC is there: whatever a previous relinkd began for it is over,
    // but for the backend the NIC had before (see drop_journalled_backend);
    // unless the NIC is still on the backend it had when the release was
    // asked: a paused guest may still let go of it (release_asked_before).
    const bool asked = journalled_backend(b.nic, p.pid) == tmpl->netdev;
    if (!asked) drop_journalled_backend(b.nic, p.pid, tmpl->netdev, p.clients);
    templates_[b.nic] = std::move(*tmpl);
    if (!asked) journal_forget(b.nic, p.pid);
    return;
  }
  // A template read from this very QEMU process earlier (relinkd's QMP
  // session dropped mid-replug) still describes the NIC.
  auto it = templates_.find(b.nic);
  const bool kept = it != templates_.end() && p.pid > 0 && it->second.qemu_pid == p.pid;
  if (!kept && it != templates_.end()) templates_.erase(it);
  // Released by an earlier relinkd (or this VM's previous incarnation) that
  // did not live to plug it in again: the journal says how.
  if (!kept && p.nic.absent && template_from_journal(b.nic, p.pid)) return;
  logger()->info("{}: cannot read how to plug the NIC in again: {}{}", b.nic, why_no_template,
                 kept ? "; keeping what was read before from this QEMU" : "; it will not be released");
}

// Adoption: the NIC's tap is a live macvtap with the binding's MAC.
void ReplugAttacher::adopt(NicProbe& p) {
  const auto& b = p.b;
  const std::string netdev = untrusted::safe_text(p.peer->netdev, 80);
  std::string why_not;
  p.peer_dev = tap_device(p.pid, *p.peer, netdev, why_not, p.known);
  std::optional<MacvtapLink> link;
  if (p.peer_dev) link = macvtap_of_device(*p.peer_dev, netdev, why_not);
  if (link) {
    auto found = factory_.find(link->name);
    if (!found) why_not = "looking up macvtap " + link->name + ": " + found.error().message;
    else if (!*found || (*found)->ifindex != link->ifindex || (*found)->dev != *p.peer_dev)
      why_not = "macvtap " + link->name + " is not in relinkd's network namespace";
    else if (std::string dead = dead_fd(p.pid, p.peer->fds, link->name); !dead.empty())
      why_not = dead;
    else if (!(*found)->mac || *(*found)->mac != b.mac)
      why_not = "macvtap " + link->name + " has MAC " +
                ((*found)->mac ? format_mac(*(*found)->mac) : std::string("none")) + ", not the binding's";
    else if (!p.vc.nic_present)
      why_not = "the NIC is gone";
    else {
      const auto& m = **found;
      uint64_t gen = 0;
      for (const auto& [g, pieces] : p.gens)
        if (pieces.tap && tap_id(b.nic, g) == p.peer->netdev) gen = g;
      p.vc.adopt = engine::VmConnected::Adopt{gen, m.ifindex, m.parent_ifindex};
      if (link->name != b.macvtap) adopted_[b.nic] = Adopted{link->name, m.ifindex, m.parent_ifindex};
      else adopted_.erase(b.nic);
      logger()->info("{}: adopting macvtap {} (ifindex {} on parent ifindex {}) as generation {}: QEMU holds "
                     "its device through tap {} ({} queue{}) and its MAC is the binding's",
                     b.nic, link->name, m.ifindex, m.parent_ifindex, gen, netdev, p.peer->fds.size(),
                     p.peer->fds.size() == 1 ? "" : "s");
    }
  }
  if (!p.vc.adopt) logger()->info("{}: not adopting: {}", b.nic, why_not);
}

void ReplugAttacher::remove_leftovers(const NicProbe& p) {
  const auto& b = p.b;
  // Our taps that are not the NIC's backend are leftovers (a crash mid-replug).
  for (const auto& [gen, pieces] : p.gens) {
    const std::string id = tap_id(b.nic, gen);
    if (!pieces.tap || (p.peer && p.peer->netdev == id)) continue;
    logger()->info("{}: deleting leftover netdev {}", b.nic, id);
    delete_netdev(qmp_, id);
  }
  // So is a macvtap of ours that the NIC does not use (adopted or not: an
  // adopted launcher's macvtap is not named like ours).
  if (!p.vc.adopt) adopted_.erase(b.nic);
  auto existing = p.known ? factory_.find(b.macvtap) : Result<std::optional<macvtap::ExistingMacvtap>>(std::nullopt);
  if (existing && *existing && (!p.peer_dev || (*existing)->dev != *p.peer_dev)) {
    logger()->info("{}: deleting leftover macvtap {} (ifindex {}): the NIC does not use it", b.nic, b.macvtap,
                   (*existing)->ifindex);
    remove_macvtap_if_ours(factory_, b, (*existing)->ifindex);
  }
}

// --- release ------------------------------------------------------------------

void ReplugAttacher::release(const config::MacvtapBinding& b, uint64_t,
                             std::function<void(ReleaseResult)> done) {
  const NicTemplate* t = nic_template(b.nic);
  if (!t || t->qemu_pid != qmp_.peer_pid()) {
    // Unplugging a NIC that cannot be plugged in again would lose it for
    // good: only find out whether it is there at all.
    qmp_.execute("qom-get", {{"path", "/machine/peripheral/" + b.nic}, {"property", "type"}},
                 [done, nic = b.nic](qemu::QmpReply r) {
                   if (!r && qmp_not_found(r.error())) {
                     done(ReleaseResult{true, {}});
                     return;
                   }
                   done(ReleaseResult{false, "device_del " + nic +
                                                 ": not sent: relinkd could not read how to plug the NIC in again "
                                                 "when it connected to QEMU" +
                                                 (r ? std::string() : " (" + r.error().message + ")")});
                 });
    return;
  }
  // Written down first: a relinkd that dies before the NIC is back leaves
  // the next one what it needs to plug it in again.
  if (auto j = journal_release(b.nic, *t); !j) {
    defer_.post([done, nic = b.nic, why = j.error().message] {
      done(ReleaseResult{false, "device_del " + nic + ": not sent: " + why});
    });
    return;
  }
  qmp_.execute("device_del", {{"id", b.nic}}, [this, done, nic = b.nic](qemu::QmpReply r) {
    const bool asked = r || qmp_not_found(r.error()) || is_unplug_pending(r.error());
    if (auto a = adopted_.find(nic); asked && a != adopted_.end()) a->second.released = true;
    if (r) done(ReleaseResult{});
    else if (qmp_not_found(r.error())) done(ReleaseResult{true, {}});
    else if (is_unplug_pending(r.error())) done(ReleaseResult{});  // asked before: still asked
    else done(ReleaseResult{false, "device_del " + nic + ": " + r.error().message});
  });
}

void ReplugAttacher::drop_backend(const std::string& nic) {
  auto t = templates_.find(nic);
  if (t == templates_.end() || t->second.netdev.empty()) return;
  delete_netdev(qmp_, t->second.netdev);
  t->second.netdev.clear();  // plugged_in() and roll_back() have nothing left to delete
}

// --- attach -------------------------------------------------------------------

Result<macvtap::Macvtap> ReplugAttacher::create(const config::MacvtapBinding& b, int parent_ifindex) {
  macvtap::MacvtapSpec spec{b.macvtap, parent_ifindex, b.mode, b.mac, b.queues, macvtap_alias(vm_, b.nic)};
  auto created = factory_.create(spec);
  if (!created && created.error().code == EEXIST) {
    // A macvtap of ours survived (a detach that could not delete it, or a
    // crash): it is not in use, since only the attached generation is, and
    // the NIC is unplugged while a new one is made. Or the MAC is taken
    // (the kernel's EADDRINUSE, which libnl reports as "exists").
    auto ours = factory_.find(b.macvtap);
    bool retry = false;
    if (ours && *ours) {
      remove_macvtap_if_ours(factory_, b, 0);
      retry = true;
    } else {
      retry = remove_adopted_rival(b, parent_ifindex);
    }
    if (retry) created = factory_.create(spec);
  }
  if (created) adopted_.erase(b.nic);
  return created;
}

std::string ReplugAttacher::adopted_macvtap(const std::string& nic, int ifindex) const {
  auto it = adopted_.find(nic);
  return it != adopted_.end() && ifindex > 0 && it->second.ifindex == ifindex ? it->second.name : "";
}

bool ReplugAttacher::remove_adopted_rival(const config::MacvtapBinding& b, int parent_ifindex) {
  auto it = adopted_.find(b.nic);
  if (it == adopted_.end() || !it->second.released) return false;  // its NIC may still use it
  const Adopted a = it->second;
  auto found = factory_.find(a.name);
  if (!found || !*found || (*found)->ifindex != a.ifindex || (*found)->parent_ifindex != parent_ifindex ||
      !(*found)->mac || *(*found)->mac != b.mac) {
    adopted_.erase(it);
    return false;
  }
  logger()->info("{}: deleting macvtap {} (ifindex {}), adopted from the launcher: it holds the MAC {} on the "
                 "parent, and the NIC it served was unplugged for a new macvtap",
                 b.nic, a.name, a.ifindex, format_mac(b.mac));
  adopted_.erase(it);
  if (auto r = factory_.remove(a.ifindex); !r) {
    logger()->warn("{}: deleting macvtap {}: {}", b.nic, a.name, r.error().message);
    return false;
  }
  return true;
}

// One hand-over in flight.
struct ReplugAttacher::HandOver {
  std::string nic;
  std::string tap;  // the new tap netdev's id
  bool link_up = true;
  std::function<void(AttachResult)> done;
  macvtap::Macvtap mvt;
  size_t queues = 0;
  std::vector<std::string> fd_names;
  std::vector<bool> getfd_ok;
  bool tap_added = false;
  std::string error;
  void fail(const std::string& step, const qemu::QmpReply& r) {
    if (error.empty()) error = step + ": " + r.error().message;
  }
};

void ReplugAttacher::hand_over(const config::MacvtapBinding& b, uint64_t generation, macvtap::Macvtap mvt,
                               bool link_up, std::function<void(AttachResult)> done) {
  auto op = std::make_shared<HandOver>();
  op->nic = b.nic;
  op->tap = tap_id(b.nic, generation);
  op->link_up = link_up;
  op->done = std::move(done);
  op->mvt = std::move(mvt);

  auto it = templates_.find(b.nic);
  if (it == templates_.end() || op->mvt.fds.empty()) {
    std::string error = it == templates_.end()
                            ? "device_add " + op->nic +
                                  ": not sent: relinkd never read how the NIC was plugged in (QEMU did not have it "
                                  "when relinkd connected)"
                            : "no queue fd to hand over";
    op->mvt.fds.clear();
    if (auto rm = factory_.remove(op->mvt.ifindex); !rm)
      logger()->warn("{}: rollback: deleting macvtap: {}", op->nic, rm.error().message);
    defer_.post([op, error] { op->done(AttachResult{false, 0, error}); });
    return;
  }
  add_tap(op, generation);
}

// 1. Pipelined: the queue fds in, the new tap. The NIC's old backend stays
//    until the new NIC is in: closing the old macvtap's last fd blocks
//    QEMU's main loop for 8-20 ms here, which must not delay the guest's
//    return. And a NIC that is still plugged in (not released after all)
//    makes device_add fail on its duplicate id, with its backend untouched.
void ReplugAttacher::add_tap(const std::shared_ptr<HandOver>& op, uint64_t generation) {
  op->queues = op->mvt.fds.size();
  op->getfd_ok.assign(op->queues, false);
  std::string fds;
  for (size_t q = 0; q < op->queues; ++q) {
    std::string name = fd_name(op->nic, generation);
    if (op->queues > 1) name += "-q" + std::to_string(q);
    op->fd_names.push_back(name);
    fds += (q ? ":" : "") + name;
    qmp_.execute("getfd", {{"fdname", name}}, [op, q](qemu::QmpReply r) {
      if (r) op->getfd_ok[q] = true;
      else op->fail("getfd", r);
    }, op->mvt.fds[q].get());
  }
  json tap_args = {{"type", "tap"}, {"id", op->tap}};
  tap_args[op->queues > 1 ? "fds" : "fd"] = fds;
  // Not pipelined with device_add: if this failed because a netdev of that
  // id already exists, device_add would plug the NIC onto it.
  qmp_.execute("netdev_add", tap_args, [this, op](qemu::QmpReply r) {
    if (!r && qmp_timed_out(r.error())) return unknown_outcome(op, "netdev_add tap", r.error());
    if (r) op->tap_added = true;
    else op->fail("netdev_add tap", r);
    op->mvt.fds.clear();  // QEMU has its own copies now (or none)
    if (!op->tap_added) {
      roll_back(op, false);
      return;
    }
    plug_in(op);
  });
}

// 2. The NIC, as it was, on the new tap.
void ReplugAttacher::plug_in(const std::shared_ptr<HandOver>& op) {
  auto cur = templates_.find(op->nic);
  if (cur == templates_.end()) {  // dropped by a probe meanwhile
    op->error = "device_add " + op->nic + ": not sent: no template";
    roll_back(op, true);
    return;
  }
  qmp_.execute("device_add", device_add_args(cur->second, op->nic, op->tap, op->queues),
               [this, op](qemu::QmpReply d) {
                 if (!d && qmp_timed_out(d.error())) return unknown_outcome(op, "device_add", d.error());
                 if (!d) {
                   op->fail("device_add", d);
                   roll_back(op, true);
                   return;
                 }
                 plugged_in(op);
               });
  if (!op->link_up)
    qmp_.execute("set_link", {{"name", op->nic}, {"up", false}}, [nic = op->nic](qemu::QmpReply s) {
      if (!s && !qmp_not_found(s.error()))
        logger()->warn("{}: set_link off after device_add: {}, ignoring", nic, s.error().message);
    });
}

// 3. The old backend, off the guest's path.
void ReplugAttacher::plugged_in(const std::shared_ptr<HandOver>& op) {
  if (auto t = templates_.find(op->nic); t != templates_.end()) {
    if (!t->second.netdev.empty() && t->second.netdev != op->tap)
      qmp_.execute("netdev_del", {{"id", t->second.netdev}}, [nic = op->nic, old = t->second.netdev](qemu::QmpReply del) {
        if (!del && !qmp_not_found(del.error()))
          logger()->warn("{}: netdev_del {} (the previous backend): {}, ignoring", nic, old, del.error().message);
      });
    t->second.netdev = op->tap;
  }
  logger()->debug("{}: plugged in again on {}", op->nic, op->tap);
  journal_forget(op->nic, qmp_.peer_pid());
  op->done(AttachResult{true, op->mvt.ifindex, {}});
}

// Undoes what is in QEMU (del_tap: the new tap; else the queue fds), deletes
// the macvtap and reports the failure.
void ReplugAttacher::roll_back(const std::shared_ptr<HandOver>& op, bool del_tap) {
  if (del_tap) {
    delete_netdev(qmp_, op->tap);
  } else {
    for (size_t i = 0; i < op->fd_names.size(); ++i)
      if (op->getfd_ok[i]) qmp_.execute("closefd", {{"fdname", op->fd_names[i]}}, [](qemu::QmpReply) {});
  }
  // The old backend goes too, but only if the NIC is really gone: a NIC
  // still plugged in would be orphaned for good.
  qmp_.execute("qom-get", {{"path", "/machine/peripheral/" + op->nic}, {"property", "type"}},
               [this, nic = op->nic](qemu::QmpReply gone) {
                 if (gone || !qmp_not_found(gone.error())) return;
                 auto t = templates_.find(nic);
                 if (t == templates_.end() || t->second.netdev.empty()) return;
                 delete_netdev(qmp_, t->second.netdev);
                 t->second.netdev.clear();
               });
  op->mvt.fds.clear();
  if (auto rm = factory_.remove(op->mvt.ifindex); !rm)
    logger()->warn("{}: rollback: deleting macvtap: {}", op->nic, rm.error().message);
  logger()->debug("{}: hand-over of {} failed: {}", op->nic, op->tap, op->error);
  op->done(AttachResult{false, 0, op->error});
}

void ReplugAttacher::unknown_outcome(const std::shared_ptr<HandOver>& op, const std::string& step,
                                     const Error& why) {
  op->mvt.fds.clear();
  const std::string error = step + ": " + why.message + "; QMP session reset to see what QEMU has";
  logger()->warn("{}: {}", op->nic, error);
  qmp_.reset(Error{ETIMEDOUT, op->nic + ": " + error});
  op->done(AttachResult{false, 0, error});
}

void ReplugAttacher::detach(const config::MacvtapBinding& b, uint64_t, int macvtap_ifindex, bool link_down) {
  // No netdev_del: a NIC is never re-peered, so its tap stays until the NIC
  // is released; hand_over deletes it then.
  if (link_down && qmp_.connected()) set_link(b, false);
  if (macvtap_ifindex) remove_macvtap_if_ours(factory_, b, macvtap_ifindex);
}

void ReplugAttacher::set_link(const config::MacvtapBinding& b, bool up) {
  if (!qmp_.connected()) return;
  qmp_.execute("set_link", {{"name", b.nic}, {"up", up}}, [nic = b.nic, up](qemu::QmpReply r) {
    if (r) return;
    // Unplugged (released, or being plugged in again): its new device's link
    // is set when it is plugged in.
    if (qmp_not_found(r.error())) logger()->debug("{}: set_link {}: {}", nic, up ? "on" : "off", r.error().message);
    else logger()->warn("{}: set_link {}: {}", nic, up ? "on" : "off", r.error().message);
  });
}

}  // namespace relink::daemon
