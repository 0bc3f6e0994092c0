// SPDX-License-Identifier: GPL-2.0-or-later
#include "netlink/link_table.h"

#include <gtest/gtest.h>
#include <linux/if.h>

#include <optional>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "util/mac.h"

namespace relink::netlink {
namespace {

LinkInfo link(int ifindex, const std::string& name, const std::string& kind = "physical",
              int parent = 0) {
  LinkInfo l;
  l.ifindex = ifindex;
  l.name = name;
  l.kind = kind;
  l.parent_ifindex = parent;
  return l;
}

LinkMessage added(const LinkInfo& l) { return LinkMessage{false, l}; }
LinkMessage deleted(const LinkInfo& l) { return LinkMessage{true, l}; }

// Every name some entry holds resolves to an entry holding it; no other name resolves.
void expect_name_index_consistent(const LinkTable& t, const std::set<std::string>& probe) {
  std::set<std::string> held;
  for (const auto& l : t.all()) {
    held.insert(l.name);
    ASSERT_NE(t.find(l.ifindex), nullptr);
    EXPECT_EQ(*t.find(l.ifindex), l);
  }
  for (const auto& name : probe) {
    const LinkInfo* l = t.find_by_name(name);
    if (held.contains(name)) {
      ASSERT_NE(l, nullptr) << name;
      EXPECT_EQ(l->name, name);
    } else {
      EXPECT_EQ(l, nullptr) << name;
    }
  }
}

TEST(LinkTable, AddChangeRenameRemove) {
  LinkTable t;
  auto ev = t.apply(added(link(2, "eth0")));
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].type, LinkEventType::Added);
  EXPECT_EQ(ev[0].link.name, "eth0");
  EXPECT_EQ(t.size(), 1u);

  EXPECT_TRUE(t.apply(added(link(2, "eth0"))).empty()) << "an identical message is no news";

  LinkInfo up = link(2, "eth0");
  up.flags = IFF_UP | IFF_RUNNING;
  ev = t.apply(added(up));
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].type, LinkEventType::Changed);
  EXPECT_EQ(ev[0].old_name, "");
  EXPECT_EQ(ev[0].link.flags, up.flags);

  LinkInfo renamed = up;
  renamed.name = "wan";
  ev = t.apply(added(renamed));
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].type, LinkEventType::Changed);
  EXPECT_EQ(ev[0].old_name, "eth0");
  EXPECT_EQ(ev[0].link.name, "wan");
  EXPECT_EQ(t.find_by_name("eth0"), nullptr);
  ASSERT_NE(t.find_by_name("wan"), nullptr);
  EXPECT_EQ(t.find_by_name("wan")->ifindex, 2);

  // RTM_DELLINK carries the final state; the event carries what the table knew.
  ev = t.apply(deleted(link(2, "wan")));
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].type, LinkEventType::Removed);
  EXPECT_EQ(ev[0].link, renamed);
  EXPECT_EQ(t.size(), 0u);
  EXPECT_EQ(t.find(2), nullptr);
  EXPECT_EQ(t.find_by_name("wan"), nullptr);
}

TEST(LinkTable, DeleteOfUnknownIfindexIsIgnored) {
  LinkTable t;
  t.apply(added(link(2, "eth0")));
  EXPECT_TRUE(t.apply(deleted(link(9, "eth0"))).empty());
  ASSERT_NE(t.find_by_name("eth0"), nullptr);
  EXPECT_EQ(t.find_by_name("eth0")->ifindex, 2);
}

TEST(LinkTable, DeleteAndRecreateIsANewInterface) {
  LinkTable t;
  t.apply(added(link(5, "eth0")));
  auto ev = t.apply(deleted(link(5, "eth0")));
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].type, LinkEventType::Removed);
  ev = t.apply(added(link(8, "eth0")));
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].type, LinkEventType::Added);
  EXPECT_EQ(ev[0].link.ifindex, 8);
  EXPECT_EQ(t.find_by_name("eth0")->ifindex, 8);
  EXPECT_EQ(t.find(5), nullptr);
}

