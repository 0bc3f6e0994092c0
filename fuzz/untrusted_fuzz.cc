// SPDX-License-Identifier: GPL-2.0-or-later
// The one door for peer bytes: parse_json with the default and with tight
// limits, dump_json of whatever it accepted, and safe_text. Invariants:
// nothing throws, accepted documents respect the limits and survive a round
// trip, safe text is valid UTF-8 without control characters and at most
// max_bytes + 3 ("...") long.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz_check.h"
#include "util/untrusted.h"

using namespace relink::untrusted;

namespace {

// Independent of untrusted.cc on purpose: RFC 3629 well-formedness.
bool valid_utf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto b = static_cast<unsigned char>(s[i]);
    size_t n;
    uint32_t cp;
    if (b < 0x80) n = 1, cp = b;
    else if ((b & 0xE0) == 0xC0) n = 2, cp = b & 0x1F;
    else if ((b & 0xF0) == 0xE0) n = 3, cp = b & 0x0F;
    else if ((b & 0xF8) == 0xF0) n = 4, cp = b & 0x07;
    else return false;
    if (i + n > s.size()) return false;
    for (size_t k = 1; k < n; ++k) {
      const auto c = static_cast<unsigned char>(s[i + k]);
      if ((c & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (c & 0x3F);
    }
    static constexpr uint32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < kMin[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += n;
  }
  return true;
}

unsigned depth_of(const nlohmann::json& v) {
  // Recursion is fine here: accepted documents are at most max_depth deep.
  unsigned d = 0;
  if (v.is_array() || v.is_object())
    for (const auto& e : v) d = std::max(d, depth_of(e));
  return (v.is_array() || v.is_object()) ? d + 1 : 0;
}

void check_parse(std::string_view bytes, const JsonLimits& limits) {
  auto r = parse_json(bytes, limits);
  if (!r) {
    FUZZ_CHECK(!r.error().message.empty());
    FUZZ_CHECK(valid_utf8(r.error().message));
    return;
  }
  FUZZ_CHECK(bytes.size() <= limits.max_bytes);
  FUZZ_CHECK(depth_of(*r) <= limits.max_depth);
  std::string dumped = dump_json(*r);
  FUZZ_CHECK(valid_utf8(dumped));
  // What was accepted once is accepted again, unchanged.
  JsonLimits roomy = limits;
  roomy.max_bytes = dumped.size();
  auto again = parse_json(dumped, roomy);
  FUZZ_CHECK(again);
  FUZZ_CHECK(*again == *r);
}

void check_safe_text(std::string_view bytes, size_t max_bytes) {
  std::string s = safe_text(bytes, max_bytes);
  FUZZ_CHECK(valid_utf8(s));
  FUZZ_CHECK(s.size() <= max_bytes + 3);
  for (unsigned char c : s) FUZZ_CHECK(c >= 0x20 && c != 0x7F);
  // Printable ASCII without backslashes that fits is kept as it is.
  bool plain = bytes.size() <= max_bytes;
  for (unsigned char c : bytes) plain = plain && c >= 0x20 && c < 0x7F && c != '\\';
  if (plain) FUZZ_CHECK(s == bytes);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  check_parse(bytes, JsonLimits{});
  check_parse(bytes, JsonLimits{size / 2 + 1, static_cast<unsigned>(size % 5)});
  check_safe_text(bytes, 200);
  check_safe_text(bytes, size % 64);
  return 0;
}
