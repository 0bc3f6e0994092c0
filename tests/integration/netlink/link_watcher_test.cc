// SPDX-License-Identifier: GPL-2.0-or-later
// LinkWatcher against the real kernel, in a throwaway network namespace.
#include "netlink/link_watcher.h"

#include <gtest/gtest.h>
#include <linux/if.h>

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "support/harness.h"
#include "util/mac.h"

namespace relink::netlink {
namespace {

using namespace std::chrono_literals;

// What `ip -d link show` says, in LinkInfo's terms.
struct KernelLink {
  int ifindex = 0;
  std::string name;
  std::string kind;
  std::string mac;
  int parent_ifindex = 0;
  bool operator==(const KernelLink&) const = default;
};

std::ostream& operator<<(std::ostream& os, const KernelLink& l) {
  return os << l.ifindex << ":" << l.name << "(" << l.kind << ", " << l.mac << ", parent "
            << l.parent_ifindex << ")";
}

class LinkWatcherTest : public ::testing::Test {
 protected:
  void SetUp() override {
    RELINK_REQUIRE_ROOT();
    sd_event* e = nullptr;
    ASSERT_GE(sd_event_new(&e), 0);
    loop_.reset(e);
    ns_ = std::make_unique<test::Netns>("nl");
  }

  // Starts a watcher whose sockets live in the test's namespace.
  void start(size_t rcvbuf = LinkWatcher::kDefaultRcvbuf) {
    watcher_ = std::make_unique<LinkWatcher>(
        loop_.get(),
        [this](const std::vector<LinkEvent>& evs) {
          events_.insert(events_.end(), evs.begin(), evs.end());
        },
        rcvbuf);
    test::ScopedNetnsEnter enter(ns_->name());
    ASSERT_TRUE(enter.ok());
    auto r = watcher_->start();
    ASSERT_TRUE(r.ok()) << r.error().message;
  }

