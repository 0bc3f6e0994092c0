// SPDX-License-Identifier: GPL-2.0-or-later
// MAC addresses: the type, parsing ("52:54:00:12:34:56") and formatting.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace relink {

using MacAddress = std::array<uint8_t, 6>;

std::optional<MacAddress> parse_mac(std::string_view text);
std::string format_mac(const MacAddress& mac);

}  // namespace relink
