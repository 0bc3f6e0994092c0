// SPDX-License-Identifier: GPL-2.0-or-later
// The state directory is trusted only when it is root's alone, and a pidfile
// is never enough to make relinkd signal a process: a real relinkd, a real
// QEMU 7.2 (-S) and real passt in a throwaway namespace with a default route.
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <sstream>
#include <thread>

#include "daemon_env.h"

namespace relink::test {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

class StateDirTest : public ::testing::Test {
 protected:
  void SetUp() override {
    RELINK_REQUIRE_ROOT();
    env.add_passt_uplink();
  }

  std::string state() const { return env.dir() + "/state"; }
  std::string sock() const { return env.dir() + "/vm1-net1.sock"; }
  std::string pidfile() const { return state() + "/passt/vm1/net1.pid"; }

  // One passt binding, vm1/net1 (stream-server on sock() unless told).
  void write_config(const std::string& args = R"(["-t", "10001"])", const std::string& mode = "stream-server",
                    const std::string& socket = "") {
    DaemonEnv::write_file(env.config_path(), "[daemon]\ncontrol_socket = \"" + env.control() + "\"\nstate_dir = \"" +
                                                 state() + "\"\nnode_dir = \"" + env.dir() +
                                                 "/dev\"\nlog_level = \"debug\"\n\n[[vm]]\nname = \"vm1\"\nqmp = \"" +
                                                 env.qmp_path("vm1") + "\"\n[[vm.passt]]\nnetdev = \"net1\"\nmode = \"" +
                                                 mode + "\"\nsocket = \"" + (socket.empty() ? sock() : socket) +
                                                 "\"\nargs = " + args + "\n");
  }
  void start_qemu() {
    env.start_qemu_with("vm1", {"-netdev", "stream,id=net1,server=on,addr.type=unix,addr.path=" + sock(), "-device",
                                "virtio-net-pci,netdev=net1,id=nic0"});
  }

  // Runs relinkd expecting it to refuse to start: its exit status (-1: it
  // kept running, and was killed).
  int run_relinkd_expecting_exit() {
    Child d({relinkd_bin(), "--config", env.config_path()}, Child::Options{env.ns().name(), env.log_path(), {}});
    const int st = d.wait(10s);
    if (st == -1) return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  }

  nlohmann::json b() { return env.binding("vm1", "net1"); }
  int pid_of() {
    auto j = b();
    return j.is_object() && j["pid"].is_number() ? j["pid"].get<int>() : 0;
  }
  bool wait_running(std::chrono::milliseconds t = 10s) {
    return wait_until(
        [&] {
          auto j = b();
          return j.is_object() && j.value("state", "") == "running" && j["pid"].is_number();
        },
        t, 5ms);
  }
  static bool alive(int pid) {
    return pid > 0 && ::kill(pid, 0) == 0 && read_file("/proc/" + std::to_string(pid) + "/stat").find(") Z") == std::string::npos;
  }
  // What /proc says of a process, as anyone may read it.
  static uint64_t start_time_of(int pid) {
    const std::string stat = read_file("/proc/" + std::to_string(pid) + "/stat");
    std::istringstream rest(stat.substr(stat.rfind(')') + 2));
    std::string field;
    for (int i = 3; i <= 22; ++i) rest >> field;
    return std::stoull(field);
  }
  static std::string exe_of(int pid) { return fs::read_symlink("/proc/" + std::to_string(pid) + "/exe").string(); }
  std::string log() { return read_file(env.log_path()); }
  std::string explain() { return env.explain(); }

  // The files in a directory, with their contents.
  static std::map<std::string, std::string> listing(const std::string& dir) {
    std::map<std::string, std::string> out;
    for (const auto& e : fs::directory_iterator(dir)) out[e.path().filename()] = read_file(e.path());
    return out;
  }

