// SPDX-License-Identifier: GPL-2.0-or-later
// The QEMU command-line options a VM needs so that relinkd can manage each of
// its bindings (`relinkctl qemu-args VM`). Pure: it reads the configuration
// only, never the host.
#pragma once

#include <string>
#include <vector>

#include "config/config.h"

namespace relink::config {

struct QemuArgs {
  std::vector<std::string> args;   // argv words, e.g. "-netdev", "hubport,id=nic0.port,hubid=0"
  std::vector<std::string> notes;  // one-line comments for the human (what must exist first, e.g. a
                                   // macvtap the launcher opens as fd N)
};

// What to add to QEMU's command line for `vm`:
//  - `-qmp unix:QMP,server=on,wait=off` (not for a VM whose bindings are all
//    libvirt's: relinkd never talks to a libvirt domain's QEMU);
//  - hub: the NIC on a hubport of its hub, with no uplink (relinkd adds it);
//  - replug: the NIC peered with a tap netdev on a macvtap the launcher makes
//    (named as the binding's `macvtap`) and passes as fd 3, 4, ... (one per
//    queue, numbered across the VM's replug bindings in order), which relinkd
//    adopts; the NIC on a pcie-root-port of its own;
//  - passt: the stream or vhost-user netdev on the binding's socket, and a
//    virtio-net NIC "<netdev>.nic" on it.
// Values that QEMU parses as options have their commas doubled.
QemuArgs qemu_args(const Vm& vm);

// Notes as "# ..." lines, then the args one "-opt value \" pair per line,
// each word shell-quoted where it needs it.
std::string format_qemu_args(const QemuArgs& a);

// A word as a POSIX shell reads it back unchanged: as it is when it holds only
// characters no shell treats specially, else in single quotes.
std::string shell_quote(const std::string& word);

}  // namespace relink::config
