// SPDX-License-Identifier: GPL-2.0-or-later
// relinkctl against a real relinkd in a throwaway namespace, with a real QEMU
// wired for hub attach: every command, its human and JSON output and its
// exit status (0 done, 1 refused or failed, 2 unreachable or usage error).
#include <gtest/gtest.h>

#include <fstream>
#include <set>
#include <sstream>

#include "integration/daemon/daemon_env.h"

namespace relink::test {
namespace {

using namespace std::chrono_literals;

class RelinkCtl : public ::testing::Test {
 protected:
  void SetUp() override { RELINK_REQUIRE_ROOT(); }

  void start() {
    env.add_veth_parent("p0");
    env.write_config({vm});
    env.start_qemu(vm);
    env.start_relinkd();
    ASSERT_TRUE(env.wait_state("attached", 1)) << env.explain();
  }
  ShResult ctl(const std::string& args) { return sh(relinkctl_bin() + " --socket " + env.control() + " " + args); }
  // stdout alone (stderr dropped), for output that must parse.
  ShResult ctl_out(const std::string& args) { return ctl(args + " 2>/dev/null"); }
  std::string log() { return read_file(env.log_path()); }

  DaemonEnv env;
  VmSpec vm;
};

TEST_F(RelinkCtl, StatusHumanAndJson) {
  start();
  auto r = ctl_out("status");
  ASSERT_EQ(r.status, 0) << r.out;
  std::istringstream lines(r.out);
  std::string header, row;
  std::getline(lines, header);
  std::getline(lines, row);
  EXPECT_EQ(header.rfind("VM ", 0), 0u) << r.out;
  // Columns fit their content and line up: STATE starts at the same offset
  // in the header and in the row.
  EXPECT_EQ(header.find("STATE"), row.find("attached")) << r.out;
  EXPECT_NE(row.find("hub parent=p0"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("\033["), std::string::npos) << "colour on a pipe";
  // One VM by name; an unknown one is an error.
  EXPECT_EQ(ctl_out("status vm1").status, 0);
  r = ctl("status nosuch");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.out.find("no VM named 'nosuch'"), std::string::npos) << r.out;

  r = ctl_out("status --json");
  ASSERT_EQ(r.status, 0);
  auto j = nlohmann::json::parse(r.out, nullptr, false);
  ASSERT_TRUE(j.is_object()) << r.out;
  EXPECT_EQ(j.value("version", 0), 1);
  const auto& b = j["vms"][0]["bindings"][0];
  EXPECT_EQ(b["state"], "attached");
  EXPECT_TRUE(b["last_error"].is_null()) << b.dump();  // none is null, not ""
  EXPECT_TRUE(b["warning"].is_null()) << b.dump();
  EXPECT_EQ(j["vms"][0]["source"], "config");
}

TEST_F(RelinkCtl, ReattachWaitsForTheNewGenerationAndItWorks) {
  start();
  auto r = ctl_out("reattach vm1 nic0");
  ASSERT_EQ(r.status, 0) << r.out << env.explain();
  EXPECT_NE(r.out.find("vm1/nic0: attached, generation 2, in "), std::string::npos) << r.out;
  // relinkctl returned once it was done: QEMU already has the new tap.
  env.expect_attached(2);
  r = ctl_out("reattach --no-wait vm1");
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_NE(r.out.find("vm1/nic0: reattach started"), std::string::npos) << r.out;
  ASSERT_TRUE(env.wait_state("attached", 3)) << env.explain();
  env.expect_attached(3);

  r = ctl("reattach vm1 nosuchnic");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.out.find("VM 'vm1' has no binding for NIC or netdev 'nosuchnic' (it has: nic0)"), std::string::npos)
      << r.out;
  r = ctl("reattach nosuchvm");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.out.find("no VM named 'nosuchvm' (known: vm1)"), std::string::npos) << r.out;
  // A parent that is gone: the reattach says so rather than waiting.
  env.ns().ip("link del p0");
  ASSERT_TRUE(env.wait_state("waiting-parent")) << env.explain();
  r = ctl_out("reattach vm1 nic0 --timeout 5");
  EXPECT_EQ(r.status, 1) << r.out;
  EXPECT_NE(r.out.find("vm1/nic0: waiting-parent: its parent p0 is not there"), std::string::npos) << r.out;
}

