// SPDX-License-Identifier: GPL-2.0-or-later
// relinkd end to end against the real kernel and a real QEMU 7.2 (-S).
#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>

#include <cstring>

#include "daemon_env.h"
#include "util/unique_fd.h"

namespace relink::test {
namespace {

using namespace std::chrono_literals;

class Reattach : public ::testing::Test {
 protected:
  void SetUp() override { RELINK_REQUIRE_ROOT(); }
  // Starts QEMU and relinkd for one VM on parent p0 (created unless told not to).
  void start(bool with_parent = true) {
    if (with_parent) env.add_veth_parent("p0");
    env.write_config({vm});
    env.start_qemu(vm);
    env.start_relinkd();
  }
  uint64_t generation() { return env.binding("vm1").value("generation", 0ull); }

  DaemonEnv env;
  VmSpec vm;
};

TEST_F(Reattach, AttachesAtStartAndAfterTwentyParentFlaps) {
  start();
  ASSERT_TRUE(env.wait_state("attached", 1)) << env.explain();
  env.expect_attached(1);
  for (uint64_t i = 0; i < 20; ++i) {
    SCOPED_TRACE("flap " + std::to_string(i));
    const uint64_t gen = generation();
    env.ns().ip("link del p0");
    ASSERT_TRUE(env.wait_state("waiting-parent")) << env.explain();
    // The dead tap side is gone from QEMU while the parent is missing.
    ASSERT_TRUE(wait_until([&] { return env.generations().empty(); }, 5s)) << env.test_qmp("vm1").info_network();
    env.add_veth_parent("p0");
    ASSERT_TRUE(env.wait_state("attached", gen + 1)) << env.explain();
    env.expect_attached(gen + 1);
  }
  auto b = env.binding("vm1");
  EXPECT_EQ(b.value("generation", 0ull), 21u);
  EXPECT_EQ(b.value("attaches", 0ull), 21u);
  EXPECT_TRUE(b["last_reattach_ms"].is_number());
  EXPECT_TRUE(env.relinkd().running());
}

TEST_F(Reattach, SeveralVmsOnOneParentAllComeBack) {
  env.add_veth_parent("p0");
  std::vector<VmSpec> vms;
  for (int i = 0; i < 4; ++i)
    vms.push_back(VmSpec{"vm" + std::to_string(i), "nic0", "p0", "52:54:00:12:34:5" + std::to_string(i), 0});
  env.write_config(vms);
  for (const auto& v : vms) env.start_qemu(v);
  env.start_relinkd();
  for (const auto& v : vms) ASSERT_TRUE(env.wait_state("attached", 1, v.name)) << env.explain();
  for (uint64_t gen = 1; gen <= 3; ++gen) {
    env.ns().ip("link del p0");
    for (const auto& v : vms) ASSERT_TRUE(env.wait_state("waiting-parent", 0, v.name)) << env.explain();
    env.add_veth_parent("p0");
    // Exactly one new generation each: nothing was tried on the dying parent.
    for (const auto& v : vms) ASSERT_TRUE(env.wait_state("attached", gen + 1, v.name)) << env.explain();
    for (const auto& v : vms) env.expect_attached(gen + 1, v);
  }
}

TEST_F(Reattach, ParentReturnDuringNetlinkOverrunIsNotLost) {
  env.add_veth_parent("p0");
  env.write_config({vm}, "netlink_receive_buffer = 4096");
  env.start_qemu(vm);
  env.start_relinkd();
  ASSERT_TRUE(env.wait_state("attached", 1)) << env.explain();
  const int old_parent = env.ns().ifindex("p0");
  // Freeze relinkd so it cannot read, then flap its parent in the middle of
  // a storm of link changes: its small socket buffer must overflow.
  ASSERT_EQ(kill(env.relinkd().pid(), SIGSTOP), 0);
  std::string batch;
  for (int i = 0; i < 150; ++i) batch += "link add st" + std::to_string(i) + " type veth peer name su" + std::to_string(i) + "\n";
  batch += "link del p0\n";
  for (int i = 0; i < 150; ++i) batch += "link set st" + std::to_string(i) + " up\n";
  DaemonEnv::write_file(env.dir() + "/storm.batch", batch);
  env.ns().ip("-batch " + env.dir() + "/storm.batch");
  env.add_veth_parent("p0");
  ASSERT_NE(env.ns().ifindex("p0"), old_parent);
  ASSERT_EQ(kill(env.relinkd().pid(), SIGCONT), 0);
  // The overrun is recovered by a re-dump: the parent's return is seen, and
  // relinkd moves to the new parent exactly once.
  ASSERT_TRUE(env.wait_state("attached", 2)) << env.explain();
  env.expect_attached(2);
  EXPECT_GE(env.status()["daemon"].value("netlink_overruns", 0), 1) << env.status().dump();
  EXPECT_TRUE(env.relinkd().running());
}

TEST_F(Reattach, BridgeParent) {
  vm.parent = "br0";
  env.ns().ip("link add br0 type bridge");
  env.ns().ip("link set br0 up");
  start(false);
  ASSERT_TRUE(env.wait_state("attached", 1)) << env.explain();
  env.expect_attached(1, vm);
  for (uint64_t gen = 1; gen <= 3; ++gen) {
    env.ns().ip("link del br0");
    ASSERT_TRUE(env.wait_state("waiting-parent")) << env.explain();
    env.ns().ip("link add br0 type bridge");
    env.ns().ip("link set br0 up");
    ASSERT_TRUE(env.wait_state("attached", gen + 1)) << env.explain();
    env.expect_attached(gen + 1, vm);
  }
}

TEST_F(Reattach, VlanParent) {
  if (!kernel_supports_link_kind("vlan"))
    GTEST_SKIP() << "this kernel cannot create VLAN devices (no 8021q): VLAN parents untested here";
  vm.parent = "p0.100";
  env.add_veth_parent("p0");
  env.ns().ip("link add link p0 name p0.100 type vlan id 100");
  env.ns().ip("link set p0.100 up");
  start(false);
  ASSERT_TRUE(env.wait_state("attached", 1)) << env.explain();
  env.expect_attached(1, vm);
  env.ns().ip("link del p0.100");
  ASSERT_TRUE(env.wait_state("waiting-parent")) << env.explain();
  env.ns().ip("link add link p0 name p0.100 type vlan id 100");
  env.ns().ip("link set p0.100 up");
  ASSERT_TRUE(env.wait_state("attached", 2)) << env.explain();
  env.expect_attached(2, vm);
}

TEST_F(Reattach, ParentRecreatedAsAnotherKind) {
  start();
  ASSERT_TRUE(env.wait_state("attached", 1)) << env.explain();
  // veth -> bridge
  env.ns().ip("link del p0");
  ASSERT_TRUE(env.wait_state("waiting-parent")) << env.explain();
  env.ns().ip("link add p0 type bridge");
  env.ns().ip("link set p0 up");
  ASSERT_TRUE(env.wait_state("attached", 2)) << env.explain();
  env.expect_attached(2);
  // bridge -> macvlan on another veth
  env.add_veth_parent("q0");
  env.ns().ip("link del p0");
  ASSERT_TRUE(env.wait_state("waiting-parent")) << env.explain();
  env.ns().ip("link add link q0 name p0 type macvlan mode bridge");
  env.ns().ip("link set p0 up");
  ASSERT_TRUE(env.wait_state("attached", 3)) << env.explain();
  // The kernel stacks a macvtap requested on a macvlan onto the macvlan's
  // lower device (q0), and keeps it when the macvlan goes.
  const std::string mvt = text_of(env.binding("vm1"), "macvtap");
  EXPECT_EQ(env.ns().run("ip link show " + mvt + " | grep -c @q0:").out, "1\n");
  env.ns().ip("link del p0");
  ASSERT_TRUE(env.wait_state("waiting-parent")) << env.explain();
  ASSERT_TRUE(wait_until([&] { return env.ns().run("ip link show " + mvt).status != 0; }, 5s))
      << "relinkd must delete the macvtap a deleted macvlan parent left behind";
  EXPECT_TRUE(env.generations().empty()) << env.test_qmp("vm1").info_network();
  // A vxlan parent.
  env.ns().ip("link add p0 type vxlan id 42 dstport 4789 local 192.0.2.10");
  env.ns().ip("link set p0 up");
  ASSERT_TRUE(env.wait_state("attached", 4)) << env.explain();
  env.expect_attached(4);
}

TEST_F(Reattach, ParentRenamedAwayAndBackKeepsTheAttachment) {
  start();
  ASSERT_TRUE(env.wait_state("attached", 1)) << env.explain();
  const int mvt = env.binding("vm1").value("macvtap_ifindex", 0);
  env.ns().ip("link set p0 down");
  env.ns().ip("link set p0 name p0x");
  env.ns().ip("link set p0x up");
  std::this_thread::sleep_for(300ms);  // give relinkd time to (wrongly) react
  EXPECT_EQ(env.state(), "attached") << env.explain();
  EXPECT_EQ(generation(), 1u);
  env.ns().ip("link set p0x down");
  env.ns().ip("link set p0x name p0");
  env.ns().ip("link set p0 up");
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(env.state(), "attached") << env.explain();
  EXPECT_EQ(generation(), 1u);
  EXPECT_EQ(env.binding("vm1").value("macvtap_ifindex", 0), mvt);
  env.expect_attached(1);
  // Renamed away and a new interface takes the name: relinkd follows the name.
  env.ns().ip("link set p0 down");
  env.ns().ip("link set p0 name p0x");
  env.add_veth_parent("p0");
  ASSERT_TRUE(env.wait_state("attached", 2)) << env.explain();
  env.expect_attached(2);
  EXPECT_EQ(env.ns().run("ip link show " + text_of(env.binding("vm1"), "macvtap") + " | grep -c @p0:").out, "1\n");
}

TEST_F(Reattach, StartsWhileParentIsMissing) {
  start(false);
  ASSERT_TRUE(env.wait_state("waiting-parent")) << env.explain();
  EXPECT_TRUE(env.generations().empty());
  env.add_veth_parent("p0");
  ASSERT_TRUE(env.wait_state("attached", 1)) << env.explain();
  env.expect_attached(1);
}

TEST_F(Reattach, MacvtapDeletedByHandIsReplaced) {
  start();
  ASSERT_TRUE(env.wait_state("attached", 1)) << env.explain();
  env.ns().ip("link del " + text_of(env.binding("vm1"), "macvtap"));
  ASSERT_TRUE(env.wait_state("attached", 2)) << env.explain();
  env.expect_attached(2);
}

TEST_F(Reattach, RestartedRelinkdAdoptsInsteadOfReattaching) {
  start();
  ASSERT_TRUE(env.wait_state("attached", 1)) << env.explain();
  env.ns().ip("link del p0");
  env.add_veth_parent("p0");
  ASSERT_TRUE(env.wait_state("attached", 2)) << env.explain();
  const int mvt = env.binding("vm1").value("macvtap_ifindex", 0);
  env.relinkd().stop(SIGKILL, 5s);
  std::filesystem::remove(env.control());
  env.start_relinkd();
  ASSERT_TRUE(env.wait_state("attached")) << env.explain();
  auto b = env.binding("vm1");
  EXPECT_EQ(b.value("generation", 0ull), 2u) << "adopted generation expected, not a new attach";
  EXPECT_EQ(b.value("macvtap_ifindex", 0), mvt);
  EXPECT_EQ(b.value("attaches", 0ull), 0u);
  env.expect_attached(2);
  // And it still follows the parent afterwards.
  env.ns().ip("link del p0");
  env.add_veth_parent("p0");
  ASSERT_TRUE(env.wait_state("attached", 3)) << env.explain();
  env.expect_attached(3);
}

TEST_F(Reattach, RestartedRelinkdCleansUpWhatQemuNoLongerHolds) {
  start();
  ASSERT_TRUE(env.wait_state("attached", 1)) << env.explain();
  env.relinkd().stop(SIGKILL, 5s);
  // While relinkd is down, someone removes the tap side from QEMU.
  auto& q = env.test_qmp("vm1");
  ASSERT_TRUE(q.execute("netdev_del", {{"id", "nic0.uplink1"}}).contains("return"));
  std::filesystem::remove(env.control());
  env.start_relinkd();
  ASSERT_TRUE(env.wait_state("attached", 2)) << env.explain();
  env.expect_attached(2);  // exactly one generation left: the stale tap1 was removed
}

TEST_F(Reattach, QemuExitAndReturn) {
  start();
  ASSERT_TRUE(env.wait_state("attached", 1)) << env.explain();
  const std::string mvt = text_of(env.binding("vm1"), "macvtap");
  env.kill_qemu("vm1");
  ASSERT_TRUE(env.wait_state("vm-offline")) << env.explain();
  // QEMU is gone: its macvtap is deleted, not leaked.
  ASSERT_TRUE(wait_until([&] { return env.ns().run("ip link show " + mvt).status != 0; }, 5s)) << env.explain();
  env.start_qemu(vm);
  ASSERT_TRUE(env.wait_state("attached")) << env.explain();
  env.expect_attached(env.binding("vm1").value("generation", 0ull));
}

TEST_F(Reattach, ManualReattachBumpsGeneration) {
  start();
  ASSERT_TRUE(env.wait_state("attached", 1)) << env.explain();
  auto r = sh(relinkctl_bin() + " --socket " + env.control() + " reattach vm1 nic0");
  ASSERT_EQ(r.status, 0) << r.out;
  ASSERT_TRUE(env.wait_state("attached", 2)) << env.explain();
  env.expect_attached(2);
  r = sh(relinkctl_bin() + " --socket " + env.control() + " reattach vm1 nosuchnic");
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.out.find("no binding for NIC or netdev 'nosuchnic'"), std::string::npos) << r.out;
  r = sh(relinkctl_bin() + " --socket " + env.control() + " reattach nosuchvm");
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.out.find("no VM named 'nosuchvm'"), std::string::npos) << r.out;
}

