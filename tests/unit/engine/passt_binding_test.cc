// SPDX-License-Identifier: GPL-2.0-or-later
#include "engine/passt_binding.h"

#include <gtest/gtest.h>

namespace relink::engine {
namespace {

namespace ev = passt_ev;
namespace act = passt_act;

template <typename T>
const T* nth(const std::vector<PasstAction>& a, size_t i) {
  return i < a.size() ? std::get_if<T>(&a[i]) : nullptr;
}

template <typename T>
size_t count(const std::vector<PasstAction>& a) {
  size_t n = 0;
  for (const auto& x : a) n += std::holds_alternative<T>(x);
  return n;
}

// --- RestartTracker -----------------------------------------------------------

TEST(RestartTracker, CrashLoopBacksOffThenGivesUpAtTheBurstLimit) {
  RestartTracker t;  // 100 ms doubling, 5 failed starts in 10 s
  uint64_t now = 1000;
  std::vector<uint64_t> delays;
  for (int i = 0; i < 10; ++i) {
    t.on_start(now);
    now += 2;  // exits 2 ms after its start
    auto d = t.on_exit(now, 2);
    if (d.kind == RestartTracker::Decision::GiveUp) break;
    ASSERT_EQ(d.kind, RestartTracker::Decision::After);
    delays.push_back(d.delay_ms);
    now += d.delay_ms;
  }
  EXPECT_EQ(delays, (std::vector<uint64_t>{100, 200, 400, 800}));
  EXPECT_EQ(t.failures(), 5u);
}

TEST(RestartTracker, HealthyRunRestartsAtOnceAndForgetsFailures) {
  RestartTracker t;
  t.on_start(0);
  EXPECT_EQ(t.on_exit(5, 5).kind, RestartTracker::Decision::After);
  t.on_start(105);
  auto d = t.on_exit(107, 2);
  EXPECT_EQ(d.delay_ms, 200u);
  t.on_start(307);
  d = t.on_exit(1307, 1000);  // ran for min_uptime: healthy
  EXPECT_EQ(d.kind, RestartTracker::Decision::Now);
  EXPECT_EQ(t.failures(), 0u);
  t.on_start(1307);
  d = t.on_exit(1310, 3);
  EXPECT_EQ(d.kind, RestartTracker::Decision::After);
  EXPECT_EQ(d.delay_ms, 100u);  // the backoff starts over
}

TEST(RestartTracker, ManyHealthyRunsNeverGiveUp) {
  RestartTracker t;
  uint64_t now = 0;
  for (int i = 0; i < 100; ++i) {
    t.on_start(now);
    now += 1000;
    EXPECT_EQ(t.on_exit(now, 1000).kind, RestartTracker::Decision::Now) << i;
  }
}

TEST(RestartTracker, FailedStartsOutsideTheIntervalAreForgotten) {
  RestartPolicy p;
  p.burst = 3;
  p.interval_ms = 1000;
  p.initial_delay_ms = 600;
  p.max_delay_ms = 600;
  RestartTracker t(p);
  uint64_t now = 0;
  // Failed starts 601 ms apart: never 3 within 1 s, so it never gives up.
  for (int i = 0; i < 8; ++i) {
    t.on_start(now);
    now += 1;
    auto d = t.on_exit(now, 1);
    ASSERT_EQ(d.kind, RestartTracker::Decision::After) << i;
    now += d.delay_ms;
  }
  EXPECT_EQ(t.failures(), 8u);
  // The same failures 100 ms apart: the third within 1 s gives up.
  p.initial_delay_ms = p.max_delay_ms = 100;
  RestartTracker fast(p);
  now = 0;
  std::vector<RestartTracker::Decision::Kind> kinds;
  for (int i = 0; i < 3; ++i) {
    fast.on_start(now);
    auto d = fast.on_exit(now + 1, 1);
    kinds.push_back(d.kind);
    now += 1 + d.delay_ms;
  }
  EXPECT_EQ(kinds, (std::vector<RestartTracker::Decision::Kind>{RestartTracker::Decision::After,
                                                                  RestartTracker::Decision::After,
                                                                  RestartTracker::Decision::GiveUp}));
}

TEST(RestartTracker, DelayIsCappedAtTheMaximum) {
  RestartPolicy p;
  p.burst = 100;
  RestartTracker t(p);
  uint64_t now = 0, last = 0;
  for (int i = 0; i < 12; ++i) {
    t.on_start(now);
    auto d = t.on_exit(now + 1, 1);
    ASSERT_EQ(d.kind, RestartTracker::Decision::After);
    last = d.delay_ms;
    now += 1 + d.delay_ms;
  }
  EXPECT_EQ(last, 30'000u);
}

TEST(RestartTracker, ResetStartsAfresh) {
  RestartTracker t;
  for (int i = 0; i < 4; ++i) {
    t.on_start(static_cast<uint64_t>(i));
    (void)t.on_exit(static_cast<uint64_t>(i), 0);
  }
  EXPECT_EQ(t.failures(), 4u);
  t.reset();
  EXPECT_EQ(t.failures(), 0u);
  t.on_start(10);
  auto d = t.on_exit(10, 0);
  EXPECT_EQ(d.kind, RestartTracker::Decision::After);
  EXPECT_EQ(d.delay_ms, 100u);
}

// --- PasstBinding ---------------------------------------------------------------

struct PasstBindingTest : ::testing::Test {
  PasstBinding b{"vm/net1", Readiness::StreamEvents, /*server_side=*/true};
  uint64_t now = 10'000;

  // Drives the binding to Running; returns the live generation.
  uint64_t run() {
    auto a = b.handle(ev::VmConnected{{}, false, 0, now});
    auto* s = nth<act::Spawn>(a, 0);
    EXPECT_NE(s, nullptr);
    EXPECT_EQ(b.state(), State::Starting);
    (void)b.handle(ev::Spawned{b.generation(), now});
    EXPECT_EQ(b.state(), State::Starting);  // the stream is not connected yet
    (void)b.handle(ev::StreamConnected{now + 1});
    EXPECT_EQ(b.state(), State::Running);
    return b.generation();
  }
  // Crash: the live passt exits 2 ms after its start.
  std::vector<PasstAction> crash() {
    now += 2;
    return b.handle(ev::Exited{b.live_generation(), "exited with status 1", now});
  }
};

TEST(PasstStateName, PasstStatesHaveDesignNames) {
  EXPECT_STREQ(state_name(State::Starting), "starting");
  EXPECT_STREQ(state_name(State::Running), "running");
  EXPECT_STREQ(state_name(State::Backoff), "backoff");
  EXPECT_STREQ(state_name(State::Failed), "failed");
  EXPECT_STREQ(state_name(State::VmOffline), "vm-offline");
}

TEST_F(PasstBindingTest, StartsOfflineAndSpawnsWhenTheVmConnects) {
  EXPECT_EQ(b.state(), State::VmOffline);
  EXPECT_TRUE(b.handle(ev::TimerExpired{now}).empty());
  EXPECT_TRUE(b.handle(ev::StreamConnected{now}).empty());
  EXPECT_EQ(b.state(), State::VmOffline);
  const uint64_t g = run();
  EXPECT_EQ(g, 1u);
  EXPECT_EQ(b.live_generation(), 1u);
  EXPECT_EQ(b.restarts(), 0u);
}

TEST_F(PasstBindingTest, KilledAfterAHealthyRunIsRestartedAtOnce) {
  const uint64_t g = run();
  now += 5000;
  auto a = b.handle(ev::Exited{g, "killed by SIGKILL", now});
  ASSERT_EQ(a.size(), 1u);
  auto* s = nth<act::Spawn>(a, 0);
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(s->generation, g + 1);
  EXPECT_EQ(b.state(), State::Starting);
  EXPECT_EQ(b.restarts(), 1u);
  EXPECT_EQ(b.last_exit(), "killed by SIGKILL");
  // QEMU reports the old connection's end, then the new one.
  EXPECT_TRUE(b.handle(ev::StreamDisconnected{now + 1}).empty());
  EXPECT_EQ(b.state(), State::Starting);
  (void)b.handle(ev::StreamConnected{now + 4});
  EXPECT_EQ(b.state(), State::Running);
  EXPECT_DOUBLE_EQ(b.last_recovery_ms(), 4.0);
}

TEST_F(PasstBindingTest, StreamDropBeforeTheExitRestartsExactlyOnce) {
  const uint64_t g = run();
  now += 5000;
  auto a = b.handle(ev::StreamDisconnected{now});
  ASSERT_EQ(a.size(), 2u);
  auto* stop = nth<act::Stop>(a, 0);
  ASSERT_NE(stop, nullptr);
  EXPECT_EQ(stop->generation, g);
  auto* s = nth<act::Spawn>(a, 1);
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(s->generation, g + 1);
  // The old passt's exit arrives late: nothing more happens.
  EXPECT_TRUE(b.handle(ev::Exited{g, "killed by SIGKILL", now + 1}).empty());
  EXPECT_EQ(b.live_generation(), g + 1);
  (void)b.handle(ev::StreamConnected{now + 3});
  EXPECT_EQ(b.state(), State::Running);
  EXPECT_DOUBLE_EQ(b.last_recovery_ms(), 3.0);
}

TEST_F(PasstBindingTest, TwentyKillsInARowGiveTwentyOneGenerations) {
  uint64_t g = run();
  for (int i = 0; i < 20; ++i) {
    now += 1500;
    auto a = b.handle(ev::Exited{g, "killed by SIGKILL", now});
    ASSERT_EQ(count<act::Spawn>(a), 1u) << i;
    (void)b.handle(ev::StreamDisconnected{now});
    (void)b.handle(ev::StreamConnected{now + 2});
    ASSERT_EQ(b.state(), State::Running);
    g = b.generation();
  }
  EXPECT_EQ(g, 21u);
  EXPECT_EQ(b.restarts(), 20u);
}

TEST_F(PasstBindingTest, CrashLoopBacksOffThenFails) {
  (void)b.handle(ev::VmConnected{{}, false, 0, now});
  std::vector<uint64_t> delays;
  for (int i = 0; i < 10 && b.state() != State::Failed; ++i) {
    (void)b.handle(ev::StreamConnected{now + 1});  // QEMU accepts before passt dies
    auto a = crash();
    (void)b.handle(ev::StreamDisconnected{now});
    if (b.state() == State::Failed) {
      EXPECT_TRUE(a.empty());
      break;
    }
    ASSERT_EQ(b.state(), State::Backoff);
    auto* t = nth<StartTimer>(a, 0);
    ASSERT_NE(t, nullptr);
    delays.push_back(t->delay_ms);
    now += t->delay_ms;
    auto s = b.handle(ev::TimerExpired{now});
    ASSERT_EQ(count<act::Spawn>(s), 1u);
  }
  EXPECT_EQ(delays, (std::vector<uint64_t>{100, 200, 400, 800}));
  EXPECT_EQ(b.state(), State::Failed);
  EXPECT_NE(b.last_error().find("exited with status 1"), std::string::npos) << b.last_error();
  EXPECT_NE(b.last_error().find("5 failed starts"), std::string::npos) << b.last_error();
  // Failed stays failed: timers, stream events and QEMU do not restart it.
  EXPECT_TRUE(b.handle(ev::TimerExpired{now}).empty());
  EXPECT_TRUE(b.handle(ev::StreamConnected{now}).empty());
  // A reset (reload, reattach) starts afresh.
  auto a = b.handle(ev::ResetRequested{now});
  ASSERT_EQ(count<act::Spawn>(a), 1u);
  EXPECT_EQ(b.state(), State::Starting);
  a = crash();
  auto* t = nth<StartTimer>(a, 0);
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->delay_ms, 100u);
}

TEST_F(PasstBindingTest, SpawnFailureBacksOff) {
  auto a = b.handle(ev::VmConnected{{}, false, 0, now});
  a = b.handle(ev::SpawnFailed{b.generation(), "connect /run/x.sock: Connection refused", now});
  EXPECT_EQ(b.state(), State::Backoff);
  EXPECT_EQ(b.live_generation(), 0u);
  EXPECT_EQ(b.last_error(), "connect /run/x.sock: Connection refused");
  ASSERT_NE(nth<StartTimer>(a, 0), nullptr);
  // A stale failure of another generation changes nothing.
  EXPECT_TRUE(b.handle(ev::SpawnFailed{99, "x", now}).empty());
}

TEST_F(PasstBindingTest, QemuExitStopsPasstAndItsReturnStartsOne) {
  const uint64_t g = run();
  auto a = b.handle(ev::VmDisconnected{true});
  ASSERT_EQ(a.size(), 1u);
  ASSERT_NE(nth<act::Stop>(a, 0), nullptr);
  EXPECT_EQ(nth<act::Stop>(a, 0)->generation, g);
  EXPECT_EQ(b.state(), State::VmOffline);
  // The stopped passt's exit is expected and restarts nothing.
  EXPECT_TRUE(b.handle(ev::Exited{g, "killed by SIGTERM", now}).empty());
  a = b.handle(ev::VmConnected{{}, false, 0, now});
  ASSERT_EQ(count<act::Spawn>(a), 1u);
  EXPECT_EQ(b.generation(), g + 1);
}

TEST_F(PasstBindingTest, QmpLossAloneKeepsPasstAndTheNextSessionAdoptsIt) {
  const uint64_t g = run();
  EXPECT_TRUE(b.handle(ev::VmDisconnected{false}).empty());
  EXPECT_EQ(b.state(), State::VmOffline);
  auto a = b.handle(ev::VmConnected{ev::VmConnected::Adopt{g, now - 100}, true, g, now});
  EXPECT_TRUE(a.empty());
  EXPECT_EQ(b.state(), State::Running);
  EXPECT_EQ(b.live_generation(), g);
}

TEST_F(PasstBindingTest, RestartedRelinkdAdoptsTheRunningPasst) {
  now = 1'000'000;
  auto a = b.handle(ev::VmConnected{ev::VmConnected::Adopt{7, now - 60'000}, true, 7, now});
  EXPECT_TRUE(a.empty());
  EXPECT_EQ(b.state(), State::Running);
  EXPECT_EQ(b.generation(), 7u);
  EXPECT_EQ(b.live_generation(), 7u);
  // It was started long ago: its death is a healthy one, restarted at once.
  a = b.handle(ev::Exited{7, "exited (status unknown)", now + 10});
  ASSERT_EQ(count<act::Spawn>(a), 1u);
  EXPECT_EQ(nth<act::Spawn>(a, 0)->generation, 8u);
}

TEST_F(PasstBindingTest, AdoptedPasstThatQemuIsNotConnectedToIsReplaced) {
  auto a = b.handle(ev::VmConnected{ev::VmConnected::Adopt{4, now - 60'000}, false, 4, now});
  ASSERT_EQ(a.size(), 2u);
  ASSERT_NE(nth<act::Stop>(a, 0), nullptr);
  EXPECT_EQ(nth<act::Stop>(a, 0)->generation, 4u);
  ASSERT_NE(nth<act::Spawn>(a, 1), nullptr);
  EXPECT_EQ(nth<act::Spawn>(a, 1)->generation, 5u);
}

TEST_F(PasstBindingTest, NewGenerationsFollowTheHighestSeen) {
  auto a = b.handle(ev::VmConnected{{}, false, 12, now});
  ASSERT_NE(nth<act::Spawn>(a, 0), nullptr);
  EXPECT_EQ(nth<act::Spawn>(a, 0)->generation, 13u);
}

TEST_F(PasstBindingTest, BackoffTimerIsCancelledWhenTheVmGoesAway) {
  (void)b.handle(ev::VmConnected{{}, false, 0, now});
  (void)crash();
  ASSERT_EQ(b.state(), State::Backoff);
  auto a = b.handle(ev::VmDisconnected{true});
  ASSERT_EQ(a.size(), 1u);
  EXPECT_NE(nth<CancelTimer>(a, 0), nullptr);
  EXPECT_EQ(b.state(), State::VmOffline);
}

TEST_F(PasstBindingTest, ManualResetRestartsARunningPasst) {
  const uint64_t g = run();
  auto a = b.handle(ev::ResetRequested{now});
  ASSERT_EQ(a.size(), 2u);
  EXPECT_EQ(nth<act::Stop>(a, 0)->generation, g);
  EXPECT_EQ(nth<act::Spawn>(a, 1)->generation, g + 1);
  // Offline: nothing to do.
  (void)b.handle(ev::VmDisconnected{true});
  EXPECT_TRUE(b.handle(ev::ResetRequested{now}).empty());
}

TEST_F(PasstBindingTest, UnsupportedBindingFailsAndNeverSpawns) {
  (void)b.handle(ev::Unsupported{"the installed passt has no --vhost-user option"});
  EXPECT_EQ(b.state(), State::Failed);
  EXPECT_TRUE(b.handle(ev::VmConnected{{}, false, 0, now}).empty());
  EXPECT_TRUE(b.handle(ev::ResetRequested{now}).empty());
  EXPECT_EQ(b.state(), State::Failed);
  EXPECT_EQ(b.last_error(), "the installed passt has no --vhost-user option");
}

TEST_F(PasstBindingTest, UnsupportedStopsALivePasst) {
  const uint64_t g = run();
  auto a = b.handle(ev::Unsupported{"no"});
  ASSERT_EQ(a.size(), 1u);
  EXPECT_EQ(nth<act::Stop>(a, 0)->generation, g);
}

TEST(PasstBindingClient, StreamDropWaitsForQemuToReconnect) {
  PasstBinding b{"vm/net1", Readiness::StreamEvents, /*server_side=*/false};
  (void)b.handle(ev::VmConnected{{}, false, 0, 100});
  (void)b.handle(ev::StreamConnected{101});
  ASSERT_EQ(b.state(), State::Running);
  EXPECT_TRUE(b.handle(ev::StreamDisconnected{200}).empty());  // passt still listens
  EXPECT_EQ(b.state(), State::Starting);
  (void)b.handle(ev::StreamConnected{1200});
  EXPECT_EQ(b.state(), State::Running);
  EXPECT_DOUBLE_EQ(b.last_recovery_ms(), 1000.0);
  EXPECT_EQ(b.generation(), 1u);
}

TEST(PasstBindingClient, AdoptedPasstWithoutQemuPeerWaitsForTheReconnect) {
  PasstBinding b{"vm/net1", Readiness::StreamEvents, /*server_side=*/false};
  auto a = b.handle(ev::VmConnected{ev::VmConnected::Adopt{3, 0}, false, 3, 100});
  EXPECT_TRUE(a.empty());
  EXPECT_EQ(b.state(), State::Starting);
  EXPECT_EQ(b.live_generation(), 3u);
}

TEST(PasstBindingVhostUser, RunningOnceSpawned) {
  PasstBinding b{"vm/net1", Readiness::OnSpawn, /*server_side=*/false};
  (void)b.handle(ev::VmConnected{{}, false, 0, 100});
  EXPECT_EQ(b.state(), State::Starting);
  (void)b.handle(ev::Spawned{b.generation(), 101});
  EXPECT_EQ(b.state(), State::Running);
  // A stale Spawned changes nothing.
  (void)b.handle(ev::Exited{b.generation(), "killed by SIGKILL", 5000});
  EXPECT_EQ(b.state(), State::Starting);
  (void)b.handle(ev::Spawned{1, 5001});
  EXPECT_EQ(b.state(), State::Starting);
  (void)b.handle(ev::Spawned{2, 5002});
  EXPECT_EQ(b.state(), State::Running);
  EXPECT_DOUBLE_EQ(b.last_recovery_ms(), 2.0);
}

// Listening bindings start passt when they are registered, QEMU or not.
TEST(PasstBindingListen, VhostUserStartsBeforeQemuAndOutlivesIt) {
  PasstBinding b{"vm/net1", Readiness::OnSpawn, /*server_side=*/false, {}, /*before_qemu=*/true};
  EXPECT_TRUE(b.starts_before_qemu());
  auto a = b.handle(ev::Listen{{}, 0, 100});
  ASSERT_NE(nth<act::Spawn>(a, 0), nullptr);
  (void)b.handle(ev::Spawned{1, 101});
  EXPECT_EQ(b.state(), State::Running);
  // QMP comes up later: nothing to do.
  EXPECT_TRUE(b.handle(ev::VmConnected{{}, false, 0, 200}).empty());
  EXPECT_EQ(b.state(), State::Running);
  // QEMU exits: passt stays for the next one, and is still supervised.
  EXPECT_TRUE(b.handle(ev::VmDisconnected{true}).empty());
  EXPECT_EQ(b.state(), State::Running);
  EXPECT_EQ(b.live_generation(), 1u);
  a = b.handle(ev::Exited{1, "killed by SIGKILL", 5000});
  ASSERT_NE(nth<act::Spawn>(a, 0), nullptr);
  EXPECT_EQ(b.generation(), 2u);
}

TEST(PasstBindingListen, StreamClientWaitsForQmpAndStopsWithQemu) {
  PasstBinding b{"vm/net1", Readiness::StreamEvents, /*server_side=*/false};
  EXPECT_FALSE(b.starts_before_qemu());
  EXPECT_TRUE(b.handle(ev::Listen{{}, 0, 100}).empty());
  EXPECT_EQ(b.state(), State::VmOffline);
  auto a = b.handle(ev::VmConnected{{}, false, 0, 200});
  ASSERT_NE(nth<act::Spawn>(a, 0), nullptr);
  (void)b.handle(ev::StreamConnected{300});
  ASSERT_EQ(b.state(), State::Running);
  a = b.handle(ev::VmDisconnected{true});
  ASSERT_NE(nth<act::Stop>(a, 0), nullptr);
  EXPECT_EQ(b.state(), State::VmOffline);
}

TEST(PasstBindingListen, AdoptsThePasstFound) {
  PasstBinding b{"vm/net1", Readiness::OnSpawn, /*server_side=*/false, {}, /*before_qemu=*/true};
  auto a = b.handle(ev::Listen{ev::VmConnected::Adopt{4, 50}, 4, 100});
  EXPECT_TRUE(a.empty());
  EXPECT_EQ(b.state(), State::Running);
  EXPECT_EQ(b.live_generation(), 4u);
}

// QEMU 10 reports vhost-user connections: once known, a vhost-user binding
// is running when QEMU has connected to the new passt, like a stream one.
TEST(PasstBindingVhostUser, WithQemuEventsRunningOnceQemuConnected) {
  PasstBinding b{"vm/net1", Readiness::OnSpawn, /*server_side=*/false, {}, /*before_qemu=*/true};
  (void)b.handle(ev::Listen{{}, 0, 100});
  (void)b.handle(ev::Spawned{1, 101});
  ASSERT_EQ(b.state(), State::Running);
  b.set_readiness(Readiness::StreamEvents);
  EXPECT_EQ(b.state(), State::Running);
  // passt killed: QEMU's disconnect and the exit, in either order.
  (void)b.handle(ev::StreamDisconnected{5000});
  EXPECT_EQ(b.state(), State::Starting);
  auto a = b.handle(ev::Exited{1, "killed by SIGKILL", 5001});
  ASSERT_NE(nth<act::Spawn>(a, 0), nullptr);
  (void)b.handle(ev::Spawned{2, 5003});
  EXPECT_EQ(b.state(), State::Starting);  // passt runs; QEMU has not reconnected yet
  (void)b.handle(ev::StreamConnected{5100});
  EXPECT_EQ(b.state(), State::Running);
  EXPECT_DOUBLE_EQ(b.last_recovery_ms(), 100.0);
}

TEST(PasstBindingListen, StreamServerIgnoresIt) {
  PasstBinding b{"vm/net1", Readiness::StreamEvents, /*server_side=*/true, {}, /*before_qemu=*/true};
  EXPECT_FALSE(b.starts_before_qemu());  // QEMU's own socket: nothing to listen on before it
  EXPECT_TRUE(b.handle(ev::Listen{{}, 0, 100}).empty());
  EXPECT_EQ(b.state(), State::VmOffline);
}

}  // namespace
}  // namespace relink::engine
