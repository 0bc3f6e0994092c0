// SPDX-License-Identifier: GPL-2.0-or-later
// The character-device side of a macvtap: where its major:minor comes from and
// how queue fds on it are opened and proven to be its own.
#pragma once

#include <sys/types.h>

#include <string>
#include <string_view>
#include <vector>

#include "util/result.h"
#include "util/unique_fd.h"

namespace relink::macvtap {

// The kernel's rule for interface names (dev_valid_name): 1..15 bytes, not
// "." or "..", no '/', ':' or whitespace. Names end up in sysfs paths.
bool valid_ifname(std::string_view name);

// Opens class/net of a sysfs that shows the calling thread's network
// namespace (see RtnlMacvtapFactory for why), as an O_PATH directory fd.
Result<UniqueFd> open_sysfs_class_net();

// read_macvtap_dev() relative to an open class/net directory.
Result<dev_t> read_macvtap_dev_at(int class_net_dir, const std::string& name, int ifindex);

struct TapNodeDirs {
  std::string dev_dir = "/dev";  // where devtmpfs names the node tap<ifindex>
  std::string node_dir;          // private nodes (RtnlMacvtapFactory's node_dir)
};

// Opens `queues` fds (O_RDWR | O_CLOEXEC, blocking: QEMU sets O_NONBLOCK
// itself) on the macvtap with this ifindex and device number, with
// IFF_TAP | IFF_NO_PI | IFF_VNET_HDR, plus IFF_MULTI_QUEUE when queues > 1.
// Every fd is checked with fstat to be char device `dev`. DEV_DIR/tap<ifindex>
// is used when it is that device; otherwise (missing, stale, or another
// namespace's macvtap with the same ifindex) a private node is made in
// node_dir, opened and unlinked at once.
Result<std::vector<UniqueFd>> open_tap_queues(const TapNodeDirs& dirs, int ifindex, dev_t dev,
                                              unsigned queues);

}  // namespace relink::macvtap