TEST_F(Reattach, WrongNicIdFailsCleanlyAndKeepsRunning) {
  vm.nic = "nic0";
  env.add_veth_parent("p0");
  // The config names a NIC QEMU does not have: every attach must roll back.
  VmSpec wrong = vm;
  wrong.nic = "nosuch";
  env.write_config({wrong});
  env.start_qemu(vm);
  env.start_relinkd();
  // One status snapshot: the next retry comes 200 ms after the second
  // failure, sooner than two status calls under a sanitizer.
  nlohmann::json b;
  ASSERT_TRUE(wait_until(
      [&] {
        b = env.binding("vm1", "nosuch");
        return b.value("failures", 0) >= 2 && b.value("state", "") == "backoff";
      },
      10s))
      << env.explain();
  EXPECT_NE(text_of(b, "last_error").find("nosuch"), std::string::npos) << b.dump();
  // Rolled back: no tap, no hubport, no macvtap left behind.
  EXPECT_TRUE(env.generations("vm1", "nosuch").empty()) << env.test_qmp("vm1").info_network();
  EXPECT_NE(env.ns().run("ip link show " + text_of(b, "macvtap")).status, 0);
  EXPECT_TRUE(env.relinkd().running());
}

TEST_F(Reattach, QmpSocketAbsentKeepsDaemonRunning) {
  env.add_veth_parent("p0");
  env.write_config({vm});  // no QEMU started
  env.start_relinkd();
  ASSERT_TRUE(env.wait_state("vm-offline")) << env.explain();
  auto st = env.status();
  EXPECT_EQ(st["vms"][0]["qmp"], "disconnected");
  EXPECT_NE(st["vms"][0].value("qmp_error", "").find("No such file or directory"), std::string::npos) << st.dump();
  auto table = sh(relinkctl_bin() + " --socket " + env.control() + " status");
  EXPECT_NE(table.out.find("vm1: QMP disconnected: connect " + env.qmp_path("vm1")), std::string::npos) << table.out;
  // QEMU appears later: relinkd connects on its own.
  env.start_qemu(vm);
  ASSERT_TRUE(env.wait_state("attached", 1, "vm1", 15s)) << env.explain();
  env.expect_attached(1);
}

