// SPDX-License-Identifier: GPL-2.0-or-later
// The one door for bytes from peers (QEMU's QMP, control clients, pidfiles,
// anything another process wrote). relinkd runs as root and its peers
// usually do not: what they send is data, never a crash. Parsing is bounded
// (size, nesting depth, numbers that fit), never throws, and text from peers
// is made valid, printable UTF-8 before it is stored, logged or sent on.
#pragma once

#include <cstddef>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "util/result.h"

namespace relink::untrusted {

struct JsonLimits {
  size_t max_bytes = size_t{1} << 20;
  // Deeper documents are refused: nothing QEMU or relinkctl sends nests past
  // a handful of levels, and serialising is recursive.
  unsigned max_depth = 64;
};

// Parses one JSON document from a peer. Never throws. Errors (EINVAL) say
// what was wrong in safe text: "invalid JSON: ...", "JSON nested deeper than
// 64 levels", "number out of range: ...", "JSON document over N bytes".
Result<nlohmann::json> parse_json(std::string_view bytes, const JsonLimits& limits = {});

// Serialises a value that may carry peer text. Never throws: invalid UTF-8
// (which parse_json never yields, but a value built from other sources
// might) is replaced with U+FFFD.
std::string dump_json(const nlohmann::json& value);

// Peer text made safe for a log line, a status field or an error message:
// valid UTF-8, with control characters, backslashes and invalid bytes
// escaped (\n, \t, \\, \xNN), cut at a character boundary to at most
// `max_bytes` bytes of output (then "..." is appended).
std::string safe_text(std::string_view bytes, size_t max_bytes = 200);

}  // namespace relink::untrusted
