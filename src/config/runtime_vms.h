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

// The ids a passt binding's runas resolved to when it was registered: used
// when the name does not resolve at a later start (NSS not ready: sssd, LDAP).
struct ResolvedIds {
  std::string vm, netdev, runas;
  uint32_t uid = 0, gid = 0;

  bool operator==(const ResolvedIds&) const = default;
};

// A registration of runtime.toml that cannot be loaded now (a runas no
// NSS and no resolved ids give, a clash with another VM): kept as it was
// and written back, retried at every reload.
struct HeldVm {
  std::string name;  // its [[vm]] name ("" when it has none)
  std::string toml;  // its [[vm]] table as a document, as in the file
  std::string error;
  std::vector<ResolvedIds> ids;

  bool operator==(const HeldVm&) const = default;
};

struct RuntimeFile {
  std::vector<RuntimeVm> vms;
  std::vector<HeldVm> held;
  std::vector<std::string> notes;  // runas given by the kept ids: for the log
};

// The text of runtime.toml: a header comment saying relinkd writes it, then
// each VM's toml (loaded, then held), then a [[resolved]] table per passt
// binding (its runas's uid and gid).
std::string format_runtime_file(const std::vector<RuntimeVm>& vms, const std::vector<HeldVm>& held = {});
// And back, one VM at a time: a VM that does not load is held, the others
// load. A runas that does not resolve takes the ids kept for it (a note
// says so). Throws ConfigError "PATH:LINE:COL: message" only for the file
// as a whole (not TOML, or tables relinkd does not write).
RuntimeFile parse_runtime_file(const std::string& text, const std::string& path);
// One registration (a held one's toml, retried), as parse_runtime_file
// loads each. Throws ConfigError.
RuntimeVm load_runtime_vm(const std::string& toml, const std::vector<ResolvedIds>& ids, const std::string& origin,
                          std::vector<std::string>& notes);

}  // namespace relink::config
