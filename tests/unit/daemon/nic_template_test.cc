// SPDX-License-Identifier: GPL-2.0-or-later
// A replug template as the journal keeps it: it comes back as it was, and
// what comes back from a file is held to the same rules as what QEMU said
// (only plain names, known properties, numbers in range reach device_add).
#include "daemon/nic_template.h"

#include <gtest/gtest.h>

namespace relink::daemon {
namespace {

using nlohmann::json;

NicTemplate sample() {
  NicTemplate t;
  t.driver = "virtio-net-pci";
  t.id = "net0";
  t.mac = *parse_mac("52:54:00:12:34:56");
  t.bus = "rp1";
  t.addr = 0;
  t.props = {{"mq", true}, {"vectors", 10}, {"romfile", ""}, {"acpi-index", 3}};
  t.has_mq = true;
  t.netdev = "hostnet0";
  t.qemu_pid = 4242;
  return t;
}

TEST(NicTemplate, RoundTripsThroughTheJournalsForm) {
  const NicTemplate t = sample();
  auto back = template_from_json(template_to_json(t));
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_EQ(device_add_args(*back, "net0", "net0.tap3", 4), device_add_args(t, "net0", "net0.tap3", 4));
  EXPECT_EQ(back->netdev, "hostnet0");
  EXPECT_EQ(back->qemu_pid, 4242);
  const json args = device_add_args(*back, "net0", "net0.tap3", 4);
  EXPECT_EQ(args["bus"], "rp1");
  EXPECT_EQ(args["addr"], "0.0");
  EXPECT_EQ(args["netdev"], "net0.tap3");
}

TEST(NicTemplate, WhatComesBackFromAFileIsCheckedLikeWhatQemuSaid) {
  const json good = template_to_json(sample());
  auto refused = [&](const char* key, const json& value) {
    json j = good;
    if (value.is_null()) j.erase(key);
    else j[key] = value;
    return !template_from_json(j);
  };
  EXPECT_TRUE(refused("driver", "virtio-net-pci,romfile=/etc/shadow"));
  EXPECT_TRUE(refused("driver", nullptr));
  EXPECT_TRUE(refused("id", "a b"));
  EXPECT_TRUE(refused("mac", "not a mac"));
  EXPECT_TRUE(refused("bus", "rp1,addr=3"));
  EXPECT_TRUE(refused("addr", 256));
  EXPECT_TRUE(refused("netdev", "x,y"));
  EXPECT_TRUE(refused("props", json{{"x-unknown", 1}}));
  EXPECT_TRUE(refused("props", json{{"vectors", 70000}}));
  EXPECT_TRUE(refused("props", json{{"romfile", "a\nb"}}));
  EXPECT_TRUE(refused("props", json::array()));
  EXPECT_FALSE(template_from_json(json::array()));
  EXPECT_TRUE(template_from_json(good));
}

}  // namespace
}  // namespace relink::daemon