TEST_F(RelinkCtl, UsageErrorsVersionAndHelp) {
  auto r = sh(relinkctl_bin() + " --version");
  EXPECT_EQ(r.status, 0);
  EXPECT_EQ(r.out, std::string("relinkctl ") + RELINK_VERSION + "\n");
  r = sh(relinkctl_bin() + " bogus");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.out.find("unknown command 'bogus'"), std::string::npos) << r.out;
  r = sh(relinkctl_bin());
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.out.find("a command is required"), std::string::npos) << r.out;
  r = sh(relinkctl_bin() + " help reattach");
  EXPECT_EQ(r.status, 0);
  EXPECT_NE(r.out.find("--no-wait"), std::string::npos) << r.out;
  r = sh(relinkctl_bin() + " reattach");  // VM missing
  EXPECT_EQ(r.status, 2) << r.out;
  for (const char* verb : {"status", "reattach", "reload", "add", "remove", "qemu-args", "monitor", "metrics"}) {
    r = sh(relinkctl_bin() + " " + verb + " --help");
    EXPECT_EQ(r.status, 0) << verb;
    EXPECT_NE(r.out.find("Usage:"), std::string::npos) << verb << ": " << r.out;
  }
  // Nobody listening: exit 2, and it says what to check.
  r = sh(relinkctl_bin() + " --socket " + env.dir() + "/none.sock status");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.out.find("relinkd is not running"), std::string::npos) << r.out;
  // A config named with -c must be valid: its error, not the default socket.
  DaemonEnv::write_file(env.dir() + "/broken.toml", "[daemon]\ncontrol_socket = 42\n");
  r = sh(relinkctl_bin() + " -c " + env.dir() + "/broken.toml status");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.out.find("broken.toml:2:"), std::string::npos) << r.out;
}

TEST_F(RelinkCtl, ReloadPrintsWhatChangedAndABrokenConfigIsRefusedAndLogged) {
  start();
  auto r = ctl_out("reload");
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_EQ(r.out, "reloaded: nothing changed\n");
  const std::string good = read_file(env.config_path());
  DaemonEnv::write_file(env.config_path(), good + "\n[[vm]]\nname = \"vm1\"\n");
  r = ctl("reload");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.out.find("relinkd.toml:"), std::string::npos) << r.out;
  EXPECT_NE(log().find("reload asked over the control socket refused, keeping the running configuration"),
            std::string::npos)
      << log();
  EXPECT_EQ(env.state(), "attached");
  EXPECT_EQ(env.binding("vm1").value("generation", 0), 1);
  // A second VM, and a changed binding.
  VmSpec vm2 = vm;
  vm2.name = "vm2";
  vm2.mac = "52:54:00:12:34:57";
  vm2.hub = 1;
  VmSpec changed = vm;
  changed.extra = "follow_carrier = false\n";
  env.write_config({changed, vm2});
  r = ctl_out("reload");
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_EQ(r.out, "reloaded: added vm2; changed vm1/nic0\n");
  env.write_config({changed});
  r = ctl_out("reload");
  EXPECT_EQ(r.out, "reloaded: removed vm2\n");
}

TEST_F(RelinkCtl, OnlyRootAndTheControlGroupMayUseIt) {
  start();
  // The socket is 0600 in a 0700 directory: nobody cannot even connect.
  auto r = sh("setpriv --reuid=65534 --regid=65534 --clear-groups " + relinkctl_bin() + " --socket " +
              env.control() + " status");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.out.find("permission denied"), std::string::npos) << r.out;
  // Let nobody reach it: relinkd itself refuses the peer.
  chmod(env.dir().c_str(), 0711);
  chmod(env.control().c_str(), 0666);
  r = sh("setpriv --reuid=65534 --regid=65534 --clear-groups " + relinkctl_bin() + " --socket " + env.control() +
         " reattach vm1");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.out.find("relinkd refused: permission denied"), std::string::npos) << r.out;
  EXPECT_EQ(env.binding("vm1").value("generation", 0), 1);  // nothing was done
}

