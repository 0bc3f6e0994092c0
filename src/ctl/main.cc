// SPDX-License-Identifier: GPL-2.0-or-later
// relinkctl: talks to relinkd over its control socket.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>

#include "config/config.h"
#include "daemon/control_server.h"

namespace {

using nlohmann::json;

std::string socket_from_config(const std::string& path) {
  try {
    return relink::config::load_file(path).daemon.control_socket;
  } catch (const relink::config::ConfigError&) {
    return relink::config::Daemon{}.control_socket;
  }
}

std::string cell(const json& j, const char* key) {
  if (!j.contains(key) || j[key].is_null()) return "-";
  if (j[key].is_string()) return j[key].get<std::string>().empty() ? "-" : j[key].get<std::string>();
  return j[key].dump();
}

std::string ms(const json& b, const char* key) {
  if (!b.contains(key) || !b[key].is_number()) return "-";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f ms", b[key].get<double>());
  return buf;
}

// What matters about a binding beyond its state: where a macvtap sits, how
// a passt runs.
std::string detail(const json& b) {
  if (cell(b, "kind") == "passt") {
    std::string d = cell(b, "mode") + " pid=" + cell(b, "pid") + " restarts=" + cell(b, "restarts");
    if (b.contains("last_exit") && b["last_exit"].is_string()) d += " last-exit=\"" + cell(b, "last_exit") + "\"";
    return d;
  }
  std::string d = cell(b, "attach") + " parent=" + cell(b, "parent") + " macvtap=" + cell(b, "macvtap");
  if (b.contains("wrong_tap") && b["wrong_tap"].is_string()) d += " WRONG-TAP";
  if (b.contains("carrier") && b["carrier"].is_boolean()) d += b["carrier"].get<bool>() ? " carrier=on" : " carrier=off";
  if (b.contains("last_release_ms") && b["last_release_ms"].is_number())
    d += " released-in=" + std::to_string(static_cast<long>(b["last_release_ms"].get<double>())) + "ms";
  return d;
}

// How relinkd reaches the VM: its QMP session, or libvirt.
std::string vm_link(const json& vm) {
  if (cell(vm, "source") != "libvirt") return cell(vm, "qmp");
  if (cell(vm, "libvirt") != "connected") return "libvirt-down";
  return vm.value("paused", false) ? "libvirt-paused" : "libvirt";
}

void print_status(const json& st) {
  std::printf("%-12s %-12s %-8s %-10s %-15s %5s %10s  %-40s %s\n", "VM", "QMP", "KIND", "NIC/NETDEV", "STATE", "GEN",
              "RECOVERY", "DETAIL", "LAST ERROR");
  for (const auto& vm : st.value("vms", json::array())) {
    const auto& bindings = vm.value("bindings", json::array());
    if (bindings.empty())
      std::printf("%-12s %-12s (no bindings)\n", cell(vm, "name").c_str(), vm_link(vm).c_str());
    // A VM that is not connected says why in place of its bindings' errors.
    const std::string vm_error = vm.contains("qmp_error") ? "QMP: " + cell(vm, "qmp_error") : "";
    for (const auto& b : bindings) {
      const bool passt = cell(b, "kind") == "passt";
      std::printf("%-12s %-12s %-8s %-10s %-15s %5s %10s  %-40s %s\n", cell(vm, "name").c_str(),
                  vm_link(vm).c_str(), cell(b, "kind").c_str(), cell(b, passt ? "netdev" : "nic").c_str(),
                  cell(b, "state").c_str(), cell(b, "generation").c_str(),
                  ms(b, passt ? "last_recovery_ms" : "last_reattach_ms").c_str(), detail(b).c_str(),
                  vm_error.empty() ? cell(b, "last_error").c_str() : vm_error.c_str());
    }
  }
  // libvirt's domains come and go with the connection: say when it is down.
  const json lv = st.value("libvirt", json::object());
  if (lv.value("enabled", false) && !lv.value("connected", false))
    std::printf("libvirt: not connected to %s: %s\n", cell(lv, "uri").c_str(), cell(lv, "last_error").c_str());
  if (lv.contains("not_followed") && lv["not_followed"].is_object())
    for (const auto& [domain, why] : lv["not_followed"].items())
      std::printf("libvirt: domain %s not followed: %s\n", domain.c_str(),
                  why.is_string() ? why.get<std::string>().c_str() : "-");
}

int request(const std::string& sock, const json& req, json* result) {
  auto reply = relink::daemon::control_request(sock, req);
  if (!reply) {
    std::cerr << "relinkctl: " << reply.error().message << "\n";
    return 2;
  }
  if (!reply->value("ok", false)) {
    std::cerr << "relinkctl: " << reply->value("error", std::string("request failed")) << "\n";
    return 1;
  }
  if (result) *result = reply->value("result", json::object());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"relinkctl: status and control of relinkd", "relinkctl"};
  app.require_subcommand(1);
  std::string sock, config_path = relink::config::kDefaultPath;
  app.add_option("-s,--socket", sock, "control socket (default: from the config file, else /run/relinkd/control.sock)")
      ->type_name("PATH");
  app.add_option("-c,--config", config_path, "relinkd configuration file to read the socket path from")
      ->type_name("FILE")
      ->capture_default_str();

  auto* status = app.add_subcommand("status", "show every VM and binding");
  bool as_json = false;
  status->add_flag("--json", as_json, "print one JSON object");

  auto* reattach = app.add_subcommand(
      "reattach", "reattach a VM's bindings now (all, or one NIC or passt netdev); restarts passt, resets a failed binding");
  std::string vm, nic;
  reattach->add_option("VM", vm, "VM name")->required();
  reattach->add_option("NIC", nic, "NIC id of a macvtap binding, or netdev id of a passt binding (default: all)");

  app.add_subcommand("reload", "make relinkd re-read its configuration");
  CLI11_PARSE(app, argc, argv);

  if (sock.empty()) sock = socket_from_config(config_path);
  if (status->parsed()) {
    json result;
    if (int rc = request(sock, {{"command", "status"}}, &result)) return rc;
    if (as_json) std::cout << result.dump(2) << "\n";
    else print_status(result);
    return 0;
  }
  if (reattach->parsed()) {
    json req = {{"command", "reattach"}, {"vm", vm}};
    if (!nic.empty()) req["nic"] = nic;
    return request(sock, req, nullptr);
  }
  return request(sock, {{"command", "reload"}}, nullptr);
}
