// SPDX-License-Identifier: GPL-2.0-or-later
// Bounded JSON parsing and safe text for bytes from peers.
#include "util/untrusted.h"

#include <array>
#include <exception>

namespace relink::untrusted {
namespace {

using Json = nlohmann::json;

// nlohmann's own DOM builder, with a depth limit in front of it. The parser
// itself is iterative; the limit protects everything that walks the value
// afterwards (dump, comparisons, destructors of deep copies).
class BoundedSax {
 public:
  BoundedSax(Json& root, unsigned max_depth) : dom_(root, /*allow_exceptions=*/false), max_depth_(max_depth) {}

  bool null() { return dom_.null(); }
  bool boolean(bool v) { return dom_.boolean(v); }
  bool number_integer(Json::number_integer_t v) { return dom_.number_integer(v); }
  bool number_unsigned(Json::number_unsigned_t v) { return dom_.number_unsigned(v); }
  bool number_float(Json::number_float_t v, const Json::string_t& s) { return dom_.number_float(v, s); }
  bool string(Json::string_t& v) { return dom_.string(v); }
  bool binary(Json::binary_t& v) { return dom_.binary(v); }
  bool start_object(std::size_t n) { return enter() && dom_.start_object(n); }
  bool key(Json::string_t& k) { return dom_.key(k); }
  bool end_object() {
    --depth_;
    return dom_.end_object();
  }
  bool start_array(std::size_t n) { return enter() && dom_.start_array(n); }
  bool end_array() {
    --depth_;
    return dom_.end_array();
  }
  bool parse_error(std::size_t position, const std::string& token, const nlohmann::detail::exception& ex) {
    // out_of_range.406: a number that does not fit a double ("1e400").
    if (ex.id == 406) error_ = "number out of range: " + safe_text(token, 40);
    else error_ = "invalid JSON at byte " + std::to_string(position) + ": " + safe_text(ex.what(), 160);
    return false;
  }

  const std::string& error() const { return error_; }

 private:
  bool enter() {
    if (++depth_ > max_depth_) {
      error_ = "JSON nested deeper than " + std::to_string(max_depth_) + " levels";
      return false;
    }
    return true;
  }

  nlohmann::detail::json_sax_dom_parser<Json> dom_;
  unsigned max_depth_;
  unsigned depth_ = 0;
  std::string error_;
};

// Length of the valid UTF-8 sequence at the start of s, or 0 when it is not
// one (overlong forms, surrogates and code points past U+10FFFF are invalid).
size_t utf8_sequence(std::string_view s) {
  const auto b0 = static_cast<unsigned char>(s[0]);
  if (b0 < 0x80) return 1;
  size_t len;
  uint32_t cp;
  if (b0 >= 0xC2 && b0 <= 0xDF) len = 2, cp = b0 & 0x1F;
  else if (b0 >= 0xE0 && b0 <= 0xEF) len = 3, cp = b0 & 0x0F;
  else if (b0 >= 0xF0 && b0 <= 0xF4) len = 4, cp = b0 & 0x07;
  else return 0;
  if (s.size() < len) return 0;
  for (size_t i = 1; i < len; ++i) {
    const auto b = static_cast<unsigned char>(s[i]);
    if ((b & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (b & 0x3F);
  }
  if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF))) return 0;
  if (cp >= 0xD800 && cp <= 0xDFFF) return 0;
  return len;
}

}  // namespace

Result<nlohmann::json> parse_json(std::string_view bytes, const JsonLimits& limits) {
  if (bytes.size() > limits.max_bytes)
    return Error{EINVAL, "JSON document over " + std::to_string(limits.max_bytes) + " bytes"};
  Json out;
  BoundedSax sax(out, limits.max_depth);
  try {
    if (!Json::sax_parse(bytes, &sax)) return Error{EINVAL, sax.error().empty() ? "invalid JSON" : sax.error()};
  } catch (const std::bad_alloc&) {
    return Error{ENOMEM, "out of memory parsing JSON"};
  } catch (const std::exception& e) {
    // The DOM builder refuses with an exception in a few corners (sizes past
    // max_size()); whatever it is, the input is refused, not fatal.
    return Error{EINVAL, "invalid JSON: " + safe_text(e.what(), 160)};
  }
  return out;
}

std::string dump_json(const nlohmann::json& value) {
  return value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::string safe_text(std::string_view s, size_t max_bytes) {
  std::string out;
  out.reserve(std::min(s.size(), max_bytes) + 4);
  static constexpr std::array<char, 16> kHex = {'0', '1', '2', '3', '4', '5', '6', '7',
                                                '8', '9', 'a', 'b', 'c', 'd', 'e', 'f'};
  while (!s.empty()) {
    std::string piece;
    size_t used = 1;
    const auto c = static_cast<unsigned char>(s[0]);
    if (c == '\n') piece = "\\n";
    else if (c == '\t') piece = "\\t";
    else if (c == '\r') piece = "\\r";
    else if (c == '\\') piece = "\\\\";
    else if (c < 0x20 || c == 0x7F) piece = {'\\', 'x', kHex[c >> 4], kHex[c & 0xF]};
    else if (size_t n = utf8_sequence(s); n > 0) used = n, piece.assign(s.substr(0, n));
    else piece = {'\\', 'x', kHex[c >> 4], kHex[c & 0xF]};
    if (out.size() + piece.size() > max_bytes) {
      out += "...";
      return out;
    }
    out += piece;
    s.remove_prefix(used);
  }
  return out;
}

}  // namespace relink::untrusted
