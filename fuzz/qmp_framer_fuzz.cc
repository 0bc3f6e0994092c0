// SPDX-License-Identifier: GPL-2.0-or-later
// A QMP byte stream, cut into reads of fuzzer-chosen sizes, through the
// framer: lines never exceed the limit or hold a '\n', and memory stays
// bounded once the lines are popped.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "fuzz_check.h"
#include "qemu/qmp_framer.h"

using relink::qemu::QmpFramer;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  // First byte: the line limit (small, so that overflows are reached);
  // second: the read size pattern.
  const size_t max_line = 1 + data[0] % 64;
  const size_t step = 1 + data[1] % 17;
  std::string_view rest(reinterpret_cast<const char*>(data) + 2, size - 2);

  QmpFramer framer(max_line);
  bool overflowed = false;
  size_t chunk = step;
  while (!rest.empty()) {
    std::string_view piece = rest.substr(0, chunk);
    rest.remove_prefix(piece.size());
    chunk = chunk % 13 + step;  // varying read sizes
    bool ok = framer.append(piece);
    if (overflowed) FUZZ_CHECK(!ok);  // stays refused until clear()
    overflowed = !ok;
    while (auto line = framer.next_line()) {
      FUZZ_CHECK(line->size() <= max_line);
      FUZZ_CHECK(line->find('\n') == std::string::npos);
    }
    // The partial line may hold one byte over the limit: a '\r' whose '\n'
    // is in the next read.
    FUZZ_CHECK(framer.buffered_bytes() <= max_line + 1);
  }
  framer.clear();
  FUZZ_CHECK(framer.buffered_bytes() == 0);
  // After clear() a new session is framed from scratch.
  const std::string fits(max_line, 'x');
  FUZZ_CHECK(framer.append(fits + "\r\n"));
  auto line = framer.next_line();
  FUZZ_CHECK(line && *line == fits);
  return 0;
}
