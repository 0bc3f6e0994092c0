// SPDX-License-Identifier: GPL-2.0-or-later
// [[vm.tap]] and [bridge.NAME]: what loads, and the errors with their place.
#include <gtest/gtest.h>

#include "config/config.h"
#include "config/runtime_vms.h"

namespace relink::config {
namespace {

std::string error_of(const std::string& text) {
  try {
    (void)load_string(text, "t.toml");
    return "";
  } catch (const ConfigError& e) {
    return e.what();
  }
}

const std::string kVm = "[[vm]]\nname = \"a\"\nqmp = \"/run/qemu/a.qmp\"\n";

TEST(TapConfig, LoadsTapsAndBridges) {
  auto cfg = load_string(kVm + "[[vm.tap]]\ntap = \"tap-a0\"\nbridge = \"br0\"\n"
                               "[[vm.tap]]\ntap = \"tap-a1\"\nbridge = \"br1\"\n"
                               "[bridge.vmbr0]\nfollow_taps = true\n[bridge.vmbr1]\nfollow_taps = false\n",
                         "t.toml");
  ASSERT_EQ(cfg.vms.size(), 1u);
  ASSERT_EQ(cfg.vms[0].taps.size(), 2u);
  EXPECT_EQ(cfg.vms[0].taps[0], (TapBinding{"tap-a0", "br0"}));
  EXPECT_EQ(cfg.vms[0].taps[1], (TapBinding{"tap-a1", "br1"}));
  ASSERT_EQ(cfg.bridges.size(), 2u);
  EXPECT_EQ(cfg.bridges[0], (Bridge{"vmbr0", true}));
  EXPECT_EQ(cfg.bridges[1], (Bridge{"vmbr1", false}));
  // An empty table follows: that is what it is for.
  EXPECT_TRUE(load_string("[bridge.br0]\n", "t.toml").bridges.at(0).follow_taps);
}

TEST(TapConfig, ErrorsPointAtTheValue) {
  EXPECT_EQ(error_of(kVm + "[[vm.tap]]\ntap = \"a b\"\nbridge = \"br0\"\n"),
            "t.toml:5:7: 'tap' must be an interface name (1-15 characters, no '/', ':' or spaces)");
  EXPECT_EQ(error_of(kVm + "[[vm.tap]]\ntap = \"tap0\"\nbridge = \"0123456789abcdef\"\n"),
            "t.toml:6:10: 'bridge' must be an interface name (1-15 characters, no '/', ':' or spaces)");
  EXPECT_EQ(error_of(kVm + "[[vm.tap]]\ntap = \"tap0\"\n"),
            "t.toml:4:1: [[vm.tap]] of VM 'a': missing required key 'bridge'");
  EXPECT_EQ(error_of(kVm + "[[vm.tap]]\ntap = \"tap0\"\nbridge = \"tap0\"\n"),
            "t.toml:6:10: 'bridge' must not be the tap itself");
  EXPECT_EQ(error_of(kVm + "[[vm.tap]]\ntap = \"tap0\"\nbridge = \"br0\"\nvlan = 3\n"),
            "t.toml:7:1: unknown key 'vlan' in [[vm.tap]]");
  EXPECT_EQ(error_of(kVm + "tap = 3\n"), "t.toml:4:7: 'tap' must be an array of tables ([[vm.tap]])");
  EXPECT_EQ(error_of("[bridge.br0]\nfollow_taps = 1\n"), "t.toml:2:15: 'follow_taps' must be true or false");
  EXPECT_EQ(error_of("[bridge.br0]\nports = true\n"), "t.toml:2:1: unknown key 'ports' in [bridge.br0]");
  EXPECT_EQ(error_of("[bridge]\n\"a/b\" = {}\n"),
            "t.toml:2:1: [bridge.a/b]: the bridge's name must be an interface name (1-15 characters, no '/', ':' or "
            "spaces)");
  EXPECT_EQ(error_of("bridge = 1\n"), "t.toml:1:10: 'bridge' must be a table of bridges ([bridge.br0])");
}

TEST(TapConfig, ATapIsBoundOnce) {
  const std::string two = kVm + "[[vm.tap]]\ntap = \"tap0\"\nbridge = \"br0\"\n" +
                          "[[vm]]\nname = \"b\"\nqmp = \"/run/qemu/b.qmp\"\n[[vm.tap]]\ntap = \"tap0\"\nbridge = \"br1\"\n";
  EXPECT_EQ(error_of(two), "t.toml:11:7: tap 'tap0' is bound twice (VM 'a' and VM 'b')");
  const Config cfg = load_string(kVm + "[[vm.tap]]\ntap = \"tap0\"\nbridge = \"br0\"\n", "t.toml");
  Vm added;
  added.name = "b";
  added.qmp = "/run/qemu/b.qmp";
  added.taps.push_back({"tap0", "br0"});
  EXPECT_NE(runtime_conflict({&cfg.vms[0]}, added, "/run/relinkd/control.sock").find("tap 'tap0' is already followed"),
            std::string::npos);
}

}  // namespace
}  // namespace relink::config
