// SPDX-License-Identifier: GPL-2.0-or-later
// The bridge port machine as data: what the host shows in, re-joins and timers out.
#include "engine/bridge_port_binding.h"

#include <gtest/gtest.h>

namespace relink::engine {
namespace {

constexpr int kTap = 7, kBr = 10, kNewBr = 11, kOther = 12;

PortObserved port_of(int bridge) { return {kTap, bridge, bridge}; }
PortObserved loose(int bridge) { return {kTap, 0, bridge}; }

std::optional<Rejoin> rejoin_in(const std::vector<PortAction>& actions) {
  for (const auto& a : actions)
    if (auto* r = std::get_if<Rejoin>(&a)) return *r;
  return std::nullopt;
}

bool starts_timer(const std::vector<PortAction>& actions, uint64_t ms) {
  for (const auto& a : actions)
    if (auto* t = std::get_if<StartPortTimer>(&a); t && t->ms == ms) return true;
  return false;
}

TEST(BridgePortBinding, BridgeRecreatedTapGoesBack) {
  BridgePortBinding b("vm/tap0");
  EXPECT_TRUE(b.handle(port_of(kBr)).empty());
  EXPECT_EQ(b.state(), PortState::Attached);
  // The kernel drops the port, then deletes the bridge.
  (void)b.handle(PortObserved{kTap, 0, 0});
  EXPECT_EQ(b.state(), PortState::WaitingBridge);
  auto r = rejoin_in(b.handle(loose(kNewBr)));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->tap, kTap);
  EXPECT_EQ(r->bridge, kNewBr);
  EXPECT_EQ(r->generation, 1u);
  EXPECT_TRUE(b.rejoining());
  // Nothing else starts while the re-join is in flight.
  EXPECT_TRUE(b.handle(loose(kNewBr)).empty());
  EXPECT_TRUE(b.handle(RejoinSucceeded{1}).empty());
  EXPECT_EQ(b.state(), PortState::Attached);
  EXPECT_EQ(b.joined_bridge(), kNewBr);
  // The kernel's notification of the new port changes nothing.
  EXPECT_TRUE(b.handle(port_of(kNewBr)).empty());
  EXPECT_EQ(b.state(), PortState::Attached);
}

// A re-dump after an overrun can show the old bridge gone and the new one
// there at once: a new ifindex under the name is enough.
TEST(BridgePortBinding, NewIfindexInOneBatchIsEnough) {
  BridgePortBinding b("vm/tap0");
  (void)b.handle(port_of(kBr));
  auto r = rejoin_in(b.handle(loose(kNewBr)));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->bridge, kNewBr);
}

TEST(BridgePortBinding, TakenOutByHandStaysOut) {
  BridgePortBinding b("vm/tap0");
  (void)b.handle(port_of(kBr));
  // Out of a bridge that still stands: maybe by hand, maybe the bridge is on its way out.
  auto a = b.handle(loose(kBr));
  EXPECT_TRUE(starts_timer(a, BridgePortBinding::kDetachGraceMs));
  EXPECT_EQ(b.state(), PortState::Detached);
  EXPECT_TRUE(b.handle(PortTimerExpired{}).empty());
  EXPECT_EQ(b.state(), PortState::Detached);
  // The bridge is re-created later: the tap stays out.
  (void)b.handle(loose(0));
  EXPECT_EQ(b.state(), PortState::Detached);
  EXPECT_FALSE(rejoin_in(b.handle(loose(kNewBr))));
  EXPECT_EQ(b.state(), PortState::Detached);
  // Put back by hand: followed again.
  (void)b.handle(port_of(kNewBr));
  EXPECT_EQ(b.state(), PortState::Attached);
}

TEST(BridgePortBinding, BridgeGoneWithinTheGraceIsNoDetach) {
  BridgePortBinding b("vm/tap0");
  (void)b.handle(port_of(kBr));
  (void)b.handle(loose(kBr));
  auto a = b.handle(loose(0));
  ASSERT_EQ(a.size(), 1u);
  EXPECT_TRUE(std::holds_alternative<CancelPortTimer>(a[0]));
  EXPECT_EQ(b.state(), PortState::WaitingBridge);
  // A late timer changes nothing.
  EXPECT_TRUE(b.handle(PortTimerExpired{}).empty());
  ASSERT_TRUE(rejoin_in(b.handle(loose(kNewBr))));
}