TEST_F(RelinkCtl, MonitorSeesTheStatesOfAParentFlapInOrder) {
  start();
  const std::string out = env.dir() + "/monitor.jsonl";
  Child monitor({relinkctl_bin(), "--socket", env.control(), "monitor", "--json"}, Child::Options{"", out, {}});
  // The subscription is in place once relinkd counts a monitoring client: a
  // reattach's states show up in the stream.
  ASSERT_TRUE(wait_until(
      [&] {
        ctl_out("reattach --no-wait vm1");
        return wait_until([&] { return read_file(out).find("\"state\":\"attached\"") != std::string::npos; }, 1s);
      },
      10s))
      << read_file(out);
  ASSERT_TRUE(env.wait_state("attached")) << env.explain();
  const uint64_t gen = env.binding("vm1").value("generation", uint64_t{0});
  const size_t before = read_file(out).size();
  env.ns().ip("link del p0");
  ASSERT_TRUE(env.wait_state("waiting-parent")) << env.explain();
  env.add_veth_parent("p0");
  ASSERT_TRUE(env.wait_state("attached", gen + 1)) << env.explain();
  ASSERT_TRUE(wait_until([&] { return read_file(out).find("\"generation\":" + std::to_string(gen + 1)) != std::string::npos; },
                         5s));
  std::vector<std::string> seen;
  std::istringstream lines(read_file(out).substr(before));
  for (std::string line; std::getline(lines, line);) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    ASSERT_TRUE(j.is_object()) << line;
    EXPECT_TRUE(j["time"].is_number()) << line;
    if (j.value("event", "") == "state" && j.value("nic", "") == "nic0")
      seen.push_back(j.value("from", "") + ">" + j.value("state", ""));
  }
  const std::vector<std::string> want = {"attached>waiting-parent", "waiting-parent>attaching", "attaching>attached"};
  EXPECT_EQ(seen, want);
  monitor.kill_now();
  // Human format: one line per change.
  const std::string human = env.dir() + "/monitor.txt";
  Child monitor2({relinkctl_bin(), "--socket", env.control(), "monitor"}, Child::Options{"", human, {}});
  ASSERT_TRUE(wait_until(
      [&] {
        ctl_out("reattach --no-wait vm1");
        return wait_until([&] { return read_file(human).find("vm1/nic0 attaching -> attached") != std::string::npos; },
                          1s);
      },
      10s))
      << read_file(human);
}

TEST_F(RelinkCtl, MetricsParseAsPrometheusText) {
  start();
  ASSERT_EQ(ctl_out("reattach vm1").status, 0);
  auto r = ctl_out("metrics");
  ASSERT_EQ(r.status, 0);
  const std::string file = env.dir() + "/metrics.prom";
  DaemonEnv::write_file(file, r.out);
  // Prometheus' own parser (Debian's python3-prometheus-client, for /usr/bin/python3) reads it back.
  const std::string py =
      "import sys\n"
      "from prometheus_client.parser import text_string_to_metric_families\n"
      "v = {}\n"
      "for fam in text_string_to_metric_families(open(sys.argv[1]).read()):\n"
      "    for s in fam.samples:\n"
      "        v[(s.name, tuple(sorted(s.labels.items())))] = s.value\n"
      "print(int(v[('relink_bindings', (('kind','macvtap'),('state','attached')))]))\n"
      "print(int(v[('relink_reattaches_total', (('binding','nic0'),('kind','macvtap'),('vm','vm1')))]))\n"
      "print(int(v[('relink_recovery_seconds_count', (('kind','macvtap'),))]))\n"
      "print(int(v[('relink_vm_connected', (('vm','vm1'),))]))\n";
  DaemonEnv::write_file(env.dir() + "/parse.py", py);
  auto p = sh("/usr/bin/python3 " + env.dir() + "/parse.py " + file);
  ASSERT_EQ(p.status, 0) << p.out << "\n" << r.out;
  EXPECT_EQ(p.out, "1\n1\n1\n1\n") << r.out;
}

