// SPDX-License-Identifier: GPL-2.0-or-later
// run_after: the function runs once, from the loop, after its delay, and is
// freed then; one that never fires is freed with the loop.
#include "daemon/services.h"

#include <gtest/gtest.h>

#include <memory>

#include "util/sd_event.h"

namespace relink::daemon {
namespace {

SdEventPtr new_loop() {
  sd_event* e = nullptr;
  EXPECT_GE(sd_event_new(&e), 0);
  return SdEventPtr(e);
}

TEST(RunAfter, RunsOnceFromTheLoopAndIsFreedThen) {
  auto loop = new_loop();
  auto token = std::make_shared<int>(0);
  std::weak_ptr<int> alive = token;
  int runs = 0;
  run_after(loop.get(), 1, [&runs, token] { ++runs; });
  token.reset();
  EXPECT_EQ(runs, 0) << "not before the loop runs";
  for (int i = 0; i < 20 && runs == 0; ++i) sd_event_run(loop.get(), 10'000);
  EXPECT_EQ(runs, 1);
  for (int i = 0; i < 5; ++i) sd_event_run(loop.get(), 2'000);
  EXPECT_EQ(runs, 1);
  EXPECT_TRUE(alive.expired()) << "the function is freed once it has run";
}

TEST(RunAfter, OneThatNeverFiresIsFreedWithTheLoop) {
  auto token = std::make_shared<int>(0);
  std::weak_ptr<int> alive = token;
  {
    auto loop = new_loop();
    run_after(loop.get(), 60'000, [token] {});
    token.reset();
    EXPECT_FALSE(alive.expired());
  }
  EXPECT_TRUE(alive.expired());
}

}  // namespace
}  // namespace relink::daemon
