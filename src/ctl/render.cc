// SPDX-License-Identifier: GPL-2.0-or-later
// relinkctl's output: status tables, change reports and monitor lines from relinkd's JSON.
#include "ctl/render.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <vector>

namespace relink::ctl {
namespace {

using nlohmann::json;

std::string cell(const json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return "-";
  if (it->is_string()) return it->get<std::string>().empty() ? "-" : it->get<std::string>();
  return it->dump();
}

bool has_text(const json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_string() && !it->get<std::string>().empty();
}

std::string ms(const json& b, const char* key) {
  auto it = b.find(key);
  if (it == b.end() || !it->is_number()) return "-";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f ms", it->get<double>());
  return buf;
}

const char* state_colour(const std::string& state) {
  if (state == "attached" || state == "running") return "\033[32m";
  if (state == "failed") return "\033[31m";
  if (state == "vm-offline") return "\033[2m";
  return "\033[33m";  // on its way: waiting, releasing, attaching, starting, backoff
}

// What matters about a binding beyond its state: where a macvtap sits, how
// a passt runs.
std::string detail(const json& b) {
  if (cell(b, "kind") == "bridge") return "bridge=" + cell(b, "bridge") + " rejoins=" + cell(b, "rejoins");
  if (cell(b, "kind") == "passt") {
    std::string d = cell(b, "mode") + " pid=" + cell(b, "pid") + " restarts=" + cell(b, "restarts");
    if (has_text(b, "last_exit")) d += " last-exit=\"" + cell(b, "last_exit") + "\"";
    return d;
  }
  std::string d = cell(b, "attach") + " parent=" + cell(b, "parent") + " macvtap=" + cell(b, "macvtap");
  if (has_text(b, "wrong_tap")) d += " WRONG-TAP";
  auto c = b.find("carrier");
  if (c != b.end() && c->is_boolean()) d += c->get<bool>() ? " carrier=on" : " carrier=off";
  auto np = b.find("nic_present");
  if (np != b.end() && np->is_boolean() && !np->get<bool>()) d += " nic=released";
  auto r = b.find("last_release_ms");
  if (r != b.end() && r->is_number())
    d += " released-in=" + std::to_string(static_cast<long>(r->get<double>())) + "ms";
  return d;
}

// How relinkd reaches the VM: its QMP session, or libvirt.
std::string vm_link(const json& vm) {
  if (cell(vm, "source") == "bridge") return "host";
  if (cell(vm, "source") != "libvirt") return cell(vm, "qmp");
  if (cell(vm, "libvirt") != "connected") return "libvirt-down";
  return vm.value("paused", false) ? "paused" : "connected";
}

}  // namespace

bool want_colour(int fd) {
  const char* no = std::getenv("NO_COLOR");
  if (no && *no) return false;
  const char* term = std::getenv("TERM");
  if (term && std::string(term) == "dumb") return false;
  return isatty(fd) == 1;
}

// A binding's id among its VM's: a macvtap's NIC, a passt's netdev, a tap.
static std::string binding_id(const json& b) {
  const std::string kind = cell(b, "kind");
  return cell(b, kind == "passt" ? "netdev" : kind == "bridge" ? "tap" : "nic");
}

bool settled_state(const std::string& kind, const std::string& state) {
  if (kind == "bridge") return state != "backoff";
  if (kind == "passt") return state == "running" || state == "failed" || state == "backoff" || state == "vm-offline";
  return state == "attached" || state == "failed" || state == "backoff" || state == "waiting-parent" ||
         state == "vm-offline";
}

std::string render_status(const json& st, const Style& style, const std::string& only_vm) {
  std::vector<std::vector<std::string>> rows = {
      {"VM", "SOURCE", "LINK", "KIND", "BINDING", "STATE", "GEN", "RECOVERY", "DETAIL", "ERROR"}};
  std::vector<std::string> notes;
  const auto vms = st.value("vms", json::array());
  for (const auto& vm : vms) {
    const std::string name = cell(vm, "name");
    if (!only_vm.empty() && name != only_vm) continue;
    const auto& bindings = vm.value("bindings", json::array());
    if (bindings.empty())
      rows.push_back({name, cell(vm, "source"), vm_link(vm), "-", "-", "-", "-", "-", "(no bindings)", "-"});
    for (const auto& b : bindings) {
      const std::string kind = cell(b, "kind");
      const char* recovery = kind == "passt" ? "last_recovery_ms" : kind == "bridge" ? "last_rejoin_ms" : "last_reattach_ms";
      rows.push_back({name, cell(vm, "source"), vm_link(vm), kind, binding_id(b), cell(b, "state"),
                      cell(b, "generation"), ms(b, recovery), detail(b), cell(b, "last_error")});
      if (has_text(b, "warning")) notes.push_back(name + "/" + binding_id(b) + ": warning: " + cell(b, "warning"));
      if (has_text(b, "wrong_tap")) notes.push_back(name + "/" + cell(b, "nic") + ": " + cell(b, "wrong_tap"));
    }
    // Why the VM cannot be reached: once, not in every binding's row.
    if (has_text(vm, "qmp_error")) notes.push_back(name + ": QMP " + cell(vm, "qmp") + ": " + cell(vm, "qmp_error"));
  }
  // Registrations that could not be loaded: not managed, kept, retried at reload.
  for (const auto& h : st.value("held", json::array())) {
    const std::string name = cell(h, "name");
    if (!only_vm.empty() && name != only_vm) continue;
    rows.push_back({name, cell(h, "origin"), "-", "-", "-", "held", "-", "-", "(not loaded)", cell(h, "error")});
  }
  std::vector<size_t> width(rows[0].size(), 0);
  for (const auto& r : rows)
    for (size_t i = 0; i < r.size(); ++i) width[i] = std::max(width[i], r[i].size());
  std::string out;
  for (size_t ri = 0; ri < rows.size(); ++ri) {
    const auto& r = rows[ri];
    std::string line;
    for (size_t i = 0; i < r.size(); ++i) {
      std::string c = r[i];
      // Numbers right-aligned, text left-aligned; the last column unpadded.
      const bool right = i == 6 || i == 7;
      const size_t pad = width[i] - c.size();
      if (i + 1 == r.size()) {
        line += c;
        break;
      }
      if (style.colour && ri == 0) c = "\033[1m" + c + "\033[0m";
      else if (style.colour && i == 5) c = state_colour(c) + c + "\033[0m";
      line += right ? std::string(pad, ' ') + c : c + std::string(pad, ' ');
      line += "  ";
    }
    if (style.colour && ri == 0) line = "\033[1m" + line + "\033[0m";
    out += line + "\n";
  }
  if (rows.size() == 1) out += only_vm.empty() ? "(relinkd manages no VM)\n" : "";
  // libvirt's domains come and go with the connection: say when it is down.
  const json lv = st.value("libvirt", json::object());
  if (only_vm.empty() && lv.value("enabled", false) && !lv.value("connected", false))
    notes.push_back("libvirt: not connected to " + cell(lv, "uri") + ": " + cell(lv, "last_error"));
  if (only_vm.empty() && lv.contains("not_followed") && lv["not_followed"].is_object())
    for (const auto& [domain, why] : lv["not_followed"].items())
      notes.push_back("libvirt: domain " + domain + " not followed: " + (why.is_string() ? why.get<std::string>() : "-"));
  if (!notes.empty()) out += "\n";
  for (const auto& n : notes) out += n + "\n";
  return out;
}

std::string render_changes(const json& changes) {
  std::string out;
  for (const char* what : {"added", "removed", "changed"}) {
    auto it = changes.find(what);
    if (it == changes.end() || !it->is_array() || it->empty()) continue;
    out += out.empty() ? "" : "; ";
    out += what;
    out += " ";
    bool first = true;
    for (const auto& n : *it) {
      out += (first ? "" : ", ") + (n.is_string() ? n.get<std::string>() : n.dump());
      first = false;
    }
  }
  return out.empty() ? "nothing changed" : out;
}

std::string render_event(const json& ev, const Style& style) {
  char when[32] = "";
  if (auto t = ev.find("time"); t != ev.end() && t->is_number()) {
    const double secs = t->get<double>();
    const time_t tt = static_cast<time_t>(secs);
    tm local{};
    localtime_r(&tt, &local);
    const size_t n = std::strftime(when, sizeof when, "%H:%M:%S", &local);
    std::snprintf(when + n, sizeof when - n, ".%03d", static_cast<int>((secs - static_cast<double>(tt)) * 1000));
  }
  const std::string type = cell(ev, "event");
  std::string line = std::string(when) + " ";
  if (type == "state") {
    std::string state = cell(ev, "state");
    if (style.colour) state = state_colour(state) + state + "\033[0m";
    line += cell(ev, "vm") + "/" + binding_id(ev) + " " + cell(ev, "from") + " -> " + state +
            " (generation " + cell(ev, "generation") + ")";
    if (has_text(ev, "error")) line += ": " + cell(ev, "error");
  } else if (type == "vm") {
    line += cell(ev, "vm") + " QMP " + cell(ev, "qmp");
    if (has_text(ev, "error")) line += ": " + cell(ev, "error");
  } else {
    line += ev.dump();
  }
  return line;
}

}  // namespace relink::ctl
