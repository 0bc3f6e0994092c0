// SPDX-License-Identifier: GPL-2.0-or-later
// Bytes of a pidfile through its parser. relinkd writes pidfiles itself, but
// reads them back after a restart, when anything may have replaced them: the
// parser must refuse what it did not write, never crash or throw, and what it
// accepts must be a record relinkd could have written.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz_check.h"
#include "passt/pidfile.h"

using namespace relink::passt;

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  relink::fuzz::quiet_logs();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto r = parse_pidfile(text, "/run/relinkd/fuzz.pid");
  if (!r) {
    FUZZ_CHECK(!r.error().message.empty());
    return 0;
  }
  FUZZ_CHECK(size <= kMaxPidfileBytes);
  FUZZ_CHECK(r->pid > 0);
  // Whatever is recorded, deciding about it is pure and total.
  (void)decide_adoption(*r, std::nullopt);
  ProcInfo same;
  same.pid = r->pid;
  same.start_time = r->start_time;
  same.exe = r->exe;
  (void)decide_adoption(*r, same);
  return 0;
}
