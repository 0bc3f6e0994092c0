// SPDX-License-Identifier: GPL-2.0-or-later
// AF_BRIDGE port messages: decoding (options, VLANs plain and as ranges,
// malformed input), the port table, and the requests read back.
#include "netlink/bridge_port.h"

#include <libmnl/libmnl.h>
#include <linux/if_bridge.h>
#include <linux/if_link.h>
#include <linux/rtnetlink.h>
#include <sys/socket.h>

#include <gtest/gtest.h>

#include "netlink/link_parser.h"
#include "netlink/nl_attr.h"

namespace relink::netlink {
namespace {

// An AF_BRIDGE RTM_NEWLINK as the kernel sends it for a port.
struct PortMsg {
  std::vector<uint8_t> buf = std::vector<uint8_t>(8192);
  nlmsghdr* nlh;
  PortMsg(int ifindex, int master, uint16_t type = RTM_NEWLINK) {
    nlh = mnl_nlmsg_put_header(buf.data());
    nlh->nlmsg_type = type;
    auto* ifi = static_cast<ifinfomsg*>(mnl_nlmsg_put_extra_header(nlh, sizeof(ifinfomsg)));
    ifi->ifi_family = AF_BRIDGE;
    ifi->ifi_index = ifindex;
    mnl_attr_put_strz(nlh, IFLA_IFNAME, "tap0");
    mnl_attr_put_u32(nlh, IFLA_MASTER, static_cast<uint32_t>(master));
  }
  void protinfo(bool hairpin, bool isolated, uint32_t cost) {
    nlattr* n = mnl_attr_nest_start(nlh, IFLA_PROTINFO | NLA_F_NESTED);
    mnl_attr_put_u8(nlh, IFLA_BRPORT_STATE, 3);
    mnl_attr_put_u8(nlh, IFLA_BRPORT_MODE, hairpin);
    mnl_attr_put_u8(nlh, IFLA_BRPORT_ISOLATED, isolated);
    mnl_attr_put_u32(nlh, IFLA_BRPORT_COST, cost);
    mnl_attr_put_u16(nlh, IFLA_BRPORT_PRIORITY, 32);
    mnl_attr_nest_end(nlh, n);
  }
  void vlans(std::initializer_list<bridge_vlan_info> infos) {
    nlattr* n = mnl_attr_nest_start(nlh, IFLA_AF_SPEC);
    for (auto vi : infos) mnl_attr_put(nlh, IFLA_BRIDGE_VLAN_INFO, sizeof vi, &vi);
    mnl_attr_nest_end(nlh, n);
  }
  std::span<const uint8_t> bytes() const { return {buf.data(), nlh->nlmsg_len}; }
};

TEST(BridgePort, ParsesOptionsAndVlans) {
  PortMsg m(7, 10);
  m.protinfo(true, false, 100);
  m.vlans({{BRIDGE_VLAN_INFO_PVID | BRIDGE_VLAN_INFO_UNTAGGED, 1},
           {BRIDGE_VLAN_INFO_RANGE_BEGIN, 20},
           {BRIDGE_VLAN_INFO_RANGE_END, 22},
           {BRIDGE_VLAN_INFO_UNTAGGED, 30}});
  auto batch = parse_link_messages(m.bytes());
  ASSERT_TRUE(batch) << batch.error().message;
  EXPECT_TRUE(batch->links.empty());  // an AF_BRIDGE message is no link of its own
  ASSERT_EQ(batch->ports.size(), 1u);
  const BridgePort& p = batch->ports[0].port;
  EXPECT_FALSE(batch->ports[0].deleted);
  EXPECT_EQ(p.ifindex, 7);
  EXPECT_EQ(p.master, 10);
  // The STP state is the kernel's: not kept.
  EXPECT_EQ(p.options, (std::map<uint16_t, uint32_t>{
                           {IFLA_BRPORT_MODE, 1}, {IFLA_BRPORT_ISOLATED, 0}, {IFLA_BRPORT_COST, 100},
                           {IFLA_BRPORT_PRIORITY, 32}}));
  EXPECT_TRUE(p.vlans_known);
  EXPECT_EQ(p.vlans, (std::vector<PortVlan>{{1, true, true}, {20, false, false}, {21, false, false},
                                            {22, false, false}, {30, false, true}}));
  EXPECT_EQ(describe_vlans(p.vlans), "vlan 1 pvid untagged, 20-22, 30 untagged");
  EXPECT_EQ(describe_options(p.options), "priority 32, cost 100, hairpin on, isolated off");
}

TEST(BridgePort, RefusesBrokenVlanTables) {
  for (auto infos : std::vector<std::vector<bridge_vlan_info>>{
           {{0, 0}},                                                     // VLAN 0
           {{0, 4095}},                                                  // reserved
           {{BRIDGE_VLAN_INFO_RANGE_END, 5}},                            // an end without a begin
           {{BRIDGE_VLAN_INFO_RANGE_BEGIN, 5}},                          // a begin without an end
           {{BRIDGE_VLAN_INFO_RANGE_BEGIN, 9}, {BRIDGE_VLAN_INFO_RANGE_END, 5}},  // backwards
           {{0, 5}, {0, 5}},                                             // twice
       }) {
    PortMsg m(7, 10);
    nlattr* n = mnl_attr_nest_start(m.nlh, IFLA_AF_SPEC);
    for (auto vi : infos) mnl_attr_put(m.nlh, IFLA_BRIDGE_VLAN_INFO, sizeof vi, &vi);
    mnl_attr_nest_end(m.nlh, n);
    EXPECT_FALSE(parse_link_messages(m.bytes())) << infos.size();
  }
  // A short bridge_vlan_info.
  PortMsg m(7, 10);
  nlattr* n = mnl_attr_nest_start(m.nlh, IFLA_AF_SPEC);
  mnl_attr_put_u16(m.nlh, IFLA_BRIDGE_VLAN_INFO, 5);
  mnl_attr_nest_end(m.nlh, n);
  EXPECT_FALSE(parse_link_messages(m.bytes()));
  // Every truncation of a good message is an error or a shorter message, never a crash.
  PortMsg good(7, 10);
  good.protinfo(true, true, 5);
  good.vlans({{BRIDGE_VLAN_INFO_PVID, 3}});
  for (size_t len = 0; len < good.nlh->nlmsg_len; ++len) {
    std::vector<uint8_t> cut(good.buf.begin(), good.buf.begin() + static_cast<std::ptrdiff_t>(len));
    if (cut.size() >= sizeof(nlmsghdr)) reinterpret_cast<nlmsghdr*>(cut.data())->nlmsg_len = static_cast<uint32_t>(len);
    (void)parse_link_messages(cut);
  }
}

TEST(BridgePort, TableKeepsPortsOnly) {
  BridgePortTable t;
  PortMsg m(7, 10);
  m.protinfo(false, true, 100);
  m.vlans({{BRIDGE_VLAN_INFO_PVID, 5}});
  auto msg = parse_bridge_port(m.nlh);
  ASSERT_TRUE(msg);
  EXPECT_TRUE(t.apply(*msg));
  EXPECT_FALSE(t.apply(*msg));  // no change
  ASSERT_TRUE(t.find(7));
  EXPECT_EQ(t.find(7)->vlans.size(), 1u);
  // A message about MRP (IFLA_AF_SPEC without VLANs) keeps the ones known.
  PortMsg mrp(7, 10);
  mrp.protinfo(true, true, 100);
  nlattr* n = mnl_attr_nest_start(mrp.nlh, IFLA_AF_SPEC);
  mnl_attr_put_u32(mrp.nlh, IFLA_BRIDGE_MRP, 0);
  mnl_attr_nest_end(mrp.nlh, n);
  auto mrp_msg = parse_bridge_port(mrp.nlh);
  ASSERT_TRUE(mrp_msg);
  EXPECT_FALSE(mrp_msg->port.vlans_known);
  EXPECT_TRUE(t.apply(*mrp_msg));
  EXPECT_EQ(t.find(7)->vlans.size(), 1u);
  EXPECT_EQ(t.find(7)->options.at(IFLA_BRPORT_MODE), 1u);
  // One without IFLA_AF_SPEC: the port has no VLANs (the kernel leaves it out then).
  PortMsg no_vlans(7, 10);
  no_vlans.protinfo(true, true, 100);
  auto none = parse_bridge_port(no_vlans.nlh);
  ASSERT_TRUE(none);
  EXPECT_TRUE(none->port.vlans_known);
  EXPECT_TRUE(t.apply(*none));
  EXPECT_TRUE(t.find(7)->vlans.empty());
  // The bridge's own entry is not a port.
  PortMsg self(10, 10);
  EXPECT_FALSE(t.apply(*parse_bridge_port(self.nlh)));
  EXPECT_FALSE(t.find(10));
  PortMsg gone(7, 10, RTM_DELLINK);
  auto del = parse_bridge_port(gone.nlh);
  ASSERT_TRUE(del);
  EXPECT_TRUE(del->deleted);
  EXPECT_TRUE(t.apply(*del));
  EXPECT_FALSE(t.find(7));
}

// The requests relinkd sends carry what the parser reads: the same layout,
// read back through it.
TEST(BridgePort, RequestsReadBack) {
  std::vector<uint8_t> buf(kRequestBufSize);
  const std::vector<PortVlan> vlans = {{1, false, false}, {2, false, false}, {3, false, false}, {5, true, true},
                                       {6, false, true},  {7, false, true},  {4094, false, false}};
  size_t len = build_vlans(buf, 9, 7, /*add=*/true, vlans);
  auto* nlh = reinterpret_cast<nlmsghdr*>(buf.data());
  EXPECT_EQ(nlh->nlmsg_len, len);
  EXPECT_EQ(nlh->nlmsg_type, RTM_SETLINK);
  EXPECT_EQ(nlh->nlmsg_seq, 9u);
  EXPECT_TRUE(nlh->nlmsg_flags & NLM_F_ACK);
  auto back = parse_bridge_port(nlh);
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_EQ(back->port.ifindex, 7);
  EXPECT_EQ(back->port.vlans, vlans);
  // Runs went as ranges (1-3 and 6-7 as two entries each): six entries for seven VLANs.
  int entries = 0;
  const auto* attrs = static_cast<const uint8_t*>(mnl_nlmsg_get_payload_offset(nlh, sizeof(ifinfomsg)));
  for_each_attr(attrs, static_cast<int>(reinterpret_cast<const uint8_t*>(nlh) + nlh->nlmsg_len - attrs),
                [&](const nlattr* a) {
                  if (mnl_attr_get_type(a) == IFLA_AF_SPEC) for_each_nested(a, [&](const nlattr*) { return ++entries; });
                  return true;
                });
  EXPECT_EQ(entries, 6);
  // A delete carries no flags.
  build_vlans(buf, 10, 7, /*add=*/false, vlans);
  EXPECT_EQ(nlh->nlmsg_type, RTM_DELLINK);
  back = parse_bridge_port(nlh);
  ASSERT_TRUE(back);
  for (const auto& v : back->port.vlans) EXPECT_FALSE(v.pvid || v.untagged);

  const std::map<uint16_t, uint32_t> options = {{IFLA_BRPORT_COST, 250}, {IFLA_BRPORT_PRIORITY, 7},
                                                {IFLA_BRPORT_LEARNING, 0}, {IFLA_BRPORT_ISOLATED, 1},
                                                {IFLA_BRPORT_GROUP_FWD_MASK, 8}};
  build_port_options(buf, 11, 7, options);
  back = parse_bridge_port(nlh);
  ASSERT_TRUE(back);
  EXPECT_EQ(back->port.options, options);

  build_set_master(buf, 12, 7, 10);
  EXPECT_EQ(nlh->nlmsg_type, RTM_NEWLINK);
  EXPECT_EQ(static_cast<ifinfomsg*>(mnl_nlmsg_get_payload(nlh))->ifi_family, AF_UNSPEC);
}

TEST(BridgePort, VlansToDelete) {
  const std::vector<PortVlan> current = {{1, true, true}, {10, false, false}};
  const std::vector<PortVlan> wanted = {{10, true, true}, {20, false, false}};
  EXPECT_EQ(vlans_to_delete(current, wanted), (std::vector<PortVlan>{{1, true, true}}));
  EXPECT_EQ(vlans_to_delete(current, {}), current);
  EXPECT_TRUE(vlans_to_delete({}, wanted).empty());
}

}  // namespace
}  // namespace relink::netlink