TEST_F(RelinkCtl, QemuArgsForAConfiguredVm) {
  start();
  auto r = ctl_out("qemu-args vm1");
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_NE(r.out.find("-qmp unix:" + env.qmp_path("vm1") + ",server=on,wait=off"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("-netdev hubport,id=nic0.port,hubid=0"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("virtio-net-pci,netdev=nic0.port,id=nic0,mac=52:54:00:12:34:56"), std::string::npos) << r.out;
  r = ctl("qemu-args nosuch");
  EXPECT_EQ(r.status, 1);
}

TEST_F(RelinkCtl, RuntimeAddSurvivesARestartAndRemoveDropsIt) {
  env.add_veth_parent("p0");
  env.write_config({});
  VmSpec vm2 = vm;
  vm2.name = "vm2";
  env.start_qemu(vm2);
  env.start_relinkd();
  // From stdin, as a launch script would.
  const std::string toml = env.config_text({vm2});
  DaemonEnv::write_file(env.dir() + "/add.toml", toml.substr(toml.find("[[vm]]")));
  auto r = ctl_out("add < " + env.dir() + "/add.toml");
  ASSERT_EQ(r.status, 0) << r.out << env.explain();
  EXPECT_EQ(r.out, "registered: added vm2\n");
  ASSERT_TRUE(env.wait_state("attached", 1, "vm2")) << env.explain();
  auto st = env.status();
  EXPECT_EQ(st["vms"][0]["source"], "runtime") << st.dump();
  EXPECT_NE(ctl_out("status").out.find("runtime"), std::string::npos);
  // The same VM again, or another with its MAC: refused, nothing changes.
  r = ctl("add < " + env.dir() + "/add.toml");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.out.find("vm2"), std::string::npos) << r.out;
  r = ctl("add vm3 --qmp " + env.qmp_path("vm3") + " --macvtap nic=nic0,parent=p0,mac=52:54:00:12:34:56");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.out.find("52:54:00:12:34:56"), std::string::npos) << r.out;
  r = ctl("add < /dev/null");
  EXPECT_EQ(r.status, 1) << r.out;

  // relinkd restarts: vm2 is registered again and adopted where it was.
  ASSERT_EQ(env.relinkd().stop(SIGTERM, 5s), 0);
  std::filesystem::remove(env.control());
  env.start_relinkd();
  ASSERT_TRUE(env.wait_state("attached", 1, "vm2")) << env.explain();
  EXPECT_EQ(env.status()["vms"][0]["source"], "runtime");
  env.expect_attached(1, vm2);

  // A file VM cannot be removed at runtime; the runtime one can.
  r = ctl("remove nosuch");
  EXPECT_EQ(r.status, 1);
  r = ctl_out("remove vm2");
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_EQ(r.out, "removed: removed vm2\n");
  EXPECT_TRUE(env.status()["vms"].empty());
  ASSERT_EQ(env.relinkd().stop(SIGTERM, 5s), 0);
  std::filesystem::remove(env.control());
  env.start_relinkd();
  EXPECT_TRUE(env.status()["vms"].empty()) << env.explain();
  // Options form: one VM from the command line.
  r = ctl_out("add vm2 --qmp " + env.qmp_path("vm2") + " --macvtap nic=nic0,parent=p0,mac=52:54:00:12:34:56,hub=0");
  ASSERT_EQ(r.status, 0) << r.out;
  ASSERT_TRUE(env.wait_state("attached", 0, "vm2")) << env.explain();
}

// A binding on a Wi-Fi parent works but passes no traffic: relinkd says so
// in its log and in status. This kernel cannot make a Wi-Fi interface
// (no mac80211_hwsim), so relinkd's own view of sysfs (private to it under
// `ip netns exec`) gets a parent shaped as cfg80211 shapes one.
TEST_F(RelinkCtl, WifiParentIsWarnedInTheLogAndStatus) {
  env.add_veth_parent("p0");
  env.write_config({vm});
  env.start_qemu(vm);
  env.start_relinkd({"sh", "-c",
                     "d=$(readlink -f /sys/class/net/p0) && mount -t tmpfs wifi \"$d\" && mkdir \"$d/wireless\" && "
                     "exec \"$0\" \"$@\""});
  ASSERT_TRUE(env.wait_state("attached", 1)) << env.explain();
  const std::string warning = text_of(env.binding("vm1"), "warning");
  EXPECT_NE(warning.find("parent p0 is a Wi-Fi interface"), std::string::npos) << env.explain();
  EXPECT_NE(log().find("vm1/nic0: parent p0 is a Wi-Fi interface: a macvtap on a Wi-Fi station passes no traffic"),
            std::string::npos)
      << log();
  EXPECT_NE(ctl_out("status").out.find("vm1/nic0: warning: parent p0 is a Wi-Fi interface"), std::string::npos);
  // Only relinkd's view was changed: the test's sysfs shows a plain veth.
  EXPECT_EQ(env.ns().run("test -e /sys/class/net/p0/wireless").status, 1);
  EXPECT_EQ(env.ns().run("test -e /sys/class/net/p0/ifindex").status, 0);
}

