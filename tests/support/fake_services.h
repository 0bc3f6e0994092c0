// SPDX-License-Identifier: GPL-2.0-or-later
// A loop and the Services a VM or binding runner gets from the daemon, with
// fake links and a fake macvtap factory, for unit tests that need no root.
#pragma once

#include <gtest/gtest.h>

#include <memory>

#include "config/config.h"
#include "daemon/services.h"
#include "support/fake_factory.h"
#include "support/fake_links.h"
#include "util/defer_queue.h"
#include "util/sd_event.h"

namespace relink::test {

struct FakeServices {
  FakeServices() {
    sd_event* e = nullptr;
    EXPECT_GE(sd_event_new(&e), 0);
    loop.reset(e);
    defer = std::make_unique<DeferQueue>(loop.get());
    services = daemon::Services{loop.get(), defer.get(), &factory, &links, &reporter, &cfg};
  }
  // services points into this object.
  FakeServices(const FakeServices&) = delete;
  FakeServices& operator=(const FakeServices&) = delete;

  SdEventPtr loop;
  std::unique_ptr<DeferQueue> defer;
  config::Config cfg;
  FakeFactory factory;
  FakeLinks links;
  daemon::Reporter reporter;
  daemon::Services services;
};

}  // namespace relink::test
