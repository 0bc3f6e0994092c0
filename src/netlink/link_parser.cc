// SPDX-License-Identifier: GPL-2.0-or-later
// Decodes RTM_NEWLINK / RTM_DELLINK messages into LinkMessages (pure, fuzzed).
#include "netlink/link_parser.h"

#include <libmnl/libmnl.h>
#include <linux/if_link.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <sys/socket.h>

#include <climits>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <utility>

#include "netlink/nl_attr.h"

namespace relink::netlink {
namespace {

Error malformed(std::string what) {
  return Error{EBADMSG, "malformed netlink message: " + std::move(what)};
}

// NUL-terminated string attribute (IFLA_IFNAME, IFLA_INFO_KIND).
bool get_string(const nlattr* attr, std::string& out) {
  if (mnl_attr_validate(attr, MNL_TYPE_NUL_STRING) < 0) return false;
  out = mnl_attr_get_str(attr);
  return true;
}

bool get_u32(const nlattr* attr, uint32_t& out) {
  if (mnl_attr_validate(attr, MNL_TYPE_U32) < 0) return false;
  out = mnl_attr_get_u32(attr);
  return true;
}

// A 6-byte address attribute (IFLA_ADDRESS, IFLA_PERM_ADDRESS); other
// lengths are not Ethernet MACs and yield nothing.
std::optional<MacAddress> get_mac(const nlattr* attr) {
  if (mnl_attr_get_payload_len(attr) != sizeof(MacAddress)) return std::nullopt;
  MacAddress mac;
  std::memcpy(mac.data(), mnl_attr_get_payload(attr), mac.size());
  return mac;
}

std::string macvlan_mode_name(uint32_t mode) {
  switch (mode) {
    case MACVLAN_MODE_PRIVATE: return "private";
    case MACVLAN_MODE_VEPA: return "vepa";
    case MACVLAN_MODE_BRIDGE: return "bridge";
    case MACVLAN_MODE_PASSTHRU: return "passthru";
    case MACVLAN_MODE_SOURCE: return "source";
    default: return "";  // a mode this build does not know: left empty
  }
}

// IFLA_LINKINFO: the kind, and for macvlan/macvtap the mode from IFLA_INFO_DATA.
bool parse_linkinfo(const nlattr* linkinfo, LinkInfo& link) {
  const nlattr* data = nullptr;
  bool ok = for_each_nested(linkinfo, [&](const nlattr* a) {
    switch (mnl_attr_get_type(a)) {
      case IFLA_INFO_KIND: return get_string(a, link.kind);
      case IFLA_INFO_DATA: data = a; return true;
      default: return true;
    }
  });
  if (!ok) return false;
  if (data && (link.kind == "macvlan" || link.kind == "macvtap")) {
    return for_each_nested(data, [&](const nlattr* a) {
      if (mnl_attr_get_type(a) != IFLA_MACVLAN_MODE) return true;
      uint32_t mode = 0;
      if (!get_u32(a, mode)) return false;
      link.macvlan_mode = macvlan_mode_name(mode);
      return true;
    });
  }
  return true;
}

Result<LinkMessage> parse_link(const nlmsghdr* nlh) {
  LinkMessage msg;
  msg.deleted = nlh->nlmsg_type == RTM_DELLINK;
  auto* ifi = static_cast<const ifinfomsg*>(mnl_nlmsg_get_payload(nlh));
  LinkInfo& link = msg.link;
  link.ifindex = ifi->ifi_index;
  link.flags = ifi->ifi_flags;
  if (link.ifindex <= 0) return malformed("ifindex " + std::to_string(link.ifindex));

  bool other_netns = false;
  const auto* attrs =
      static_cast<const uint8_t*>(mnl_nlmsg_get_payload_offset(nlh, sizeof(ifinfomsg)));
  // Not mnl_nlmsg_get_payload_tail(): it rounds nlmsg_len up and could point
  // past the end of the buffer for an unpadded last message.
  const auto* tail = reinterpret_cast<const uint8_t*>(nlh) + nlh->nlmsg_len;
  bool ok = for_each_attr(attrs, static_cast<int>(tail - attrs), [&](const nlattr* a) {
    uint32_t v = 0;
    switch (mnl_attr_get_type(a)) {
      case IFLA_IFNAME: return get_string(a, link.name);
      case IFLA_LINK:
        if (!get_u32(a, v)) return false;
        link.parent_ifindex = static_cast<int>(v);
        return true;
      case IFLA_MASTER:
        if (!get_u32(a, v)) return false;
        link.master_ifindex = static_cast<int>(v);
        return true;
      case IFLA_LINK_NETNSID: other_netns = true; return true;
      case IFLA_ADDRESS:
        // Other lengths are other link layers (IPv4 tunnels: 4 bytes): no MAC.
        link.mac = get_mac(a);
        return true;
      case IFLA_PERM_ADDRESS: {
        // The kernel omits an all-zero one; a message carrying one anyway
        // names no hardware address.
        auto perm = get_mac(a);
        if (perm && *perm != MacAddress{}) link.perm_mac = perm;
        return true;
      }
      case IFLA_OPERSTATE:
        if (mnl_attr_validate(a, MNL_TYPE_U8) < 0) return false;
        link.operstate = mnl_attr_get_u8(a);
        return true;
      case IFLA_LINKINFO:
        if (mnl_attr_validate(a, MNL_TYPE_NESTED) < 0) return false;
        return parse_linkinfo(a, link);
      default: return true;
    }
  });
  if (!ok)
    return malformed("bad attribute in link message for ifindex " + std::to_string(link.ifindex));
  if (link.name.empty())
    return malformed("no IFLA_IFNAME for ifindex " + std::to_string(link.ifindex));
  if (link.kind.empty()) link.kind = "physical";
  // With IFLA_LINK_NETNSID, IFLA_LINK is an ifindex in another namespace
  // (a veth peer or a macvtap moved away from its lower device): it names
  // nothing in this table.
  if (other_netns) link.parent_ifindex = 0;
  return msg;
}

// The int at the start of NLMSG_ERROR / NLMSG_DONE payloads: 0 or a negative errno.
Result<int> errno_payload(const nlmsghdr* nlh) {
  int code = 0;
  std::memcpy(&code, mnl_nlmsg_get_payload(nlh), sizeof code);
  if (code > 0 || code <= -4096) return malformed("error code " + std::to_string(code));
  return -code;
}

// mnl_nlmsg_ok() compares (int)nlmsg_len, so a length of 2^31 or more passes
// it as negative and the walk runs off the buffer.
bool header_fits(const nlmsghdr* nlh, int len) {
  return len >= static_cast<int>(sizeof(nlmsghdr)) && nlh->nlmsg_len >= sizeof(nlmsghdr) &&
         nlh->nlmsg_len <= static_cast<unsigned>(len);
}

}  // namespace

Result<ParsedBatch> parse_link_messages(std::span<const uint8_t> buf) {
  if (buf.size() > INT_MAX) return Error{EMSGSIZE, "netlink buffer too large"};
  // Headers and attributes are read in place and need 4-byte alignment; a
  // recv() buffer has it, an arbitrary span (a fuzzer's) may not.
  std::vector<uint32_t> aligned;
  const void* data = buf.data();
  if (reinterpret_cast<uintptr_t>(data) % alignof(nlmsghdr) != 0) {
    aligned.resize((buf.size() + 3) / 4);
    std::memcpy(aligned.data(), buf.data(), buf.size());
    data = aligned.data();
  }

  ParsedBatch batch;
  int len = static_cast<int>(buf.size());
  auto* nlh = static_cast<const nlmsghdr*>(data);
  while (len > 0) {
    if (!header_fits(nlh, len)) return malformed("truncated header or length");
    size_t payload = mnl_nlmsg_get_payload_len(nlh);
    switch (nlh->nlmsg_type) {
      case RTM_NEWLINK:
      case RTM_DELLINK: {
        if (payload < sizeof(ifinfomsg)) return malformed("short ifinfomsg");
        // The bridge also reports its ports on RTNLGRP_LINK, as AF_BRIDGE
        // messages without IFLA_LINKINFO; its RTM_DELLINK only means "left
        // the bridge". Only AF_UNSPEC messages describe the device itself.
        const uint8_t family = static_cast<const ifinfomsg*>(mnl_nlmsg_get_payload(nlh))->ifi_family;
        if (family == AF_BRIDGE) {
          auto port = parse_bridge_port(nlh);
          if (!port) return port.error();
          batch.ports.push_back(std::move(*port));
          break;
        }
        if (family != AF_UNSPEC) break;
        auto msg = parse_link(nlh);
        if (!msg) return msg.error();
        batch.links.push_back(std::move(*msg));
        break;
      }
      case NLMSG_ERROR: {
        if (payload < sizeof(nlmsgerr)) return malformed("short NLMSG_ERROR");
        auto code = errno_payload(nlh);
        if (!code) return code.error();
        if (*code != 0) batch.error = *code;  // 0 is an ACK
        break;
      }
      case NLMSG_DONE: {
        // Kernels put the dump's final status in the payload.
        if (payload >= sizeof(int)) {
          auto code = errno_payload(nlh);
          if (!code) return code.error();
          if (*code != 0) batch.error = *code;
        }
        batch.done = true;
        break;
      }
      default: break;
    }
    nlh = mnl_nlmsg_next(nlh, &len);
  }
  return batch;
}

}  // namespace relink::netlink
