// SPDX-License-Identifier: GPL-2.0-or-later
// Creates macvtap devices (libnl-route-3) and opens their queue fds.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

#include "util/mac.h"
#include "util/result.h"
#include "util/unique_fd.h"

struct nl_sock;
struct rtnl_link;

namespace relink::macvtap {

enum class Mode { Vepa, Bridge, Private, Passthru };
const char* mode_name(Mode m);
std::optional<Mode> parse_mode(const std::string& s);

struct MacvtapSpec {
  std::string name;       // interface name to create (<= 15 chars)
  int parent_ifindex = 0;
  Mode mode = Mode::Bridge;
  MacAddress mac{};
  unsigned queues = 1;    // > 1: IFF_MULTI_QUEUE, one fd per queue
  std::string alias;      // IFLA_IFALIAS ("" none): who made it, for whoever finds it later
};

struct Macvtap {
  int ifindex = 0;
  std::string name;
  dev_t dev = 0;               // major:minor of its character device
  std::vector<UniqueFd> fds;   // one per queue, O_CLOEXEC, IFF_VNET_HDR set
};

struct ExistingMacvtap {
  int ifindex = 0;
  int parent_ifindex = 0;
  std::optional<MacAddress> mac;
  dev_t dev = 0;
  std::string name;   // filled by list_marked()
  std::string alias;
};

class MacvtapFactory {
 public:
  virtual ~MacvtapFactory() = default;
  // Creates the macvtap on the parent, sets it up, opens `queues` fds that are
  // proven to be this device's (st_rdev == sysfs major:minor). On any failure
  // the new link is deleted again.
  virtual Result<Macvtap> create(const MacvtapSpec& spec) = 0;
  // Deletes a macvtap by ifindex; a link that is already gone is success, a
  // link of another kind is an error and is left alone.
  virtual Result<void> remove(int ifindex) = 0;
  // Looks up an existing macvtap by name (for adoption and stale cleanup).
  virtual Result<std::optional<ExistingMacvtap>> find(const std::string& name) = 0;
  // Every macvtap whose alias starts with `alias_prefix` (those a factory
  // made with such a spec.alias).
  virtual Result<std::vector<ExistingMacvtap>> list_marked(const std::string& /*alias_prefix*/) {
    return std::vector<ExistingMacvtap>{};
  }
};

// The real factory. node_dir is a root-only directory (0700) where private
// device nodes are made when /dev/tap<ifindex> is missing, stale or belongs to
// another network namespace's macvtap. It is created (leaf only) on first use
// and must not be on a nodev mount: /run usually is, /dev is not.
//
// Network namespace: the factory acts in the namespace of the thread that
// constructs it. Its rtnetlink socket is bound to that namespace, and so is
// its view of sysfs: /sys/class/net lists the devices of the namespace that
// *mounted* /sys, not of the calling thread, so a thread that entered another
// namespace with setns() would read another namespace's major:minor there (or
// a same-named device's). The factory therefore makes its own detached sysfs
// mount (fsopen/fsmount, never attached to any mount tree) at construction;
// the kernel tags it with the constructing thread's namespace. Without
// CAP_SYS_ADMIN that fails and the factory falls back to /sys/class/net, which
// is right for the normal deployment (relinkd in the namespace that mounted
// /sys, including under `ip netns exec`, which remounts /sys). A wrong view
// then makes create() fail rather than open another device, unless the other
// namespace has a macvtap with the same name *and* ifindex: the sysfs path
// names both (NAME/macvtap/tapIFINDEX).
//
// Rollback goes by ifindex. If the new link cannot be identified (its lookup
// by name fails, or another link has taken the name meanwhile) nothing is
// deleted, since deleting by name could hit someone else's link; find() and
// remove() are there for such leftovers.
//
// IPv6: the host configures none on the macvtaps it creates (address
// generation mode none, set before the link goes up): no link-local address,
// no router solicitations, DAD or MLD reports from the guest's MAC. Where the
// kernel has no IPv6 for the link (IPv6 disabled, MTU below 1280) there is
// nothing to turn off and creation goes on.
//
// passthru: the kernel gives a passthru macvtap its parent's MAC and ignores
// the one asked for; the factory does not rewrite the parent's MAC (a host
// interface it could not restore reliably). The parent is put in promiscuous
// mode by the kernel, so the guest still receives frames for spec.mac.
//
// Not thread-safe: one factory per thread.
class RtnlMacvtapFactory final : public MacvtapFactory {
 public:
  explicit RtnlMacvtapFactory(std::string node_dir);
  ~RtnlMacvtapFactory() override;
  RtnlMacvtapFactory(const RtnlMacvtapFactory&) = delete;
  RtnlMacvtapFactory& operator=(const RtnlMacvtapFactory&) = delete;
  Result<Macvtap> create(const MacvtapSpec& spec) override;
  Result<void> remove(int ifindex) override;
  Result<std::optional<ExistingMacvtap>> find(const std::string& name) override;
  Result<std::vector<ExistingMacvtap>> list_marked(const std::string& alias_prefix) override;

 private:
  // Opens whatever construction could not (socket, sysfs view); called by
  // every operation so a transient failure at start-up is not permanent.
  Result<void> ensure_open();
  // Everything after the link exists: look it up, read its device, open fds.
  // Sets ifindex once the link is known to be the one just created.
  Result<Macvtap> open_created(const MacvtapSpec& spec, int& ifindex);
  bool stacked_on_parent(int link_ifindex, int parent_ifindex);
  // Turns off the host's IPv6 address generation on the new link, then sets
  // it up (it is created down so that the order holds).
  Result<void> configure_host_side(rtnl_link* created, const std::string& alias);

  std::string node_dir_;
  nl_sock* sock_ = nullptr;
  UniqueFd sysfs_net_;  // class/net of a sysfs in the factory's namespace
};

// Reads major:minor of macvtap `name` from SYSFS_NET_DIR/NAME/macvtap/tapN/dev
// (sysfs_net_dir is /sys/class/net or a fake tree in tests). The file must be
// exactly "MAJOR:MINOR\n" within the kernel's 12:20 bit ranges.
Result<dev_t> read_macvtap_dev(const std::string& sysfs_net_dir, const std::string& name,
                               int ifindex);

}  // namespace relink::macvtap
