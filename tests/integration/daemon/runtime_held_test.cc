// SPDX-License-Identifier: GPL-2.0-or-later
// Runtime registrations across restarts when something is wrong at start:
// a runas NSS no longer resolves (its user taken away with a private
// /etc/passwd: real NSS, as when sssd is not up yet) runs with the ids it
// resolved to at `relinkctl add`; one that nothing resolves is held aside
// alone (the others run, status shows it, runtime.toml keeps it through
// adds and removes); a runtime.toml that cannot be read at all is set aside
// under a name no earlier one has.
#include <signal.h>

#include <fstream>
#include <sstream>

#include "daemon_env.h"

namespace relink::test {
namespace {

using namespace std::chrono_literals;

constexpr uid_t kUid = 4242;

class RuntimeHeld : public ::testing::Test {
 protected:
  void SetUp() override {
    RELINK_REQUIRE_ROOT();
    env.add_passt_uplink();
    DaemonEnv::write_file(env.config_path(), env.config_text({}));
    // passwd and group with a user relinkd is run with only the first time.
    DaemonEnv::write_file(env.dir() + "/passwd", read_file("/etc/passwd") + "relinktest:x:" + std::to_string(kUid) +
                                                     ":" + std::to_string(kUid) + "::/nonexistent:/usr/sbin/nologin\n");
    DaemonEnv::write_file(env.dir() + "/group", read_file("/etc/group") + "relinktest:x:" + std::to_string(kUid) + ":\n");
    DaemonEnv::write_file(env.dir() + "/passwd-later", read_file("/etc/passwd"));
  }
  // relinkd with `passwd` over /etc/passwd (a private mount namespace).
  std::vector<std::string> with_passwd(const std::string& passwd) const {
    return {"unshare", "-m", "sh", "-c",
            "mount --bind " + env.dir() + "/" + passwd + " /etc/passwd && mount --bind " + env.dir() +
                "/group /etc/group && exec \"$0\" \"$@\""};
  }
  std::string ctl(const std::string& args) {
    return sh(relinkctl_bin() + " --socket " + env.control() + " " + args + " 2>&1").out;
  }
  int ctl_status(const std::string& args) { return sh(relinkctl_bin() + " --socket " + env.control() + " " + args).status; }
  std::string vm_toml(const std::string& name, const std::string& runas) const {
    return "[[vm]]\nname = \"" + name + "\"\nqmp = \"" + env.qmp_path(name) + "\"\n[[vm.passt]]\nnetdev = \"net1\"\n"
           "socket = \"" + env.dir() + "/" + name + ".sock\"\nargs = [\"-t\", \"10001\"]\nrunas = \"" + runas + "\"\n";
  }
  nlohmann::json passt(const std::string& vm) { return env.binding(vm, "net1"); }
  std::string runtime_toml() { return read_file(env.dir() + "/state/runtime.toml"); }

