// SPDX-License-Identifier: GPL-2.0-or-later
// relinkd's figures in the Prometheus text exposition format (version 0.0.4),
// for the node exporter's textfile collector or any scraper.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

namespace relink::daemon {

// Recovery times (a macvtap reattached, a passt restarted and reconnected),
// cumulative from relinkd's start.
class RecoveryHistogram {
 public:
  static constexpr std::array<double, 12> kBounds = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                     0.1,   0.25,   0.5,   1,    2.5,   10};
  void observe(double seconds);
  const std::array<uint64_t, kBounds.size()>& buckets() const { return buckets_; }  // not cumulative
  uint64_t count() const { return count_; }
  double sum() const { return sum_; }

 private:
  std::array<uint64_t, kBounds.size()> buckets_{};
  uint64_t count_ = 0;
  double sum_ = 0;
};

// From the status object (Daemon::status) and the histograms by binding
// kind ("macvtap", "passt").
std::string format_metrics(const nlohmann::json& status, const std::map<std::string, RecoveryHistogram>& recovery);

// A label value with \, " and newlines escaped as the format requires.
std::string escape_label(const std::string& value);

}  // namespace relink::daemon
