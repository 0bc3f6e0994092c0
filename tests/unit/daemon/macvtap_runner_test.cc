// SPDX-License-Identifier: GPL-2.0-or-later
// A macvtap runner against a fake attacher and fake links, no root: what the
// engine decides reaches the attacher (create, hand over, detach, release),
// results come back as events, failures arm the retry timer, a result for a
// runner that is gone is dropped, and status reports what happened.
#include "daemon/macvtap_runner.h"

#include <gtest/gtest.h>

#include <deque>

#include "daemon/vm.h"
#include "support/fake_services.h"
#include "netlink/link.h"
#include "util/sd_event.h"

namespace relink::daemon {
namespace {

// Records every call; answers hand_over and release when the test says so.
class FakeAttacher final : public Attacher {
 public:
  void probe(const std::vector<config::MacvtapBinding>&, std::function<void(std::vector<engine::VmConnected>)>) override {}
  Result<macvtap::Macvtap> create(const config::MacvtapBinding&, int parent_ifindex) override {
    calls.push_back("create " + std::to_string(parent_ifindex));
    if (fail_create) return Error{EBUSY, "the parent is busy"};
    macvtap::Macvtap m;
    m.ifindex = next_ifindex;
    return m;
  }
  void hand_over(const config::MacvtapBinding&, uint64_t generation, macvtap::Macvtap mvt, bool link_up,
                 std::function<void(AttachResult)> done) override {
    calls.push_back("hand_over " + std::to_string(generation) + " " + std::to_string(mvt.ifindex) +
                    (link_up ? " up" : " down"));
    pending.push_back([done, ifindex = mvt.ifindex](bool ok) { done(AttachResult{ok, ifindex, ok ? "" : "QEMU said no", ""}); });
  }
  void detach(const config::MacvtapBinding&, uint64_t generation, int macvtap_ifindex, bool link_down) override {
    calls.push_back("detach " + std::to_string(generation) + " " + std::to_string(macvtap_ifindex) +
                    (link_down ? " link_down" : ""));
  }
  void release(const config::MacvtapBinding&, uint64_t generation, std::function<void(ReleaseResult)>) override {
    calls.push_back("release " + std::to_string(generation));
  }
  void set_link(const config::MacvtapBinding&, bool up) override { calls.push_back(up ? "link on" : "link off"); }

  std::vector<std::string> calls;
  std::deque<std::function<void(bool)>> pending;
  // lo: the runner asks the kernel whether the macvtap it was told of exists.
  int next_ifindex = 1;
  bool fail_create = false;
};

class FakeVm final : public ManagedVm {
 public:
  explicit FakeVm(const Services& s) : ManagedVm(config::Vm{"vm1", "", {}, {}}, s) {}
  const char* origin() const override { return "config"; }
  bool connected() const override { return true; }
  std::string offline_reason() const override { return ""; }
  Result<nlohmann::json> qemu_args() const override { return nlohmann::json::object(); }
  const char* release_method() const override { return "device_del"; }
  MacvtapRunner& add(const config::MacvtapBinding& b, Attacher& a) { return add_macvtap(b, a); }
  void drop() { macvtaps_.clear(); }
  int unasked = 0;

 protected:
  void unasked_release(MacvtapRunner&) override { ++unasked; }
};

class MacvtapRunnerTest : public ::testing::Test {
 protected:
  test::FakeServices env;

  MacvtapRunnerTest() {
    env.cfg.path = "/etc/relinkd/relinkd.toml";
    vm = std::make_unique<FakeVm>(env.services);
    binding.nic = "nic0";
    binding.parent = "eth0";
    binding.mac = MacAddress{0x52, 0x54, 0, 0x12, 0x34, 0x56};
  }
  // Runs what the loop has ready (deferred calls, expired timers).
  void run_loop() {
    for (int i = 0; i < 10; ++i) sd_event_run(env.loop.get(), 0);
  }

