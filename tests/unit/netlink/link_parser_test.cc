// SPDX-License-Identifier: GPL-2.0-or-later
// parse_link_messages() over captured kernel messages (tests/fixtures/netlink,
// see its README.md) and over hand-built, truncated and garbage input.
#include "netlink/link_parser.h"

#include <gtest/gtest.h>
#include <libmnl/libmnl.h>
#include <linux/if.h>
#include <linux/if_link.h>
#include <linux/rtnetlink.h>
#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <climits>
#include <cstring>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "support/harness.h"
#include "util/mac.h"

namespace relink::netlink {
namespace {

using Bytes = std::vector<uint8_t>;

Bytes fixture(const std::string& name) {
  std::string s = test::read_file(std::string(RELINK_FIXTURE_DIR) + "/netlink/" + name);
  return Bytes(s.begin(), s.end());
}

std::map<std::string, LinkInfo> by_name(const ParsedBatch& batch) {
  std::map<std::string, LinkInfo> m;
  for (const auto& msg : batch.links) m[msg.link.name] = msg.link;
  return m;
}

// Offsets where each message of a well-formed buffer ends.
std::set<size_t> message_ends(const Bytes& buf) {
  std::set<size_t> ends{0};
  int len = static_cast<int>(buf.size());
  for (auto* nlh = reinterpret_cast<const nlmsghdr*>(buf.data()); mnl_nlmsg_ok(nlh, len);
       nlh = mnl_nlmsg_next(nlh, &len)) {
    ends.insert(buf.size() - static_cast<size_t>(len) + NLMSG_ALIGN(nlh->nlmsg_len));
  }
  return ends;
}

// Builds netlink messages by hand, for what the fixtures do not cover.
class MessageBuilder {
 public:
  nlmsghdr* begin(uint16_t type, size_t extra) {
    nlh_ = mnl_nlmsg_put_header(buf_.data() + used_);
    nlh_->nlmsg_type = type;
    mnl_nlmsg_put_extra_header(nlh_, extra);
    return nlh_;
  }
  nlmsghdr* link(uint16_t type, int ifindex, const char* name) {
    begin(type, sizeof(ifinfomsg));
    static_cast<ifinfomsg*>(mnl_nlmsg_get_payload(nlh_))->ifi_index = ifindex;
    if (name) mnl_attr_put_strz(nlh_, IFLA_IFNAME, name);
    return nlh_;
  }
  void end() { used_ += NLMSG_ALIGN(nlh_->nlmsg_len); }
  nlmsghdr* nlh() { return nlh_; }
  Bytes bytes() const { return Bytes(buf_.begin(), buf_.begin() + static_cast<long>(used_)); }

