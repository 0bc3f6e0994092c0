// SPDX-License-Identifier: GPL-2.0-or-later
// A VM is tied to the user its QEMU runs as ([[vm]] qemu_user): real QEMUs
// run by setpriv as other users, their QMP sockets in directories that are
// or are not safe, against a real relinkd.
#include <pwd.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <fstream>
#include <optional>
#include <sstream>
#include <thread>

#include "daemon_env.h"

namespace relink::test {
namespace {

using namespace std::chrono_literals;

unsigned macvtap_major() {
  std::istringstream in(read_file("/proc/devices"));
  for (std::string line; std::getline(in, line);) {
    std::istringstream f(line);
    unsigned major = 0;
    std::string name;
    if (f >> major >> name && name == "macvtap") return major;
  }
  return 0;
}

// A user made for one test (useradd --system), removed on every exit path,
// with its /run/user/UID directory as pam_systemd would make it.
class TestUser {
 public:
  TestUser() : name_("rlq" + random_suffix(6)) {
    if (sh("useradd --system --no-create-home --shell /usr/sbin/nologin " + name_).status != 0) return;
    passwd* pw = getpwnam(name_.c_str());
    if (!pw) return;
    uid_ = pw->pw_uid;
    gid_ = pw->pw_gid;
    made_run_user_ = mkdir("/run/user", 0755) == 0;
    run_dir_ = "/run/user/" + std::to_string(uid_);
    ok_ = mkdir(run_dir_.c_str(), 0700) == 0 && chown(run_dir_.c_str(), uid_, gid_) == 0;
  }
  ~TestUser() {
    std::error_code ec;
    if (!run_dir_.empty()) std::filesystem::remove_all(run_dir_, ec);
    if (made_run_user_) rmdir("/run/user");
    if (uid_) sh("userdel " + name_);
  }
  bool ok() const { return ok_; }
  const std::string& name() const { return name_; }
  uid_t uid() const { return uid_; }
  gid_t gid() const { return gid_; }
  const std::string& run_dir() const { return run_dir_; }

 private:
  std::string name_;
  uid_t uid_ = 0;
  gid_t gid_ = 0;
  std::string run_dir_;
  bool made_run_user_ = false;
  bool ok_ = false;
};

class QemuUser : public ::testing::Test {
 protected:
  void SetUp() override {
    RELINK_REQUIRE_ROOT();
    major_ = macvtap_major();
    env.add_veth_parent("p0");
  }

  // vm1's config with its QMP socket at `qmp` and `qemu_user`.
  void write_config(const std::string& qmp, const std::string& qemu_user, const std::string& daemon_extra = "") {
    std::string text = env.config_text({VmSpec{}});
    const std::string from = "qmp = \"" + env.qmp_path("vm1") + "\"\n";
    text.replace(text.find(from), from.size(), "qmp = \"" + qmp + "\"\nqemu_user = \"" + qemu_user + "\"\n");
    if (!daemon_extra.empty()) text.insert(text.find("\n[[vm]]"), "\n" + daemon_extra);
    DaemonEnv::write_file(env.config_path(), text);
  }
  // QEMU as uid:gid (-S: QMP only), its NIC on hub 0 as relinkd's hub attach wants.
  void start_qemu_as(uid_t uid, gid_t gid, const std::string& qmp) {
    const VmSpec vm;
    qemu_ = Child({"setpriv", "--reuid=" + std::to_string(uid), "--regid=" + std::to_string(gid), "--clear-groups",
                   "qemu-system-x86_64", "-nodefaults", "-display", "none", "-machine", "q35", "-accel", "tcg", "-m",
                   "64", "-qmp", "unix:" + qmp + ",server=on,wait=off", "-netdev", "hubport,id=nic0.port,hubid=0",
                   "-device", "virtio-net-pci,netdev=nic0.port,id=nic0,mac=" + vm.mac, "-S"},
                  Child::Options{"", env.dir() + "/qemu.log", {}});
    ASSERT_TRUE(wait_until([&] { return std::filesystem::exists(qmp); }, 10s)) << read_file(env.dir() + "/qemu.log");
  }
  nlohmann::json vm_status() {
    auto st = env.status();
    if (st.is_object())
      for (const auto& v : st["vms"])
        if (v["name"] == "vm1") return v;
    return nlohmann::json::object();
  }
  std::string qmp_error() { return vm_status().value("qmp_error", std::string()); }
  // The macvtap device of the binding's current macvtap.
  dev_t binding_tap() {
    const std::string mvt = text_of(env.binding("vm1"), "macvtap");
    const int ifindex = env.ns().ifindex(mvt);
    auto dev = env.ns().run("cat /sys/class/net/" + mvt + "/macvtap/tap" + std::to_string(ifindex) + "/dev");
    unsigned maj = 0, min = 0;
    if (sscanf(dev.out.c_str(), "%u:%u", &maj, &min) != 2) return 0;
    return makedev(maj, min);
  }

