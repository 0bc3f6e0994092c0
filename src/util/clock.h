// SPDX-License-Identifier: GPL-2.0-or-later
// The monotonic and realtime clocks in microseconds.
#pragma once

#include <cstdint>
#include <ctime>

namespace relink {

// CLOCK_MONOTONIC in microseconds (the clock sd-event timers use).
inline uint64_t monotonic_us() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000u + static_cast<uint64_t>(ts.tv_nsec) / 1000u;
}

// CLOCK_REALTIME in microseconds (for timestamps people read).
inline uint64_t realtime_us() {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000u + static_cast<uint64_t>(ts.tv_nsec) / 1000u;
}

}  // namespace relink