 private:
  alignas(nlmsghdr) std::array<uint8_t, 8192> buf_{};
  size_t used_ = 0;
  nlmsghdr* nlh_ = nullptr;
};

ParsedBatch parse_ok(const Bytes& buf) {
  auto r = parse_link_messages(buf);
  EXPECT_TRUE(r.ok()) << r.error().message;
  return r ? *r : ParsedBatch{};
}

TEST(LinkParser, DumpOfVethBridgeMacvtapMacvlan) {
  ParsedBatch batch = parse_ok(fixture("dump.bin"));
  EXPECT_TRUE(batch.done);
  EXPECT_EQ(batch.error, 0);
  ASSERT_EQ(batch.links.size(), 6u);
  auto links = by_name(batch);
  ASSERT_EQ(links.size(), 6u);
  for (const auto& msg : batch.links) EXPECT_FALSE(msg.deleted);

  const LinkInfo& lo = links["lo"];
  EXPECT_EQ(lo.ifindex, 1);
  EXPECT_EQ(lo.kind, "physical");
  EXPECT_EQ(lo.parent_ifindex, 0);
  EXPECT_TRUE(lo.flags & IFF_LOOPBACK);
  EXPECT_TRUE(lo.flags & IFF_UP);
  EXPECT_EQ(lo.mac, MacAddress{});
  EXPECT_EQ(lo.operstate, IF_OPER_UNKNOWN);

  const LinkInfo& veth0 = links["veth0"];
  const LinkInfo& veth1 = links["veth1"];
  EXPECT_EQ(veth0.kind, "veth");
  EXPECT_EQ(veth1.kind, "veth");
  EXPECT_EQ(veth0.parent_ifindex, veth1.ifindex);  // a veth's IFLA_LINK is its peer
  EXPECT_EQ(veth0.mac, parse_mac("02:00:00:00:00:01"));
  EXPECT_EQ(veth1.mac, parse_mac("02:00:00:00:00:02"));
  EXPECT_FALSE(veth0.flags & IFF_UP);
  EXPECT_EQ(veth0.operstate, IF_OPER_DOWN);

  const LinkInfo& br0 = links["br0"];
  EXPECT_EQ(br0.kind, "bridge");
  EXPECT_EQ(br0.mac, parse_mac("02:00:00:00:00:03"));
  EXPECT_EQ(veth1.master_ifindex, br0.ifindex);
  EXPECT_EQ(veth0.master_ifindex, 0);

  const LinkInfo& mvtap0 = links["mvtap0"];
  EXPECT_EQ(mvtap0.kind, "macvtap");
  EXPECT_EQ(mvtap0.parent_ifindex, veth0.ifindex);
  EXPECT_EQ(mvtap0.macvlan_mode, "bridge");
  EXPECT_EQ(mvtap0.mac, parse_mac("02:00:00:00:00:04"));

  const LinkInfo& mvlan0 = links["mvlan0"];
  EXPECT_EQ(mvlan0.kind, "macvlan");
  EXPECT_EQ(mvlan0.parent_ifindex, veth0.ifindex);
  EXPECT_EQ(mvlan0.macvlan_mode, "private");
  EXPECT_EQ(mvlan0.mac, parse_mac("02:00:00:00:00:05"));

  EXPECT_EQ(br0.macvlan_mode, "");
  EXPECT_EQ(veth0.macvlan_mode, "");
}

TEST(LinkParser, NewRenameDeleteNotifications) {
  ParsedBatch added = parse_ok(fixture("newlink.bin"));
  ASSERT_EQ(added.links.size(), 1u);
  EXPECT_FALSE(added.done);
  EXPECT_FALSE(added.links[0].deleted);
  EXPECT_EQ(added.links[0].link.name, "br1");
  EXPECT_EQ(added.links[0].link.kind, "bridge");
  EXPECT_EQ(added.links[0].link.mac, parse_mac("02:00:00:00:00:06"));
  int ifindex = added.links[0].link.ifindex;
  EXPECT_GT(ifindex, 0);

  ParsedBatch renamed = parse_ok(fixture("rename.bin"));
  ASSERT_EQ(renamed.links.size(), 1u);
  EXPECT_FALSE(renamed.links[0].deleted);
  EXPECT_EQ(renamed.links[0].link.ifindex, ifindex);
  EXPECT_EQ(renamed.links[0].link.name, "br2");
  EXPECT_EQ(renamed.links[0].link.kind, "bridge");

  ParsedBatch deleted = parse_ok(fixture("dellink.bin"));
  ASSERT_EQ(deleted.links.size(), 1u);
  EXPECT_TRUE(deleted.links[0].deleted);
  EXPECT_EQ(deleted.links[0].link.ifindex, ifindex);
  EXPECT_EQ(deleted.links[0].link.name, "br2");
  EXPECT_EQ(deleted.links[0].link.kind, "bridge");
}

// Leaving a bridge makes the bridge send AF_BRIDGE RTM_NEWLINK/RTM_DELLINK for
// the port on RTNLGRP_LINK; the device itself stays.
TEST(LinkParser, BridgePortMessagesAreNoLinks) {
  Bytes buf = fixture("nomaster.bin");
  ParsedBatch batch = parse_ok(buf);
  int raw = 0;
  int len = static_cast<int>(buf.size());
  for (auto* nlh = reinterpret_cast<const nlmsghdr*>(buf.data()); mnl_nlmsg_ok(nlh, len);
       nlh = mnl_nlmsg_next(nlh, &len)) {
    ++raw;
  }
  ASSERT_GT(raw, static_cast<int>(batch.links.size()));  // the AF_BRIDGE ones are no links
  ASSERT_FALSE(batch.links.empty());
  for (const auto& msg : batch.links) {
    EXPECT_FALSE(msg.deleted) << msg.link.name;
    EXPECT_NE(msg.link.kind, "physical") << msg.link.name;
  }
  auto links = by_name(batch);
  ASSERT_TRUE(links.contains("veth1"));
  EXPECT_EQ(links["veth1"].master_ifindex, 0);
  // They are the ports' own: the port that left, as AF_BRIDGE RTM_DELLINK.
  ASSERT_FALSE(batch.ports.empty());
  EXPECT_EQ(static_cast<int>(batch.links.size() + batch.ports.size()), raw);
  bool left = false;
  for (const auto& p : batch.ports) left |= p.deleted && p.port.ifindex == links["veth1"].ifindex;
  EXPECT_TRUE(left);
}

// `bridge link set dev veth1 isolated on hairpin on learning off cost 42
// priority 7`, as the kernel reported it (one AF_BRIDGE RTM_NEWLINK with the
// port's whole IFLA_PROTINFO and its VLAN table).
TEST(LinkParser, BridgePortOptionsFromTheKernel) {
  ParsedBatch batch = parse_ok(fixture("portopts.bin"));
  ASSERT_FALSE(batch.ports.empty());
  const BridgePort& p = batch.ports.back().port;
  EXPECT_FALSE(batch.ports.back().deleted);
  EXPECT_NE(p.master, 0);
  EXPECT_NE(p.master, p.ifindex);
  EXPECT_EQ(p.options.at(IFLA_BRPORT_ISOLATED), 1u);
  EXPECT_EQ(p.options.at(IFLA_BRPORT_MODE), 1u);
  EXPECT_EQ(p.options.at(IFLA_BRPORT_LEARNING), 0u);
  EXPECT_EQ(p.options.at(IFLA_BRPORT_COST), 42u);
  EXPECT_EQ(p.options.at(IFLA_BRPORT_PRIORITY), 7u);
  EXPECT_EQ(p.options.at(IFLA_BRPORT_UNICAST_FLOOD), 1u);
  // The kernel sends notifications with RTEXT_FILTER_BRVLAN_COMPRESSED: the
  // VLAN table is the port's (empty where the kernel lacks VLAN filtering).
  EXPECT_TRUE(p.vlans_known);
  BridgePortTable table;
  for (const auto& m : batch.ports) (void)table.apply(m);
  ASSERT_TRUE(table.find(p.ifindex));
  EXPECT_EQ(table.find(p.ifindex)->options, p.options);
}

// Every prefix of a capture: an error, unless the cut falls between messages,
// then exactly the messages before the cut.
TEST(LinkParser, EveryTruncationIsAnErrorOrAPrefix) {
  for (const char* name :
       {"dump.bin", "newlink.bin", "rename.bin", "dellink.bin", "nomaster.bin"}) {
    Bytes full = fixture(name);
    ASSERT_FALSE(full.empty()) << name;
    ParsedBatch whole = parse_ok(full);
    std::set<size_t> ends = message_ends(full);
    for (size_t n = 0; n < full.size(); ++n) {
      // A copy of exactly n bytes, so that a read past the end is a heap overflow.
      Bytes cut(full.begin(), full.begin() + static_cast<long>(n));
      auto r = parse_link_messages(cut);
      ASSERT_EQ(r.ok(), ends.contains(n)) << name << " cut at " << n;
      if (!r) {
        EXPECT_EQ(r.error().code, EBADMSG);
        continue;
      }
      ASSERT_LE(r->links.size(), whole.links.size());
      for (size_t i = 0; i < r->links.size(); ++i) EXPECT_EQ(r->links[i].link, whole.links[i].link);
      EXPECT_FALSE(r->done);
    }
  }
}

TEST(LinkParser, UnalignedBufferParsesTheSame) {
  Bytes full = fixture("dump.bin");
  Bytes shifted(full.size() + 1);
  std::copy(full.begin(), full.end(), shifted.begin() + 1);
  auto a = parse_link_messages(full);
  auto b = parse_link_messages(std::span<const uint8_t>(shifted).subspan(1));
  ASSERT_TRUE(a.ok() && b.ok());
  ASSERT_EQ(a->links.size(), b->links.size());
  for (size_t i = 0; i < a->links.size(); ++i) EXPECT_EQ(a->links[i].link, b->links[i].link);
}

TEST(LinkParser, RandomGarbageNeverCrashes) {
  std::mt19937 rng(12345);
  for (int i = 0; i < 20000; ++i) {
    Bytes buf(rng() % 512);
    for (auto& b : buf) b = static_cast<uint8_t>(rng());
    if (buf.size() >= 4 && i % 2 == 0) {
      // Plausible lengths and types get the parser past the first checks.
      uint32_t len = static_cast<uint32_t>(buf.size() - rng() % 4);
      std::memcpy(buf.data(), &len, 4);
      if (buf.size() >= 6) {
        uint16_t type = i % 4 == 0 ? RTM_NEWLINK : RTM_DELLINK;
        std::memcpy(buf.data() + 4, &type, 2);
      }
    }
    auto r = parse_link_messages(buf);
    if (r) {
      for (const auto& msg : r->links) {
        EXPECT_GT(msg.link.ifindex, 0);
        EXPECT_FALSE(msg.link.name.empty());
      }
    }
  }
}

TEST(LinkParser, MutatedCapturesNeverCrash) {
  std::mt19937 rng(54321);
  for (const char* name : {"dump.bin", "newlink.bin", "nomaster.bin"}) {
    Bytes full = fixture(name);
    for (int i = 0; i < 3000; ++i) {
      Bytes buf = full;
      for (int flips = 1 + static_cast<int>(rng() % 8); flips > 0; --flips) {
        buf[rng() % buf.size()] = static_cast<uint8_t>(rng());
      }
      buf.resize(buf.size() - rng() % 8);
      auto r = parse_link_messages(buf);
      if (r) {
        for (const auto& msg : r->links) EXPECT_GT(msg.link.ifindex, 0);
      }
    }
  }
}

TEST(LinkParser, ErrorAndAck) {
  MessageBuilder b;
  b.begin(NLMSG_ERROR, sizeof(nlmsgerr));
  static_cast<nlmsgerr*>(mnl_nlmsg_get_payload(b.nlh()))->error = -ENODEV;
  b.end();
  ParsedBatch batch = parse_ok(b.bytes());
  EXPECT_EQ(batch.error, ENODEV);
  EXPECT_TRUE(batch.links.empty());

  MessageBuilder ack;
  ack.begin(NLMSG_ERROR, sizeof(nlmsgerr));
  ack.end();
  EXPECT_EQ(parse_ok(ack.bytes()).error, 0);
}

TEST(LinkParser, MalformedErrorMessages) {
  MessageBuilder truncated;
  truncated.begin(NLMSG_ERROR, sizeof(int));
  truncated.end();
  EXPECT_FALSE(parse_link_messages(truncated.bytes()).ok());

  MessageBuilder bogus;
  bogus.begin(NLMSG_ERROR, sizeof(nlmsgerr));
  static_cast<nlmsgerr*>(mnl_nlmsg_get_payload(bogus.nlh()))->error = INT_MIN;
  bogus.end();
  EXPECT_FALSE(parse_link_messages(bogus.bytes()).ok());
}

TEST(LinkParser, DoneCarriesTheDumpStatus) {
  MessageBuilder b;
  b.begin(NLMSG_DONE, sizeof(int));
  *static_cast<int*>(mnl_nlmsg_get_payload(b.nlh())) = -EINTR;
  b.end();
  ParsedBatch batch = parse_ok(b.bytes());
  EXPECT_TRUE(batch.done);
  EXPECT_EQ(batch.error, EINTR);
}

TEST(LinkParser, MacvlanModes) {
  const std::map<uint32_t, std::string> modes = {
      {MACVLAN_MODE_PRIVATE, "private"}, {MACVLAN_MODE_VEPA, "vepa"},
      {MACVLAN_MODE_BRIDGE, "bridge"},   {MACVLAN_MODE_PASSTHRU, "passthru"},
      {MACVLAN_MODE_SOURCE, "source"},   {1u << 20, ""}};
  for (const char* kind : {"macvtap", "macvlan"}) {
    for (const auto& [mode, text] : modes) {
      MessageBuilder b;
      nlmsghdr* nlh = b.link(RTM_NEWLINK, 10, "mv0");
      mnl_attr_put_u32(nlh, IFLA_LINK, 3);
      nlattr* info = mnl_attr_nest_start(nlh, IFLA_LINKINFO);
      mnl_attr_put_strz(nlh, IFLA_INFO_KIND, kind);
      nlattr* data = mnl_attr_nest_start(nlh, IFLA_INFO_DATA);
      mnl_attr_put_u32(nlh, IFLA_MACVLAN_MODE, mode);
      mnl_attr_nest_end(nlh, data);
      mnl_attr_nest_end(nlh, info);
      b.end();
      ParsedBatch batch = parse_ok(b.bytes());
      ASSERT_EQ(batch.links.size(), 1u);
      EXPECT_EQ(batch.links[0].link.kind, kind);
      EXPECT_EQ(batch.links[0].link.parent_ifindex, 3);
      EXPECT_EQ(batch.links[0].link.macvlan_mode, text) << kind << " mode " << mode;
    }
  }
}

// A NIC whose MAC was changed: IFLA_ADDRESS is the current MAC,
// IFLA_PERM_ADDRESS the one the driver read from the hardware.
TEST(LinkParser, PermanentAddress) {
  const MacAddress current{0x02, 0x00, 0x00, 0x00, 0x00, 0xaa};
  const MacAddress perm{0x52, 0x54, 0x00, 0x12, 0x34, 0x56};
  MessageBuilder b;
  nlmsghdr* nlh = b.link(RTM_NEWLINK, 2, "eth0");
  static_cast<ifinfomsg*>(mnl_nlmsg_get_payload(nlh))->ifi_flags = IFF_UP | IFF_LOWER_UP;
  mnl_attr_put(nlh, IFLA_ADDRESS, current.size(), current.data());
  mnl_attr_put(nlh, IFLA_PERM_ADDRESS, perm.size(), perm.data());
  mnl_attr_put_u8(nlh, IFLA_OPERSTATE, IF_OPER_UP);
  b.end();
  ParsedBatch batch = parse_ok(b.bytes());
  ASSERT_EQ(batch.links.size(), 1u);
  const LinkInfo& l = batch.links[0].link;
  EXPECT_EQ(l.kind, "physical");
  EXPECT_EQ(l.mac, current);
  EXPECT_EQ(l.perm_mac, perm);
  EXPECT_EQ(l.operstate, IF_OPER_UP);
}

// Only 6-byte, non-zero permanent addresses are MACs; anything else is not an
// error, just no permanent MAC (InfiniBand's are 20 bytes).
TEST(LinkParser, PermanentAddressOfOtherShapesIsNone) {
  const uint8_t bytes[20] = {0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 7, 8, 9, 10};
  const uint8_t zeros[6] = {};
  struct Case {
    const void* data;
    size_t len;
  };
  for (const Case& c : {Case{bytes, 4}, Case{bytes, 5}, Case{bytes, 7}, Case{bytes, 20},
                        Case{bytes, 0}, Case{zeros, 6}}) {
    MessageBuilder b;
    nlmsghdr* nlh = b.link(RTM_NEWLINK, 2, "eth0");
    mnl_attr_put(nlh, IFLA_PERM_ADDRESS, c.len, c.data);
    mnl_attr_put(nlh, IFLA_ADDRESS, 6, bytes);
    b.end();
    ParsedBatch batch = parse_ok(b.bytes());
    ASSERT_EQ(batch.links.size(), 1u) << c.len;
    EXPECT_EQ(batch.links[0].link.perm_mac, std::nullopt) << c.len << " bytes";
    EXPECT_EQ(batch.links[0].link.mac, parse_mac("52:54:00:12:34:56"));
  }
}

// veth, bridge, macvtap and macvlan devices have no permanent address, and
// the kernel sends none (lo's is all zero, so it is left out too).
TEST(LinkParser, VirtualDevicesInCapturesHaveNoPermanentAddress) {
  for (const char* file : {"dump.bin", "newlink.bin", "rename.bin", "nomaster.bin"}) {
    ParsedBatch batch = parse_ok(fixture(file));
    ASSERT_FALSE(batch.links.empty()) << file;
    for (const auto& msg : batch.links)
      EXPECT_EQ(msg.link.perm_mac, std::nullopt) << file << ": " << msg.link.name;
  }
}

TEST(LinkParser, ParentInAnotherNamespaceIsNoParent) {
  MessageBuilder b;
  nlmsghdr* nlh = b.link(RTM_NEWLINK, 10, "veth0");
  mnl_attr_put_u32(nlh, IFLA_LINK, 3);
  mnl_attr_put_u32(nlh, IFLA_LINK_NETNSID, 0);
  b.end();
  ParsedBatch batch = parse_ok(b.bytes());
  ASSERT_EQ(batch.links.size(), 1u);
  EXPECT_EQ(batch.links[0].link.parent_ifindex, 0);
}

TEST(LinkParser, RejectsBadLinkMessages) {
  {
    MessageBuilder b;  // no IFLA_IFNAME
    b.link(RTM_NEWLINK, 10, nullptr);
    b.end();
    EXPECT_FALSE(parse_link_messages(b.bytes()).ok());
  }
  {
    MessageBuilder b;  // no ifindex
    b.link(RTM_NEWLINK, 0, "x");
    b.end();
    EXPECT_FALSE(parse_link_messages(b.bytes()).ok());
  }
  {
    MessageBuilder b;  // IFLA_LINK of the wrong size
    nlmsghdr* nlh = b.link(RTM_NEWLINK, 10, "x");
    mnl_attr_put_u16(nlh, IFLA_LINK, 3);
    b.end();
    EXPECT_FALSE(parse_link_messages(b.bytes()).ok());
  }
  {
    MessageBuilder b;  // name without its NUL
    nlmsghdr* nlh = b.link(RTM_NEWLINK, 10, nullptr);
    mnl_attr_put_str(nlh, IFLA_IFNAME, "abcd");
    b.end();
    EXPECT_FALSE(parse_link_messages(b.bytes()).ok());
  }
  {
    MessageBuilder b;  // ifinfomsg cut short
    b.begin(RTM_DELLINK, 8);
    b.end();
    EXPECT_FALSE(parse_link_messages(b.bytes()).ok());
  }
}

TEST(LinkParser, SkipsOtherMessageTypes) {
  MessageBuilder b;
  b.begin(RTM_NEWADDR, sizeof(ifaddrmsg));
  b.end();
  b.link(RTM_NEWLINK, 4, "eth0");
  b.end();
  ParsedBatch batch = parse_ok(b.bytes());
  ASSERT_EQ(batch.links.size(), 1u);
  EXPECT_EQ(batch.links[0].link.name, "eth0");
  EXPECT_EQ(batch.links[0].link.kind, "physical");
  EXPECT_EQ(batch.links[0].link.mac, std::nullopt);
}

TEST(LinkParser, EmptyBufferIsEmptyBatch) {
  ParsedBatch batch = parse_ok({});
  EXPECT_TRUE(batch.links.empty());
  EXPECT_FALSE(batch.done);
  EXPECT_EQ(batch.error, 0);
}

}  // namespace
}  // namespace relink::netlink