TEST_F(Reattach, ReloadKeepsOldConfigWhenNewIsInvalidAndAppliesValidOne) {
  start();
  ASSERT_TRUE(env.wait_state("attached", 1)) << env.explain();
  DaemonEnv::write_file(env.config_path(), "[[vm]]\nname = \"broken\"\n");
  kill(env.relinkd().pid(), SIGHUP);
  std::this_thread::sleep_for(300ms);
  EXPECT_TRUE(env.relinkd().running());
  EXPECT_EQ(env.state(), "attached");
  EXPECT_NE(read_file(env.log_path()).find("keeping the running configuration"), std::string::npos);
  auto r = sh(relinkctl_bin() + " --socket " + env.control() + " reload");
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.out.find("relinkd.toml:"), std::string::npos) << r.out;
  // A valid config with a second VM: the first keeps its attachment.
  VmSpec vm2{"vm2", "nic0", "p0", "52:54:00:12:34:57", 0};
  env.write_config({vm, vm2});
  env.start_qemu(vm2);
  kill(env.relinkd().pid(), SIGHUP);
  ASSERT_TRUE(env.wait_state("attached", 1, "vm2")) << env.explain();
  EXPECT_EQ(env.binding("vm1").value("generation", 0ull), 1u);
  env.expect_attached(1, vm2);
  env.expect_attached(1, vm);
}