  DaemonEnv env;
};

TEST_F(StateDirTest, StateDirOfAnotherUserIsRefusedAtStart) {
  write_config();
  struct Case {
    mode_t mode;
    uid_t uid;
    std::string expect;
  };
  for (const Case& c : {Case{0777, 65534, "owner uid 65534, mode 0777"}, Case{0755, 65534, "owner uid 65534, mode 0755"},
                        Case{0777, 0, "owner root, mode 0777"}, Case{0775, 0, "owner root, mode 0775"}}) {
    SCOPED_TRACE(c.expect);
    fs::remove_all(state());
    fs::remove(env.log_path());
    ASSERT_EQ(mkdir(state().c_str(), 0755), 0);
    ASSERT_EQ(chown(state().c_str(), c.uid, c.uid), 0);
    ASSERT_EQ(chmod(state().c_str(), c.mode), 0);
    EXPECT_EQ(run_relinkd_expecting_exit(), 1) << log();
    const std::string l = log();
    EXPECT_NE(l.find("cannot start: state_dir: " + state() + " (" + c.expect + ")"), std::string::npos) << l;
    EXPECT_NE(l.find("relinkd trusts only directories owned by root and not writable by group or others"),
              std::string::npos)
        << l;
    EXPECT_FALSE(fs::exists(state() + "/passt")) << "nothing written into an untrusted state_dir";
    EXPECT_FALSE(fs::exists(env.control()));
  }
}

TEST_F(StateDirTest, UntrustedPasstDirOrSymlinkedStateDirIsRefusedAtStart) {
  write_config();
  // state_dir fine, its passt/ subdirectory made by nobody.
  ASSERT_EQ(mkdir(state().c_str(), 0755), 0);
  ASSERT_EQ(mkdir((state() + "/passt").c_str(), 0700), 0);
  ASSERT_EQ(chown((state() + "/passt").c_str(), 65534, 65534), 0);
  EXPECT_EQ(run_relinkd_expecting_exit(), 1) << log();
  EXPECT_NE(log().find(state() + "/passt (owner uid 65534, mode 0700) is not owned by root"), std::string::npos)
      << log();

  // state_dir a symlink to a root-only directory.
  fs::remove_all(state());
  fs::remove(env.log_path());
  const std::string target = env.dir() + "/elsewhere";
  ASSERT_EQ(mkdir(target.c_str(), 0700), 0);
  ASSERT_EQ(symlink(target.c_str(), state().c_str()), 0);
  EXPECT_EQ(run_relinkd_expecting_exit(), 1) << log();
  EXPECT_NE(log().find(state() + " is a symlink"), std::string::npos) << log();
  EXPECT_TRUE(fs::is_empty(target)) << "nothing written through the symlink";
}

TEST_F(StateDirTest, MissingStateDirIsCreatedRootOnly) {
  write_config();
  start_qemu();
  env.start_relinkd();
  ASSERT_TRUE(wait_running()) << explain();
  struct stat st {};
  ASSERT_EQ(stat(state().c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 0u);
  EXPECT_EQ(st.st_mode & 07777, 0755u);
  for (const std::string& d : {state() + "/passt", state() + "/passt/vm1"}) {
    ASSERT_EQ(stat(d.c_str(), &st), 0) << d;
    EXPECT_EQ(st.st_uid, 0u) << d;
    EXPECT_EQ(st.st_mode & 07777, 0700u) << d;
  }
  ASSERT_EQ(lstat(pidfile().c_str(), &st), 0);
  EXPECT_TRUE(S_ISREG(st.st_mode));
  EXPECT_EQ(st.st_uid, 0u);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  // The pidfile records who passt runs as and its whole command line.
  auto rec = nlohmann::json::parse(read_file(pidfile()), nullptr, false);
  ASSERT_TRUE(rec.is_object()) << read_file(pidfile());
  EXPECT_EQ(rec.value("uid", -1), 65534);
  EXPECT_EQ(rec.value("gid", -1), 65534);
  ASSERT_TRUE(rec["argv"].is_array()) << rec.dump();
  std::vector<std::string> cmdline;
  std::istringstream raw(read_file("/proc/" + std::to_string(pid_of()) + "/cmdline"));
  for (std::string a; std::getline(raw, a, '\0');) cmdline.push_back(a);
  EXPECT_EQ(rec["argv"].get<std::vector<std::string>>(), cmdline);
}

TEST_F(StateDirTest, SymlinkedVmDirectoryIsNeitherWrittenNorEmptied) {
  write_config();
  ASSERT_EQ(mkdir(state().c_str(), 0755), 0);
  ASSERT_EQ(mkdir((state() + "/passt").c_str(), 0700), 0);
  // A root-only directory elsewhere, holding a file of the pidfile's name.
  const std::string secret = env.dir() + "/secret";
  ASSERT_EQ(mkdir(secret.c_str(), 0700), 0);
  DaemonEnv::write_file(secret + "/net1.pid", "precious");
  DaemonEnv::write_file(secret + "/other", "also precious");
  const auto before = listing(secret);
  ASSERT_EQ(symlink(secret.c_str(), (state() + "/passt/vm1").c_str()), 0);

  start_qemu();
  env.start_relinkd();
  ASSERT_TRUE(wait_running()) << explain();
  const int first = pid_of();
  EXPECT_TRUE(wait_until([&] { return log().find("cannot write pidfile") != std::string::npos; }, 5s)) << log();
  EXPECT_NE(log().find(state() + "/passt/vm1 is a symlink"), std::string::npos) << log();
  EXPECT_EQ(listing(secret), before);

  // passt dies: relinkd would remove its pidfile, and writes the next one.
  std::this_thread::sleep_for(1100ms);
  ASSERT_EQ(::kill(first, SIGKILL), 0);
  ASSERT_TRUE(wait_until([&] { return wait_running(100ms) && pid_of() != first; }, 10s)) << explain();
  EXPECT_EQ(listing(secret), before);
  EXPECT_TRUE(fs::is_symlink(state() + "/passt/vm1"));
  EXPECT_TRUE(env.relinkd().running());

  // A restarted relinkd reads nothing through it either. With no pidfile
  // it cannot know the running passt: that one goes first, as it would hold
  // QEMU's stream.
  const int second = pid_of();
  env.relinkd().kill_now();
  ASSERT_EQ(::kill(second, SIGKILL), 0);
  ASSERT_TRUE(wait_until([&] { return !alive(second); }, 5s));
  env.start_relinkd();
  ASSERT_TRUE(wait_running()) << explain();
  EXPECT_EQ(listing(secret), before);
  EXPECT_TRUE(env.relinkd().running());
}

// A pidfile naming a root `sleep`, with the start time and exe anyone can
// read in /proc: as an attacker would write it had they write access to the
// state directory (they do not any more), or as they could leave it, owned by
// themselves. relinkd must neither adopt nor signal the sleep.
TEST_F(StateDirTest, ForgedPidfileNamingARootProcessIsNeverSignalled) {
  write_config();
  start_qemu();
  Child sleeper({"sleep", "600"}, Child::Options{});
  ASSERT_TRUE(wait_until([&] { return exe_of(sleeper.pid()).find("sleep") != std::string::npos; }, 5s));
  const uint64_t start_time = start_time_of(sleeper.pid());
  const std::string exe = exe_of(sleeper.pid());

  struct Forgery {
    std::string what;
    nlohmann::json argv;  // null: no argv
    uid_t owner;
  };
  const std::vector<std::string> passt_argv = {"/usr/bin/passt", "-f", "--fd", "3", "-t", "10001"};
  uint64_t gen = 0;
  for (const Forgery& f : {Forgery{"root-owned, sleep's own command line", {"sleep", "600"}, 0},
                           Forgery{"root-owned, passt's command line", passt_argv, 0},
                           Forgery{"root-owned, no command line", nullptr, 0},
                           Forgery{"owned by nobody", {"sleep", "600"}, 65534}}) {
    SCOPED_TRACE(f.what);
    // The previous round's passt holds QEMU's stream: it goes too.
    const int previous = pid_of();
    env.relinkd().kill_now();
    if (previous > 0) {
      ::kill(previous, SIGKILL);
      ASSERT_TRUE(wait_until([&] { return !alive(previous); }, 5s));
    }
    fs::remove_all(state());
    ASSERT_EQ(mkdir(state().c_str(), 0755), 0);
    ASSERT_EQ(mkdir((state() + "/passt").c_str(), 0700), 0);
    ASSERT_EQ(mkdir((state() + "/passt/vm1").c_str(), 0700), 0);
    nlohmann::json rec = {{"pid", sleeper.pid()}, {"start_time", start_time}, {"exe", exe}, {"generation", ++gen},
                          {"mode", "stream-server"}, {"socket", sock()}};
    if (!f.argv.is_null()) rec["argv"] = f.argv;
    DaemonEnv::write_file(pidfile(), rec.dump());
    ASSERT_EQ(chmod(pidfile().c_str(), 0600), 0);
    ASSERT_EQ(chown(pidfile().c_str(), f.owner, f.owner), 0);
    fs::remove(env.log_path());

    env.start_relinkd();
    ASSERT_TRUE(wait_running()) << explain();
    const int passt = pid_of();
    EXPECT_NE(passt, sleeper.pid());
    // The binding is handled: a new passt runs. Give a stop's SIGKILL
    // (1 s after SIGTERM) time to land, had there been one.
    std::this_thread::sleep_for(1200ms);
    EXPECT_TRUE(alive(sleeper.pid())) << "relinkd signalled a process it does not own\n" << log();
    EXPECT_TRUE(sleeper.running());
    EXPECT_EQ(log().find("adopted running passt pid " + std::to_string(sleeper.pid())), std::string::npos) << log();
    EXPECT_EQ(log().find("stopping passt pid " + std::to_string(sleeper.pid())), std::string::npos) << log();
    const std::string said = f.owner != 0 ? "ignoring pidfile: pidfile " + pidfile() + " (owner uid 65534"
                                          : "pid " + std::to_string(sleeper.pid()) + " from the pidfile";
    EXPECT_NE(log().find(said), std::string::npos) << log();
    // The new passt's pidfile replaced the forgery.
    auto now = nlohmann::json::parse(read_file(pidfile()), nullptr, false);
    ASSERT_TRUE(now.is_object()) << read_file(pidfile());
    EXPECT_EQ(now.value("pid", 0), passt);
    struct stat st {};
    ASSERT_EQ(stat(pidfile().c_str(), &st), 0);
    EXPECT_EQ(st.st_uid, 0u);
    EXPECT_EQ(st.st_mode & 07777, 0600u);
  }
}

// passt's args changed while relinkd was down: the old passt is relinkd's
// (its user, start time, exe and recorded command line prove it) but runs an
// older configuration, so it is stopped and a new one started.
TEST_F(StateDirTest, ArgsChangedWhileRelinkdWasDownReplaceTheOldPasst) {
  write_config();
  start_qemu();
  env.start_relinkd();
  ASSERT_TRUE(wait_running()) << explain();
  const int old = pid_of();
  env.relinkd().kill_now();
  ASSERT_TRUE(alive(old));
  write_config(R"(["-t", "10002"])");
  env.start_relinkd();
  ASSERT_TRUE(wait_until([&] { return wait_running(100ms) && pid_of() != old; }, 10s)) << explain();
  EXPECT_TRUE(wait_until([&] { return !alive(old); }, 5s)) << "the old passt still runs\n" << log();
  EXPECT_NE(log().find("stopping passt pid " + std::to_string(old) + ": it runs an older configuration"),
            std::string::npos)
      << log();
  const std::string cmdline = read_file("/proc/" + std::to_string(pid_of()) + "/cmdline");
  EXPECT_NE(cmdline.find(std::string("10002")), std::string::npos);

  // Unchanged args: the running passt is adopted.
  const int current = pid_of();
  env.relinkd().kill_now();
  env.start_relinkd();
  ASSERT_TRUE(wait_running()) << explain();
  EXPECT_EQ(pid_of(), current);
  EXPECT_NE(log().find("adopted running passt pid " + std::to_string(current)), std::string::npos) << log();
}

// stream-client: passt listens, as runas, in a directory relinkd readies.
TEST_F(StateDirTest, StreamClientSocketDirectoryIsCreatedForRunasAndNeverFollowed) {
  // Missing: created, owned by runas, and passt listens in it. (Under /tmp:
  // passt's user cannot reach into the test's root-only directory.)
  const std::string socks = "/tmp/relink-sd-" + random_suffix();
  struct Cleanup {
    std::string d;
    ~Cleanup() {
      std::error_code ec;
      fs::remove_all(d, ec);
    }
  } cleanup{socks};
  write_config(R"(["-t", "10001"])", "stream-client", socks + "/passt.sock");
  env.start_qemu_with("vm1", {});
  env.start_relinkd();
  ASSERT_TRUE(wait_until([&] { return b().is_object() && b().value("state", "") == "starting" && pid_of() > 0; }, 10s))
      << explain();
  ASSERT_TRUE(wait_until([&] { return fs::exists(socks + "/passt.sock"); }, 5s)) << explain();
  struct stat st {};
  ASSERT_EQ(lstat(socks.c_str(), &st), 0);
  EXPECT_TRUE(S_ISDIR(st.st_mode));
  EXPECT_EQ(st.st_uid, 65534u);
  EXPECT_EQ(st.st_mode & 07777, 0755u);
  const int first = pid_of();
  env.relinkd().kill_now();
  ASSERT_EQ(::kill(first, SIGKILL), 0);

  // A symlink to a directory runas may write: not followed, nothing created
  // in (or chowned on) the target.
  const std::string target = env.dir() + "/target";
  ASSERT_EQ(mkdir(target.c_str(), 0755), 0);
  ASSERT_EQ(chown(target.c_str(), 65534, 65534), 0);
  const std::string link = env.dir() + "/linked";
  ASSERT_EQ(symlink(target.c_str(), link.c_str()), 0);
  write_config(R"(["-t", "10002"])", "stream-client", link + "/passt.sock");
  fs::remove(env.log_path());
  env.start_relinkd();
  ASSERT_TRUE(wait_until(
      [&] {
        auto j = b();
        return j.is_object() && (j.value("state", "") == "backoff" || j.value("state", "") == "failed");
      },
      10s))
      << explain();
  const std::string err = text_of(b(), "last_error");
  EXPECT_NE(err.find("passt's socket directory " + link + " is a symlink or not a directory"), std::string::npos) << err;
  EXPECT_TRUE(fs::is_empty(target));
  ASSERT_EQ(stat(target.c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 65534u);
  EXPECT_TRUE(env.relinkd().running());
}

}  // namespace
}  // namespace relink::test
