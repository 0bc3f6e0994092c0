// SPDX-License-Identifier: GPL-2.0-or-later
// Pure parsing of libvirt's live domain XML (virDomainGetXMLDesc) and the
// device XML relinkd hands back to libvirt. No connection here, so fixtures
// and fuzzers can drive it. Safe on hostile input: bounded size, no network,
// no DTD (a document with one is refused), no entity expansion.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "util/mac.h"
#include "util/result.h"

namespace relink::libvirt {

// One <interface type='direct'> of a domain's live XML.
struct DirectInterface {
  MacAddress mac{};           // <mac address=...> (required: an interface without a valid one is skipped)
  std::string source_dev;     // <source dev=...> (required)
  std::string mode = "vepa";  // <source mode=...>; libvirt's default is vepa
  std::string model;          // <model type=...> ("" absent)
  std::string alias;          // <alias name=...> ("" absent)
  std::string target_dev;     // <target dev=...>: the macvtap libvirt made (live XML only; "" absent)
  unsigned queues = 1;        // <driver queues=...> (absent or 0: 1)
  bool link_up = true;        // <link state='down'/> -> false
  std::string pci_address;    // <address type='pci' .../> as "0000:01:00.0" ("" absent or not pci)
  // The element itself, serialized as in the live XML (namespaces it uses
  // declared on it, so it parses on its own). attach_xml and link_update_xml
  // start from it; when it is empty they build the element from the fields.
  std::string xml;
  bool operator==(const DirectInterface&) const = default;
};

// One <interface type='bridge'> of a domain's live XML: a tap libvirt made
// and put into a host bridge. libvirt writes the resolved type in the live
// XML, so an interface of a network that forwards to a host bridge
// (<forward mode='bridge'> with <bridge name>) is one too, with its
// network's name; one of libvirt's own networks (NAT, route, isolated: a
// bridge libvirt makes and removes itself) stays type='network'.
struct BridgeInterface {
  MacAddress mac{};     // <mac address=...> (required)
  std::string bridge;   // <source bridge=...> (required)
  std::string tap;      // <target dev=...> (required: live XML only)
  std::string network;  // <source network=...>: the libvirt network ("" a plain bridge interface)
  std::string alias;    // <alias name=...> ("" absent)
  bool operator==(const BridgeInterface&) const = default;
};

struct Domain {
  std::string name;                         // <name> (required)
  std::string uuid;                         // <uuid> ("" absent)
  int id = -1;                              // <domain id=...> of a running domain, -1 absent
  std::vector<DirectInterface> interfaces;  // type='direct' ones only, in document order
  std::vector<BridgeInterface> bridge_ports;  // type='bridge' ones, in document order
  // Interfaces on libvirt's own networks (type='network' in the live XML),
  // left to libvirt, one line each, e.g. "interface 3: vnet2 on libvirt's
  // network 'default' (virbr0)".
  std::vector<std::string> left_to_libvirt;
  // Why a direct or bridge interface was left out, one line each, e.g.
  // "interface 2: no valid <mac address>" (interfaces of all types are
  // counted from 1 in document order, as virsh domiflist lists them).
  std::vector<std::string> skipped;
};

inline constexpr size_t kMaxDomainXmlBytes = size_t{4} << 20;

// Parses a domain's XML. Errors (EINVAL, EFBIG for size): not well-formed,
// has a DTD, not a <domain>, no <name>, over kMaxDomainXmlBytes. Never throws.
Result<Domain> parse_domain(std::string_view xml);

// The element to hot-plug the interface again after it was detached: the
// live element without <target> (libvirt names and creates a new macvtap
// itself), without an <alias> libvirt assigned (a user alias, "ua-...", is
// kept), and with <link state='up'|'down'/> per link_up (added if absent).
// Everything else unchanged (mac, source dev and mode, model, driver queues,
// the PCI <address>, ...).
Result<std::string> attach_xml(const DirectInterface& iface, bool link_up);

// The element for a live update of the link state only
// (virDomainUpdateDeviceFlags): the live element as it is, with
// <link state=...> set (added if absent).
Result<std::string> link_update_xml(const DirectInterface& iface, bool up);

}  // namespace relink::libvirt