TEST(BridgePortBinding, MovedToAnotherBridgeIsLeftAlone) {
  BridgePortBinding b("vm/tap0");
  (void)b.handle(port_of(kBr));
  (void)b.handle(PortObserved{kTap, kOther, kBr});
  EXPECT_EQ(b.state(), PortState::Moved);
  EXPECT_FALSE(rejoin_in(b.handle(PortObserved{kTap, kOther, 0})));
  EXPECT_FALSE(rejoin_in(b.handle(PortObserved{kTap, kOther, kNewBr})));
  EXPECT_EQ(b.state(), PortState::Moved);
  // Taken out of the other bridge by hand too: still not relinkd's to put back.
  EXPECT_FALSE(rejoin_in(b.handle(loose(kNewBr))));
  EXPECT_EQ(b.state(), PortState::Detached);
  // relinkctl reattach does.
  auto r = rejoin_in(b.handle(RejoinRequested{}));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->bridge, kNewBr);
}

TEST(BridgePortBinding, DeletedTapIsNotComingBack) {
  BridgePortBinding b("vm/tap0");
  (void)b.handle(port_of(kBr));
  (void)b.handle(PortObserved{0, 0, kBr});
  EXPECT_EQ(b.state(), PortState::TapGone);
  EXPECT_TRUE(b.handle(PortObserved{0, 0, 0}).empty());
  EXPECT_TRUE(b.handle(PortObserved{0, 0, kNewBr}).empty());
  EXPECT_EQ(b.state(), PortState::TapGone);
  EXPECT_TRUE(b.handle(RejoinRequested{}).empty());
}

TEST(BridgePortBinding, FailuresBackOffThenFail) {
  BridgePortBinding b("vm/tap0");
  (void)b.handle(port_of(kBr));
  (void)b.handle(loose(0));
  auto r = rejoin_in(b.handle(loose(kNewBr)));
  ASSERT_TRUE(r);
  uint64_t expect_ms = BridgePortBinding::kBackoffInitialMs;
  for (unsigned i = 1; i < BridgePortBinding::kMaxFailures; ++i) {
    auto a = b.handle(RejoinFailed{r->generation, "EBUSY"});
    EXPECT_EQ(b.state(), PortState::Backoff);
    EXPECT_TRUE(starts_timer(a, expect_ms)) << i;
    expect_ms *= 2;
    // The same bridge seen again waits for the timer.
    EXPECT_FALSE(rejoin_in(b.handle(loose(kNewBr))));
    r = rejoin_in(b.handle(PortTimerExpired{}));
    ASSERT_TRUE(r) << i;
  }
  EXPECT_TRUE(b.handle(RejoinFailed{r->generation, "EBUSY"}).empty());
  EXPECT_EQ(b.state(), PortState::Failed);
  EXPECT_EQ(b.last_error(), "EBUSY");
  EXPECT_FALSE(rejoin_in(b.handle(loose(kNewBr))));
  // Another bridge of the name: a fresh start.
  ASSERT_TRUE(rejoin_in(b.handle(loose(kOther))));
}

TEST(BridgePortBinding, StaleResultsAreIgnored) {
  BridgePortBinding b("vm/tap0");
  (void)b.handle(port_of(kBr));
  (void)b.handle(loose(0));
  auto r = rejoin_in(b.handle(loose(kNewBr)));
  ASSERT_TRUE(r);
  EXPECT_TRUE(b.handle(RejoinSucceeded{r->generation + 1}).empty());
  EXPECT_TRUE(b.handle(RejoinFailed{r->generation - 1, "old"}).empty());
  EXPECT_TRUE(b.rejoining());
  (void)b.handle(RejoinSucceeded{r->generation});
  EXPECT_EQ(b.state(), PortState::Attached);
}

// relinkd started while the bridge was gone: the tap is put into the
// bridge when it comes (with the bridge's defaults, nothing else is known).
TEST(BridgePortBinding, StartedDuringTheOutage) {
  BridgePortBinding b("vm/tap0");
  (void)b.handle(loose(0));
  EXPECT_EQ(b.state(), PortState::WaitingBridge);
  ASSERT_TRUE(rejoin_in(b.handle(loose(kBr))));
}

// A tap that is in no bridge while the bridge stands, when relinkd starts,
// is not relinkd's to put there.
TEST(BridgePortBinding, NeverAPortIsLeftAlone) {
  BridgePortBinding b("vm/tap0");
  auto a = b.handle(loose(kBr));
  EXPECT_FALSE(rejoin_in(a));
  EXPECT_FALSE(starts_timer(a, BridgePortBinding::kDetachGraceMs));
  EXPECT_EQ(b.state(), PortState::Detached);
  EXPECT_EQ(std::string(port_state_name(b.state())), "detached");
}

}  // namespace
}  // namespace relink::engine
