// SPDX-License-Identifier: GPL-2.0-or-later
// Output of `passt --help` (whatever binary is configured as passt) through
// the option probe, plus the other text passt hands relinkd: its log lines.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "fuzz_check.h"
#include "passt/passt.h"

using namespace relink::passt;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  Features f = parse_help(text);
  for (Mode m : {Mode::StreamServer, Mode::StreamClient, Mode::VhostUser}) {
    auto why = unsupported_reason(m, f);
    FUZZ_CHECK(!why || !why->empty());
  }
  (void)is_syslog_noise(text);
  (void)is_problem_line(text);
  (void)parse_mode(text);
  return 0;
}