TEST_F(Reattach, SigtermExitsCleanlyAndLeavesVmConnected) {
  start();
  ASSERT_TRUE(env.wait_state("attached", 1)) << env.explain();
  const std::string mvt = text_of(env.binding("vm1"), "macvtap");
  int st = env.relinkd().stop(SIGTERM, 5s);
  ASSERT_NE(st, -1) << "relinkd did not exit on SIGTERM";
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << st;
  EXPECT_FALSE(std::filesystem::exists(env.control()));
  EXPECT_EQ(env.ns().run("ip link show " + mvt).status, 0) << "the VM must keep its network";
  EXPECT_EQ(env.generations().count(1), 1u);
}

TEST_F(Reattach, EveryDaemonFdIsCloseOnExec) {
  start();
  ASSERT_TRUE(env.wait_state("attached", 1)) << env.explain();
  ASSERT_EQ(env.status()["vms"][0]["qmp"], "connected");
  // relinkd runs as root and hands fds around: none may leak into a child.
  const std::string dir = "/proc/" + std::to_string(env.relinkd().pid()) + "/fdinfo";
  size_t checked = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    const int fd = std::stoi(e.path().filename());
    if (fd <= 2) continue;  // stdio, inherited from the test
    const std::string info = read_file(e.path());
    const auto pos = info.find("flags:");
    ASSERT_NE(pos, std::string::npos) << info;
    const unsigned long flags = std::stoul(info.substr(pos + 6), nullptr, 8);
    EXPECT_TRUE(flags & O_CLOEXEC) << "fd " << fd << " -> "
                                   << std::filesystem::read_symlink("/proc/" + std::to_string(env.relinkd().pid()) +
                                                                    "/fd/" + std::to_string(fd));
    ++checked;
  }
  EXPECT_GE(checked, 5u);  // netlink x2, QMP, control socket, event loop at least
}

