// SPDX-License-Identifier: GPL-2.0-or-later
// Privilege boundaries of a real relinkd (docs/operations.md, "Privilege
// model"): what a control_group member may do over the control socket, and
// that a second relinkd on the same state_dir changes nothing.
#include <grp.h>
#include <signal.h>
#include <sys/stat.h>

#include <fstream>
#include <thread>

#include "daemon_env.h"

namespace relink::test {
namespace {

using namespace std::chrono_literals;

// A group made for one test (groupadd), removed on every exit path.
class TestGroup {
 public:
  TestGroup() : name_("rlt" + random_suffix(6)) {
    ok_ = sh("groupadd " + name_).status == 0;
    if (struct group* g = ok_ ? getgrnam(name_.c_str()) : nullptr) gid_ = g->gr_gid;
    else ok_ = false;
  }
  ~TestGroup() {
    if (ok_) sh("groupdel " + name_);
  }
  // groupdel + groupadd under the same name: another gid.
  bool recreate() {
    const gid_t old = gid_;
    if (sh("groupdel " + name_).status != 0 || sh("groupadd -g " + std::to_string(old + 1000) + " " + name_).status != 0)
      return ok_ = false;
    struct group* g = getgrnam(name_.c_str());
    gid_ = g ? g->gr_gid : 0;
    return g && gid_ != old;
  }
  bool ok() const { return ok_; }
  const std::string& name() const { return name_; }
  gid_t gid() const { return gid_; }

 private:
  std::string name_;
  gid_t gid_ = 0;
  bool ok_ = false;
};

class Privilege : public ::testing::Test {
 protected:
  void SetUp() override { RELINK_REQUIRE_ROOT(); }

  // relinkctl as user nobody with `group` as a supplementary group: a
  // member through SO_PEERGROUPS, not through its primary group.
  ShResult as_member(const std::string& args) {
    return sh("setpriv --reuid=65534 --regid=65534 --groups=" + std::to_string(group.gid()) + " " + relinkctl_bin() +
              " --socket " + env.control() + " " + args + " 2>&1");
  }
  ShResult as_root(const std::string& args) {
    return sh(relinkctl_bin() + " --socket " + env.control() + " " + args + " 2>&1");
  }
  static size_t count(const std::string& text, const std::string& what) {
    size_t n = 0;
    for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
    return n;
  }