  // Runs the event loop until pred holds; false on timeout.
  bool pump_until(const std::function<bool()>& pred, std::chrono::milliseconds timeout = 5s) {
    auto end = std::chrono::steady_clock::now() + timeout;
    while (!pred()) {
      if (std::chrono::steady_clock::now() >= end) return false;
      if (sd_event_run(loop_.get(), 20'000) < 0) return false;
    }
    return true;
  }

  // Index of the first event of this type for this name (and ifindex, if
  // non-zero), or -1.
  int find_event(LinkEventType type, const std::string& name, int ifindex = 0) const {
    for (size_t i = 0; i < events_.size(); ++i) {
      const auto& e = events_[i];
      if (e.type == type && e.link.name == name && (ifindex == 0 || e.link.ifindex == ifindex)) {
        return static_cast<int>(i);
      }
    }
    return -1;
  }

  std::vector<KernelLink> kernel_links() const {
    auto j = nlohmann::json::parse(ns_->ip("-j -d link show"));
    std::map<std::string, int> index;
    for (const auto& l : j) index[l["ifname"]] = l["ifindex"];
    std::vector<KernelLink> out;
    for (const auto& l : j) {
      KernelLink k{l["ifindex"], l["ifname"], "physical", l.value("address", ""), 0};
      if (l.contains("linkinfo") && l["linkinfo"].contains("info_kind"))
        k.kind = l["linkinfo"]["info_kind"];
      if (l.contains("link") && l["link"].is_string()) k.parent_ifindex = index[l["link"]];
      out.push_back(k);
    }
    return out;
  }

  std::vector<KernelLink> table_links() const {
    std::vector<KernelLink> out;
    for (const auto& l : watcher_->table().all()) {
      out.push_back({l.ifindex, l.name, l.kind, l.mac ? format_mac(*l.mac) : "", l.parent_ifindex});
    }
    return out;
  }

  SdEventPtr loop_;  // outlives the watcher
  std::unique_ptr<test::Netns> ns_;
  std::unique_ptr<LinkWatcher> watcher_;
  std::vector<LinkEvent> events_;
};

TEST_F(LinkWatcherTest, InitialDumpSeesKindsAndParents) {
  ns_->ip("link add va address 02:00:00:00:01:01 type veth peer name vb");
  ns_->ip("link add br0 type bridge");
  ns_->ip("link set vb master br0");
  ns_->ip("link add link va name mt0 address 02:00:00:00:01:02 type macvtap mode bridge");
  start();
  EXPECT_TRUE(events_.empty()) << "the initial dump is not reported as events";

  const LinkTable& t = watcher_->table();
  const LinkInfo* lo = t.find_by_name("lo");
  const LinkInfo* va = t.find_by_name("va");
  const LinkInfo* vb = t.find_by_name("vb");
  const LinkInfo* br0 = t.find_by_name("br0");
  const LinkInfo* mt0 = t.find_by_name("mt0");
  ASSERT_TRUE(lo && va && vb && br0 && mt0);
  EXPECT_EQ(lo->kind, "physical");
  EXPECT_EQ(va->kind, "veth");
  EXPECT_EQ(va->ifindex, ns_->ifindex("va"));
  EXPECT_EQ(va->mac, parse_mac("02:00:00:00:01:01"));
  EXPECT_EQ(br0->kind, "bridge");
  EXPECT_EQ(vb->master_ifindex, br0->ifindex);
  EXPECT_EQ(mt0->kind, "macvtap");
  EXPECT_EQ(mt0->parent_ifindex, va->ifindex);
  EXPECT_EQ(mt0->macvlan_mode, "bridge");
  EXPECT_EQ(mt0->mac, parse_mac("02:00:00:00:01:02"));
  EXPECT_EQ(table_links(), kernel_links());
  EXPECT_EQ(watcher_->overruns(), 0u);
}

// The parent of a macvtap disappears (taking the macvtap with it) and comes
// back under the same name: a new interface, with a new ifindex.
TEST_F(LinkWatcherTest, DeleteAndRecreateIsRemovedThenAdded) {
  ns_->ip("link add va type veth peer name vb");
  ns_->ip("link add link va name mt0 type macvtap");
  start();
  int old_va = ns_->ifindex("va");
  int old_mt0 = ns_->ifindex("mt0");
  ASSERT_GT(old_va, 0);

  ns_->ip("link del va");
  ns_->ip("link add va type veth peer name vb");
  int new_va = ns_->ifindex("va");
  ASSERT_NE(new_va, old_va);

  ASSERT_TRUE(pump_until([&] { return find_event(LinkEventType::Added, "va", new_va) >= 0; }));
  int removed = find_event(LinkEventType::Removed, "va", old_va);
  ASSERT_GE(removed, 0);
  EXPECT_LT(removed, find_event(LinkEventType::Added, "va", new_va));
  EXPECT_GE(find_event(LinkEventType::Removed, "mt0", old_mt0), 0);
  ASSERT_NE(watcher_->table().find_by_name("va"), nullptr);
  EXPECT_EQ(watcher_->table().find_by_name("va")->ifindex, new_va);
  EXPECT_EQ(watcher_->table().find(old_va), nullptr);
  EXPECT_EQ(watcher_->table().find_by_name("mt0"), nullptr);
}

TEST_F(LinkWatcherTest, RenameAwayAndBackIsChangedWithOldName) {
  ns_->ip("link add va type veth peer name vb");
  start();
  int ifindex = ns_->ifindex("va");

  ns_->ip("link set va name vz");
  auto renamed = [&](const std::string& from, const std::string& to) {
    return [&, from, to] {
      for (const auto& e : events_) {
        if (e.type == LinkEventType::Changed && e.old_name == from && e.link.name == to) {
          EXPECT_EQ(e.link.ifindex, ifindex);
          return true;
        }
      }
      return false;
    };
  };
  ASSERT_TRUE(pump_until(renamed("va", "vz")));
  EXPECT_EQ(watcher_->table().find_by_name("va"), nullptr);
  ASSERT_NE(watcher_->table().find_by_name("vz"), nullptr);
  EXPECT_EQ(watcher_->table().find_by_name("vz")->ifindex, ifindex);

  ns_->ip("link set vz name va");
  ASSERT_TRUE(pump_until(renamed("vz", "va")));
  EXPECT_EQ(watcher_->table().find_by_name("vz"), nullptr);
  EXPECT_EQ(watcher_->table().find_by_name("va")->ifindex, ifindex);
  for (const auto& e : events_) EXPECT_NE(e.type, LinkEventType::Removed) << e.link.name;
}

// --- carrier -----------------------------------------------------------------

class LinkWatcherCarrierTest : public LinkWatcherTest {
 protected:
  // Index of the first Changed event for `name` at or after `from` whose
  // has_carrier() is `carrier`, or -1.
  int find_carrier_change(const std::string& name, bool carrier, size_t from = 0) const {
    for (size_t i = from; i < events_.size(); ++i) {
      const auto& e = events_[i];
      if (e.type == LinkEventType::Changed && e.link.name == name && has_carrier(e.link) == carrier)
        return static_cast<int>(i);
    }
    return -1;
  }

  bool table_carrier(const std::string& name) const {
    const LinkInfo* l = watcher_->table().find_by_name(name);
    EXPECT_NE(l, nullptr) << name;
    return l && has_carrier(*l);
  }
};

// The peer of a veth going down takes the carrier (IFF_LOWER_UP) of the local
// end, which stays administratively up; the peer coming back restores it.
TEST_F(LinkWatcherCarrierTest, VethPeerDownAndUpIsAChangeOfCarrier) {
  ns_->ip("link add va type veth peer name vb");
  ns_->ip("link set va up");
  ns_->ip("link set vb up");
  start();
  ASSERT_TRUE(pump_until([&] { return table_carrier("va"); })) << "va never had carrier";
  events_.clear();

  ns_->ip("link set vb down");
  ASSERT_TRUE(pump_until([&] { return find_carrier_change("va", false) >= 0; }))
      << "no Changed event without carrier for va";
  const LinkEvent& down = events_[static_cast<size_t>(find_carrier_change("va", false))];
  EXPECT_TRUE(down.link.flags & IFF_UP) << "va itself stays up";
  EXPECT_FALSE(down.link.flags & IFF_LOWER_UP);
  EXPECT_EQ(down.link.ifindex, ns_->ifindex("va"));
  EXPECT_FALSE(table_carrier("va"));

  const size_t mark = events_.size();
  ns_->ip("link set vb up");
  ASSERT_TRUE(pump_until([&] { return find_carrier_change("va", true, mark) >= 0; }))
      << "no Changed event with carrier for va";
  EXPECT_TRUE(table_carrier("va"));
  for (const auto& e : events_) EXPECT_EQ(e.type, LinkEventType::Changed) << e.link.name;
}

// A bridge has carrier while one of its ports forwards: the last port losing
// its carrier takes the bridge's. (Without STP, the default, a port forwards
// as soon as it has carrier.)
TEST_F(LinkWatcherCarrierTest, BridgeLosesCarrierWithItsLastUpPort) {
  ns_->ip("link add br0 type bridge");
  ns_->ip("link add va type veth peer name vb");
  ns_->ip("link add pa type veth peer name pb");
  ns_->ip("link set va master br0");
  ns_->ip("link set pa master br0");
  for (const char* dev : {"br0", "va", "vb", "pa", "pb"}) ns_->ip(std::string("link set ") + dev + " up");
  start();
  ASSERT_TRUE(pump_until([&] { return table_carrier("br0"); })) << "br0 never had carrier";
  events_.clear();

  ns_->ip("link set vb down");
  ASSERT_TRUE(pump_until([&] { return find_carrier_change("va", false) >= 0; }));
  // The bridge's carrier follows through the kernel's linkwatch, which may
  // delay it by up to a second: give it that long to (wrongly) go.
  pump_until([] { return false; }, 1500ms);
  EXPECT_EQ(find_carrier_change("br0", false), -1) << "pa still forwards";
  EXPECT_TRUE(table_carrier("br0"));

  ns_->ip("link set pb down");
  ASSERT_TRUE(pump_until([&] { return find_carrier_change("br0", false) >= 0; }))
      << "no Changed event without carrier for br0";
  const LinkEvent& lost = events_[static_cast<size_t>(find_carrier_change("br0", false))];
  EXPECT_TRUE(lost.link.flags & IFF_UP) << "br0 itself stays up";
  EXPECT_FALSE(table_carrier("br0"));

  const size_t mark = events_.size();
  ns_->ip("link set pb up");
  ASSERT_TRUE(pump_until([&] { return find_carrier_change("br0", true, mark) >= 0; }))
      << "no Changed event with carrier for br0";
  EXPECT_TRUE(table_carrier("br0"));
}

class LinkWatcherOverrunTest : public LinkWatcherTest {
 protected:
  // A tiny receive buffer: a handful of notifications overrun it.
  static constexpr size_t kTinyRcvbuf = 4096;

  // Creates `count` veth pairs sN/pN and deletes the even ones in one
  // `ip -batch`, while nobody reads the watcher's socket. The deletion goes by
  // group, which the kernel unregisters in one batch: one by one, each
  // deletion waits for an RCU grace period.
  void storm(int count) {
    std::ostringstream batch;
    for (int i = 0; i < count; ++i)
      batch << "link add s" << i << " type veth peer name p" << i << "\n";
    for (int i = 0; i < count; i += 2) batch << "link set s" << i << " group 7\n";
    batch << "link del group 7\n";
    ns_->run_ok("printf '" + batch.str() + "' | ip -batch -");
  }
};

TEST_F(LinkWatcherOverrunTest, StormOverrunResyncsToTheKernelTable) {
  start(kTinyRcvbuf);
  storm(150);
  ASSERT_TRUE(
      pump_until([&] { return watcher_->overruns() > 0 && table_links() == kernel_links(); }, 20s))
      << "overruns " << watcher_->overruns() << ", table " << watcher_->table().size()
      << " links, kernel " << kernel_links().size();
  EXPECT_EQ(watcher_->table().size(), 1u + 150u);
  for (int i = 0; i < 150; ++i) {
    for (const std::string& name : {"s" + std::to_string(i), "p" + std::to_string(i)}) {
      if (i % 2 == 0) {
        EXPECT_EQ(watcher_->table().find_by_name(name), nullptr) << name;
      } else {
        EXPECT_GE(find_event(LinkEventType::Added, name), 0) << name;
      }
    }
  }
}

// A re-dump of a thousand links runs a few datagrams per loop iteration, so
// the control socket and QMP are served while it runs; it still ends with
// the kernel's table.
TEST_F(LinkWatcherOverrunTest, ReDumpYieldsToTheLoop) {
  start(kTinyRcvbuf);
  storm(2000);  // 2000 links are left: a dump of about 60 datagrams
  int iterations_mid_dump = 0;
  ASSERT_TRUE(pump_until(
      [&] {
        if (watcher_->resyncing()) ++iterations_mid_dump;
        return watcher_->overruns() > 0 && !watcher_->resyncing() && table_links() == kernel_links();
      },
      30s));
  EXPECT_GE(iterations_mid_dump, 3) << "the re-dump did not return to the loop";
  EXPECT_EQ(watcher_->table().size(), 1u + 2000u);
}

// keep0 is deleted and re-created while notifications are being dropped: the
// re-dump must still report the old one gone and the new one there.
TEST_F(LinkWatcherOverrunTest, LinkRecreatedDuringOverrunIsRemovedAndAdded) {
  ns_->ip("link add keep0 type bridge");
  start(kTinyRcvbuf);
  int old_index = ns_->ifindex("keep0");
  storm(50);
  ns_->ip("link del keep0");
  ns_->ip("link add keep0 type bridge");
  int new_index = ns_->ifindex("keep0");
  ASSERT_NE(new_index, old_index);

  ASSERT_TRUE(
      pump_until([&] { return watcher_->overruns() > 0 && table_links() == kernel_links(); }, 20s));
  int removed = find_event(LinkEventType::Removed, "keep0", old_index);
  int added = find_event(LinkEventType::Added, "keep0", new_index);
  ASSERT_GE(removed, 0);
  ASSERT_GE(added, 0);
  EXPECT_LT(removed, added);
  EXPECT_EQ(watcher_->table().find_by_name("keep0")->ifindex, new_index);
}

}  // namespace
}  // namespace relink::netlink
