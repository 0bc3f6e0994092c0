// SPDX-License-Identifier: GPL-2.0-or-later
#include "engine/binding.h"

#include <gtest/gtest.h>

namespace relink::engine {
namespace {

// Helpers to read actions.
template <typename T>
const T* nth(const std::vector<Action>& a, size_t i) {
  return i < a.size() ? std::get_if<T>(&a[i]) : nullptr;
}

struct BindingTest : ::testing::Test {
  Binding b{"vm/nic0"};

  // Drives a binding to Attached on parent 10 with macvtap 20; returns its generation.
  uint64_t attach_on(int parent = 10, int macvtap = 20) {
    (void)b.handle(ParentChanged{parent});
    auto a = b.handle(VmConnected{});
    EXPECT_EQ(b.state(), State::Attaching);
    auto* at = nth<Attach>(a, 0);
    EXPECT_NE(at, nullptr);
    (void)b.handle(AttachSucceeded{b.generation(), macvtap});
    EXPECT_EQ(b.state(), State::Attached);
    return b.generation();
  }
  void to_backoff() {
    attach_on();
    (void)b.handle(ReattachRequested{});
    (void)b.handle(AttachFailed{b.generation(), "boom"});
    ASSERT_EQ(b.state(), State::Backoff);
  }
};

TEST(StateName, AllStatesHaveDesignNames) {
  EXPECT_STREQ(state_name(State::VmOffline), "vm-offline");
  EXPECT_STREQ(state_name(State::Releasing), "releasing");
  EXPECT_STREQ(state_name(State::WaitingParent), "waiting-parent");
  EXPECT_STREQ(state_name(State::Attaching), "attaching");
  EXPECT_STREQ(state_name(State::Attached), "attached");
  EXPECT_STREQ(state_name(State::Backoff), "backoff");
  EXPECT_STREQ(state_name(State::Failed), "failed");
}

TEST(RetryPolicy, DoublesFromInitialToMax) {
  RetryPolicy p;
  EXPECT_EQ(p.delay_after(1), 100u);
  EXPECT_EQ(p.delay_after(2), 200u);
  EXPECT_EQ(p.delay_after(3), 400u);
  EXPECT_EQ(p.delay_after(9), 25'600u);
  EXPECT_EQ(p.delay_after(10), 30'000u);
  EXPECT_EQ(p.delay_after(1000), 30'000u);
}

// --- VmOffline --------------------------------------------------------------

TEST_F(BindingTest, StartsOfflineAndOnlyRecordsParent) {
  EXPECT_EQ(b.state(), State::VmOffline);
  EXPECT_TRUE(b.handle(ParentChanged{10}).empty());
  EXPECT_TRUE(b.handle(LinkRemoved{10}).empty());
  EXPECT_TRUE(b.handle(TimerExpired{}).empty());
  EXPECT_TRUE(b.handle(ReattachRequested{}).empty());
  EXPECT_TRUE(b.handle(AttachFailed{1, "x"}).empty());
  EXPECT_TRUE(b.handle(VmDisconnected{}).empty());
  EXPECT_EQ(b.state(), State::VmOffline);
  EXPECT_EQ(b.parent_ifindex(), 10);
}

TEST_F(BindingTest, VmConnectedWithParentAttaches) {
  (void)b.handle(ParentChanged{10});
  auto a = b.handle(VmConnected{});
  ASSERT_EQ(a.size(), 1u);
  auto* at = nth<Attach>(a, 0);
  ASSERT_NE(at, nullptr);
  EXPECT_EQ(at->parent_ifindex, 10);
  EXPECT_EQ(at->generation, 1u);
  EXPECT_EQ(b.state(), State::Attaching);
}

TEST_F(BindingTest, VmConnectedWithoutParentWaitsWithTheLinkDown) {
  auto a = b.handle(VmConnected{});
  ASSERT_EQ(a.size(), 1u);
  ASSERT_NE(nth<SetLink>(a, 0), nullptr);
  EXPECT_FALSE(nth<SetLink>(a, 0)->up);  // the NIC has no live tap
  EXPECT_EQ(b.state(), State::WaitingParent);
}

// The attach was decided without carrier; the carrier came before the
// hand-over, which gave the NIC its link up: nothing more to set.
TEST_F(BindingTest, AnAttachThatGaveTheLinkUpNeedsNoSetLink) {
  (void)b.handle(ParentChanged{10, false});
  auto a = b.handle(VmConnected{});
  ASSERT_NE(nth<Attach>(a, 0), nullptr);
  EXPECT_FALSE(nth<Attach>(a, 0)->link_up);
  EXPECT_TRUE(b.handle(ParentChanged{10, true}).empty());  // in flight: only noted
  EXPECT_TRUE(b.handle(AttachSucceeded{b.generation(), 20, true}).empty());
  EXPECT_EQ(b.link_up(), std::optional<bool>(true));
}

// Without what the hand-over gave, the carrier that came meanwhile is caught up.
TEST_F(BindingTest, AnAttachThatGaveTheLinkDownIsCaughtUpWithTheCarrier) {
  (void)b.handle(ParentChanged{10, false});
  (void)b.handle(VmConnected{});
  (void)b.handle(ParentChanged{10, true});
  auto a = b.handle(AttachSucceeded{b.generation(), 20, false});
  ASSERT_NE(nth<SetLink>(a, 0), nullptr);
  EXPECT_TRUE(nth<SetLink>(a, 0)->up);
}

TEST_F(BindingTest, VmConnectedContinuesAfterHighestGenerationSeen) {
  (void)b.handle(ParentChanged{10});
  auto a = b.handle(VmConnected{std::nullopt, 41});
  EXPECT_EQ(nth<Attach>(a, 0)->generation, 42u);
}

TEST_F(BindingTest, VmConnectedAdoptsLiveMacvtapOnCurrentParent) {
  (void)b.handle(ParentChanged{10});
  auto a = b.handle(VmConnected{VmConnected::Adopt{7, 20, 10}, 7});
  ASSERT_EQ(a.size(), 1u);  // only the link, set to the parent's carrier
  ASSERT_NE(nth<SetLink>(a, 0), nullptr);
  EXPECT_TRUE(nth<SetLink>(a, 0)->up);
  EXPECT_EQ(b.state(), State::Attached);
  EXPECT_EQ(b.generation(), 7u);
  EXPECT_EQ(b.macvtap_ifindex(), 20);
}

TEST_F(BindingTest, VmConnectedDoesNotAdoptMacvtapOnOldParent) {
  (void)b.handle(ParentChanged{11});
  auto a = b.handle(VmConnected{VmConnected::Adopt{7, 20, 10}, 7});
  ASSERT_NE(nth<Attach>(a, 0), nullptr);
  EXPECT_EQ(nth<Attach>(a, 0)->generation, 8u);
  EXPECT_EQ(b.state(), State::Attaching);
}

// --- WaitingParent ----------------------------------------------------------

TEST_F(BindingTest, WaitingParentAttachesWhenParentAppears) {
  (void)b.handle(VmConnected{});
  EXPECT_TRUE(b.handle(ParentChanged{0}).empty());
  EXPECT_TRUE(b.handle(LinkRemoved{5}).empty());
  EXPECT_TRUE(b.handle(TimerExpired{}).empty());
  EXPECT_TRUE(b.handle(AttachSucceeded{9, 9}).size() == 1);  // stray success is undone
  EXPECT_EQ(b.state(), State::WaitingParent);
  auto a = b.handle(ParentChanged{12});
  ASSERT_NE(nth<Attach>(a, 0), nullptr);
  EXPECT_EQ(nth<Attach>(a, 0)->parent_ifindex, 12);
  EXPECT_EQ(b.state(), State::Attaching);
}

TEST_F(BindingTest, WaitingParentReattachStaysWaiting) {
  (void)b.handle(VmConnected{});
  EXPECT_TRUE(b.handle(ReattachRequested{}).empty());
  EXPECT_EQ(b.state(), State::WaitingParent);
}

TEST_F(BindingTest, WaitingParentGoesOfflineWithVm) {
  (void)b.handle(VmConnected{});
  EXPECT_TRUE(b.handle(VmDisconnected{true}).empty());
  EXPECT_EQ(b.state(), State::VmOffline);
}

// --- Attaching --------------------------------------------------------------

TEST_F(BindingTest, AttachingSucceeds) {
  attach_on(10, 20);
  EXPECT_EQ(b.macvtap_ifindex(), 20);
  EXPECT_EQ(b.attached_parent_ifindex(), 10);
  EXPECT_EQ(b.failures(), 0u);
}

TEST_F(BindingTest, AttachingFailureBacksOff) {
  (void)b.handle(ParentChanged{10});
  (void)b.handle(VmConnected{});
  auto a = b.handle(AttachFailed{1, "netdev_add: GenericError"});
  ASSERT_NE(nth<StartTimer>(a, 0), nullptr);
  EXPECT_EQ(nth<StartTimer>(a, 0)->delay_ms, 100u);
  EXPECT_EQ(b.state(), State::Backoff);
  EXPECT_EQ(b.last_error(), "netdev_add: GenericError");
}

TEST_F(BindingTest, AttachingIgnoresStaleFailure) {
  (void)b.handle(ParentChanged{10});
  (void)b.handle(VmConnected{});
  EXPECT_TRUE(b.handle(AttachFailed{0, "old"}).empty());
  EXPECT_EQ(b.state(), State::Attaching);
}

TEST_F(BindingTest, AttachingUndoesStaleSuccess) {
  (void)b.handle(ParentChanged{10});
  (void)b.handle(VmConnected{});
  (void)b.handle(ParentChanged{11});  // generation 2 replaces 1
  auto a = b.handle(AttachSucceeded{1, 30});
  ASSERT_NE(nth<Detach>(a, 0), nullptr);
  EXPECT_EQ(nth<Detach>(a, 0)->generation, 1u);
  EXPECT_EQ(nth<Detach>(a, 0)->macvtap_ifindex, 30);
  EXPECT_FALSE(nth<Detach>(a, 0)->link_down);  // generation 2 owns the link now
  EXPECT_EQ(b.state(), State::Attaching);
  EXPECT_EQ(b.generation(), 2u);
}

TEST_F(BindingTest, AttachingParentReplacedRestartsOnNewParent) {
  (void)b.handle(ParentChanged{10});
  (void)b.handle(VmConnected{});
  auto a = b.handle(ParentChanged{11});
  ASSERT_EQ(a.size(), 2u);
  EXPECT_EQ(nth<Detach>(a, 0)->generation, 1u);
  EXPECT_EQ(nth<Attach>(a, 1)->generation, 2u);
  EXPECT_EQ(nth<Attach>(a, 1)->parent_ifindex, 11);
}

TEST_F(BindingTest, AttachingParentGoneWaits) {
  (void)b.handle(ParentChanged{10});
  (void)b.handle(VmConnected{});
  auto a = b.handle(ParentChanged{0});
  ASSERT_EQ(a.size(), 1u);
  EXPECT_NE(nth<Detach>(a, 0), nullptr);
  EXPECT_EQ(b.state(), State::WaitingParent);
}

TEST_F(BindingTest, AttachingSameParentAgainIsNoop) {
  (void)b.handle(ParentChanged{10});
  (void)b.handle(VmConnected{});
  EXPECT_TRUE(b.handle(ParentChanged{10}).empty());
  EXPECT_TRUE(b.handle(TimerExpired{}).empty());
  EXPECT_TRUE(b.handle(LinkRemoved{99}).empty());
  EXPECT_EQ(b.state(), State::Attaching);
}

TEST_F(BindingTest, AttachingVmLostGoesOffline) {
  (void)b.handle(ParentChanged{10});
  (void)b.handle(VmConnected{});
  EXPECT_TRUE(b.handle(VmDisconnected{true}).empty());
  EXPECT_EQ(b.state(), State::VmOffline);
  // The attempt's late failure changes nothing.
  EXPECT_TRUE(b.handle(AttachFailed{1, "ECONNRESET"}).empty());
  EXPECT_EQ(b.state(), State::VmOffline);
}

TEST_F(BindingTest, AttachingReattachRestarts) {
  (void)b.handle(ParentChanged{10});
  (void)b.handle(VmConnected{});
  auto a = b.handle(ReattachRequested{});
  ASSERT_EQ(a.size(), 2u);
  EXPECT_EQ(nth<Detach>(a, 0)->generation, 1u);
  EXPECT_EQ(nth<Attach>(a, 1)->generation, 2u);
}

// --- Attached ---------------------------------------------------------------

TEST_F(BindingTest, AttachedParentDeletedThenBack) {
  auto gen = attach_on(10, 20);
  // Rename away / parent message first: the macvtap still lives.
  EXPECT_TRUE(b.handle(ParentChanged{0}).empty());
  EXPECT_EQ(b.state(), State::Attached);
  // The kernel deletes the macvtap with its parent.
  auto a = b.handle(LinkRemoved{20});
  ASSERT_EQ(a.size(), 1u);
  EXPECT_EQ(nth<Detach>(a, 0)->generation, gen);
  EXPECT_EQ(nth<Detach>(a, 0)->macvtap_ifindex, 0);
  EXPECT_TRUE(nth<Detach>(a, 0)->link_down);  // no uplink until the parent returns
  EXPECT_EQ(b.state(), State::WaitingParent);
  a = b.handle(ParentChanged{15});
  EXPECT_EQ(nth<Attach>(a, 0)->generation, gen + 1);
  EXPECT_EQ(nth<Attach>(a, 0)->parent_ifindex, 15);
}

TEST_F(BindingTest, AttachedMacvtapRemovedWhileParentStaysReattachesAtOnce) {
  auto gen = attach_on(10, 20);
  auto a = b.handle(LinkRemoved{20});
  ASSERT_EQ(a.size(), 2u);
  EXPECT_EQ(nth<Detach>(a, 0)->generation, gen);
  EXPECT_EQ(nth<Attach>(a, 1)->parent_ifindex, 10);
  EXPECT_EQ(b.state(), State::Attaching);
}

TEST_F(BindingTest, AttachedParentDeletedButMacvtapSurvivesIsDetached) {
  // A macvtap made on a macvlan sits on the macvlan's lower device: deleting
  // the macvlan leaves it alive, and relinkd must take it down itself.
  auto gen = attach_on(10, 20);
  EXPECT_TRUE(b.handle(ParentChanged{0}).empty());
  EXPECT_TRUE(b.handle(ParentRemoved{11}).empty());  // some other interface
  auto a = b.handle(ParentRemoved{10});
  ASSERT_EQ(a.size(), 1u);
  EXPECT_EQ(nth<Detach>(a, 0)->generation, gen);
  EXPECT_EQ(nth<Detach>(a, 0)->macvtap_ifindex, 20);
  EXPECT_TRUE(nth<Detach>(a, 0)->link_down);
  EXPECT_EQ(b.state(), State::WaitingParent);
  // The macvtap's own removal afterwards changes nothing.
  EXPECT_TRUE(b.handle(LinkRemoved{20}).empty());
}

TEST_F(BindingTest, ParentRemovedOutsideAttachedIsIgnored) {
  (void)b.handle(ParentChanged{10});
  EXPECT_TRUE(b.handle(ParentRemoved{10}).empty());  // offline
  (void)b.handle(VmConnected{});
  EXPECT_TRUE(b.handle(ParentRemoved{10}).empty());  // attaching
  EXPECT_EQ(b.state(), State::Attaching);
}

TEST_F(BindingTest, AttachedRenameAwayAndBackKeepsGeneration) {
  auto gen = attach_on(10, 20);
  EXPECT_TRUE(b.handle(ParentChanged{0}).empty());
  EXPECT_TRUE(b.handle(ParentChanged{10}).empty());
  EXPECT_EQ(b.state(), State::Attached);
  EXPECT_EQ(b.generation(), gen);
}

TEST_F(BindingTest, AttachedNameMovesToNewInterface) {
  auto gen = attach_on(10, 20);
  auto a = b.handle(ParentChanged{33});
  ASSERT_EQ(a.size(), 2u);
  EXPECT_EQ(nth<Detach>(a, 0)->generation, gen);
  EXPECT_EQ(nth<Detach>(a, 0)->macvtap_ifindex, 20);
  EXPECT_FALSE(nth<Detach>(a, 0)->link_down);  // the next attach follows at once
  EXPECT_EQ(nth<Attach>(a, 1)->parent_ifindex, 33);
}

TEST_F(BindingTest, AttachedIgnoresOtherLinksTimersAndDuplicates) {
  auto gen = attach_on(10, 20);
  EXPECT_TRUE(b.handle(LinkRemoved{21}).empty());
  EXPECT_TRUE(b.handle(TimerExpired{}).empty());
  EXPECT_TRUE(b.handle(AttachFailed{gen, "late"}).empty());
  EXPECT_TRUE(b.handle(AttachSucceeded{gen, 20}).empty());
  EXPECT_TRUE(b.handle(VmConnected{}).empty());
  EXPECT_EQ(b.state(), State::Attached);
}

TEST_F(BindingTest, AttachedVmExitedDeletesMacvtap) {
  auto gen = attach_on(10, 20);
  auto a = b.handle(VmDisconnected{true});
  ASSERT_EQ(a.size(), 1u);
  EXPECT_EQ(nth<Detach>(a, 0)->generation, gen);
  EXPECT_EQ(nth<Detach>(a, 0)->macvtap_ifindex, 20);
  EXPECT_EQ(b.state(), State::VmOffline);
}

TEST_F(BindingTest, AttachedSessionLostButVmAliveKeepsMacvtap) {
  attach_on(10, 20);
  EXPECT_TRUE(b.handle(VmDisconnected{false}).empty());
  EXPECT_EQ(b.state(), State::VmOffline);
}

TEST_F(BindingTest, AttachedReattachReplacesGeneration) {
  auto gen = attach_on(10, 20);
  auto a = b.handle(ReattachRequested{});
  ASSERT_EQ(a.size(), 2u);
  EXPECT_EQ(nth<Detach>(a, 0)->macvtap_ifindex, 20);
  EXPECT_EQ(nth<Attach>(a, 1)->generation, gen + 1);
}

// --- Backoff ----------------------------------------------------------------

TEST_F(BindingTest, BackoffRetriesOnTimer) {
  to_backoff();
  auto a = b.handle(TimerExpired{});
  ASSERT_NE(nth<Attach>(a, 0), nullptr);
  EXPECT_EQ(b.state(), State::Attaching);
}

TEST_F(BindingTest, BackoffTimerWithoutParentWaits) {
  to_backoff();
  EXPECT_TRUE(b.handle(ParentChanged{0}).size() == 1);  // CancelTimer
  EXPECT_EQ(b.state(), State::WaitingParent);
  EXPECT_TRUE(b.handle(TimerExpired{}).empty());
}

TEST_F(BindingTest, BackoffNewParentRetriesAtOnce) {
  to_backoff();
  auto a = b.handle(ParentChanged{44});
  ASSERT_EQ(a.size(), 2u);
  EXPECT_NE(nth<CancelTimer>(a, 0), nullptr);
  EXPECT_EQ(nth<Attach>(a, 1)->parent_ifindex, 44);
  EXPECT_EQ(b.failures(), 0u);
}

TEST_F(BindingTest, BackoffSameParentWaitsForTimer) {
  to_backoff();
  EXPECT_TRUE(b.handle(ParentChanged{10}).empty());
  EXPECT_TRUE(b.handle(LinkRemoved{20}).empty());
  EXPECT_EQ(b.state(), State::Backoff);
}

TEST_F(BindingTest, BackoffVmLostCancelsTimer) {
  to_backoff();
  auto a = b.handle(VmDisconnected{false});
  ASSERT_EQ(a.size(), 1u);
  EXPECT_NE(nth<CancelTimer>(a, 0), nullptr);
  EXPECT_EQ(b.state(), State::VmOffline);
}

TEST_F(BindingTest, BackoffReattachCancelsTimerAndRetries) {
  to_backoff();
  auto a = b.handle(ReattachRequested{});
  ASSERT_EQ(a.size(), 2u);
  EXPECT_NE(nth<CancelTimer>(a, 0), nullptr);
  EXPECT_NE(nth<Attach>(a, 1), nullptr);
}

TEST_F(BindingTest, BackoffIgnoresAttachResults) {
  to_backoff();
  EXPECT_TRUE(b.handle(AttachFailed{b.generation(), "again"}).empty());
  EXPECT_EQ(b.state(), State::Backoff);
}

// --- Failed -----------------------------------------------------------------

TEST_F(BindingTest, RepeatedFailuresEndInFailedWithGrowingDelays) {
  RetryPolicy p;
  p.max_failures = 4;
  Binding f("vm/nic1", p);
  (void)f.handle(ParentChanged{10});
  (void)f.handle(VmConnected{});
  std::vector<uint64_t> delays;
  for (int i = 0; i < 4; ++i) {
    auto a = f.handle(AttachFailed{f.generation(), "no"});
    if (auto* t = nth<StartTimer>(a, 0)) delays.push_back(t->delay_ms);
    (void)f.handle(TimerExpired{});
  }
  EXPECT_EQ(delays, (std::vector<uint64_t>{100, 200, 400}));
  EXPECT_EQ(f.state(), State::Failed);
  EXPECT_EQ(f.failures(), 4u);
  // Failed stays failed on timers and the same parent...
  EXPECT_TRUE(f.handle(TimerExpired{}).empty());
  EXPECT_TRUE(f.handle(ParentChanged{10}).empty());
  EXPECT_EQ(f.state(), State::Failed);
  // ...and tries again on a reattach.
  auto a = f.handle(ReattachRequested{});
  EXPECT_NE(nth<Attach>(a, 0), nullptr);
  EXPECT_EQ(f.failures(), 0u);
}

TEST_F(BindingTest, FailedNewParentTriesAgain) {
  RetryPolicy p;
  p.max_failures = 1;
  Binding f("vm/nic1", p);
  (void)f.handle(ParentChanged{10});
  (void)f.handle(VmConnected{});
  (void)f.handle(AttachFailed{f.generation(), "no"});
  ASSERT_EQ(f.state(), State::Failed);
  auto a = f.handle(ParentChanged{0});
  EXPECT_EQ(f.state(), State::WaitingParent);
  a = f.handle(ParentChanged{12});
  EXPECT_NE(nth<Attach>(a, 0), nullptr);
  EXPECT_EQ(f.state(), State::Attaching);
}

TEST_F(BindingTest, FailedGoesOfflineWithVm) {
  RetryPolicy p;
  p.max_failures = 1;
  Binding f("vm/nic1", p);
  (void)f.handle(ParentChanged{10});
  (void)f.handle(VmConnected{});
  (void)f.handle(AttachFailed{f.generation(), "no"});
  EXPECT_TRUE(f.handle(VmDisconnected{true}).empty());
  EXPECT_EQ(f.state(), State::VmOffline);
  auto a = f.handle(VmConnected{});
  EXPECT_NE(nth<Attach>(a, 0), nullptr);
  EXPECT_EQ(f.failures(), 0u);
}

// --- Flapping ---------------------------------------------------------------

TEST_F(BindingTest, TwentyFlapsBumpGenerationEachTime) {
  attach_on(10, 20);
  int parent = 10, macvtap = 20;
  for (int i = 0; i < 20; ++i) {
    auto gen = b.generation();
    // The daemon reports the parent gone before the macvtap's removal (the
    // kernel unlists the parent before it deletes the macvtaps on it).
    ASSERT_TRUE(b.handle(ParentChanged{0}).empty());
    (void)b.handle(LinkRemoved{macvtap});
    ASSERT_EQ(b.state(), State::WaitingParent);
    parent += 2;
    macvtap += 2;
    auto a = b.handle(ParentChanged{parent});
    ASSERT_EQ(nth<Attach>(a, 0)->generation, gen + 1);
    (void)b.handle(AttachSucceeded{gen + 1, macvtap});
    ASSERT_EQ(b.state(), State::Attached);
  }
  EXPECT_EQ(b.generation(), 21u);
}

}  // namespace
}  // namespace relink::engine
