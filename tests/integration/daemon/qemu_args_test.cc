// SPDX-License-Identifier: GPL-2.0-or-later
// `relinkctl qemu-args` end to end: a real QEMU 7.2 started with exactly the
// options config::qemu_args generates for a VM with one hub binding, one
// replug binding and one passt stream-server binding (plus what its notes ask
// of the launcher: the replug binding's macvtap, made by the note's own
// command line, open as fd 3), and a real relinkd with that configuration.
// Every binding must reach attached / running; after the parent is deleted
// and re-created, both macvtap bindings must be attached again at a new
// generation, with QEMU holding the new macvtaps. The replug needs a guest
// that releases its NIC: the test guest (tests/guest) boots under TCG in a
// few seconds here (the whole test takes about 7 s), well under 40 s, so the
// full replug is checked, not only the adoption.
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <sstream>

#include "config/config.h"
#include "config/qemu_args.h"
#include "daemon_env.h"

namespace relink::test {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

class QemuArgsE2E : public ::testing::Test {
 protected:
  void SetUp() override {
    RELINK_REQUIRE_ROOT();
    guest_dir_ = test_guest_dir();
    ASSERT_FALSE(guest_dir_.empty());
    env.add_passt_uplink();
    env.add_veth_parent("p0");
  }

  std::string config_text() const {
    return "[daemon]\ncontrol_socket = \"" + env.control() + "\"\nstate_dir = \"" + env.dir() +
           "/state\"\nnode_dir = \"" + env.dir() + "/dev\"\nlog_level = \"debug\"\n"
           "\n[[vm]]\nname = \"vm1\"\nqmp = \"" + env.qmp_path("vm1") + "\"\n"
           "\n[[vm.macvtap]]\nnic = \"nic0\"\nparent = \"p0\"\nmac = \"52:54:00:12:34:56\"\nhub = 0\n"
           "\n[[vm.macvtap]]\nnic = \"net0\"\nparent = \"p0\"\nmac = \"52:54:00:12:34:57\"\nattach = \"replug\"\n"
           "\n[[vm.passt]]\nnetdev = \"pt0\"\nmode = \"stream-server\"\nsocket = \"" + env.dir() + "/vm1-pt0.sock\"\n";
  }

  // The note lines of the replug binding that a launcher runs, in order:
  // the shell command that makes the macvtap.
  static std::string note_command(const config::QemuArgs& a) {
    for (const auto& n : a.notes)
      if (n.rfind("  ip link del ", 0) == 0) return n.substr(2);
    return "";
  }

  // QEMU as the fixtures start it (-nodefaults, TCG, q35, a QMP socket of
  // the test's own), then exactly `generated`, then the guest. The launcher
  // part (`fd3`) opens the macvtap's device node as fd 3.
  void start_qemu(const std::vector<std::string>& generated, const std::string& fd3_node) {
    std::vector<std::string> argv = {"sh", "-c", "exec 3<>" + fd3_node + "; exec \"$0\" \"$@\""};
    const std::string kernel = std::filesystem::exists(guest_dir_ + "/vmlinux") ? "/vmlinux" : "/vmlinuz";
    argv.insert(argv.end(), {"qemu-system-x86_64", "-nodefaults", "-display", "none", "-machine", "q35", "-accel",
                             "tcg", "-m", "256", "-qmp", "unix:" + test_qmp_path() + ",server=on,wait=off"});
    argv.insert(argv.end(), generated.begin(), generated.end());
    argv.insert(argv.end(), {"-no-reboot", "-serial", "file:" + env.dir() + "/console.log", "-kernel",
                             guest_dir_ + kernel, "-initrd", guest_dir_ + "/initramfs.cpio.gz", "-append",
                             "console=ttyS0 quiet panic=-1 relink.tag=qemu-args relink.poll=0.05"});
    qemu_ = std::make_unique<Child>(argv, Child::Options{"", env.dir() + "/qemu.log", {}});
    ASSERT_TRUE(qmp_.connect(test_qmp_path())) << read_file(env.dir() + "/qemu.log");
  }
  std::string test_qmp_path() const { return env.dir() + "/vm1.test.qmp"; }

  // The device number of macvtap `name` in the test namespace (0 if none).
  dev_t macvtap_dev(const std::string& name) {
    const int ifindex = env.ns().ifindex(name);
    if (!ifindex) return 0;
    auto r = env.ns().run("cat /sys/class/net/" + name + "/macvtap/tap" + std::to_string(ifindex) + "/dev");
    unsigned maj = 0, min = 0;
    if (sscanf(r.out.c_str(), "%u:%u", &maj, &min) != 2) return 0;
    return makedev(maj, min);
  }
  // Attached, and QEMU holds the macvtap relinkd reports for the binding.
  void expect_qemu_holds(const std::string& nic) {
    auto b = env.binding("vm1", nic);
    const std::string mvt = text_of(b, "macvtap");
    const dev_t dev = macvtap_dev(mvt);
    ASSERT_NE(dev, 0u) << nic << ": no macvtap " << mvt << "\n" << explain();
    EXPECT_EQ(b.value("macvtap_ifindex", 0), env.ns().ifindex(mvt)) << b.dump();
    EXPECT_TRUE(daemon::process_holds_device(qemu_->pid(), dev)) << nic << ": QEMU does not hold " << mvt;
  }
  uint64_t generation(const std::string& nic) { return env.binding("vm1", nic).value("generation", 0ull); }
  std::string explain() {
    return env.explain() + "\ninfo network:\n" + qmp_.info_network() + "\nguest console (tail):\n" +
           DaemonEnv::tail(read_file(env.dir() + "/console.log"), 1500) + "\nqemu log:\n" +
           read_file(env.dir() + "/qemu.log");
  }

