// SPDX-License-Identifier: GPL-2.0-or-later
// The engine with release = "on-loss" (replug): the guest lets go of the NIC
// as soon as the parent is gone, and the parent's return only plugs it in.
#include <gtest/gtest.h>

#include "engine/binding.h"

namespace relink::engine {
namespace {

template <typename T>
const T* find(const std::vector<Action>& a) {
  for (const auto& x : a)
    if (auto* p = std::get_if<T>(&x)) return p;
  return nullptr;
}

Style on_loss_style() {
  Style s;
  s.replug = true;
  s.release_timeout_ms = 10'000;
  s.release_on_loss = true;
  s.nic = "net0";
  return s;
}

struct OnLossTest : ::testing::Test {
  Binding b{"vm/net0", RetryPolicy{}, on_loss_style()};

  // QEMU connects with the launcher's tap on parent 10 (macvtap 20) adopted.
  void adopt() {
    (void)b.handle(ParentChanged{10});
    (void)b.handle(VmConnected{VmConnected::Adopt{0, 20, 10}, 0, true});
    ASSERT_EQ(b.state(), State::Attached);
  }
  // Adopted, then the parent is deleted: its name resolves to nothing, then
  // the interface is reported gone. The release is asked for at once.
  std::vector<Action> lose_parent() {
    adopt();
    EXPECT_TRUE(b.handle(ParentChanged{0}).empty());
    auto a = b.handle(ParentRemoved{10});
    EXPECT_EQ(b.state(), State::Releasing);
    return a;
  }
  // Lost, and the guest let go of the NIC.
  void released_while_away() {
    (void)lose_parent();
    auto a = b.handle(Released{});
    ASSERT_EQ(b.state(), State::WaitingParent);
    ASSERT_NE(find<CancelTimer>(a), nullptr);
    ASSERT_EQ(find<Attach>(a), nullptr) << "no device_add without a parent";
    ASSERT_FALSE(b.nic_present());
  }
};

TEST_F(OnLossTest, ParentGoneReleasesAtOnceAndDetachesTheDeadTap) {
  auto a = lose_parent();
  ASSERT_NE(find<Detach>(a), nullptr);
  EXPECT_EQ(find<Detach>(a)->macvtap_ifindex, 20);
  EXPECT_TRUE(find<Detach>(a)->link_down);
  EXPECT_NE(find<Release>(a), nullptr);
  ASSERT_NE(find<StartTimer>(a), nullptr);
  EXPECT_EQ(find<StartTimer>(a)->delay_ms, 10'000u);
  EXPECT_EQ(find<Attach>(a), nullptr);
  EXPECT_TRUE(b.release_pending());
  // The macvtap went with its parent: nothing more to do.
  EXPECT_TRUE(b.handle(LinkRemoved{20}).empty());
  EXPECT_EQ(b.state(), State::Releasing);
}

TEST_F(OnLossTest, ReturnOnlyPlugsTheNicIn) {
  released_while_away();
  auto a = b.handle(ParentChanged{11});
  EXPECT_EQ(find<Release>(a), nullptr);
  ASSERT_NE(find<Attach>(a), nullptr);
  EXPECT_EQ(find<Attach>(a)->parent_ifindex, 11);
  EXPECT_EQ(b.state(), State::Attaching);
  (void)b.handle(AttachSucceeded{b.generation(), 30});
  EXPECT_EQ(b.state(), State::Attached);
  EXPECT_TRUE(b.nic_present());
}

TEST_F(OnLossTest, RepeatedFlapsReleaseEachTime) {
  adopt();
  int parent = 10, macvtap = 20;
  for (int i = 0; i < 5; ++i) {
    (void)b.handle(ParentChanged{0});
    auto a = b.handle(LinkRemoved{macvtap});  // the macvtap's removal seen first
    ASSERT_NE(find<Release>(a), nullptr) << "flap " << i;
    EXPECT_TRUE(b.handle(ParentRemoved{parent}).empty()) << "flap " << i;
    (void)b.handle(Released{});
    parent = 11 + i;
    macvtap = 30 + i;
    a = b.handle(ParentChanged{parent});
    ASSERT_NE(find<Attach>(a), nullptr) << "flap " << i;
    (void)b.handle(AttachSucceeded{b.generation(), macvtap});
    ASSERT_EQ(b.state(), State::Attached) << "flap " << i;
  }
}

TEST_F(OnLossTest, ParentDeletedWhileItsNameStillResolvesReleasesToo) {
  adopt();
  // Reported gone before its name stops resolving: released all the same.
  auto a = b.handle(ParentRemoved{10});
  EXPECT_EQ(b.state(), State::Releasing);
  EXPECT_NE(find<Release>(a), nullptr);
}

TEST_F(OnLossTest, ParentRenamedAwayIsNotALoss) {
  adopt();
  // Its macvtap still sits on a live interface and passes traffic.
  EXPECT_TRUE(b.handle(ParentChanged{0}).empty());
  EXPECT_EQ(b.state(), State::Attached);
  EXPECT_TRUE(b.handle(ParentChanged{10}).empty());  // renamed back
  EXPECT_EQ(b.state(), State::Attached);
}

TEST_F(OnLossTest, ParentBackWhileTheReleaseIsInFlightContinuesAsToday) {
  (void)lose_parent();
  auto a = b.handle(ParentChanged{11});
  EXPECT_TRUE(a.empty()) << "the release goes on; no second NIC beside the old one";
  EXPECT_EQ(b.state(), State::Releasing);
  a = b.handle(Released{});
  ASSERT_NE(find<Attach>(a), nullptr);
  EXPECT_EQ(find<Attach>(a)->parent_ifindex, 11);
}

TEST_F(OnLossTest, ParentGoneAgainDuringAReturnsReleaseKeepsReleasing) {
  (void)lose_parent();
  (void)b.handle(ParentChanged{11});
  auto a = b.handle(ParentChanged{0});
  EXPECT_EQ(b.state(), State::Releasing);
  EXPECT_EQ(find<CancelTimer>(a), nullptr) << "the release's timeout still runs";
  (void)b.handle(Released{});
  EXPECT_EQ(b.state(), State::WaitingParent);
}

TEST_F(OnLossTest, CarrierLossIsNotALoss) {
  adopt();
  auto a = b.handle(ParentChanged{10, false});
  EXPECT_EQ(b.state(), State::Attached);
  EXPECT_EQ(find<Release>(a), nullptr);
  ASSERT_NE(find<SetLink>(a), nullptr);
  EXPECT_FALSE(find<SetLink>(a)->up);
}

TEST_F(OnLossTest, GuestThatCannotReleaseBacksOffAndIsAskedAgain) {
  (void)lose_parent();
  auto a = b.handle(TimerExpired{});  // paused: no DEVICE_DELETED
  EXPECT_EQ(b.state(), State::Backoff);
  EXPECT_NE(b.last_error().find("did not release net0"), std::string::npos);
  a = b.handle(TimerExpired{});
  EXPECT_EQ(b.state(), State::Releasing);
  EXPECT_NE(find<Release>(a), nullptr);
  // The parent returns before the guest answers: still no device_add.
  a = b.handle(ParentChanged{11});
  EXPECT_EQ(find<Attach>(a), nullptr);
  (void)b.handle(TimerExpired{});
  ASSERT_EQ(b.state(), State::Backoff);
  // Resumed: the release completes and the attach goes on at once.
  a = b.handle(Released{});
  EXPECT_NE(find<CancelTimer>(a), nullptr);
  ASSERT_NE(find<Attach>(a), nullptr);
  EXPECT_EQ(b.failures(), 0u);
}

TEST_F(OnLossTest, LateReleaseDuringTheOutageWaitsForTheParent) {
  Binding f{"vm/net0", RetryPolicy{100, 1000, 1}, on_loss_style()};
  (void)f.handle(ParentChanged{10});
  (void)f.handle(VmConnected{VmConnected::Adopt{0, 20, 10}, 0, true});
  (void)f.handle(ParentChanged{0});
  (void)f.handle(LinkRemoved{20});
  ASSERT_EQ(f.state(), State::Releasing);
  (void)f.handle(TimerExpired{});
  ASSERT_EQ(f.state(), State::Failed);
  auto a = f.handle(Released{});
  EXPECT_EQ(f.state(), State::WaitingParent);
  EXPECT_EQ(find<Attach>(a), nullptr);
  a = f.handle(ParentChanged{11});
  EXPECT_NE(find<Attach>(a), nullptr);
}

TEST_F(OnLossTest, RefusedReleaseBacksOffAndTheReturnTriesAgain) {
  (void)lose_parent();
  (void)b.handle(ReleaseFailed{"device_del net0: Bus 'pci.0' does not support hotplugging"});
  EXPECT_EQ(b.state(), State::Backoff);
  auto a = b.handle(ParentChanged{11});
  EXPECT_EQ(b.state(), State::Releasing);
  EXPECT_NE(find<Release>(a), nullptr);
  EXPECT_EQ(find<Attach>(a), nullptr);
}

TEST_F(OnLossTest, ReplugThatEndsWithoutAParentReleasesAgain) {
  released_while_away();
  (void)b.handle(ParentChanged{11});
  ASSERT_EQ(b.state(), State::Attaching);
  EXPECT_TRUE(b.handle(ParentChanged{0}).empty());
  auto a = b.handle(AttachSucceeded{b.generation(), 30});
  ASSERT_NE(find<Detach>(a), nullptr);
  EXPECT_NE(find<Release>(a), nullptr);
  EXPECT_EQ(b.state(), State::Releasing);
}

TEST_F(OnLossTest, ConnectingWithoutAParentReleasesAPresentNic) {
  auto a = b.handle(VmConnected{std::nullopt, 2, true});
  EXPECT_EQ(b.state(), State::Releasing);
  EXPECT_NE(find<Release>(a), nullptr);
  ASSERT_NE(find<SetLink>(a), nullptr);
  EXPECT_FALSE(find<SetLink>(a)->up);
}

TEST_F(OnLossTest, RestartAfterTheReleaseWaitsThenPlugsIn) {
  // relinkd restarted during the outage: QEMU has no NIC and no parent.
  auto a = b.handle(VmConnected{std::nullopt, 4, false});
  EXPECT_EQ(b.state(), State::WaitingParent);
  EXPECT_TRUE(a.empty());
  a = b.handle(ParentChanged{11});
  ASSERT_NE(find<Attach>(a), nullptr);
  EXPECT_EQ(find<Attach>(a)->generation, 5u);
  EXPECT_EQ(find<Release>(a), nullptr);
}

TEST_F(OnLossTest, ReattachDuringTheOutageKeepsWaiting) {
  released_while_away();
  auto a = b.handle(ReattachRequested{});
  EXPECT_EQ(b.state(), State::WaitingParent);
  EXPECT_EQ(find<Attach>(a), nullptr);
  EXPECT_EQ(find<Release>(a), nullptr);
}

TEST(OnLossStyle, HubIgnoresIt) {
  Style s = on_loss_style();
  s.replug = false;
  Binding h{"vm/net0", RetryPolicy{}, s};
  (void)h.handle(ParentChanged{10});
  (void)h.handle(VmConnected{VmConnected::Adopt{0, 20, 10}, 0, true});
  (void)h.handle(ParentChanged{0});
  auto a = h.handle(ParentRemoved{10});
  EXPECT_EQ(h.state(), State::WaitingParent);
  EXPECT_EQ(find<Release>(a), nullptr);
}

TEST(OnLossStyle, OnReturnKeepsTheNicThroughTheOutage) {
  Style s = on_loss_style();
  s.release_on_loss = false;
  Binding r{"vm/net0", RetryPolicy{}, s};
  (void)r.handle(ParentChanged{10});
  (void)r.handle(VmConnected{VmConnected::Adopt{0, 20, 10}, 0, true});
  EXPECT_TRUE(r.handle(ParentChanged{0}).empty());
  auto a = r.handle(LinkRemoved{20});
  EXPECT_EQ(r.state(), State::WaitingParent);
  EXPECT_EQ(find<Release>(a), nullptr);
  EXPECT_TRUE(r.nic_present());
}

}  // namespace
}  // namespace relink::engine
