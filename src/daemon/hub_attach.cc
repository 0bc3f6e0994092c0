// SPDX-License-Identifier: GPL-2.0-or-later
// The hub attacher: hands macvtaps to QEMU through a hub uplink, and adopts them after a restart.
#include "daemon/hub_attach.h"

#include <dirent.h>
#include <errno.h>
#include <sys/stat.h>

#include <fstream>
#include <memory>

#include "daemon/qemu_names.h"
#include "macvtap/tap_holders.h"
#include "qemu/info_network.h"
#include "util/log.h"

namespace relink::daemon {
namespace {

using nlohmann::json;

auto logger() { return log::get("attach"); }


}  // namespace

Result<macvtap::Macvtap> HubAttacher::create(const config::MacvtapBinding& b, int parent_ifindex) {
  macvtap::MacvtapSpec spec{b.macvtap, parent_ifindex, b.mode, b.mac, b.queues, macvtap_alias(vm_, b.nic)};
  auto created = factory_.create(spec);
  if (!created && created.error().code == EEXIST) {
    // A macvtap of ours survived (a detach that could not delete it, or a
    // crash): it is not in use, since only the attached generation is.
    remove_macvtap_if_ours(factory_, b, 0);
    created = factory_.create(spec);
  }
  return created;
}

void HubAttacher::hand_over(const config::MacvtapBinding& b, uint64_t generation, macvtap::Macvtap mvt,
                            bool link_up, std::function<void(AttachResult)> done) {
  struct Op {
    macvtap::Macvtap mvt;
    bool getfd = false, tap = false, uplink = false, link = false;
    std::string error;
    bool timed_out = false;  // some reply did not come in time: what QEMU did is not known
    void fail(const std::string& step, const qemu::QmpReply& r) {
      if (error.empty()) error = step + ": " + r.error().message;
      timed_out = timed_out || qmp_timed_out(r.error());
    }
  };
  auto op = std::make_shared<Op>();
  op->mvt = std::move(mvt);
  const std::string fdn = fd_name(b.nic, generation), tap = tap_id(b.nic, generation),
                    up = uplink_id(b.nic, generation);

  // One write for the four: QEMU wakes once (as the floor of reattach_bench does).
  qemu::QmpClient::Batch batch(qmp_);
  qmp_.execute("getfd", {{"fdname", fdn}}, [op](qemu::QmpReply r) {
    if (r) op->getfd = true;
    else op->fail("getfd", r);
  }, op->mvt.fds.at(0).get());
  qmp_.execute("netdev_add", {{"type", "tap"}, {"id", tap}, {"fd", fdn}}, [op](qemu::QmpReply r) {
    if (r) op->tap = true;
    else op->fail("netdev_add tap", r);
  });
  qmp_.execute("netdev_add", {{"type", "hubport"}, {"id", up}, {"hubid", b.hub}, {"netdev", tap}},
               [op](qemu::QmpReply r) {
                 if (r) op->uplink = true;
                 else op->fail("netdev_add hubport", r);
               });
  // QMP runs commands in order: when this reply arrives, all four have run.
  qmp_.execute("set_link", {{"name", b.nic}, {"up", link_up}},
               [this, op, done, fdn, tap, up, &b](qemu::QmpReply r) {
                 if (r) op->link = true;
                 else op->fail("set_link", r);
                 const int ifindex = op->mvt.ifindex;
                 op->mvt.fds.clear();  // QEMU has its own copy now (or none)
                 if (op->getfd && op->tap && op->uplink && op->link) {
                   done(AttachResult{true, ifindex, {}});
                   return;
                 }
                 if (op->timed_out) {
                   // QEMU may be using the new tap: nothing is undone; the
                   // next session's probe adopts it or removes it.
                   logger()->warn("{}: {}; QMP session reset to see what QEMU has", b.nic, op->error);
                   qmp_.reset(Error{ETIMEDOUT, b.nic + ": " + op->error});
                   done(AttachResult{false, 0, op->error});
                   return;
                 }
                 // Undo in reverse order; an fd that no netdev took is closed.
                 if (op->uplink) delete_netdev(qmp_, up);
                 if (op->tap) delete_netdev(qmp_, tap);
                 else if (op->getfd) qmp_.execute("closefd", {{"fdname", fdn}}, [](qemu::QmpReply) {});
                 if (auto rm = factory_.remove(ifindex); !rm)
                   logger()->warn("{}: rollback: deleting macvtap: {}", b.nic, rm.error().message);
                 done(AttachResult{false, 0, op->error});
               });
}

void HubAttacher::detach(const config::MacvtapBinding& b, uint64_t generation, int macvtap_ifindex,
                         bool link_down) {
  if (qmp_.connected()) {
    qemu::QmpClient::Batch batch(qmp_);
    if (link_down) qmp_.execute("set_link", {{"name", b.nic}, {"up", false}}, [](qemu::QmpReply) {});
    delete_netdev(qmp_, uplink_id(b.nic, generation));
    delete_netdev(qmp_, tap_id(b.nic, generation));
  }
  if (macvtap_ifindex) remove_macvtap_if_ours(factory_, b, macvtap_ifindex);
}

void HubAttacher::release(const config::MacvtapBinding& b, uint64_t, std::function<void(ReleaseResult)> done) {
  defer_.post([done, nic = b.nic] { done(ReleaseResult{false, nic + " is hub-attached: it is never unplugged"}); });
}

void HubAttacher::set_link(const config::MacvtapBinding& b, bool up) {
  if (!qmp_.connected()) return;
  qmp_.execute("set_link", {{"name", b.nic}, {"up", up}}, [nic = b.nic, up](qemu::QmpReply r) {
    if (!r) logger()->warn("{}: set_link {}: {}", nic, up ? "on" : "off", r.error().message);
  });
}

void HubAttacher::probe(const std::vector<config::MacvtapBinding>& bindings,
                        std::function<void(std::vector<engine::VmConnected>)> done) {
  qmp_.execute("human-monitor-command", {{"command-line", "info network"}},
               [this, &bindings, done](qemu::QmpReply r) {
    std::vector<qemu::NetClient> clients;
    if (r && r->is_string()) clients = qemu::parse_info_network(r->get<std::string>());
    else logger()->warn("info network: {}; not adopting", r ? "not a string" : r.error().message);
    // Not knowing which generation QEMU uses, nothing may be deleted.
    const bool known = r && r->is_string();
    if (!r && qmp_timed_out(r.error())) {
      qmp_.reset(Error{ETIMEDOUT, "the adoption probe's info network got no answer; QMP session reset"});
      return;
    }
    std::vector<engine::VmConnected> out;
    for (const auto& b : bindings) {
      engine::VmConnected vc;
      auto gens = find_generations(clients, b.nic);
      if (!gens.empty()) vc.max_generation_seen = gens.rbegin()->first;
      auto existing = factory_.find(b.macvtap);
      std::optional<uint64_t> keep;
      if (existing && *existing) {
        const auto& m = **existing;
        for (auto it = gens.rbegin(); it != gens.rend(); ++it) {
          const auto& p = it->second;
          if (p.tap && p.uplink && p.uplink_peers_tap && p.uplink_hub == static_cast<int>(b.hub) &&
              m.mac == b.mac && macvtap::holds_live(qmp_.peer_pid(), m.dev, b.macvtap)) {
            keep = it->first;
            vc.adopt = engine::VmConnected::Adopt{it->first, m.ifindex, m.parent_ifindex};
            logger()->info("{}: adopting generation {} on macvtap {} (ifindex {})", b.nic, it->first,
                           b.macvtap, m.ifindex);
            break;
          }
        }
      }
      for (const auto& [gen, pieces] : gens) {
        if (keep && gen == *keep) continue;
        if (pieces.uplink) delete_netdev(qmp_, uplink_id(b.nic, gen));
        if (pieces.tap) delete_netdev(qmp_, tap_id(b.nic, gen));
      }
      // An adopted generation's link is the engine's to set (it follows the carrier).
      if (!keep && known && existing && *existing) remove_macvtap_if_ours(factory_, b, (*existing)->ifindex);
      out.push_back(vc);
    }
    done(std::move(out));
  });
}

bool process_holds_device(pid_t pid, dev_t dev) {
  if (pid <= 0) return false;
  const std::string dir = "/proc/" + std::to_string(pid) + "/fd";
  std::unique_ptr<DIR, int (*)(DIR*)> d(opendir(dir.c_str()), closedir);
  if (!d) return false;
  while (dirent* e = readdir(d.get())) {
    struct stat st {};
    if (e->d_name[0] == '.') continue;
    if (stat((dir + "/" + e->d_name).c_str(), &st) == 0 && S_ISCHR(st.st_mode) && st.st_rdev == dev)
      return true;
  }
  return false;
}

bool process_alive(pid_t pid) {
  if (pid <= 0) return false;
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(f, line)) return false;
  // "pid (comm) S ...": the state follows the last ')'.
  auto close = line.rfind(')');
  if (close == std::string::npos || close + 2 >= line.size()) return false;
  char state = line[close + 2];
  return state != 'Z' && state != 'X';
}

}  // namespace relink::daemon