// The RTM_DELLINK of the old ifindex was not seen (yet): the newest claim owns
// the name, and the stale entry's later removal does not take it away.
TEST(LinkTable, NewestClaimOfANameWins) {
  LinkTable t;
  t.apply(added(link(5, "eth0")));
  auto ev = t.apply(added(link(8, "eth0")));
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].type, LinkEventType::Added);
  EXPECT_EQ(t.find_by_name("eth0")->ifindex, 8);
  EXPECT_EQ(t.size(), 2u);

  ev = t.apply(deleted(link(5, "eth0")));
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].type, LinkEventType::Removed);
  EXPECT_EQ(ev[0].link.ifindex, 5);
  ASSERT_NE(t.find_by_name("eth0"), nullptr);
  EXPECT_EQ(t.find_by_name("eth0")->ifindex, 8);
}

// Stale notifications replayed after a dump: 6 briefly claims "a" although 5
// holds it, then 6 moves on to "b". "a" must fall back to 5, not vanish.
TEST(LinkTable, NameFallsBackToRemainingHolder) {
  LinkTable t;
  t.apply(added(link(5, "a")));
  t.apply(added(link(6, "a")));
  EXPECT_EQ(t.find_by_name("a")->ifindex, 6);
  auto ev = t.apply(added(link(6, "b")));
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].old_name, "a");
  ASSERT_NE(t.find_by_name("a"), nullptr);
  EXPECT_EQ(t.find_by_name("a")->ifindex, 5);
  EXPECT_EQ(t.find_by_name("b")->ifindex, 6);

  t.apply(deleted(link(5, "a")));
  EXPECT_EQ(t.find_by_name("a"), nullptr);
}

TEST(LinkTable, RepeatedIdenticalClaimTakesTheNameBack) {
  LinkTable t;
  t.apply(added(link(5, "a")));
  t.apply(added(link(6, "a")));
  EXPECT_TRUE(t.apply(added(link(5, "a"))).empty());
  EXPECT_EQ(t.find_by_name("a")->ifindex, 5);
}

// After an overrun: eth0 (2) was deleted, taking its macvtap (3) with it, and
// re-created as 7; br0 (4) was renamed; 8 is new. None of it was seen.
TEST(LinkTable, ReplaceAllAfterOverrun) {
  LinkTable t;
  t.apply(added(link(1, "lo")));
  t.apply(added(link(2, "eth0")));
  t.apply(added(link(3, "mvtap0", "macvtap", 2)));
  t.apply(added(link(4, "br0", "bridge")));

  auto ev = t.replace_all(
      {link(1, "lo"), link(4, "br1", "bridge"), link(7, "eth0"), link(8, "veth0", "veth")});
  ASSERT_EQ(ev.size(), 5u);
  EXPECT_EQ(ev[0].type, LinkEventType::Removed);
  EXPECT_EQ(ev[0].link.ifindex, 2);
  EXPECT_EQ(ev[0].link.name, "eth0");
  EXPECT_EQ(ev[1].type, LinkEventType::Removed);
  EXPECT_EQ(ev[1].link.ifindex, 3);
  EXPECT_EQ(ev[1].link.parent_ifindex, 2);
  EXPECT_EQ(ev[2].type, LinkEventType::Changed);
  EXPECT_EQ(ev[2].link.ifindex, 4);
  EXPECT_EQ(ev[2].link.name, "br1");
  EXPECT_EQ(ev[2].old_name, "br0");
  EXPECT_EQ(ev[3].type, LinkEventType::Added);
  EXPECT_EQ(ev[3].link.ifindex, 7);
  EXPECT_EQ(ev[3].link.name, "eth0");
  EXPECT_EQ(ev[4].type, LinkEventType::Added);
  EXPECT_EQ(ev[4].link.ifindex, 8);

  EXPECT_EQ(t.size(), 4u);
  EXPECT_EQ(t.find_by_name("eth0")->ifindex, 7);
  EXPECT_EQ(t.find_by_name("br1")->ifindex, 4);
  EXPECT_EQ(t.find_by_name("br0"), nullptr);
  EXPECT_EQ(t.find_by_name("mvtap0"), nullptr);
  EXPECT_EQ(t.find(2), nullptr);
  expect_name_index_consistent(t, {"lo", "eth0", "mvtap0", "br0", "br1", "veth0"});

  EXPECT_TRUE(t.replace_all(t.all()).empty()) << "a second identical dump is no news";
}

