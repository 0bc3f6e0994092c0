// SPDX-License-Identifier: GPL-2.0-or-later
// The engine with attach = "replug": the NIC is released (device_del, then
// DEVICE_DELETED) before every new tap, and plugged in anew with it. And
// carrier following, for both styles.
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
template <typename T>
size_t count(const std::vector<Action>& a) {
  size_t n = 0;
  for (const auto& x : a) n += std::holds_alternative<T>(x);
  return n;
}

Style replug_style() {
  Style s;
  s.replug = true;
  s.release_timeout_ms = 10'000;
  s.nic = "net0";
  return s;
}

struct ReplugTest : ::testing::Test {
  Binding b{"vm/net0", RetryPolicy{}, replug_style()};

  // QEMU connects with the launcher's tap on parent 10 (macvtap 20) adopted.
  void adopt() {
    (void)b.handle(ParentChanged{10});
    auto a = b.handle(VmConnected{VmConnected::Adopt{0, 20, 10}, 0, true});
    ASSERT_EQ(b.state(), State::Attached);
  }
  // Adopted, then the parent goes (the kernel deletes the macvtap with it).
  void lose_parent() {
    adopt();
    (void)b.handle(ParentChanged{0});
    auto a = b.handle(LinkRemoved{20});
    ASSERT_EQ(b.state(), State::WaitingParent);
    ASSERT_NE(find<Detach>(a), nullptr);
    EXPECT_TRUE(find<Detach>(a)->link_down);
  }
  // The parent is back: the NIC is being released.
  std::vector<Action> parent_back(int ifindex = 11) {
    lose_parent();
    auto a = b.handle(ParentChanged{ifindex});
    EXPECT_EQ(b.state(), State::Releasing);
    return a;
  }
};

TEST_F(ReplugTest, AdoptsTheLaunchersTap) {
  (void)b.handle(ParentChanged{10});
  auto a = b.handle(VmConnected{VmConnected::Adopt{0, 20, 10}, 0, true});
  EXPECT_EQ(b.state(), State::Attached);
  EXPECT_EQ(b.macvtap_ifindex(), 20);
  EXPECT_EQ(b.generation(), 0u);  // relinkd made nothing yet
  EXPECT_EQ(find<Attach>(a), nullptr);
  EXPECT_EQ(find<Release>(a), nullptr);
}