  DaemonEnv env;
  // Before qemu_: destroyed after it, as userdel refuses a user whose
  // process still runs.
  std::optional<TestUser> user_;
  Child qemu_;
  unsigned major_ = 0;
};

// The first test: QEMU run by nobody, its socket in nobody's own
// directory, but under a directory anyone may write (no sticky bit): anyone
// could have made that directory and listened there. No fd, no command;
// status and --check-config name the directory and what to change.
TEST_F(QemuUser, AQemuUnderAWorldWritableDirectoryGetsNoTap) {
  ASSERT_GT(major_, 0u) << "no macvtap in /proc/devices";
  chmod(env.dir().c_str(), 0711);
  const std::string open_dir = env.dir() + "/shared";
  ASSERT_EQ(mkdir(open_dir.c_str(), 0777), 0);
  chmod(open_dir.c_str(), 0777);
  const std::string own = open_dir + "/nobody";
  ASSERT_EQ(mkdir(own.c_str(), 0700), 0);
  ASSERT_EQ(chown(own.c_str(), 65534, 65534), 0);
  const std::string qmp = own + "/vm1.qmp";
  write_config(qmp, "nobody");
  ASSERT_NO_FATAL_FAILURE(start_qemu_as(65534, 65534, qmp));

  auto check = sh(relinkd_bin() + " --check-config " + env.config_path() + " 2>&1");
  EXPECT_EQ(check.status, 1) << check.out;
  EXPECT_NE(check.out.find("[[vm]] vm1: qmp = \"" + qmp + "\": the directory " + open_dir +
                           " (mode 777) is writable by other users"),
            std::string::npos)
      << check.out;
  EXPECT_NE(check.out.find("chmod go-w " + open_dir), std::string::npos) << check.out;

  env.start_relinkd();
  EXPECT_TRUE(wait_until([&] { return qmp_error().find("the directory " + open_dir + " (mode 777) is writable by "
                                                       "other users") != std::string::npos; },
                         10s))
      << env.explain();
  std::this_thread::sleep_for(1s);
  EXPECT_EQ(vm_status().value("qmp", ""), "disconnected");
  EXPECT_EQ(env.state(), "vm-offline");
  EXPECT_TRUE(DaemonEnv::tap_fds(qemu_.pid(), major_).empty()) << "QEMU holds a macvtap fd";
  EXPECT_NE(read_file(env.log_path()).find("vm1: QMP socket " + qmp + ": the directory " + open_dir),
            std::string::npos)
      << DaemonEnv::tail(read_file(env.log_path()), 2000);
}

// The second test: QEMU run as a named user, its socket in that
// user's /run/user/UID: it gets its tap, and its next one after the parent
// flaps. Then reloads that change what the session was checked against
// drop it: qemu_binaries without this QEMU, and another qemu_user.
TEST_F(QemuUser, AQemuOfTheNamedUserInItsRunUserDirectoryIsServedAndRecheckedOnReload) {
  ASSERT_GT(major_, 0u) << "no macvtap in /proc/devices";
  const TestUser& user = user_.emplace();
  ASSERT_TRUE(user.ok()) << "useradd or /run/user failed";
  const std::string qmp = user.run_dir() + "/vm1.qmp";
  write_config(qmp, user.name());
  ASSERT_NO_FATAL_FAILURE(start_qemu_as(user.uid(), user.gid(), qmp));
  auto check = sh(relinkd_bin() + " --check-config " + env.config_path() + " 2>&1");
  EXPECT_EQ(check.status, 0) << check.out;
  env.start_relinkd();
  ASSERT_TRUE(env.wait_state("attached", 1)) << env.explain();
  EXPECT_EQ(vm_status().value("qemu_pid", 0), qemu_.pid());
  const dev_t tap = binding_tap();
  ASSERT_NE(tap, 0u);
  DaemonEnv::expect_only_tap_fds(qemu_.pid(), tap, 1);
  const int first_ifindex = env.binding("vm1").value("macvtap_ifindex", 0);

  env.ns().ip("link del p0");
  ASSERT_TRUE(env.wait_state("waiting-parent")) << env.explain();
  env.add_veth_parent("p0");
  ASSERT_TRUE(env.wait_state("attached", 2)) << env.explain();
  // A new macvtap (its device number may be the old one's again).
  EXPECT_NE(env.binding("vm1").value("macvtap_ifindex", 0), first_ifindex);
  const dev_t next = binding_tap();
  ASSERT_NE(next, 0u);
  DaemonEnv::expect_only_tap_fds(qemu_.pid(), next, 1);

  // qemu_binaries no longer names this QEMU: the connected session is dropped.
  write_config(qmp, user.name(), "qemu_binaries = [\"/nonexistent/qemu-system-*\"]");
  auto r = sh(relinkctl_bin() + " --socket " + env.control() + " reload 2>&1");
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_TRUE(wait_until([&] { return qmp_error().find("none of the files [daemon] qemu_binaries names") !=
                                      std::string::npos; },
                         5s))
      << env.explain();
  EXPECT_EQ(vm_status().value("qmp", ""), "disconnected");

  // Back to the default list but another qemu_user: the user's own
  // directory is no longer one the VM's QEMU user owns.
  write_config(qmp, "nobody");
  r = sh(relinkctl_bin() + " --socket " + env.control() + " reload 2>&1");
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_TRUE(wait_until([&] { return qmp_error().find("the directory " + user.run_dir() + " belongs to uid " +
                                                       std::to_string(user.uid())) != std::string::npos; },
                         5s))
      << env.explain();
  EXPECT_EQ(vm_status().value("qmp", ""), "disconnected");
  EXPECT_TRUE(env.relinkd().running());
}

}  // namespace
}  // namespace relink::test