// Removals, then changes, then additions, whatever the ifindex order.
TEST(LinkTable, ReplaceAllOrdersRemovalsChangesAdditions) {
  LinkTable t;
  t.replace_all({link(10, "a"), link(20, "b"), link(30, "c")});
  LinkInfo b = link(20, "b");
  b.flags = IFF_UP;
  auto ev = t.replace_all({link(1, "new1"), b, link(40, "new2")});
  ASSERT_EQ(ev.size(), 5u);
  std::vector<LinkEventType> types;
  for (const auto& e : ev) types.push_back(e.type);
  EXPECT_EQ(types, (std::vector<LinkEventType>{LinkEventType::Removed, LinkEventType::Removed,
                                               LinkEventType::Changed, LinkEventType::Added,
                                               LinkEventType::Added}));
  EXPECT_EQ(ev[2].old_name, "");
}

TEST(LinkTable, AllIsInIfindexOrder) {
  LinkTable t;
  t.apply(added(link(9, "z")));
  t.apply(added(link(3, "y")));
  t.apply(added(link(5, "x")));
  auto all = t.all();
  ASSERT_EQ(all.size(), 3u);
  EXPECT_EQ(all[0].ifindex, 3);
  EXPECT_EQ(all[1].ifindex, 5);
  EXPECT_EQ(all[2].ifindex, 9);
}

// Random adds, renames and deletes over few names and ifindexes, including
// the lost-message cases: the name index never disagrees with the table.
TEST(LinkTable, NameIndexStaysConsistent) {
  std::mt19937 rng(7);
  const std::vector<std::string> names = {"a", "b", "c", "d"};
  const std::set<std::string> probe(names.begin(), names.end());
  LinkTable t;
  for (int i = 0; i < 20000; ++i) {
    int ifindex = 1 + static_cast<int>(rng() % 6);
    const std::string& name = names[rng() % names.size()];
    if (rng() % 3 == 0) {
      t.apply(deleted(link(ifindex, name)));
    } else {
      t.apply(added(link(ifindex, name)));
    }
    expect_name_index_consistent(t, probe);
    if (HasFailure()) FAIL() << "after step " << i;
    if (i % 1000 == 999) {
      (void)t.replace_all({link(1, "a"), link(2, "b")});
      expect_name_index_consistent(t, probe);
    }
  }
}

// --- find_by_mac -------------------------------------------------------------

constexpr MacAddress kNicMac{0x52, 0x54, 0x00, 0xab, 0xcd, 0x01};
constexpr MacAddress kOtherMac{0x02, 0x00, 0x00, 0x00, 0x00, 0x99};

LinkInfo with_macs(LinkInfo l, std::optional<MacAddress> mac, std::optional<MacAddress> perm) {
  l.mac = mac;
  l.perm_mac = perm;
  return l;
}

TEST(LinkTableFindByMac, PermanentMacWinsOverLowerIfindexWithItAsCurrentMac) {
  LinkTable t;
  // A bridge and a vlan carry the NIC's MAC as their current one; only the NIC
  // has it as permanent MAC.
  t.apply(added(with_macs(link(2, "br0", "bridge"), kNicMac, std::nullopt)));
  t.apply(added(with_macs(link(3, "eth0.5", "vlan", 5), kNicMac, std::nullopt)));
  t.apply(added(with_macs(link(5, "eth0"), kNicMac, kNicMac)));
  MacMatch m = t.find_by_mac(kNicMac);
  ASSERT_TRUE(m);
  EXPECT_EQ(m.link->name, "eth0");
  EXPECT_TRUE(m.by_perm);
  EXPECT_EQ(m.count, 1u);
  EXPECT_FALSE(m.ambiguous());
}

TEST(LinkTableFindByMac, CurrentMacWhenNoInterfaceHasItAsPermanentMac) {
  LinkTable t;
  t.apply(added(with_macs(link(2, "eth0"), kNicMac, kNicMac)));
  t.apply(added(with_macs(link(4, "va", "veth", 6), kOtherMac, std::nullopt)));
  t.apply(added(with_macs(link(6, "vb", "veth", 4), std::nullopt, std::nullopt)));
  MacMatch m = t.find_by_mac(kOtherMac);
  ASSERT_TRUE(m);
  EXPECT_EQ(m.link->name, "va");
  EXPECT_FALSE(m.by_perm);
  EXPECT_EQ(m.count, 1u);
  EXPECT_FALSE(t.find_by_mac(MacAddress{0x02, 0, 0, 0, 0, 0x42}));
}