TEST_F(ReplugTest, ParentReturnReleasesFirstThenAttaches) {
  auto a = parent_back();
  ASSERT_NE(find<Release>(a), nullptr);
  ASSERT_NE(find<StartTimer>(a), nullptr);
  EXPECT_EQ(find<StartTimer>(a)->delay_ms, 10'000u);
  EXPECT_EQ(find<Attach>(a), nullptr) << "never device_add while the old NIC exists";
  a = b.handle(Released{});
  EXPECT_NE(find<CancelTimer>(a), nullptr);
  ASSERT_NE(find<Attach>(a), nullptr);
  EXPECT_EQ(find<Attach>(a)->parent_ifindex, 11);
  EXPECT_EQ(b.state(), State::Attaching);
  EXPECT_FALSE(b.nic_present());
  (void)b.handle(AttachSucceeded{b.generation(), 30});
  EXPECT_EQ(b.state(), State::Attached);
  EXPECT_TRUE(b.nic_present());
}

TEST_F(ReplugTest, ReleaseTimeoutBacksOffWithAReason) {
  (void)parent_back();
  auto a = b.handle(TimerExpired{});
  EXPECT_EQ(b.state(), State::Backoff);
  EXPECT_EQ(b.last_error(), "the guest did not release net0 within 10 s: is it paused or without PCI hotplug?");
  ASSERT_NE(find<StartTimer>(a), nullptr);
  EXPECT_EQ(find<Attach>(a), nullptr);
  EXPECT_TRUE(b.release_pending());
  // The backoff ends: ask again (QEMU accepts a repeated device_del).
  a = b.handle(TimerExpired{});
  EXPECT_EQ(b.state(), State::Releasing);
  EXPECT_NE(find<Release>(a), nullptr);
}

TEST_F(ReplugTest, LateReleaseContinuesAtOnce) {
  (void)parent_back();
  (void)b.handle(TimerExpired{});
  ASSERT_EQ(b.state(), State::Backoff);
  auto a = b.handle(Released{});  // the guest was resumed
  EXPECT_NE(find<CancelTimer>(a), nullptr);
  ASSERT_NE(find<Attach>(a), nullptr);
  EXPECT_EQ(b.state(), State::Attaching);
  EXPECT_EQ(b.failures(), 0u);
}

TEST_F(ReplugTest, LateReleaseAfterFailedContinuesToo) {
  Binding f{"vm/net0", RetryPolicy{100, 1000, 1}, replug_style()};
  (void)f.handle(ParentChanged{10});
  (void)f.handle(VmConnected{});  // the NIC is there, its tap is not ours: release it
  ASSERT_EQ(f.state(), State::Releasing);
  (void)f.handle(TimerExpired{});
  ASSERT_EQ(f.state(), State::Failed);
  auto a = f.handle(Released{});
  EXPECT_NE(find<Attach>(a), nullptr);
  EXPECT_EQ(f.state(), State::Attaching);
}

TEST_F(ReplugTest, ParentGoneAgainWhileReleasing) {
  (void)parent_back();
  auto a = b.handle(ParentChanged{0});
  EXPECT_EQ(b.state(), State::WaitingParent);
  EXPECT_NE(find<CancelTimer>(a), nullptr);
  // The release completes meanwhile: remembered, nothing else happens.
  a = b.handle(Released{});
  EXPECT_TRUE(a.empty());
  EXPECT_FALSE(b.nic_present());
  // The parent is back: no release needed this time, straight to the attach.
  a = b.handle(ParentChanged{12});
  EXPECT_EQ(find<Release>(a), nullptr);
  ASSERT_NE(find<Attach>(a), nullptr);
  EXPECT_EQ(find<Attach>(a)->parent_ifindex, 12);
}

TEST_F(ReplugTest, ParentGoneWhileReleasingAndBackBeforeTheGuestAnswered) {
  (void)parent_back();
  (void)b.handle(ParentChanged{0});
  auto a = b.handle(ParentChanged{13});
  EXPECT_EQ(b.state(), State::Releasing);  // the NIC is still there: ask again
  EXPECT_NE(find<Release>(a), nullptr);
  EXPECT_EQ(find<Attach>(a), nullptr);
}

TEST_F(ReplugTest, ReattachWhileReleasingAsksAgainWithAFreshTimeout) {
  (void)parent_back();
  auto a = b.handle(ReattachRequested{});
  EXPECT_EQ(b.state(), State::Releasing);
  EXPECT_NE(find<CancelTimer>(a), nullptr);
  EXPECT_NE(find<Release>(a), nullptr);
  EXPECT_NE(find<StartTimer>(a), nullptr);
  EXPECT_EQ(find<Attach>(a), nullptr);
}

TEST_F(ReplugTest, ReleaseRefusedBacksOff) {
  (void)parent_back();
  auto a = b.handle(ReleaseFailed{"device_del net0: Bus 'pcie.0' does not support hotplugging"});
  EXPECT_EQ(b.state(), State::Backoff);
  EXPECT_NE(b.last_error().find("does not support hotplugging"), std::string::npos);
  EXPECT_FALSE(b.release_pending());
}

TEST_F(ReplugTest, FailedAttachLeavesNoNicSoTheRetryPlugsInDirectly) {
  (void)parent_back();
  (void)b.handle(Released{});
  (void)b.handle(AttachFailed{b.generation(), "device_add: boom"});
  EXPECT_EQ(b.state(), State::Backoff);
  EXPECT_FALSE(b.nic_present());
  auto a = b.handle(TimerExpired{});
  EXPECT_EQ(find<Release>(a), nullptr);
  EXPECT_NE(find<Attach>(a), nullptr);
}

TEST_F(ReplugTest, ParentChangesDuringAReplugWaitForItsResult) {
  (void)parent_back(11);
  (void)b.handle(Released{});
  ASSERT_EQ(b.state(), State::Attaching);
  const uint64_t gen = b.generation();
  EXPECT_TRUE(b.handle(ParentChanged{0}).empty()) << "no second replug while one is in flight";
  EXPECT_EQ(b.state(), State::Attaching);
  // device_add went through, but the parent is gone by now.
  auto a = b.handle(AttachSucceeded{gen, 30});
  EXPECT_EQ(b.state(), State::WaitingParent);
  ASSERT_NE(find<Detach>(a), nullptr);
  EXPECT_TRUE(find<Detach>(a)->link_down);
  EXPECT_TRUE(b.nic_present());
}

TEST_F(ReplugTest, ParentMovedDuringAReplugReplugsAgainAfterIt) {
  (void)parent_back(11);
  (void)b.handle(Released{});
  const uint64_t gen = b.generation();
  EXPECT_TRUE(b.handle(ParentChanged{14}).empty());
  auto a = b.handle(AttachSucceeded{gen, 30});
  EXPECT_NE(find<Detach>(a), nullptr);
  EXPECT_NE(find<Release>(a), nullptr);
  EXPECT_EQ(b.state(), State::Releasing);
}

TEST_F(ReplugTest, ReattachDuringAReplugIsIgnored) {
  (void)parent_back();
  (void)b.handle(Released{});
  EXPECT_TRUE(b.handle(ReattachRequested{}).empty());
  EXPECT_EQ(b.state(), State::Attaching);
}

TEST_F(ReplugTest, NicRemovedBySomeoneElseFailsWithoutPluggingItBack) {
  adopt();
  auto a = b.handle(Released{});
  EXPECT_EQ(b.state(), State::Failed);
  EXPECT_EQ(find<Attach>(a), nullptr);
  EXPECT_NE(b.last_error().find("removed from the VM by someone else"), std::string::npos);
  // A reattach plugs it in again, with no release first.
  a = b.handle(ReattachRequested{});
  EXPECT_NE(find<Attach>(a), nullptr);
  EXPECT_EQ(find<Release>(a), nullptr);
}

TEST_F(ReplugTest, VmWithoutTheNicGetsItPluggedIn) {
  (void)b.handle(ParentChanged{10});
  auto a = b.handle(VmConnected{std::nullopt, 3, false});
  EXPECT_EQ(find<Release>(a), nullptr);
  ASSERT_NE(find<Attach>(a), nullptr);
  EXPECT_EQ(find<Attach>(a)->generation, 4u);
}

TEST_F(ReplugTest, QemuGoneWhileReleasingCancelsTheTimeout) {
  (void)parent_back();
  auto a = b.handle(VmDisconnected{true});
  EXPECT_EQ(b.state(), State::VmOffline);
  EXPECT_NE(find<CancelTimer>(a), nullptr);
  EXPECT_TRUE(b.handle(TimerExpired{}).empty());
}

// --- carrier ------------------------------------------------------------------

// Each row: the parent's carrier as netlink reports it, and the set_link the
// engine asks for (or none). The guest's link ends in the parent's state, with
// one command per real change.
TEST(Carrier, FollowsTheParentWithOneCommandPerChange) {
  for (bool replug : {false, true}) {
    SCOPED_TRACE(replug ? "replug" : "hub");
    Style st;
    st.replug = replug;
    Binding b{"vm/nic0", RetryPolicy{}, st};
    (void)b.handle(ParentChanged{10, true});
    (void)b.handle(VmConnected{VmConnected::Adopt{1, 20, 10}, 1});
    ASSERT_EQ(b.state(), State::Attached);
    struct Row {
      bool carrier;
      std::optional<bool> set_link;
    };
    const Row rows[] = {{true, std::nullopt}, {false, false}, {false, std::nullopt}, {true, true},
                        {false, false},       {true, true},   {true, std::nullopt}};
    for (const auto& r : rows) {
      auto a = b.handle(ParentChanged{10, r.carrier});
      ASSERT_EQ(count<SetLink>(a), r.set_link ? 1u : 0u);
      if (r.set_link) {
        EXPECT_EQ(find<SetLink>(a)->up, *r.set_link);
      }
      EXPECT_EQ(a.size(), count<SetLink>(a)) << "carrier changes touch nothing but the link";
    }
    EXPECT_EQ(b.link_up(), true);
  }
}

TEST(Carrier, AnAttachOnAParentWithoutCarrierLeavesTheLinkDown) {
  Binding b{"vm/nic0"};
  (void)b.handle(ParentChanged{10, false});
  auto a = b.handle(VmConnected{});
  ASSERT_NE(find<Attach>(a), nullptr);
  EXPECT_FALSE(find<Attach>(a)->link_up);
  // Carrier comes while the attach is in flight: the link catches up after it.
  EXPECT_TRUE(b.handle(ParentChanged{10, true}).empty());
  a = b.handle(AttachSucceeded{b.generation(), 20});
  ASSERT_NE(find<SetLink>(a), nullptr);
  EXPECT_TRUE(find<SetLink>(a)->up);
}

TEST(Carrier, NotFollowedWhenTurnedOff) {
  Style st;
  st.follow_carrier = false;
  Binding b{"vm/nic0", RetryPolicy{}, st};
  (void)b.handle(ParentChanged{10, false});
  auto a = b.handle(VmConnected{});
  EXPECT_TRUE(find<Attach>(a)->link_up);
  (void)b.handle(AttachSucceeded{b.generation(), 20});
  EXPECT_TRUE(b.handle(ParentChanged{10, true}).empty());
  EXPECT_TRUE(b.handle(ParentChanged{10, false}).empty());
}

TEST(Carrier, RenamedAwayParentKeepsTheLinkAsItIs) {
  Binding b{"vm/nic0"};
  (void)b.handle(ParentChanged{10, true});
  (void)b.handle(VmConnected{VmConnected::Adopt{1, 20, 10}, 1});
  EXPECT_TRUE(b.handle(ParentChanged{0, false}).empty());
  EXPECT_EQ(b.state(), State::Attached);
}

}  // namespace
}  // namespace relink::engine