  DaemonEnv env;
  std::string guest_dir_;
  // Declared after env: QEMU is gone before env removes the directory and
  // the namespace.
  QmpSync qmp_;
  std::unique_ptr<Child> qemu_;
};

TEST_F(QemuArgsE2E, GeneratedWiringIsAdoptedAttachedAndReattachedAfterTheParentReturns) {
  DaemonEnv::write_file(env.config_path(), config_text());
  const config::Config cfg = config::load_file(env.config_path());
  const config::Vm* vm = cfg.find_vm("vm1");
  ASSERT_NE(vm, nullptr);
  const config::QemuArgs a = config::qemu_args(*vm);
  const std::string text = config::format_qemu_args(a);
  SCOPED_TRACE("generated:\n" + text);

  // What the generated text gives a shell is exactly the args.
  {
    std::string script;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);)
      if (line.rfind("#", 0) != 0) script += line + "\n";
    auto r = sh("set -- \\\n" + script + "\nprintf '%s\\n' \"$@\"");
    ASSERT_EQ(r.status, 0) << r.out;
    std::string want;
    for (const auto& w : a.args) want += w + "\n";
    EXPECT_EQ(r.out, want);
  }

  // The launcher: the note's command makes the replug binding's macvtap;
  // there is no udev in the test namespace, so, as the next note says, the
  // queue is opened through a node made from sysfs instead of /dev/tapN.
  const std::string cmd = note_command(a);
  ASSERT_FALSE(cmd.empty()) << text;
  ASSERT_NE(cmd.find("ip link add link p0 name "), std::string::npos) << cmd;
  auto made = env.ns().run(cmd);
  ASSERT_EQ(made.status, 0) << cmd << "\n" << made.out;
  const std::string launcher_mvt = vm->macvtaps.at(1).macvtap;
  const dev_t dev = macvtap_dev(launcher_mvt);
  ASSERT_NE(dev, 0u) << env.ns().run("ip -d link").out;
  const std::string node = env.dir() + "/" + launcher_mvt + ".node";
  ASSERT_EQ(mknod(node.c_str(), S_IFCHR | 0600, dev), 0) << node;
  EXPECT_NE(text.find("3<>/dev/tap$(cat /sys/class/net/" + launcher_mvt + "/ifindex)"), std::string::npos);

  ASSERT_NO_FATAL_FAILURE(start_qemu(a.args, node));
  env.start_relinkd();

  // hub: relinkd's first uplink; replug: the launcher's macvtap, adopted as
  // generation 0 (no replug: the guest need not be up); passt: running.
  ASSERT_TRUE(env.wait_state("attached", 1, "vm1", 10s, "nic0")) << explain();
  ASSERT_TRUE(env.wait_state("attached", 0, "vm1", 10s, "net0")) << explain();
  ASSERT_TRUE(env.wait_state("running", 0, "vm1", 10s, "pt0")) << explain();
  EXPECT_EQ(text_of(env.binding("vm1", "net0"), "macvtap"), launcher_mvt);
  EXPECT_NE(read_file(env.log_path()).find("net0: adopting macvtap " + launcher_mvt), std::string::npos) << explain();
  EXPECT_TRUE(daemon::process_holds_device(qemu_->pid(), dev));
  ASSERT_NO_FATAL_FAILURE(expect_qemu_holds("nic0"));
  ASSERT_NO_FATAL_FAILURE(expect_qemu_holds("net0"));
  // relinkd found the passt NIC by its netdev ("pt0.nic") and announced it.
  EXPECT_NE(qmp_.info_network().find("pt0.nic: index="), std::string::npos) << qmp_.info_network();

  // The replug needs the guest up (ACPI hotplug on the root port).
  ASSERT_TRUE(wait_until([&] { return read_file(env.dir() + "/console.log").find("RELINK-GUEST-READY") !=
                                      std::string::npos; },
                         120s, 100ms))
      << explain();

  const uint64_t hub_gen = generation("nic0"), replug_gen = generation("net0");
  env.ns().ip("link del p0");
  ASSERT_TRUE(env.wait_state("waiting-parent", 0, "vm1", 10s, "nic0")) << explain();
  ASSERT_TRUE(env.wait_state("waiting-parent", 0, "vm1", 10s, "net0")) << explain();
  env.add_veth_parent("p0");
  ASSERT_TRUE(env.wait_state("attached", hub_gen + 1, "vm1", 30s, "nic0")) << explain();
  ASSERT_TRUE(env.wait_state("attached", replug_gen + 1, "vm1", 30s, "net0")) << explain();
  ASSERT_NO_FATAL_FAILURE(expect_qemu_holds("nic0"));
  ASSERT_NO_FATAL_FAILURE(expect_qemu_holds("net0"));
  // The replugged NIC is back on its root port with its MAC, on relinkd's tap.
  auto bus = qmp_.execute("qom-get", {{"path", "/machine/peripheral/net0"}, {"property", "parent_bus"}});
  EXPECT_NE(bus.value("return", "").find("net0.rp"), std::string::npos) << bus.dump();
  auto mac = qmp_.execute("qom-get", {{"path", "/machine/peripheral/net0"}, {"property", "mac"}});
  EXPECT_EQ(mac.value("return", ""), "52:54:00:12:34:57") << mac.dump();
  auto netdev = qmp_.execute("qom-get", {{"path", "/machine/peripheral/net0"}, {"property", "netdev"}});
  EXPECT_EQ(netdev.value("return", ""), "net0.tap" + std::to_string(replug_gen + 1)) << netdev.dump();
  EXPECT_EQ(env.binding("vm1", "pt0").value("state", ""), "running") << explain();
  EXPECT_TRUE(env.relinkd().running());
}

}  // namespace
}  // namespace relink::test