  DaemonEnv env;
};

TEST_F(RuntimeHeld, UnresolvableRunasUsesTheKeptIdsOrHoldsOnlyItsVm) {
  env.start_qemu_with("svc1", {"-netdev", "stream,id=net1,server=on,addr.type=unix,addr.path=" + env.dir() +
                                              "/svc1.sock", "-device", "virtio-net-pci,netdev=net1,id=nic0"});
  env.start_relinkd(with_passwd("passwd"));
  DaemonEnv::write_file(env.dir() + "/svc1.toml", vm_toml("svc1", "relinktest"));
  ASSERT_EQ(ctl_status("add " + env.dir() + "/svc1.toml"), 0) << ctl("add " + env.dir() + "/svc1.toml");
  ASSERT_TRUE(wait_until([&] { return passt("svc1").value("state", "") == "running"; }, 10s)) << env.explain();
  const int pid = passt("svc1").value("pid", 0);
  ASSERT_NE(read_file("/proc/" + std::to_string(pid) + "/status").find("Uid:\t4242"), std::string::npos);
  EXPECT_NE(runtime_toml().find("uid = 4242"), std::string::npos) << runtime_toml();
  ASSERT_GE(env.relinkd().stop(SIGTERM, 5s), 0);

  // relinkd starts where relinktest does not resolve; registrations no
  // ids can save join runtime.toml (as those of an older relinkd would be).
  {
    std::ofstream f(env.dir() + "/state/runtime.toml", std::ios::app);
    f << "\n" << vm_toml("held1", "relink-no-such-user") << "\n" << vm_toml("held2", "relinklater");
  }
  env.start_relinkd(with_passwd("passwd-later"));
  ASSERT_TRUE(wait_until([&] { return passt("svc1").value("state", "") == "running"; }, 10s)) << env.explain();
  EXPECT_EQ(passt("svc1").value("pid", 0), pid) << "the passt of the kept ids is adopted";
  EXPECT_EQ(passt("svc1").value("runas", ""), "relinktest");
  const std::string log = read_file(env.log_path());
  EXPECT_NE(log.find("'runas': unknown user 'relinktest'; using uid 4242 gid 4242"), std::string::npos) << env.explain();
  auto st = env.status();
  ASSERT_EQ(st["held"].size(), 2u) << st.dump();
  EXPECT_EQ(st["held"][0].value("name", ""), "held1");
  EXPECT_NE(st["held"][0].value("error", "").find("unknown user 'relink-no-such-user'"), std::string::npos) << st.dump();
  EXPECT_NE(ctl("status").find("held"), std::string::npos) << ctl("status");

  // Adds and removes keep it in the file.
  DaemonEnv::write_file(env.dir() + "/new3.toml", vm_toml("new3", "nobody"));
  ASSERT_EQ(ctl_status("add " + env.dir() + "/new3.toml"), 0) << ctl("add " + env.dir() + "/new3.toml");
  EXPECT_NE(runtime_toml().find("name = 'held1'"), std::string::npos) << runtime_toml();
  EXPECT_NE(ctl("add " + env.dir() + "/new3.toml").find("already"), std::string::npos);
  ASSERT_EQ(ctl_status("remove new3"), 0);
  EXPECT_NE(runtime_toml().find("name = 'held1'"), std::string::npos) << runtime_toml();
  EXPECT_NE(runtime_toml().find("name = 'svc1'"), std::string::npos) << runtime_toml();
  // A held registration can be removed like any other.
  ASSERT_EQ(ctl_status("remove held1"), 0) << ctl("remove held1");
  EXPECT_EQ(runtime_toml().find("held1"), std::string::npos) << runtime_toml();
  ASSERT_EQ(env.status()["held"].size(), 1u);

  // NSS answers for held2's user now: a reload registers it again.
  { std::ofstream(env.dir() + "/passwd-later", std::ios::app) << "relinklater:x:4343:4343::/nonexistent:/bin/false\n"; }
  ASSERT_EQ(ctl_status("reload"), 0) << ctl("reload");
  EXPECT_TRUE(env.status()["held"].empty()) << env.explain();
  EXPECT_EQ(passt("held2").value("runas", ""), "relinklater") << env.explain();
}

TEST_F(RuntimeHeld, ASetAsideFileIsNeverReplaced) {
  const std::string state = env.dir() + "/state/";
  std::filesystem::create_directories(state);
  chmod(state.c_str(), 0755);
  for (const char* garbage : {"first = [", "second = ["}) {
    DaemonEnv::write_file(state + "runtime.toml", garbage);
    chmod((state + "runtime.toml").c_str(), 0600);
    env.start_relinkd();
    ASSERT_TRUE(wait_until([&] { return env.status().is_object(); }, 5s)) << env.explain();
    ASSERT_GE(env.relinkd().stop(SIGTERM, 5s), 0);
  }
  EXPECT_EQ(read_file(state + "runtime.toml.invalid"), "first = [");
  EXPECT_EQ(read_file(state + "runtime.toml.invalid.1"), "second = [");
  EXPECT_FALSE(std::filesystem::exists(state + "runtime.toml"));
}

}  // namespace
}  // namespace relink::test
