// SPDX-License-Identifier: GPL-2.0-or-later
// Parsing and checking VMs registered at runtime, their conflicts, and runtime.toml's text.
#include "config/runtime_vms.h"

#include <algorithm>
#include <map>
#include <sstream>
#include <toml++/toml.h>

#include "passt/passt.h"

namespace relink::config {
namespace {

[[noreturn]] void fail_at(const std::string& origin, const toml::source_position& at, const std::string& msg) {
  throw ConfigError(origin + ":" + std::to_string(at.line) + ":" + std::to_string(at.column) + ": " + msg);
}

// Tables written inline ("vm = [{ ... }]") are printed as [[vm]] sections.
void make_sections(toml::table& t) {
  t.is_inline(false);
  for (auto&& [k, v] : t) {
    if (toml::table* sub = v.as_table()) {
      make_sections(*sub);
    } else if (toml::array* arr = v.as_array(); arr && arr->is_array_of_tables()) {
      for (toml::node& e : *arr) make_sections(*e.as_table());
    }
  }
}

// The [[vm]] table `t` alone, as a document.
std::string vm_document(const toml::table& t) {
  toml::table copy = t;
  make_sections(copy);
  toml::array vms;
  vms.push_back(std::move(copy));
  toml::table doc;
  doc.insert("vm", std::move(vms));
  std::ostringstream os;
  os << toml::toml_formatter{doc, toml::toml_formatter::default_flags & ~toml::format_flags::indentation};
  std::string text = os.str();
  if (text.empty() || text.back() != '\n') text += '\n';
  return text;
}

std::vector<RuntimeVm> parse_vms(const std::string& text, const std::string& origin, bool allow_none) {
  toml::table root;
  try {
    root = toml::parse(text, origin);
  } catch (const toml::parse_error& e) {
    fail_at(origin, e.source().begin, std::string(e.description()));
  }
  for (std::string_view key : {"daemon", "libvirt"}) {
    for (auto&& [k, v] : root) {
      if (k.str() != key) continue;
      fail_at(origin, k.source().begin,
              "[" + std::string(key) + "] belongs in relinkd's configuration file; only [[vm]] tables can be added "
              "at runtime");
    }
  }
  // Every key and cross-check of the configuration file, with its positions.
  Config cfg = load_string(text, origin);
  if (cfg.vms.empty()) {
    if (allow_none) return {};
    fail_at(origin, toml::source_position{1, 1}, "no [[vm]] table: give at least one VM to add");
  }
  const toml::array& tables = *root["vm"].as_array();
  // Only when adding: a registration kept from before this rule still loads.
  if (!allow_none)
    for (size_t i = 0; i < cfg.vms.size(); ++i)
      for (size_t j = 0; j < cfg.vms[i].passts.size(); ++j)
        if (auto why = passt::check_runtime_args(cfg.vms[i].passts[j].args)) {
          const toml::node* at = tables.get(i)->as_table()->get("passt");
          const toml::node* b = at && at->as_array() ? at->as_array()->get(j) : nullptr;
          const toml::node* args = b && b->as_table() ? b->as_table()->get("args") : nullptr;
          fail_at(origin, (args ? args : tables.get(i))->source().begin,
                  "VM '" + cfg.vms[i].name + "', passt netdev '" + cfg.vms[i].passts[j].netdev + "': 'args': " + *why);
        }
  std::vector<RuntimeVm> out;
  out.reserve(cfg.vms.size());
  for (size_t i = 0; i < cfg.vms.size(); ++i) {
    RuntimeVm rv{std::move(cfg.vms[i]), vm_document(*tables.get(i)->as_table())};
    // What is kept must load back to the same VM, or a restart would change it.
    Config again = load_string(rv.toml, origin + " (VM '" + rv.vm.name + "' re-serialized)");
    if (again.vms.size() != 1 || !(again.vms[0] == rv.vm))
      fail_at(origin, tables.get(i)->source().begin,
              "VM '" + rv.vm.name + "' does not read back the same once re-serialized; please report this");
    out.push_back(std::move(rv));
  }
  return out;
}

std::string owner(const Vm& vm, const std::string& binding) {
  return "VM '" + vm.name + "'" + (binding.empty() ? "" : " (" + binding + ")");
}

}  // namespace

std::vector<RuntimeVm> parse_runtime_vms(const std::string& text, const std::string& origin) {
  return parse_vms(text, origin, /*allow_none=*/false);
}

namespace {

// One [[vm]] table of runtime.toml. A passt binding whose runas does not
// resolve now, with ids kept for that very runas, loads with those ids
// (given as "UID:GID", which needs no NSS) and keeps its name.
RuntimeVm load_vm_table(const toml::table& vt, const std::vector<ResolvedIds>& ids, const std::string& origin,
                        std::vector<std::string>& notes) {
  const std::string doc = vm_document(vt);
  const std::string name = vt["name"].value_or(std::string());
  toml::table copy = vt;
  std::map<size_t, std::string> substituted;  // passt index -> runas as written
  if (toml::array* ps = copy["passt"].as_array())
    for (size_t j = 0; j < ps->size(); ++j) {
      toml::table* pt = ps->get(j)->as_table();
      if (!pt) continue;
      const std::string runas = (*pt)["runas"].value_or(std::string("nobody"));
      const std::string netdev = (*pt)["netdev"].value_or(std::string());
      auto kept = std::find_if(ids.begin(), ids.end(), [&](const ResolvedIds& r) {
        return r.vm == name && r.netdev == netdev && r.runas == runas;
      });
      if (kept == ids.end()) continue;
      auto now = resolve_runas_ids(runas);
      if (now) continue;  // NSS answers: it has the last word
      pt->insert_or_assign("runas", std::to_string(kept->uid) + ":" + std::to_string(kept->gid));
      substituted[j] = runas;
      notes.push_back(origin + ": VM '" + name + "', passt netdev '" + netdev + "': " + now.error().message +
                      "; using uid " + std::to_string(kept->uid) + " gid " + std::to_string(kept->gid) +
                      ", which it resolved to when it was registered");
    }
  Config cfg = load_string(substituted.empty() ? doc : vm_document(copy), origin + " (VM '" + name + "')");
  if (cfg.vms.size() != 1) throw ConfigError(origin + ": VM '" + name + "': not one [[vm]] table");
  RuntimeVm rv{std::move(cfg.vms[0]), doc};
  for (const auto& [j, runas] : substituted) rv.vm.passts.at(j).runas = runas;
  return rv;
}

std::vector<ResolvedIds> read_resolved(const toml::table& root, std::vector<std::string>& notes,
                                       const std::string& path) {
  std::vector<ResolvedIds> out;
  const toml::array* arr = root["resolved"].as_array();
  if (!arr) return out;
  for (const toml::node& n : *arr) {
    const toml::table* t = n.as_table();
    ResolvedIds r;
    auto id = [&](const char* key, uint32_t& to) {
      auto v = t ? (*t)[key].value<int64_t>() : std::nullopt;
      if (!v || *v <= 0 || *v >= 0xffffffff) return false;
      to = static_cast<uint32_t>(*v);
      return true;
    };
    if (!t || !(*t)["vm"].is_string() || !(*t)["netdev"].is_string() || !(*t)["runas"].is_string() ||
        !id("uid", r.uid) || !id("gid", r.gid)) {
      notes.push_back(path + ":" + std::to_string(n.source().begin.line) + ": ignoring a malformed [[resolved]] table");
      continue;
    }
    r.vm = *(*t)["vm"].value<std::string>();
    r.netdev = *(*t)["netdev"].value<std::string>();
    r.runas = *(*t)["runas"].value<std::string>();
    out.push_back(std::move(r));
  }
  return out;
}

std::vector<ResolvedIds> of_vm(const std::vector<ResolvedIds>& ids, const std::string& vm) {
  std::vector<ResolvedIds> out;
  for (const auto& r : ids)
    if (r.vm == vm) out.push_back(r);
  return out;
}

}  // namespace

RuntimeFile parse_runtime_file(const std::string& text, const std::string& path) {
  toml::table root;
  try {
    root = toml::parse(text, path);
  } catch (const toml::parse_error& e) {
    fail_at(path, e.source().begin, std::string(e.description()));
  }
  for (auto&& [k, v] : root)
    if (k.str() != "vm" && k.str() != "resolved")
      fail_at(path, k.source().begin, "'" + std::string(k.str()) + "' is not a table relinkd writes in this file");
  RuntimeFile out;
  const std::vector<ResolvedIds> ids = read_resolved(root, out.notes, path);
  const toml::node* vms = root.get("vm");
  if (!vms) return out;
  const toml::array* arr = vms->as_array();
  if (!arr || !arr->is_array_of_tables()) fail_at(path, vms->source().begin, "'vm' must be [[vm]] tables");
  for (const toml::node& n : *arr) {
    const toml::table& vt = *n.as_table();
    const std::string name = vt["name"].value_or(std::string());
    try {
      out.vms.push_back(load_vm_table(vt, of_vm(ids, name), path, out.notes));
    } catch (const ConfigError& e) {
      out.held.push_back(HeldVm{name, vm_document(vt), e.what(), of_vm(ids, name)});
    }
  }
  return out;
}

RuntimeVm load_runtime_vm(const std::string& text, const std::vector<ResolvedIds>& ids, const std::string& origin,
                          std::vector<std::string>& notes) {
  toml::table root;
  try {
    root = toml::parse(text, origin);
  } catch (const toml::parse_error& e) {
    fail_at(origin, e.source().begin, std::string(e.description()));
  }
  const toml::array* arr = root["vm"].as_array();
  if (!arr || arr->size() != 1 || !arr->get(0)->as_table()) fail_at(origin, {1, 1}, "not one [[vm]] table");
  return load_vm_table(*arr->get(0)->as_table(), ids, origin, notes);
}

std::string format_runtime_file(const std::vector<RuntimeVm>& vms, const std::vector<HeldVm>& held) {
  std::string text =
      "# The VMs registered at runtime with relinkctl add, kept across restarts of relinkd.\n"
      "# relinkd writes this file after every relinkctl add and remove: do not edit it.\n";
  std::vector<ResolvedIds> ids;
  auto append = [&](const std::string& toml) {
    text += '\n';
    text += toml;
    if (!toml.empty() && toml.back() != '\n') text += '\n';
  };
  for (const auto& rv : vms) {
    append(rv.toml);
    for (const auto& p : rv.vm.passts) ids.push_back(ResolvedIds{rv.vm.name, p.netdev, p.runas, p.uid, p.gid});
  }
  for (const auto& h : held) {
    append(h.toml);
    ids.insert(ids.end(), h.ids.begin(), h.ids.end());
  }
  if (ids.empty()) return text;
  toml::array arr;
  for (const auto& r : ids)
    arr.push_back(toml::table{{"vm", r.vm},
                              {"netdev", r.netdev},
                              {"runas", r.runas},
                              {"uid", static_cast<int64_t>(r.uid)},
                              {"gid", static_cast<int64_t>(r.gid)}});
  toml::table doc;
  doc.insert("resolved", std::move(arr));
  std::ostringstream os;
  os << toml::toml_formatter{doc, toml::toml_formatter::default_flags & ~toml::format_flags::indentation};
  text += "\n# The ids each passt binding's runas resolved to when it was registered: used when the name does\n"
          "# not resolve at a later start (NSS not ready yet).\n";
  append(os.str());
  return text;
}

std::string runtime_conflict(const std::vector<const Vm*>& existing, const Vm& added,
                             const std::string& control_socket) {
  // Who holds each name, MAC and socket: a VM and the binding's id ("" for a QMP socket).
  using Holder = std::pair<const Vm*, std::string>;
  std::map<std::string, Holder> macvtap_names, passt_sockets, qmp_sockets;
  std::map<MacAddress, Holder> macs;
  for (const Vm* vm : existing) {
    if (!vm) continue;
    if (vm->name == added.name) return "VM '" + added.name + "' already exists";
    if (vm->qmp == added.qmp) return "QMP socket '" + added.qmp + "' is already used by " + owner(*vm, "");
    qmp_sockets.emplace(vm->qmp, Holder{vm, ""});
    for (const auto& b : vm->macvtaps) {
      macvtap_names.emplace(b.macvtap, Holder{vm, b.nic});
      macs.emplace(b.mac, Holder{vm, b.nic});
    }
    for (const auto& p : vm->passts) passt_sockets.emplace(p.socket, Holder{vm, p.netdev});
  }
  if (auto it = passt_sockets.find(added.qmp); it != passt_sockets.end())
    return "QMP socket '" + added.qmp + "' is already used as a passt socket by " +
           owner(*it->second.first, it->second.second);
  qmp_sockets.emplace(added.qmp, Holder{&added, ""});
  // The added VM's own bindings are entered as they are checked: two of them
  // may not share either (load_string refuses that already).
  for (const auto& b : added.macvtaps) {
    if (auto [it, fresh] = macvtap_names.emplace(b.macvtap, Holder{&added, b.nic}); !fresh)
      return "macvtap name '" + b.macvtap + "' of NIC " + b.nic + " is already used by " +
             owner(*it->second.first, it->second.second);
    if (auto [it, fresh] = macs.emplace(b.mac, Holder{&added, b.nic}); !fresh)
      return "MAC " + format_mac(b.mac) + " is already used by " + owner(*it->second.first, it->second.second);
  }
  for (const auto& p : added.passts) {
    if (p.socket == control_socket) return "passt socket '" + p.socket + "' is relinkd's control socket";
    if (auto it = qmp_sockets.find(p.socket); it != qmp_sockets.end())
      return "passt socket '" + p.socket + "' is the QMP socket of " + owner(*it->second.first, "");
    if (auto [it, fresh] = passt_sockets.emplace(p.socket, Holder{&added, p.netdev}); !fresh)
      return "passt socket '" + p.socket + "' is already used by " + owner(*it->second.first, it->second.second);
  }
  return "";
}

}  // namespace relink::config