  std::unique_ptr<FakeVm> vm;
  FakeAttacher attacher;
  config::MacvtapBinding binding;
};

TEST_F(MacvtapRunnerTest, AttachOnConnectThenReattachAfterTheMacvtapIsGone) {
  MacvtapRunner& r = vm->add(binding, attacher);
  EXPECT_EQ(r.engine().parent_ifindex(), 5);  // the parent is known from the start
  r.feed(engine::VmConnected{});
  EXPECT_EQ(r.engine().state(), engine::State::Attaching);
  ASSERT_EQ(attacher.calls, (std::vector<std::string>{"create 5", "hand_over 1 1 up"}));
  attacher.pending.front()(true);
  attacher.pending.pop_front();
  EXPECT_EQ(r.engine().state(), engine::State::Attached);
  EXPECT_EQ(r.engine().macvtap_ifindex(), 1);
  auto st = r.status();
  EXPECT_EQ(st["attaches"], 1);
  EXPECT_EQ(st["generation"], 1);
  EXPECT_TRUE(st["last_reattach_ms"].is_number());
  EXPECT_EQ(st["hub"], 0);

  // The macvtap is deleted under a live parent: generation 1's rest is
  // detached (its macvtap is gone already), generation 2 attached.
  attacher.calls.clear();
  r.feed(engine::LinkRemoved{1});
  EXPECT_EQ(attacher.calls, (std::vector<std::string>{"detach 1 0", "create 5", "hand_over 2 1 up"}));
  attacher.pending.front()(true);
  attacher.pending.pop_front();
  EXPECT_EQ(r.engine().state(), engine::State::Attached);
  EXPECT_EQ(r.status()["attaches"], 2);
  EXPECT_EQ(env.reporter.recovery().at("macvtap").count(), 1u);  // the first attach is not a recovery
}

TEST_F(MacvtapRunnerTest, AFailedAttachBacksOffAndTheTimerRetries) {
  MacvtapRunner& r = vm->add(binding, attacher);
  attacher.fail_create = true;
  r.feed(engine::VmConnected{});
  // A failed create is reported from the loop, never from inside the executor.
  EXPECT_EQ(r.engine().state(), engine::State::Attaching);
  run_loop();
  EXPECT_EQ(r.engine().state(), engine::State::Backoff);
  EXPECT_EQ(r.status()["failures_total"], 1);
  EXPECT_EQ(r.status()["last_error"], "the parent is busy");
  attacher.fail_create = false;
  attacher.calls.clear();
  // The retry timer (100 ms) fires on the loop.
  for (int i = 0; i < 50 && attacher.calls.empty(); ++i) sd_event_run(env.loop.get(), 10'000);
  EXPECT_EQ(attacher.calls, (std::vector<std::string>{"create 5", "hand_over 2 1 up"}));
}

TEST_F(MacvtapRunnerTest, ACarrierThatComesBeforeTheHandOverIsInItAndNeedsNoSetLinkAfterwards) {
  env.links.eth0.flags = IFF_UP;  // no carrier yet
  env.links.hold = true;
  MacvtapRunner& r = vm->add(binding, attacher);
  r.feed(engine::VmConnected{});
  ASSERT_EQ(r.engine().state(), engine::State::Attaching);
  // The parent gets its carrier while the attach waits for its hand-over.
  r.feed(engine::ParentChanged{5, true});
  env.links.run_held();
  ASSERT_EQ(attacher.calls, (std::vector<std::string>{"create 5", "hand_over 1 1 up"}));
  attacher.pending.front()(true);
  attacher.pending.pop_front();
  EXPECT_EQ(r.engine().state(), engine::State::Attached);
  EXPECT_EQ(attacher.calls.size(), 2u) << "no set_link of its own: the hand-over had the link up";
  EXPECT_EQ(r.engine().link_up(), std::optional<bool>(true));

  // The carrier lost after the hand-over was sent: set_link follows.
  attacher.calls.clear();
  r.feed(engine::LinkRemoved{1});
  ASSERT_EQ(attacher.calls, (std::vector<std::string>{"detach 1 0"}));
  r.feed(engine::ParentChanged{5, false});
  env.links.run_held();
  ASSERT_EQ(attacher.calls.back(), "hand_over 2 1 down");
  r.feed(engine::ParentChanged{5, true});  // while QEMU works on the hand-over
  attacher.pending.front()(true);
  attacher.pending.pop_front();
  EXPECT_EQ(attacher.calls.back(), "link on");
  EXPECT_EQ(r.engine().link_up(), std::optional<bool>(true));
}

TEST_F(MacvtapRunnerTest, AResultForARunnerThatIsGoneIsDropped) {
  MacvtapRunner& r = vm->add(binding, attacher);
  r.feed(engine::VmConnected{});
  ASSERT_EQ(attacher.pending.size(), 1u);
  vm->drop();
  attacher.pending.front()(true);  // must not touch the destroyed runner
  SUCCEED();
}

TEST_F(MacvtapRunnerTest, ReplugAsksForTheReleaseAndAnUnaskedOneGoesToTheVm) {
  binding.attach = config::AttachMode::Replug;
  MacvtapRunner& r = vm->add(binding, attacher);
  engine::VmConnected vc;
  vc.adopt = engine::VmConnected::Adopt{3, 1, 5};
  r.feed(vc);
  EXPECT_EQ(r.engine().state(), engine::State::Attached);
  // Nobody here asked for this release: the VM decides what it means.
  vm->released(r);
  EXPECT_EQ(vm->unasked, 1);
  EXPECT_EQ(r.engine().state(), engine::State::Attached);
  // A reattach releases first, and the release is timed.
  r.feed(engine::ReattachRequested{});
  EXPECT_EQ(r.engine().state(), engine::State::Releasing);
  EXPECT_EQ(attacher.calls.back(), "release 3");
  vm->released(r);
  EXPECT_EQ(vm->unasked, 1);
  EXPECT_TRUE(r.status()["last_release_ms"].is_number());
  EXPECT_EQ(attacher.calls.back(), "hand_over 4 1 up");
}

}  // namespace
}  // namespace relink::daemon