// A NIC whose MAC was changed is found by its permanent MAC and by its new one.
TEST(LinkTableFindByMac, ChangedMacIsFoundBothWays) {
  LinkTable t;
  t.apply(added(with_macs(link(2, "eth0"), kNicMac, kNicMac)));
  auto ev = t.apply(added(with_macs(link(2, "eth0"), kOtherMac, kNicMac)));
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].type, LinkEventType::Changed);

  MacMatch perm = t.find_by_mac(kNicMac);
  ASSERT_TRUE(perm);
  EXPECT_EQ(perm.link->ifindex, 2);
  EXPECT_TRUE(perm.by_perm);
  MacMatch current = t.find_by_mac(kOtherMac);
  ASSERT_TRUE(current);
  EXPECT_EQ(current.link->ifindex, 2);
  EXPECT_FALSE(current.by_perm);
}

TEST(LinkTableFindByMac, SkipsMacvtapAndMacvlan) {
  LinkTable t;
  // Guests' MACs: even a permanent one (which the kernel never reports for
  // them) does not make them a host interface.
  t.apply(added(with_macs(link(7, "mvt0", "macvtap", 9), kOtherMac, kOtherMac)));
  t.apply(added(with_macs(link(8, "mvl0", "macvlan", 9), kOtherMac, std::nullopt)));
  EXPECT_FALSE(t.find_by_mac(kOtherMac));
  EXPECT_EQ(t.find_by_mac(kOtherMac).count, 0u);

  t.apply(added(with_macs(link(9, "eth1"), kOtherMac, std::nullopt)));
  MacMatch m = t.find_by_mac(kOtherMac);
  ASSERT_TRUE(m);
  EXPECT_EQ(m.link->name, "eth1");
  EXPECT_EQ(m.count, 1u) << "the macvtap and macvlan do not count";
}

TEST(LinkTableFindByMac, AmbiguousCurrentMacGivesLowestIfindexAndCount) {
  LinkTable t;
  // A bridge takes the MAC of a port: both hold it, neither as permanent MAC.
  t.apply(added(with_macs(link(9, "br0", "bridge"), kOtherMac, std::nullopt)));
  t.apply(added(with_macs(link(4, "vb", "veth", 3), kOtherMac, std::nullopt)));
  t.apply(added(with_macs(link(6, "vc", "veth", 5), kOtherMac, std::nullopt)));
  MacMatch m = t.find_by_mac(kOtherMac);
  ASSERT_TRUE(m);
  EXPECT_EQ(m.link->ifindex, 4);
  EXPECT_EQ(m.count, 3u);
  EXPECT_TRUE(m.ambiguous());
  EXPECT_FALSE(m.by_perm);
}

// The caller may prefer another of the matches (the one with the configured
// name): includes() says which links are among them, at the level matched.
TEST(LinkTableFindByMac, IncludesTellsTheOtherMatches) {
  LinkTable t;
  t.apply(added(with_macs(link(2, "vb", "veth", 3), kOtherMac, std::nullopt)));
  t.apply(added(with_macs(link(5, "br0", "bridge"), kOtherMac, std::nullopt)));
  t.apply(added(with_macs(link(6, "eth0"), kNicMac, kNicMac)));
  t.apply(added(with_macs(link(7, "mvt0", "macvtap", 5), kOtherMac, std::nullopt)));
  MacMatch m = t.find_by_mac(kOtherMac);
  ASSERT_TRUE(m.ambiguous());
  EXPECT_EQ(m.mac, kOtherMac);
  EXPECT_TRUE(m.includes(*t.find_by_name("vb")));
  EXPECT_TRUE(m.includes(*t.find_by_name("br0")));
  EXPECT_FALSE(m.includes(*t.find_by_name("eth0")));
  EXPECT_FALSE(m.includes(*t.find_by_name("mvt0"))) << "a guest's, even with the MAC";

  // Matched by permanent MAC: an interface that only carries it as current
  // MAC (a bridge with the NIC as port) is not among the matches, and a NIC
  // whose MAC was changed away from its permanent one is.
  t.apply(added(with_macs(link(8, "br1", "bridge"), kNicMac, std::nullopt)));
  t.apply(added(with_macs(link(9, "eth1"), kOtherMac, kNicMac)));
  MacMatch p = t.find_by_mac(kNicMac);
  ASSERT_TRUE(p.by_perm);
  EXPECT_EQ(p.count, 2u);
  EXPECT_EQ(p.link->name, "eth0");
  EXPECT_TRUE(p.includes(*t.find_by_name("eth1")));
  EXPECT_FALSE(p.includes(*t.find_by_name("br1")));

  MacMatch none = t.find_by_mac(MacAddress{0x02, 0, 0, 0, 0, 0x42});
  EXPECT_FALSE(none.includes(*t.find_by_name("vb")));
}

