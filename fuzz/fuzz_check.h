// SPDX-License-Identifier: GPL-2.0-or-later
// What the fuzz targets share: a check that is a finding when it fails (a
// crash libFuzzer records with the input), and quiet logging.
#pragma once

#include <cstdio>
#include <cstdlib>

#include "util/log.h"

// An invariant of the code under test; failing it is a bug, like a crash.
#define FUZZ_CHECK(cond)                                                          \
  do {                                                                            \
    if (!(cond)) {                                                                \
      std::fprintf(stderr, "%s:%d: FUZZ_CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                               \
    }                                                                             \
  } while (0)

namespace relink::fuzz {

// Libraries log at debug at most, but what runs on an event loop may warn
// about what the peer sent: not interesting at a million inputs a minute.
inline void quiet_logs() { relink::log::setup(spdlog::level::off, false); }

}  // namespace relink::fuzz
