// SPDX-License-Identifier: GPL-2.0-or-later
// A unix socket's address from its path, with the one length check.
#pragma once

#include <sys/socket.h>
#include <sys/un.h>

#include <algorithm>
#include <string>

#include "util/result.h"

namespace relink {

inline Result<sockaddr_un> unix_addr(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path) return Error{ENAMETOOLONG, "socket path too long: " + path};
  std::copy(path.begin(), path.end(), addr.sun_path);
  return addr;
}

}  // namespace relink
