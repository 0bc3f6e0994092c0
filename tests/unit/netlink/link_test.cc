// SPDX-License-Identifier: GPL-2.0-or-later
#include "netlink/link.h"

#include <gtest/gtest.h>
#include <linux/if.h>

namespace relink::netlink {
namespace {

LinkInfo with_flags(unsigned flags) {
  LinkInfo l;
  l.ifindex = 2;
  l.name = "eth0";
  l.kind = "physical";
  l.flags = flags;
  return l;
}

TEST(HasCarrier, NeedsBothUpAndLowerUp) {
  EXPECT_FALSE(has_carrier(with_flags(0)));
  EXPECT_FALSE(has_carrier(with_flags(IFF_UP)));  // up, cable out / veth peer down
  EXPECT_FALSE(has_carrier(with_flags(IFF_LOWER_UP)));  // administratively down
  EXPECT_TRUE(has_carrier(with_flags(IFF_UP | IFF_LOWER_UP)));
  EXPECT_TRUE(has_carrier(with_flags(IFF_UP | IFF_LOWER_UP | IFF_RUNNING | IFF_BROADCAST)));
  // IFF_RUNNING alone (operstate up or unknown) is not IFF_LOWER_UP.
  EXPECT_FALSE(has_carrier(with_flags(IFF_UP | IFF_RUNNING)));
}

}  // namespace
}  // namespace relink::netlink