TEST(LinkTableFindByMac, AmbiguousPermanentMacGivesLowestIfindexAndCount) {
  LinkTable t;
  // Two NICs with the same burnt-in MAC (cloned VMs, bad firmware); a third
  // interface with it as current MAC does not count at the permanent level.
  t.apply(added(with_macs(link(3, "br0", "bridge"), kNicMac, std::nullopt)));
  t.apply(added(with_macs(link(12, "eth1"), kOtherMac, kNicMac)));
  t.apply(added(with_macs(link(5, "eth0"), kNicMac, kNicMac)));
  MacMatch m = t.find_by_mac(kNicMac);
  ASSERT_TRUE(m);
  EXPECT_EQ(m.link->name, "eth0");
  EXPECT_EQ(m.count, 2u);
  EXPECT_TRUE(m.ambiguous());
  EXPECT_TRUE(m.by_perm);
}

// Renames keep the match (same ifindex); a re-created interface is found
// under its new ifindex, and a removed one is gone.
TEST(LinkTableFindByMac, FollowsRenamesRecreationAndRemoval) {
  LinkTable t;
  t.apply(added(with_macs(link(2, "eth0"), kNicMac, kNicMac)));
  t.apply(added(with_macs(link(2, "wan"), kNicMac, kNicMac)));
  MacMatch m = t.find_by_mac(kNicMac);
  ASSERT_TRUE(m);
  EXPECT_EQ(m.link->ifindex, 2);
  EXPECT_EQ(m.link->name, "wan");

  // Renamed away, and another interface took the old name: the MAC still
  // names the renamed one.
  t.apply(added(with_macs(link(3, "eth0", "veth", 4), kOtherMac, std::nullopt)));
  m = t.find_by_mac(kNicMac);
  ASSERT_TRUE(m);
  EXPECT_EQ(m.link->name, "wan");
  EXPECT_EQ(t.find_by_mac(kOtherMac).link->name, "eth0");

  t.apply(deleted(link(2, "wan")));
  EXPECT_FALSE(t.find_by_mac(kNicMac));
  t.apply(added(with_macs(link(11, "wan"), kNicMac, kNicMac)));
  m = t.find_by_mac(kNicMac);
  ASSERT_TRUE(m);
  EXPECT_EQ(m.link->ifindex, 11);
  EXPECT_EQ(m.count, 1u);
}

TEST(LinkTableFindByMac, AllZeroMacMatchesNothing) {
  LinkTable t;
  t.apply(added(with_macs(link(1, "lo"), MacAddress{}, std::nullopt)));
  t.apply(added(with_macs(link(2, "tun0", "tun"), MacAddress{}, std::nullopt)));
  MacMatch m = t.find_by_mac(MacAddress{});
  EXPECT_FALSE(m);
  EXPECT_EQ(m.count, 0u);
}

TEST(LinkTableFindByMac, ReplaceAllIsSeen) {
  LinkTable t;
  t.apply(added(with_macs(link(2, "eth0"), kNicMac, kNicMac)));
  t.replace_all({with_macs(link(2, "eth0"), kOtherMac, kNicMac),
                 with_macs(link(7, "br0", "bridge"), kNicMac, std::nullopt)});
  MacMatch m = t.find_by_mac(kNicMac);
  ASSERT_TRUE(m);
  EXPECT_EQ(m.link->name, "eth0");
  EXPECT_TRUE(m.by_perm);
  EXPECT_EQ(t.find_by_mac(kOtherMac).link->name, "eth0");
}

}  // namespace
}  // namespace relink::netlink
