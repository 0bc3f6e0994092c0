// SPDX-License-Identifier: GPL-2.0-or-later
// Strict walks over netlink attributes for the pure parsers: unlike
// mnl_attr_parse(), they fail on attributes that do not tile their space.
#pragma once

#include <libmnl/libmnl.h>

namespace relink::netlink {

// Calls fn(attr) for every attribute in [start, start + len). Returns false
// when the attributes do not tile that space (truncated or corrupt input)
// or fn returns false.
template <typename Fn>
bool for_each_attr(const void* start, int len, Fn&& fn) {
  auto* attr = static_cast<const nlattr*>(start);
  while (len > 0) {
    if (!mnl_attr_ok(attr, len)) return false;
    if (!fn(attr)) return false;
    // The last attribute may lack its padding: len then goes negative.
    len -= static_cast<int>(MNL_ALIGN(attr->nla_len));
    attr = mnl_attr_next(attr);
  }
  return true;
}

template <typename Fn>
bool for_each_nested(const nlattr* nest, Fn&& fn) {
  return for_each_attr(mnl_attr_get_payload(nest), mnl_attr_get_payload_len(nest), fn);
}

}  // namespace relink::netlink
