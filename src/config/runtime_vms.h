// SPDX-License-Identifier: GPL-2.0-or-later
// VMs registered at runtime (relinkctl add / remove) instead of in
// relinkd.toml: the same [[vm]] tables with the same keys and checks, the
// cross-checks against the VMs relinkd already has, and the text of the
// runtime.toml file that keeps them across restarts.
#pragma once

#include <string>
#include <vector>

#include "config/config.h"

namespace relink::config {

// One runtime VM and the TOML text of its own [[vm]] table: a complete
// document ("[[vm]]...") that load_string accepts alone and that gives `vm`
// back.
struct RuntimeVm {
  Vm vm;
  std::string toml;

  bool operator==(const RuntimeVm&) const = default;
};

// Parses [[vm]] tables given at runtime: TOML text holding only [[vm]] tables,
// checked as relinkd.toml's are (within the text: unique names, QMP sockets,
// macvtap names, MACs and passt sockets). Refuses [daemon], [libvirt] and a
// text without any [[vm]]. Throws ConfigError "ORIGIN:LINE:COL: message".
std::vector<RuntimeVm> parse_runtime_vms(const std::string& text, const std::string& origin);

// Why `added` cannot join `existing` (the configuration file's VMs and the
// other runtime VMs), "" when it can: the same VM name or QMP socket, a
// macvtap name or MAC another binding uses, a passt socket another binding
// uses or that is a QMP socket or `control_socket` (and a QMP socket that is
// another VM's passt socket). The message names the other VM:
// "MAC 52:54:00:12:34:56 is already used by VM 'web1' (nic0)".
std::string runtime_conflict(const std::vector<const Vm*>& existing, const Vm& added,
                             const std::string& control_socket);

// The text of runtime.toml: a header comment saying relinkd writes it, then
// each VM's toml.
std::string format_runtime_file(const std::vector<RuntimeVm>& vms);
// And back: no VMs for a file of comments only. Throws ConfigError
// "PATH:LINE:COL: message".
std::vector<RuntimeVm> parse_runtime_file(const std::string& text, const std::string& path);

}  // namespace relink::config
