// SPDX-License-Identifier: GPL-2.0-or-later
// What every attacher shares: deleting netdevs and relinkd's own macvtaps, QMP's not-found errors.
#include "daemon/attacher.h"

#include <cerrno>

#include "qemu/qmp_client.h"
#include "util/log.h"

namespace relink::daemon {
namespace {

auto logger() { return log::get("attach"); }

}  // namespace

bool qmp_not_found(const Error& e) { return e.message.rfind("DeviceNotFound", 0) == 0; }
bool qmp_timed_out(const Error& e) { return e.code == ETIMEDOUT; }

std::string macvtap_alias(const std::string& vm, const std::string& nic) {
  return kMacvtapAliasPrefix + vm + "/" + nic;
}

void delete_netdev(qemu::QmpClient& qmp, const std::string& id) {
  qmp.execute("netdev_del", {{"id", id}}, [id](qemu::QmpReply r) {
    if (!r && !qmp_not_found(r.error())) logger()->warn("netdev_del {}: {}, ignoring", id, r.error().message);
  });
}

void remove_macvtap_if_ours(macvtap::MacvtapFactory& factory, const config::MacvtapBinding& b, int ifindex) {
  auto found = factory.find(b.macvtap);
  if (!found) {
    logger()->warn("{}: looking up macvtap {}: {}", b.nic, b.macvtap, found.error().message);
    return;
  }
  if (!*found || (ifindex && (*found)->ifindex != ifindex)) return;
  if (auto r = factory.remove((*found)->ifindex); !r)
    logger()->warn("{}: deleting macvtap {}: {}", b.nic, b.macvtap, r.error().message);
}

}  // namespace relink::daemon
