// SPDX-License-Identifier: GPL-2.0-or-later
// Creates, finds and removes macvtaps over rtnetlink (libnl-route-3) and opens their queue fds.
#include "macvtap/macvtap_factory.h"

#include <fcntl.h>
#include <linux/if_link.h>
#include <net/if.h>
#include <netlink/errno.h>
#include <netlink/netlink.h>
#include <netlink/route/link.h>
#include <netlink/route/link/inet6.h>
#include <netlink/route/link/macvtap.h>
#include <sys/sysmacros.h>

#include <cstdlib>
#include <cstring>
#include <memory>

#include "macvtap/tap_device.h"
#include "util/log.h"

namespace relink::macvtap {
namespace {

struct LinkDeleter {
  void operator()(rtnl_link* link) const { rtnl_link_put(link); }
};
using LinkPtr = std::unique_ptr<rtnl_link, LinkDeleter>;

struct AddrDeleter {
  void operator()(nl_addr* addr) const { nl_addr_put(addr); }
};
using AddrPtr = std::unique_ptr<nl_addr, AddrDeleter>;

// tap_set_queue() refuses more queues than MAX_TAP_QUEUES.
constexpr unsigned kMaxQueues = 256;

struct ModeInfo {
  Mode mode;
  const char* name;
  uint32_t kernel;  // IFLA_MACVLAN_MODE value
};
constexpr ModeInfo kModes[] = {
    {Mode::Vepa, "vepa", MACVLAN_MODE_VEPA},
    {Mode::Bridge, "bridge", MACVLAN_MODE_BRIDGE},
    {Mode::Private, "private", MACVLAN_MODE_PRIVATE},
    {Mode::Passthru, "passthru", MACVLAN_MODE_PASSTHRU},
};

const ModeInfo& mode_info(Mode m) {
  for (const auto& info : kModes) {
    if (info.mode == m) return info;
  }
  std::abort();  // a Mode outside the enum is a bug, not input
}

// libnl turns the kernel's errno into its own codes (nl_syserr2nlerr); map the
// ones it produces back so callers see the errno the kernel meant. 0: none.
int errno_of(int nlerr) {
  switch (nlerr < 0 ? -nlerr : nlerr) {
    case NLE_EXIST: return EEXIST;
    case NLE_NODEV: return ENODEV;
    case NLE_OBJ_NOTFOUND: return ENOENT;
    case NLE_INVAL: return EINVAL;
    case NLE_RANGE: return ERANGE;
    case NLE_BUSY: return EBUSY;
    case NLE_PERM: return EPERM;
    case NLE_NOACCESS: return EACCES;
    case NLE_NOMEM: return ENOMEM;
    case NLE_AGAIN: return EAGAIN;
    case NLE_INTR: return EINTR;
    case NLE_OPNOTSUPP: return EOPNOTSUPP;
    case NLE_NOADDR: return EADDRNOTAVAIL;
    case NLE_AF_NOSUPPORT: return EAFNOSUPPORT;
    case NLE_PROTO_MISMATCH: return EPROTONOSUPPORT;
    case NLE_BAD_SOCK: return EBADF;
    default: return 0;
  }
}

Error nl_error(int nlerr, const std::string& what) {
  if (int code = errno_of(nlerr)) return Error::from_errno(code, what);
  return Error{EIO, what + ": " + nl_geterror(nlerr)};
}

// A link that is not there: the kernel's ENODEV, or ENOENT from older paths.
bool is_absent(int nlerr) { return nlerr == -NLE_NODEV || nlerr == -NLE_OBJ_NOTFOUND; }

Error prefixed(const std::string& what, const Error& e) {
  return Error{e.code, what + ": " + e.message};
}

}  // namespace

const char* mode_name(Mode m) { return mode_info(m).name; }

std::optional<Mode> parse_mode(const std::string& s) {
  for (const auto& info : kModes) {
    if (s == info.name) return info.mode;
  }
  return std::nullopt;
}

RtnlMacvtapFactory::RtnlMacvtapFactory(std::string node_dir) : node_dir_(std::move(node_dir)) {
  // Bind the socket and the sysfs view to the constructing thread's network
  // namespace now; every operation retries whatever failed here.
  if (auto r = ensure_open(); !r)
    log::get("macvtap")->debug("{}, retrying on first use", r.error().message);
}

RtnlMacvtapFactory::~RtnlMacvtapFactory() {
  if (sock_) nl_socket_free(sock_);
}

Result<void> RtnlMacvtapFactory::ensure_open() {
  if (!sock_) {
    nl_sock* sock = nl_socket_alloc();
    if (!sock) return Error{ENOMEM, "allocate rtnetlink socket: out of memory"};
    if (int err = nl_connect(sock, NETLINK_ROUTE); err < 0) {
      nl_socket_free(sock);
      return nl_error(err, "connect rtnetlink socket");
    }
    // libnl 3.7 opens it with SOCK_CLOEXEC but does not promise to; relinkd
    // spawns helpers, and no fd of ours may leak into them.
    const int fd = nl_socket_get_fd(sock);
    const int flags = fcntl(fd, F_GETFD);
    if (flags < 0 || (!(flags & FD_CLOEXEC) && fcntl(fd, F_SETFD, flags | FD_CLOEXEC) != 0)) {
      Error e = Error::last("set FD_CLOEXEC on rtnetlink socket");
      nl_socket_free(sock);
      return e;
    }
    sock_ = sock;
  }
  if (!sysfs_net_) {
    auto dir = open_sysfs_class_net();
    if (!dir) return dir.error();
    sysfs_net_ = std::move(dir).value();
  }
  return ok();
}

Result<Macvtap> RtnlMacvtapFactory::create(const MacvtapSpec& spec) {
  const std::string what =
      "create macvtap " + spec.name + " on ifindex " + std::to_string(spec.parent_ifindex);
  if (!valid_ifname(spec.name)) return Error{EINVAL, what + ": invalid interface name"};
  if (spec.parent_ifindex <= 0) return Error{EINVAL, what + ": invalid parent ifindex"};
  if (spec.queues == 0 || spec.queues > kMaxQueues) {
    return Error{EINVAL, what + ": queues must be 1.." + std::to_string(kMaxQueues)};
  }
  if (auto r = ensure_open(); !r) return prefixed(what, r.error());

  LinkPtr link(rtnl_link_macvtap_alloc());
  AddrPtr addr(nl_addr_build(AF_LLC, spec.mac.data(), spec.mac.size()));
  if (!link || !addr) return Error{ENOMEM, what + ": out of memory"};
  rtnl_link_set_name(link.get(), spec.name.c_str());
  rtnl_link_set_link(link.get(), spec.parent_ifindex);
  rtnl_link_macvtap_set_mode(link.get(), mode_info(spec.mode).kernel);
  rtnl_link_set_addr(link.get(), addr.get());
  // IFF_ALLMULTI: a macvtap passes only the multicast groups in its own
  // filter, and nothing copies the guest's groups there; without it the
  // guest's IPv6 neighbour discovery (solicited-node groups) is dropped.
  // Not IFF_UP yet: see configure_host_side().
  rtnl_link_set_flags(link.get(), IFF_ALLMULTI);
  if (int err = rtnl_link_add(sock_, link.get(), NLM_F_CREATE | NLM_F_EXCL); err < 0) {
    return nl_error(err, what);
  }

  int ifindex = 0;
  auto created = open_created(spec, ifindex);
  if (created) {
    log::get("macvtap")->debug(
        "created macvtap {} ifindex {} dev {}:{} on ifindex {}, mode {}, {} queue(s)", spec.name,
        ifindex, major(created->dev), minor(created->dev), spec.parent_ifindex,
        mode_name(spec.mode), spec.queues);
    return created;
  }
  Error err = prefixed(what, created.error());
  if (ifindex > 0) {  // see the header on links that cannot be identified
    if (auto r = remove(ifindex); !r) err.message += "; rollback failed: " + r.error().message;
  }
  return err;
}

// The kernel stacks a macvtap requested on a macvlan or macvtap onto that
// device's own lower device (macvlan ports are flat), so a new macvtap's
// IFLA_LINK is either the requested parent or the parent's lower device.
bool RtnlMacvtapFactory::stacked_on_parent(int link_ifindex, int parent_ifindex) {
  if (link_ifindex == parent_ifindex) return true;
  rtnl_link* raw = nullptr;
  if (rtnl_link_get_kernel(sock_, parent_ifindex, nullptr, &raw) < 0) return false;
  LinkPtr parent(raw);
  const char* kind = rtnl_link_get_type(parent.get());
  const bool flat = kind && (std::string_view(kind) == "macvlan" || std::string_view(kind) == "macvtap");
  return flat && rtnl_link_get_link(parent.get()) == link_ifindex;
}

Result<Macvtap> RtnlMacvtapFactory::open_created(const MacvtapSpec& spec, int& ifindex) {
  // rtnl_link_add does not echo the new link, so look it up by name.
  rtnl_link* raw = nullptr;
  if (int err = rtnl_link_get_kernel(sock_, 0, spec.name.c_str(), &raw); err < 0) {
    return nl_error(err, "look up the new link");
  }
  LinkPtr link(raw);
  if (!rtnl_link_is_macvtap(link.get()) || !stacked_on_parent(rtnl_link_get_link(link.get()), spec.parent_ifindex)) {
    return Error{EEXIST, "another link took the name before it could be opened"};
  }
  ifindex = rtnl_link_get_ifindex(link.get());
  if (auto r = configure_host_side(link.get(), spec.alias); !r) return r.error();

  auto dev = read_macvtap_dev_at(sysfs_net_.get(), spec.name, ifindex);
  if (!dev) return dev.error();
  TapNodeDirs dirs;
  dirs.node_dir = node_dir_;
  auto fds = open_tap_queues(dirs, ifindex, *dev, spec.queues);
  if (!fds) return fds.error();
  return Macvtap{ifindex, spec.name, *dev, std::move(fds).value()};
}

// The host must not use the guest's interface for IPv6 of its own: with the
// default address generation it gives the macvtap the link-local address the
// guest derives from the same MAC, runs DAD against the guest and sends router
// solicitations and MLD reports from it. IN6_ADDR_GEN_MODE_NONE leaves it
// without any address. addrconf makes the link-local address when the link
// goes up, so the mode has to be in place before that, in a request of its
// own: the kernel refuses IFLA_AF_SPEC/AF_INET6 in the request that creates a
// link (EAFNOSUPPORT), and applies a link's flags before its IFLA_AF_SPEC in
// one change request.
Result<void> RtnlMacvtapFactory::configure_host_side(rtnl_link* created, const std::string& alias) {
  LinkPtr no_ipv6(rtnl_link_alloc());
  if (!no_ipv6) return Error{ENOMEM, "out of memory"};
  if (int err = rtnl_link_inet6_set_addr_gen_mode(no_ipv6.get(), IN6_ADDR_GEN_MODE_NONE); err < 0)
    return nl_error(err, "set IPv6 address generation mode none");
  const int err = rtnl_link_change(sock_, created, no_ipv6.get(), 0);
  if (err == -NLE_AF_NOSUPPORT) {
    // The link has no IPv6 state to configure: IPv6 is disabled in the
    // kernel (no /proc/sys/net/ipv6), or the link's MTU is below IPv6's 1280.
    log::get("macvtap")->debug("{}: no IPv6 on it, address generation left alone",
                               rtnl_link_get_name(created));
  } else if (err < 0) {
    return nl_error(err, "set IPv6 address generation mode none");
  }

  LinkPtr up(rtnl_link_alloc());
  if (!up) return Error{ENOMEM, "out of memory"};
  rtnl_link_set_flags(up.get(), IFF_UP);
  // The kernel applies IFLA_IFALIAS only to a link that exists, not in the
  // request that creates it.
  if (!alias.empty()) rtnl_link_set_ifalias(up.get(), alias.c_str());
  if (int e = rtnl_link_change(sock_, created, up.get(), 0); e < 0) return nl_error(e, "set it up");
  return ok();
}

Result<void> RtnlMacvtapFactory::remove(int ifindex) {
  const std::string what = "delete macvtap ifindex " + std::to_string(ifindex);
  if (ifindex <= 0) return Error{EINVAL, what + ": invalid ifindex"};
  if (auto r = ensure_open(); !r) return prefixed(what, r.error());
  // A stale or mistaken ifindex must never take a host interface down with it.
  rtnl_link* raw = nullptr;
  const int err = rtnl_link_get_kernel(sock_, ifindex, nullptr, &raw);
  if (is_absent(err)) return ok();
  if (err < 0) return nl_error(err, what);
  LinkPtr link(raw);
  if (!rtnl_link_is_macvtap(link.get())) {
    const char* kind = rtnl_link_get_type(link.get());
    return Error{EPERM, what + ": " + rtnl_link_get_name(link.get()) + " is not a macvtap (kind " +
                            (kind ? kind : "none") + "), not deleting it"};
  }
  if (int del = rtnl_link_delete(sock_, link.get()); del < 0 && !is_absent(del)) {
    return nl_error(del, what);
  }
  return ok();
}

Result<std::optional<ExistingMacvtap>> RtnlMacvtapFactory::find(const std::string& name) {
  const std::string what = "find macvtap " + name;
  if (!valid_ifname(name)) return Error{EINVAL, what + ": invalid interface name"};
  if (auto r = ensure_open(); !r) return prefixed(what, r.error());
  rtnl_link* raw = nullptr;
  const int err = rtnl_link_get_kernel(sock_, 0, name.c_str(), &raw);
  if (is_absent(err)) return std::optional<ExistingMacvtap>();
  if (err < 0) return nl_error(err, what);
  LinkPtr link(raw);
  if (!rtnl_link_is_macvtap(link.get())) {
    const char* kind = rtnl_link_get_type(link.get());
    return Error{EEXIST, what + ": " + name + " exists and is not a macvtap (kind " +
                             (kind ? kind : "none") + ")"};
  }

  ExistingMacvtap found;
  found.ifindex = rtnl_link_get_ifindex(link.get());
  found.parent_ifindex = rtnl_link_get_link(link.get());
  if (nl_addr* addr = rtnl_link_get_addr(link.get());
      addr && nl_addr_get_len(addr) == sizeof(MacAddress)) {
    MacAddress mac;
    std::memcpy(mac.data(), nl_addr_get_binary_addr(addr), mac.size());
    found.mac = mac;
  }
  auto dev = read_macvtap_dev_at(sysfs_net_.get(), name, found.ifindex);
  if (!dev) return prefixed(what, dev.error());
  found.dev = *dev;
  return std::optional<ExistingMacvtap>(found);
}

Result<std::vector<ExistingMacvtap>> RtnlMacvtapFactory::list_marked(const std::string& alias_prefix) {
  if (auto r = ensure_open(); !r) return prefixed("list macvtaps", r.error());
  nl_cache* raw = nullptr;
  if (int err = rtnl_link_alloc_cache(sock_, AF_UNSPEC, &raw); err < 0) return nl_error(err, "list links");
  std::unique_ptr<nl_cache, void (*)(nl_cache*)> cache(raw, nl_cache_free);
  std::vector<ExistingMacvtap> out;
  for (nl_object* o = nl_cache_get_first(cache.get()); o; o = nl_cache_get_next(o)) {
    auto* link = reinterpret_cast<rtnl_link*>(o);
    const char* alias = rtnl_link_get_ifalias(link);
    const char* name = rtnl_link_get_name(link);
    if (!alias || !name || !rtnl_link_is_macvtap(link) || std::string_view(alias).rfind(alias_prefix, 0) != 0)
      continue;
    auto found = find(name);
    if (!found || !*found) continue;  // gone meanwhile
    (*found)->name = name;
    (*found)->alias = alias;
    out.push_back(**found);
  }
  return out;
}

}  // namespace relink::macvtap
