// SPDX-License-Identifier: GPL-2.0-or-later
// Raising relinkd's own fd limit, and the limit passt is started with.
#include "util/fd_limit.h"

#include <cerrno>
#include <cstring>

namespace relink::fdlimit {
namespace {
// Written once by main() before any other thread or child exists.
std::optional<rlim_t> g_starting_soft;
}  // namespace

std::string raise_to_hard() {
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return "cannot read the fd limit: " + std::string(std::strerror(errno));
  if (rl.rlim_cur >= rl.rlim_max) return "";
  const rlim_t soft = rl.rlim_cur;
  rl.rlim_cur = rl.rlim_max;
  if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
    return "cannot raise the soft fd limit from " + std::to_string(soft) + ": " + std::strerror(errno);
  g_starting_soft = soft;
  return "raised the soft fd limit from " + std::to_string(soft) + " to " + std::to_string(rl.rlim_max) +
         " (children get " + std::to_string(soft) + ")";
}

std::optional<rlim_t> starting_soft() { return g_starting_soft; }

}  // namespace relink::fdlimit