// The keys of `relinkctl status --json` are the contract for relinkctl's
// table, metrics and scripts: pinned here, kind by kind (a hub binding of a
// connected VM; a replug and a passt binding of a VM whose QEMU is absent).
TEST_F(RelinkCtl, StatusJsonKeySetIsPinned) {
  env.add_veth_parent("p0");
  VmSpec offline;
  offline.name = "vm2";
  offline.attach = "replug";
  offline.mac = "52:54:00:12:34:57";
  offline.extra = "[[vm.passt]]\nnetdev = \"net1\"\nmode = \"stream-server\"\nsocket = \"" + env.dir() +
                  "/vm2-net1.sock\"\n[[vm.tap]]\ntap = \"tk0\"\nbridge = \"brk\"\n";
  env.ns().ip("link add brk type bridge");
  env.ns().ip("tuntap add dev tk0 mode tap");
  env.ns().ip("tuntap add dev tk1 mode tap");
  env.ns().ip("link set tk0 master brk");
  env.ns().ip("link set tk1 master brk");
  env.write_config({vm, offline}, "[bridge.brk]\n");
  env.start_qemu(vm);
  env.start_relinkd();
  ASSERT_TRUE(env.wait_state("attached", 1)) << env.explain();
  ASSERT_TRUE(env.wait_state("vm-offline", 0, "vm2")) << env.explain();
  auto keys = [](const nlohmann::json& j) {
    std::set<std::string> out;
    for (auto it = j.begin(); it != j.end(); ++it) out.insert(it.key());
    return out;
  };
  using Keys = std::set<std::string>;
  const auto st = env.status();
  ASSERT_TRUE(st.is_object());
  EXPECT_EQ(keys(st), (Keys{"version", "vms", "held", "daemon", "libvirt"}));
  EXPECT_EQ(keys(st["daemon"]), (Keys{"version", "config", "uptime_s", "netlink_overruns"}));
  EXPECT_EQ(keys(st["libvirt"]), (Keys{"enabled"}));
  ASSERT_EQ(st["vms"].size(), 3u) << st.dump();
  const auto& v1 = st["vms"][0];
  const auto& v2 = st["vms"][1];
  const auto& v3 = st["vms"][2];
  EXPECT_EQ(keys(v1), (Keys{"name", "bindings", "source", "qmp", "qmp_socket", "qemu_pid"}));
  EXPECT_EQ(keys(v2), (Keys{"name", "bindings", "source", "qmp", "qmp_socket", "qmp_error"}));
  const Keys macvtap_common = {"kind", "nic", "state", "generation", "parent", "parent_ifindex", "parent_name", "macvtap",
                               "macvtap_ifindex", "mode", "mac", "attach", "attaches", "failures",
                               "failures_total", "follow_carrier", "last_error", "warning", "last_reattach_ms",
                               "carrier", "link", "parent_mac"};
  Keys hub = macvtap_common;
  hub.insert("hub");
  Keys replug = macvtap_common;
  replug.insert({"queues", "release_timeout_s", "last_release_ms", "last_own_ms", "release", "nic_present"});
  EXPECT_EQ(keys(v1["bindings"][0]), hub);
  ASSERT_EQ(v2["bindings"].size(), 3u) << st.dump();
  EXPECT_EQ(keys(v2["bindings"][0]), replug);
  EXPECT_EQ(keys(v2["bindings"][1]),
            (Keys{"kind", "netdev", "mode", "state", "generation", "socket", "runas", "restarts", "failures",
                  "failures_total", "pid", "last_error", "last_exit", "last_recovery_ms"}));
  const Keys tap = {"kind",     "tap",           "bridge",       "state",          "generation",
                    "tap_ifindex", "bridge_ifindex", "rejoins",   "last_rejoin_ms", "last_rejoin_at",
                    "last_error", "warning",       "vlans",        "port_options",   "tap_up"};
  EXPECT_EQ(keys(v2["bindings"][2]), tap);
  // A [bridge.NAME] is a VM of its own, with its taps found on the host (tk1; tk0 is vm2's).
  EXPECT_EQ(keys(v3), (Keys{"name", "bindings", "source", "bridge"}));
  ASSERT_EQ(v3["bindings"].size(), 1u) << st.dump();
  EXPECT_EQ(v3["bindings"][0].value("tap", ""), "tk1");
  EXPECT_EQ(keys(v3["bindings"][0]), tap);
}

}  // namespace
}  // namespace relink::test