TEST_F(Reattach, TalksToSystemdNotifySocket) {
  // The service manager's side of sd_notify(3): a datagram socket.
  const std::string path = env.dir() + "/notify.sock";
  UniqueFd sock(socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
  ASSERT_EQ(bind(sock.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  timeval tv{0, 100000};
  setsockopt(sock.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  std::vector<std::string> got;
  auto wait_for = [&](const std::string& what) {
    return wait_until(
        [&] {
          char buf[4096];
          ssize_t n = recv(sock.get(), buf, sizeof buf, 0);
          if (n > 0) got.emplace_back(buf, static_cast<size_t>(n));
          for (const auto& m : got)
            if (m.find(what) != std::string::npos) return true;
          return false;
        },
        10s, 1ms);
  };
  env.add_veth_parent("p0");
  env.write_config({vm});
  env.start_qemu(vm);
  setenv("NOTIFY_SOCKET", path.c_str(), 1);
  setenv("WATCHDOG_USEC", "200000", 1);
  env.start_relinkd();
  unsetenv("NOTIFY_SOCKET");
  unsetenv("WATCHDOG_USEC");
  ASSERT_TRUE(wait_for("READY=1"));
  ASSERT_TRUE(wait_for("WATCHDOG=1")) << "the event loop pings the watchdog";
  got.clear();
  kill(env.relinkd().pid(), SIGHUP);
  ASSERT_TRUE(wait_for("RELOADING=1"));
  ASSERT_TRUE(wait_for("READY=1"));
  got.clear();
  ASSERT_TRUE(env.wait_state("attached", 1)) << env.explain();
  env.relinkd().stop(SIGTERM, 5s);
  EXPECT_TRUE(wait_for("STOPPING=1"));
}

TEST_F(Reattach, ControlSocketRefusesUnprivilegedPeers) {
  start();
  ASSERT_TRUE(env.wait_state("attached", 1)) << env.explain();
  struct stat st {};
  ASSERT_EQ(stat(env.control().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  // Make the socket reachable for nobody, so only the peer check stands in the way.
  chmod(env.dir().c_str(), 0755);
  chmod(env.control().c_str(), 0666);
  auto r = sh("setpriv --reuid=65534 --regid=65534 --clear-groups " + relinkctl_bin() + " --socket " +
              env.control() + " status");
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.out.find("permission denied"), std::string::npos) << r.out;
}

TEST(Cli, CheckConfigReportsFileLineColumn) {
  const std::string dir = "/tmp/relink-cli-" + random_suffix();
  std::filesystem::create_directories(dir);
  DaemonEnv::write_file(dir + "/bad.toml", "[[vm]]\nname = \"a\"\nqmp = \"/q\"\n[[vm.macvtap]]\nnic = \"n\"\nparent = \"p\"\nmac = \"zz\"\n");
  DaemonEnv::write_file(dir + "/good.toml", "[[vm]]\nname = \"a\"\nqmp = \"/q\"\n");
  auto bad = sh(relinkd_bin() + " --check-config " + dir + "/bad.toml");
  auto good = sh(relinkd_bin() + " --check-config " + dir + "/good.toml");
  auto run_bad = sh(relinkd_bin() + " --config " + dir + "/bad.toml");
  std::filesystem::remove_all(dir);
  EXPECT_EQ(bad.status, 1);
  EXPECT_EQ(bad.out, dir + "/bad.toml:7:7: 'mac' must look like 52:54:00:12:34:56, not \"zz\"\n");
  EXPECT_EQ(good.status, 0) << good.out;
  EXPECT_EQ(run_bad.status, 1);
  EXPECT_EQ(run_bad.out, bad.out);
  EXPECT_EQ(good.out, dir + "/good.toml: valid (1 VM: 0 macvtap bindings, 0 passt bindings)\n");
  // The shipped example is valid.
  auto example = sh(relinkd_bin() + " --check-config " + source_dir() + "/contrib/relinkd.toml");
  EXPECT_EQ(example.status, 0) << example.out;
}

// --check-config refuses what is not a configuration, and what this host
// cannot run: a passt binary that is not there, a group that does not exist.
TEST(Cli, CheckConfigRefusesNonFilesAndWhatTheHostLacks) {
  auto etc = sh(relinkd_bin() + " --check-config /etc 2>&1");
  EXPECT_EQ(etc.status, 1);
  EXPECT_EQ(etc.out, "/etc: is a directory, not a configuration file\n");
  auto null = sh(relinkd_bin() + " --check-config /dev/null 2>&1");
  EXPECT_EQ(null.status, 1);
  EXPECT_EQ(null.out, "/dev/null: is not a regular file\n");
  const std::string dir = "/tmp/relink-cli-" + random_suffix();
  std::filesystem::create_directories(dir);
  DaemonEnv::write_file(dir + "/host.toml",
                        "[daemon]\npasst = \"/nonexistent/passt\"\ncontrol_group = \"relink-no-such-group\"\n"
                        "[[vm]]\nname = \"a\"\nqmp = \"/q\"\n[[vm.passt]]\nnetdev = \"net1\"\nsocket = \"/run/a.sock\"\n");
  auto host = sh(relinkd_bin() + " --check-config " + dir + "/host.toml 2>&1");
  std::filesystem::remove_all(dir);
  EXPECT_EQ(host.status, 1);
  EXPECT_NE(host.out.find("[daemon] passt: cannot run /nonexistent/passt: No such file or directory (needed by 1 "
                          "[[vm.passt]] binding; install passt)"),
            std::string::npos)
      << host.out;
  EXPECT_NE(host.out.find("[daemon] control_group: there is no group named 'relink-no-such-group'"), std::string::npos)
      << host.out;
}

// relinkd started without the privileges it needs says which and why,
// rather than failing later on the first macvtap or passt.
TEST(Cli, RefusesToStartWithoutItsPrivileges) {
  RELINK_REQUIRE_ROOT();
  const std::string dir = "/tmp/relink-cli-" + random_suffix();
  std::filesystem::create_directories(dir);
  chmod(dir.c_str(), 0755);
  DaemonEnv::write_file(dir + "/r.toml",
                        "[daemon]\nstate_dir = \"" + dir + "/state\"\ncontrol_socket = \"" + dir + "/c.sock\"\n"
                        "[[vm]]\nname = \"a\"\nqmp = \"/q\"\n[[vm.passt]]\nnetdev = \"net1\"\nsocket = \"/run/a.sock\"\n");
  chmod((dir + "/r.toml").c_str(), 0644);
  auto nobody = sh("setpriv --reuid=65534 --regid=65534 --clear-groups " + relinkd_bin() + " --config " + dir +
                   "/r.toml 2>&1");
  // Root with CAP_NET_ADMIN dropped from every set.
  auto no_net_admin = sh("setpriv --inh-caps=-net_admin --bounding-set=-net_admin " + relinkd_bin() + " --config " +
                         dir + "/r.toml 2>&1");
  std::filesystem::remove_all(dir);
  EXPECT_EQ(nobody.status, 1);
  EXPECT_NE(nobody.out.find("relinkd: cannot start without the privileges it needs: CAP_NET_ADMIN (to create "
                            "macvtaps and follow links); CAP_SETUID (to run passt as its runas user, never root)"),
            std::string::npos)
      << nobody.out;
  EXPECT_NE(nobody.out.find("Run it as root"), std::string::npos) << nobody.out;
  EXPECT_EQ(no_net_admin.status, 1);
  EXPECT_NE(no_net_admin.out.find("privileges it needs: CAP_NET_ADMIN (to create macvtaps and follow links).") ,
            std::string::npos)
      << no_net_admin.out;
  EXPECT_FALSE(std::filesystem::exists(dir + "/state")) << "nothing is set up before the check";
}

}  // namespace
}  // namespace relink::test
