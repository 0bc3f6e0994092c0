// SPDX-License-Identifier: GPL-2.0-or-later
// Who holds a macvtap's queue open, proven on the open file itself. A
// macvtap's minor number is reused as soon as the macvtap is deleted, so a
// process that still holds a dead macvtap's fd (its parent went away) shows
// the very major:minor of a newer macvtap in /proc/PID/fd; and the device
// node it was opened through may be a private one relinkd unlinked at once
// (tap_device.h), so "(deleted)" proves nothing either. The tap driver knows:
// TUNGETIFF on the queue names the macvtap it is attached to, or fails with
// ENOLINK once that macvtap is gone. relinkd takes a copy of the holder's fd
// with pidfd_getfd(2) (root, same as reading /proc/PID/fd) to ask it.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

namespace relink::macvtap {

enum class Liveness {
  Live,     // attached to the macvtap named `ifname`
  Dead,     // attached to no macvtap (ENOLINK) or to another one
  Unknown,  // the fd could not be copied or asked (no pidfd_getfd, a process that just exited)
};

// What fd `fd` of process `pid` is attached to, compared with `ifname`.
Liveness fd_liveness(pid_t pid, int fd, const std::string& ifname);

// The same judged only from the node the fd was opened through, for when
// the fd cannot be copied: "/dev/tapN (deleted)" is dead (devtmpfs removes
// the node with its macvtap), the current /dev/tapN with the fd's inode is
// live, anything else (a private node) unknown.
Liveness fd_liveness_by_node(pid_t pid, int fd);

// The fds of `pid` that are character device `dev`.
std::vector<int> fds_of_device(pid_t pid, dev_t dev);

// True if `pid` holds `dev` through an fd attached to the macvtap `ifname`
// (Unknown counts as held: what cannot be disproved is not deleted).
bool holds_live(pid_t pid, dev_t dev, const std::string& ifname);

// True if any process holds the macvtap `ifname` (device `dev`) live, with
// the same reading of Unknown. /proc is scanned.
bool anyone_holds_live(dev_t dev, const std::string& ifname);

}  // namespace relink::macvtap
