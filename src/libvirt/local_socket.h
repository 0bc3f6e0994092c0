// SPDX-License-Identifier: GPL-2.0-or-later
// Where a libvirt URI's daemon listens on this host, and whether anything
// listens there: what relinkd waits for (inotify) when libvirtd is absent,
// instead of retrying on a timer.
#pragma once

#include <string>
#include <vector>

namespace relink::libvirt {

// The unix sockets a libvirt URI connects to on this host, in the order
// libvirt tries them: `socket=PATH` when given; for qemu:///system (and
// qemu+unix:///system) the modular daemon's and libvirtd's sockets under
// /run/libvirt. Empty for a URI with a host, another transport or driver,
// or a session URI: those are retried on a timer.
std::vector<std::string> local_sockets(const std::string& uri);

// Whether no process listens on any of `paths` (each absent, or refusing
// connections: a socket a killed libvirtd left); `exists` tells whether any
// of them is there at all.
bool nobody_listens(const std::vector<std::string>& paths, bool& exists);

}  // namespace relink::libvirt