  TestGroup group;
  DaemonEnv env;
};

// The test: a member may look (status, metrics, monitor) and nudge
// (reattach); add, remove and reload are refused with the list of what it
// may use, relinkctl exits 1, nothing is registered or reloaded, and each
// refusal is logged once per user and verb. Root's add of the same VM works.
TEST_F(Privilege, ControlGroupMembersMayLookAndReattachButNotChangeWhatIsManaged) {
  ASSERT_TRUE(group.ok()) << "groupadd failed";
  VmSpec vm;
  env.add_veth_parent("p0");
  env.start_qemu(vm);
  env.write_config({vm}, "control_group = \"" + group.name() + "\"");
  env.start_relinkd();
  ASSERT_TRUE(env.wait_state("attached", 1)) << env.explain();
  chmod(env.dir().c_str(), 0711);  // the socket (0660, the group's) is reachable; the rest stays private

  auto r = as_member("status");
  EXPECT_EQ(r.status, 0) << r.out;
  EXPECT_NE(r.out.find("vm1"), std::string::npos) << r.out;
  r = as_member("metrics");
  EXPECT_EQ(r.status, 0) << r.out;
  EXPECT_NE(r.out.find("relink_"), std::string::npos) << r.out;
  r = as_member("qemu-args vm1");
  EXPECT_EQ(r.status, 0) << r.out;

  const std::string monitor_out = env.dir() + "/monitor.jsonl";
  Child monitor({"setpriv", "--reuid=65534", "--regid=65534", "--groups=" + std::to_string(group.gid()),
                 relinkctl_bin(), "--socket", env.control(), "monitor", "--json"},
                Child::Options{"", monitor_out, {}});
  // The subscription is in place once a member's reattach shows up in it.
  ASSERT_TRUE(wait_until(
      [&] {
        r = as_member("reattach --no-wait vm1");
        return r.status == 0 &&
               wait_until([&] { return read_file(monitor_out).find("\"state\":\"attached\"") != std::string::npos; },
                          1s);
      },
      10s))
      << r.out << read_file(monitor_out);
  EXPECT_TRUE(monitor.running()) << read_file(monitor_out);
  ASSERT_TRUE(env.wait_state("attached")) << env.explain();
  const uint64_t gen = env.binding("vm1").value("generation", uint64_t{0});
  EXPECT_GE(gen, 2u);
  r = as_member("reattach vm1");
  EXPECT_EQ(r.status, 0) << r.out;
  EXPECT_TRUE(env.wait_state("attached", gen + 1)) << env.explain();

  // add: refused, nothing registered.
  const std::string add_toml = env.dir() + "/add.toml";
  DaemonEnv::write_file(add_toml, "[[vm]]\nname = \"vm9\"\nqmp = \"" + env.qmp_path("vm9") +
                                      "\"\n[[vm.macvtap]]\nnic = \"nic0\"\nparent = \"p0\"\nmac = \"52:54:00:12:34:99\"\n");
  chmod(add_toml.c_str(), 0644);
  const std::string allowed = "may use: status, monitor, metrics, qemu-args, reattach";
  for (int i = 0; i < 2; ++i) {
    r = as_member("add < " + add_toml);
    EXPECT_EQ(r.status, 1) << r.out;
    EXPECT_NE(r.out.find("'add' is for root only"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find(allowed), std::string::npos) << r.out;
  }
  EXPECT_EQ(env.status().dump().find("vm9"), std::string::npos);
  EXPECT_FALSE(std::filesystem::exists(env.dir() + "/state/runtime.toml"));

  // reload: refused, the changed file is not applied.
  VmSpec changed = vm;
  changed.extra = "follow_carrier = false\n";
  env.write_config({changed}, "control_group = \"" + group.name() + "\"");
  r = as_member("reload");
  EXPECT_EQ(r.status, 1) << r.out;
  EXPECT_NE(r.out.find("'reload' is for root only"), std::string::npos) << r.out;
  EXPECT_EQ(env.binding("vm1").value("follow_carrier", false), true);
  EXPECT_EQ(read_file(env.log_path()).find("configuration reloaded"), std::string::npos);

  // Root's add of the same VM works; a member's remove of it does not.
  r = as_root("add < " + add_toml);
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_NE(env.status().dump().find("vm9"), std::string::npos);
  r = as_member("remove vm9");
  EXPECT_EQ(r.status, 1) << r.out;
  EXPECT_NE(r.out.find("'remove' is for root only"), std::string::npos) << r.out;
  EXPECT_NE(env.status().dump().find("vm9"), std::string::npos);
  r = as_root("remove vm9");
  EXPECT_EQ(r.status, 0) << r.out;

  const std::string log = read_file(env.log_path());
  EXPECT_EQ(count(log, "refused 'add' to uid 65534"), 1u) << DaemonEnv::tail(log, 3000);
  EXPECT_EQ(count(log, "refused 'reload' to uid 65534"), 1u);
  EXPECT_EQ(count(log, "refused 'remove' to uid 65534"), 1u);
  // The group re-created with another gid: a reload looks it up again and
  // gives the socket to the new gid; the old gid is no longer a member.
  const gid_t old_gid = group.gid();
  ASSERT_TRUE(group.recreate());
  r = as_root("reload");
  EXPECT_EQ(r.status, 0) << r.out;
  struct stat sst {};
  ASSERT_EQ(stat(env.control().c_str(), &sst), 0);
  EXPECT_EQ(sst.st_gid, group.gid());
  r = as_member("status");
  EXPECT_EQ(r.status, 0) << r.out;
  r = sh("setpriv --reuid=65534 --regid=65534 --groups=" + std::to_string(old_gid) + " " + relinkctl_bin() +
         " --socket " + env.control() + " status 2>&1");
  EXPECT_NE(r.status, 0) << r.out;

  // Not a member: not even status.
  r = sh("setpriv --reuid=65534 --regid=65534 --clear-groups " + relinkctl_bin() + " --socket " + env.control() +
         " status 2>&1");
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.out.find("permission denied"), std::string::npos) << r.out;
  EXPECT_TRUE(env.relinkd().running());
}

}  // namespace
}  // namespace relink::test
