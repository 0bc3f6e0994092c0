// SPDX-License-Identifier: GPL-2.0-or-later
// A replugged NIC's template: what device_add needs to plug it in again as
// it was (driver, id, MAC, bus, address, the properties that matter to the
// guest). Read from QEMU over QMP while the NIC is there (replug_attach.h),
// kept in the journal of intent across relinkd's death (intent_journal.h),
// and turned into device_add's arguments. Both ways in are checked the same:
// only plain names and numbers in range go back to QEMU.
#pragma once

#include <sys/types.h>

#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "util/mac.h"
#include "util/result.h"

namespace relink::daemon {

// What device_add needs to plug a NIC in again as it was, read from QEMU.
struct NicTemplate {
  std::string driver;   // QOM type, e.g. "virtio-net-pci"
  std::string id;       // the device id (the binding's nic)
  MacAddress mac{};
  std::string bus;      // bus name for device_add ("pci.0", "pcie.0", a root port's id); "" if none
  int addr = -1;        // PCI devfn (slot << 3 | function); -1: not a PCI device or not known
  // Carried properties, as device_add arguments (see replug_attach.cc).
  nlohmann::json props = nlohmann::json::object();
  bool has_mq = false;       // the driver has `mq` and `vectors` (multiqueue virtio-net)
  std::string netdev;        // the NIC's current backend: deleted before the next device_add
  pid_t qemu_pid = 0;        // the QEMU process it was read from
};

// device_add's form of a PCI devfn: "slot.function" in hex ("2.0", "1f.7").
// QEMU 7.2 turns a JSON number for `addr` into a string and parses it as a
// hex slot, so 16 (slot 2) would become slot 0x16.
std::string pci_addr_arg(int devfn);
// The bus name device_add wants from a QOM `parent_bus` path: its last
// component ("/machine/i440fx/pci.0" -> "pci.0",
// "/machine/peripheral/rp1/rp1" -> "rp1"); "" if that is not a plain name.
std::string bus_name_of(const std::string& qom_path);

// The template from what qom-get said of a NIC that QEMU (`pid`) has, by
// property name; nullopt and why_not when it cannot be trusted to plug the
// NIC in again. `queues`: the tap's queue count (vectors' default).
std::optional<NicTemplate> template_from_qom(const std::map<std::string, nlohmann::json>& values,
                                             const std::string& id, pid_t pid, size_t queues,
                                             std::string& why_not);
// device_add's arguments for the NIC as it was, on the tap netdev `tap`.
nlohmann::json device_add_args(const NicTemplate& t, const std::string& nic, const std::string& tap, size_t queues);

// The template as the journal keeps it, and back (the same checks as when it
// is read from QEMU; an error says what is wrong).
nlohmann::json template_to_json(const NicTemplate& t);
Result<NicTemplate> template_from_json(const nlohmann::json& j);

}  // namespace relink::daemon
