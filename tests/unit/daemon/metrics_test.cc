// SPDX-License-Identifier: GPL-2.0-or-later
#include "daemon/metrics.h"

#include <gtest/gtest.h>

namespace relink::daemon {
namespace {

TEST(Metrics, BindingsByStateCountersAndHistogram) {
  const auto st = nlohmann::json::parse(R"({
    "version": 1, "daemon": {"version": "1.2.3", "uptime_s": 2.5, "netlink_overruns": 1},
    "vms": [{"name": "we\"b1", "source": "runtime", "qmp": "connected", "bindings": [
      {"kind": "macvtap", "nic": "nic0", "state": "attached", "attaches": 3, "failures": 0, "failures_total": 4},
      {"kind": "passt", "netdev": "net1", "state": "running", "restarts": 2, "failures": 0},
      {"kind": "macvtap", "nic": "net2", "state": "waiting-parent", "attach": "replug", "nic_present": false}]}]})");
  RecoveryHistogram h;
  h.observe(0.002);
  h.observe(0.3);
  h.observe(60);
  const std::string text = format_metrics(st, {{"macvtap", h}});
  EXPECT_NE(text.find("relink_info{version=\"1.2.3\"} 1\n"), std::string::npos) << text;
  EXPECT_NE(text.find("relink_bindings{kind=\"macvtap\",state=\"attached\"} 1\n"), std::string::npos);
  EXPECT_NE(text.find("relink_bindings{kind=\"macvtap\",state=\"failed\"} 0\n"), std::string::npos);
  EXPECT_NE(text.find("relink_bindings{kind=\"passt\",state=\"running\"} 1\n"), std::string::npos);
  EXPECT_NE(text.find("relink_vms{source=\"runtime\"} 1\n"), std::string::npos);
  // A label value's quote is escaped.
  EXPECT_NE(text.find("relink_reattaches_total{vm=\"we\\\"b1\",binding=\"nic0\",kind=\"macvtap\"} 2\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("relink_reattaches_total{vm=\"we\\\"b1\",binding=\"net1\",kind=\"passt\"} 2\n"),
            std::string::npos);
  EXPECT_NE(text.find("relink_failures_total{vm=\"we\\\"b1\",binding=\"nic0\",kind=\"macvtap\"} 4\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("relink_recovery_seconds_bucket{kind=\"macvtap\",le=\"0.0025\"} 1\n"), std::string::npos)
      << text;
  EXPECT_NE(text.find("relink_recovery_seconds_bucket{kind=\"macvtap\",le=\"0.5\"} 2\n"), std::string::npos);
  EXPECT_NE(text.find("relink_recovery_seconds_bucket{kind=\"macvtap\",le=\"10\"} 2\n"), std::string::npos);
  EXPECT_NE(text.find("relink_recovery_seconds_bucket{kind=\"macvtap\",le=\"+Inf\"} 3\n"), std::string::npos);
  EXPECT_NE(text.find("relink_recovery_seconds_count{kind=\"passt\"} 0\n"), std::string::npos);
  // Released replug NICs; hub bindings (no nic_present) have no sample.
  EXPECT_NE(text.find("relink_nic_released{vm=\"we\\\"b1\",binding=\"net2\",kind=\"macvtap\"} 1\n"),
            std::string::npos)
      << text;
  EXPECT_EQ(text.find("relink_nic_released{vm=\"we\\\"b1\",binding=\"nic0\""), std::string::npos);
  EXPECT_NE(text.find("# TYPE relink_recovery_seconds histogram\n"), std::string::npos);
}

TEST(Metrics, EscapeLabel) { EXPECT_EQ(escape_label("a\\b\"c\nd"), "a\\\\b\\\"c\\nd"); }

}  // namespace
}  // namespace relink::daemon
