// SPDX-License-Identifier: GPL-2.0-or-later
// What the bridge tests share: a relinkd in a throwaway namespace (DaemonEnv)
// with a config of [[vm.tap]] and [bridge.NAME] tables, taps and bridges made
// with ip(8), the ports as bridge(8) shows them, and the tap bindings' states.
#pragma once

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "integration/daemon/daemon_env.h"

namespace relink::test {

class BridgeEnv {
 public:
  DaemonEnv env;

  // [daemon] and then `body` ([[vm]] with [[vm.tap]], [bridge.NAME]).
  void write_config(const std::string& body) {
    DaemonEnv::write_file(env.config_path(), "[daemon]\ncontrol_socket = \"" + env.control() + "\"\nstate_dir = \"" +
                                                 env.dir() + "/state\"\nnode_dir = \"" + env.dir() +
                                                 "/dev\"\nlog_level = \"debug\"\n\n" + body);
  }
  // A [[vm]] whose QEMU is absent (its taps need none), with these taps on `bridge`.
  std::string vm_with_taps(const std::string& vm, const std::vector<std::string>& taps, const std::string& bridge) {
    std::string t = "[[vm]]\nname = \"" + vm + "\"\nqmp = \"" + env.qmp_path(vm) + "\"\n";
    for (const auto& tap : taps) t += "[[vm.tap]]\ntap = \"" + tap + "\"\nbridge = \"" + bridge + "\"\n";
    return t + "\n";
  }

  void add_bridge(const std::string& br, const std::string& opts = "") {
    env.ns().ip("link add " + br + " type bridge " + opts);
    env.ns().ip("link set " + br + " up");
  }
  // A persistent tap (as QEMU's -netdev tap,ifname= makes one), up, in `br`.
  void add_tap(const std::string& tap, const std::string& br) {
    env.ns().ip("tuntap add dev " + tap + " mode tap");
    env.ns().ip("link set " + tap + " master " + br);
    env.ns().ip("link set " + tap + " up");
  }
  // What NetworkManager and ifupdown do: the bridge deleted and made again
  // (its ports dropped by the kernel), with its uplink put back.
  void recreate_bridge(const std::string& br, const std::string& opts = "", const std::string& uplink = "") {
    env.ns().ip("link del " + br);
    add_bridge(br, opts);
    if (!uplink.empty()) env.ns().ip("link set " + uplink + " master " + br);
  }

  // `bridge -d -j link show dev TAP`: the port's options, flags and master,
  // without what names the port rather than describes it.
  nlohmann::json port(const std::string& tap) {
    auto r = env.ns().run("bridge -d -j link show dev " + tap);
    auto j = nlohmann::json::parse(r.out, nullptr, false);
    if (j.is_discarded() || !j.is_array() || j.empty()) return nullptr;
    nlohmann::json p = j[0];
    p.erase("ifindex");
    return p;
  }
  // `bridge -d -j vlan show dev TAP`: the port's VLANs with their flags.
  nlohmann::json vlans(const std::string& tap) {
    auto r = env.ns().run("bridge -d -j vlan show dev " + tap);
    auto j = nlohmann::json::parse(r.out, nullptr, false);
    return j.is_discarded() ? nlohmann::json(nullptr) : j;
  }
  std::string master_of(const std::string& tap) {
    auto r = env.ns().run("ip -j link show dev " + tap);
    auto j = nlohmann::json::parse(r.out, nullptr, false);
    if (j.is_discarded() || !j.is_array() || j.empty()) return "";
    return j[0].value("master", "");
  }

  // The tap binding of `vm` for `tap` in relinkctl status --json (null: none).
  nlohmann::json tap_binding(const std::string& vm, const std::string& tap) {
    auto st = env.status();
    if (!st.is_object()) return nullptr;
    for (const auto& v : st["vms"])
      if (v.value("name", "") == vm)
        for (const auto& b : v["bindings"])
          if (b.value("kind", "") == "bridge" && b.value("tap", "") == tap) return b;
    return nullptr;
  }
  bool wait_tap(const std::string& vm, const std::string& tap, const std::string& state, uint64_t gen = 0,
                std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    return wait_until(
        [&] {
          auto b = tap_binding(vm, tap);
          return b.is_object() && b.value("state", "") == state && (gen == 0 || b.value("generation", 0ull) == gen);
        },
        timeout, std::chrono::milliseconds(10));
  }
  std::string log() { return read_file(env.log_path()); }
};

// Whether this kernel has bridge VLAN filtering (CONFIG_BRIDGE_VLAN_FILTERING).
inline bool kernel_has_vlan_filtering() {
  Netns ns("vf");
  return ns.run("ip link add b0 type bridge vlan_filtering 1").status == 0;
}

}  // namespace relink::test
