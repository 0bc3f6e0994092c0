// SPDX-License-Identifier: GPL-2.0-or-later
// A replugged NIC's template: read from QOM, kept in the journal, turned into device_add's arguments.
#include "daemon/nic_template.h"

#include <cctype>
#include <cstdio>

#include "config/config.h"
#include "util/untrusted.h"

namespace relink::daemon {
namespace {

using nlohmann::json;

bool plain_name(const std::string& s, size_t max) {
  if (s.empty() || s.size() > max) return false;
  for (char c : s)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.')) return false;
  return true;
}

std::optional<int64_t> int_value(const json& v, int64_t lo, int64_t hi) {
  if (!v.is_number_integer()) return std::nullopt;
  int64_t x = 0;
  if (v.is_number_unsigned()) {
    if (v.get<uint64_t>() > static_cast<uint64_t>(hi)) return std::nullopt;
    x = static_cast<int64_t>(v.get<uint64_t>());
  } else {
    x = v.get<int64_t>();
  }
  if (x < lo || x > hi) return std::nullopt;
  return x;
}

// romfile goes back to QEMU as it is: only text that needs no escaping.
bool plain_text(const std::string& s) { return s.size() <= 1024 && untrusted::safe_text(s, 2048) == s; }

}  // namespace

std::string pci_addr_arg(int devfn) {
  char buf[16];
  snprintf(buf, sizeof buf, "%x.%x", (devfn >> 3) & 0x1f, devfn & 7);
  return buf;
}

std::string bus_name_of(const std::string& qom_path) {
  const size_t slash = qom_path.rfind('/');
  std::string name = slash == std::string::npos ? qom_path : qom_path.substr(slash + 1);
  return plain_name(name, 128) ? name : "";
}

// The template, from what qom-get said of a NIC that QEMU has; nullopt and
// why_not when it cannot be trusted to plug the NIC in again.
std::optional<NicTemplate> template_from_qom(const std::map<std::string, json>& values, const std::string& id,
                                             pid_t pid, size_t queues, std::string& why_not) {
  NicTemplate t;
  t.id = id;
  t.qemu_pid = pid;
  auto str = [&](const char* p) -> std::optional<std::string> {
    auto it = values.find(p);
    if (it == values.end() || !it->second.is_string()) return std::nullopt;
    return it->second.get<std::string>();
  };
  auto num = [&](const char* p, int64_t lo, int64_t hi) -> std::optional<int64_t> {
    auto it = values.find(p);
    return it == values.end() ? std::nullopt : int_value(it->second, lo, hi);
  };
  auto has = [&](const char* p) { return values.count(p) != 0; };
  auto driver = str("type");
  auto mac = str("mac");
  auto mac_parsed = mac ? parse_mac(*mac) : std::nullopt;
  auto netdev = str("netdev");
  if (!driver || !plain_name(*driver, 64)) {
    why_not = "its type is not a plain QOM type name (" +
              untrusted::safe_text(driver ? *driver : std::string("none"), 80) + ")";
    return std::nullopt;
  }
  if (!mac_parsed) {
    why_not = "it has no MAC address property (" + untrusted::safe_text(mac.value_or("none"), 80) + ")";
    return std::nullopt;
  }
  if (!netdev || (!netdev->empty() && !config::valid_qemu_id(*netdev))) {
    why_not = "its netdev is not a QEMU id (" + untrusted::safe_text(netdev.value_or("none"), 80) + ")";
    return std::nullopt;
  }
  t.driver = *driver;
  t.mac = *mac_parsed;
  t.netdev = *netdev;
  if (auto a = num("addr", -1, 255)) t.addr = static_cast<int>(*a);
  else if (has("addr")) why_not = "its PCI address is out of range";
  if (auto pb = str("parent_bus")) {
    t.bus = bus_name_of(*pb);
    if (t.bus.empty() && !pb->empty()) why_not = "its bus is not a plain name (" + untrusted::safe_text(*pb, 120) + ")";
  }
  t.has_mq = has("mq") && has("vectors");
  if (auto it = values.find("mq"); it != values.end() && it->second.is_boolean() && it->second.get<bool>())
    t.props["mq"] = true;
  if (auto v = num("vectors", 0, 0xffff); v && *v != static_cast<int64_t>(2 * queues + 2)) t.props["vectors"] = *v;
  if (auto v = num("host_mtu", 0, 0xffff); v && *v != 0) t.props["host_mtu"] = *v;
  if (auto v = num("rx_queue_size", 0, 0xffff); v && *v != 256) t.props["rx_queue_size"] = *v;
  if (auto v = num("tx_queue_size", 0, 0xffff); v && *v != 256) t.props["tx_queue_size"] = *v;
  if (auto v = num("bootindex", -1, 0x7fffffff); v && *v >= 0) t.props["bootindex"] = *v;
  if (auto v = num("acpi-index", 0, 0xffffffff); v && *v != 0) t.props["acpi-index"] = *v;
  if (auto rom = str("romfile")) {
    // Sent back to QEMU as it is: only text that needs no escaping.
    if (plain_text(*rom)) t.props["romfile"] = *rom;
    else why_not = "its romfile is not plain text";
  }
  if (!why_not.empty()) return std::nullopt;
  return t;
}

// device_add's arguments for the NIC as it was (the template), on `tap`.
json device_add_args(const NicTemplate& tm, const std::string& nic, const std::string& tap, size_t queues) {
  json args = tm.props;
  args["driver"] = tm.driver;
  args["id"] = nic;
  args["netdev"] = tap;
  args["mac"] = format_mac(tm.mac);
  if (!tm.bus.empty()) args["bus"] = tm.bus;
  if (tm.addr >= 0) args["addr"] = pci_addr_arg(tm.addr);
  if (queues > 1 && tm.has_mq) {
    if (!args.contains("mq")) args["mq"] = true;
    if (!args.contains("vectors")) args["vectors"] = 2 * queues + 2;
  }
  return args;
}


json template_to_json(const NicTemplate& t) {
  return {{"driver", t.driver}, {"id", t.id},         {"mac", format_mac(t.mac)}, {"bus", t.bus},
          {"addr", t.addr},     {"props", t.props},   {"has_mq", t.has_mq},       {"netdev", t.netdev},
          {"qemu_pid", t.qemu_pid}};
}

Result<NicTemplate> template_from_json(const json& j) {
  auto bad = [](const std::string& why) { return Error{EINVAL, "NIC template: " + why}; };
  if (!j.is_object()) return bad("not an object");
  auto str = [&](const char* k) { return j.contains(k) && j[k].is_string() ? j[k].get<std::string>() : std::string("\x01"); };
  NicTemplate t;
  t.driver = str("driver");
  t.id = str("id");
  t.bus = str("bus");
  t.netdev = str("netdev");
  const auto mac = parse_mac(str("mac"));
  if (!plain_name(t.driver, 64)) return bad("driver is not a plain QOM type name");
  if (!config::valid_qemu_id(t.id)) return bad("id is not a QEMU id");
  if (!t.bus.empty() && !plain_name(t.bus, 128)) return bad("bus is not a plain name");
  if (!t.netdev.empty() && !config::valid_qemu_id(t.netdev)) return bad("netdev is not a QEMU id");
  if (!mac) return bad("no MAC address");
  t.mac = *mac;
  auto addr = j.contains("addr") ? int_value(j["addr"], -1, 255) : std::nullopt;
  auto pid = j.contains("qemu_pid") ? int_value(j["qemu_pid"], 0, 0x3fffffff) : std::nullopt;
  if (!addr || !pid) return bad("addr or qemu_pid out of range");
  t.addr = static_cast<int>(*addr);
  t.qemu_pid = static_cast<pid_t>(*pid);
  t.has_mq = j.value("has_mq", json(false)) == true;
  const json props = j.value("props", json::object());
  if (!props.is_object()) return bad("props is not an object");
  // Only the properties template_from_qom carries, each within its range.
  const std::map<std::string, std::pair<int64_t, int64_t>> ranges = {
      {"vectors", {0, 0xffff}},       {"host_mtu", {0, 0xffff}},      {"rx_queue_size", {0, 0xffff}},
      {"tx_queue_size", {0, 0xffff}}, {"bootindex", {0, 0x7fffffff}}, {"acpi-index", {0, 0xffffffff}}};
  for (const auto& [k, v] : props.items()) {
    const bool fine = k == "mq"        ? v.is_boolean()
                      : k == "romfile" ? v.is_string() && plain_text(v.get<std::string>())
                      : ranges.count(k) ? int_value(v, ranges.at(k).first, ranges.at(k).second).has_value()
                                        : false;
    if (!fine) return bad("property " + untrusted::safe_text(k, 40) + " is not one relinkd carries, or out of range");
  }
  t.props = props;
  return t;
}

}  // namespace relink::daemon
