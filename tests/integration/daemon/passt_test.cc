// SPDX-License-Identifier: GPL-2.0-or-later
// relinkd supervising real passt processes for a real QEMU 7.2 (-S), in a
// throwaway namespace that has a default route (passt needs one).
#include <signal.h>
#include <sys/stat.h>

#include <fstream>
#include <set>
#include <sstream>
#include <thread>

#include "daemon_env.h"
#include "passt/pidfile.h"

namespace relink::test {
namespace {

using namespace std::chrono_literals;

// Whether a process listens on the UNIX socket at `path`, from the text of
// /proc/net/unix of the socket's network namespace: passt binds its socket
// early (the file appears) and calls listen() only after its set-up, and a
// connect in between is refused. A listening socket has __SO_ACCEPTCON
// (flags 00010000).
bool unix_listening(const std::string& proc_net_unix, const std::string& path) {
  std::istringstream in(proc_net_unix);
  std::string line;
  std::getline(in, line);  // header
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string num, refs, proto, flags, type, st, inode, p;
    if (!(fields >> num >> refs >> proto >> flags >> type >> st >> inode >> p)) continue;
    if (p == path && flags == "00010000") return true;
  }
  return false;
}

constexpr const char* kStreamConnected = "NETDEV_STREAM_CONNECTED";
constexpr const char* kStreamDisconnected = "NETDEV_STREAM_DISCONNECTED";

// passt that ran this long was healthy: relinkd restarts it at once (see
// engine::RestartPolicy::min_uptime_ms). Kills wait for it.
constexpr auto kHealthyUptime = 1100ms;

struct PasstSpec {
  std::string netdev = "net1";
  std::string mode = "stream-server";
  std::string socket;  // default: <dir>/<vm>-<netdev>.sock
  std::string args = R"(["-t", "10001"])";
};

class PasstTest : public ::testing::Test {
 protected:
  void SetUp() override {
    RELINK_REQUIRE_ROOT();
    env.add_passt_uplink();
  }

  std::string sock(const PasstSpec& p, const std::string& vm = "vm1") const {
    return p.socket.empty() ? env.dir() + "/" + vm + "-" + p.netdev + ".sock" : p.socket;
  }
  void write_config(const std::vector<PasstSpec>& passts, const std::string& vm = "vm1",
                    const std::string& daemon_extra = "") {
    std::string t = "[daemon]\ncontrol_socket = \"" + env.control() + "\"\nstate_dir = \"" + env.dir() +
                    "/state\"\nnode_dir = \"" + env.dir() + "/dev\"\nlog_level = \"debug\"\n" + daemon_extra;
    t += "\n[[vm]]\nname = \"" + vm + "\"\nqmp = \"" + env.qmp_path(vm) + "\"\n";
    for (const auto& p : passts)
      t += "[[vm.passt]]\nnetdev = \"" + p.netdev + "\"\nmode = \"" + p.mode + "\"\nsocket = \"" + sock(p, vm) +
           "\"\nargs = " + p.args + "\n";
    DaemonEnv::write_file(env.config_path(), t);
  }
  // QEMU listening on each stream-server binding's socket.
  void start_qemu(const std::vector<PasstSpec>& passts, const std::string& vm = "vm1") {
    std::vector<std::string> net;
    int i = 0;
    for (const auto& p : passts) {
      if (p.mode != "stream-server") continue;
      net.insert(net.end(), {"-netdev", "stream,id=" + p.netdev + ",server=on,addr.type=unix,addr.path=" + sock(p, vm),
                             "-device", "virtio-net-pci,netdev=" + p.netdev + ",id=nic" + std::to_string(i++)});
    }
    env.start_qemu_with(vm, net);
  }

  // Config, QEMU and relinkd for the bindings `ps`, with every passt of them
  // started (generation 1, running).
  void start_running(const std::vector<PasstSpec>& ps) {
    write_config(ps);
    start_qemu(ps);
    env.start_relinkd();
    for (const auto& p : ps) ASSERT_TRUE(wait_running(1, p.netdev)) << explain();
  }

  nlohmann::json b(const std::string& netdev = "net1") { return env.binding("vm1", netdev); }
  int pid_of(const std::string& netdev = "net1") {
    auto j = b(netdev);
    return j.is_object() && j["pid"].is_number() ? j["pid"].get<int>() : 0;
  }
  bool wait_running(uint64_t gen, const std::string& netdev = "net1", std::chrono::milliseconds t = 10s) {
    return wait_until(
        [&] {
          auto j = b(netdev);
          return j.is_object() && j.value("state", "") == "running" && j.value("generation", 0ull) == gen &&
                 j["pid"].is_number();
        },
        t, 5ms);
  }
  bool wait_passt_state(const std::string& want, std::chrono::milliseconds t = 10s, const std::string& netdev = "net1") {
    return wait_until([&] { return b(netdev).value("state", "") == want; }, t, 5ms);
  }
  // passt processes in the test namespace (passt may re-exec itself as
  // passt.avx2).
  std::set<int> passt_pids() {
    std::set<int> out;
    std::istringstream in(sh("ip netns pids " + env.ns().name()).out);
    for (int pid; in >> pid;) {
      std::string comm = read_file("/proc/" + std::to_string(pid) + "/comm");
      std::ifstream st("/proc/" + std::to_string(pid) + "/stat");
      std::string line;
      std::getline(st, line);
      const bool zombie = line.find(") Z") != std::string::npos;
      if (comm.rfind("passt", 0) == 0 && !zombie) out.insert(pid);
    }
    return out;
  }
  bool exactly_one_passt(int pid) {
    return wait_until([&] { return passt_pids() == std::set<int>{pid}; }, 5s, 5ms);
  }
  static bool alive(int pid) { return pid > 0 && ::kill(pid, 0) == 0 && read_file("/proc/" + std::to_string(pid) + "/stat").find(") Z") == std::string::npos; }
  std::string uid_of(int pid) {
    std::istringstream in(read_file("/proc/" + std::to_string(pid) + "/status"));
    for (std::string line; std::getline(in, line);)
      if (line.rfind("Uid:", 0) == 0) return line;
    return "";
  }
  std::string explain() { return env.explain() + "\npassts: " + std::to_string(passt_pids().size()); }

  DaemonEnv env;
};

TEST_F(PasstTest, KilledPasstIsReplacedTwentyTimesInARow) {
  PasstSpec p;
  ASSERT_NO_FATAL_FAILURE(start_running({p}));
  auto& qmp = env.test_qmp("vm1");
  ASSERT_TRUE(qmp.wait_events(kStreamConnected, 1, 5000)) << explain();
  int pid = pid_of();
  ASSERT_TRUE(exactly_one_passt(pid)) << explain();
  // passt runs unprivileged (nobody), never as root.
  EXPECT_NE(uid_of(pid).find("65534"), std::string::npos) << uid_of(pid);
  EXPECT_EQ(uid_of(pid).find("\t0\t"), std::string::npos) << uid_of(pid);

  for (uint64_t i = 1; i <= 20; ++i) {
    SCOPED_TRACE("kill " + std::to_string(i));
    std::this_thread::sleep_for(kHealthyUptime);
    ASSERT_EQ(::kill(pid, SIGKILL), 0);
    // QEMU reports the old peer gone and the new one connected.
    ASSERT_TRUE(qmp.wait_events(kStreamDisconnected, i, 5000)) << explain();
    ASSERT_TRUE(qmp.wait_events(kStreamConnected, i + 1, 5000)) << explain();
    ASSERT_TRUE(wait_running(i + 1)) << explain();
    const int next = pid_of();
    ASSERT_NE(next, pid);
    ASSERT_TRUE(exactly_one_passt(next)) << explain();
    pid = next;
  }
  auto j = b();
  EXPECT_EQ(j.value("restarts", 0), 20);
  EXPECT_EQ(j.value("last_exit", ""), "killed by SIGKILL");
  EXPECT_TRUE(j["last_recovery_ms"].is_number()) << j.dump();
  EXPECT_EQ(j.value("mode", ""), "stream-server");
  // Exactly one CONNECTED per passt: no stray connections.
  (void)qmp.wait_events(kStreamConnected, 22, 300);
  EXPECT_EQ(qmp.count_events(kStreamConnected), 21u);
  EXPECT_TRUE(env.relinkd().running());
}

// relinkd's log lines ("DATE TIME LEVEL LOGGER: MESSAGE") that contain `text`,
// as {level, line}.
std::vector<std::pair<std::string, std::string>> log_lines_with(const std::string& log, const std::string& text) {
  std::vector<std::pair<std::string, std::string>> out;
  std::istringstream in(log);
  for (std::string line; std::getline(in, line);) {
    if (line.find(text) == std::string::npos) continue;
    std::istringstream words(line);
    std::string date, time, level;
    words >> date >> time >> level;
    out.emplace_back(level, line);
  }
  return out;
}

TEST_F(PasstTest, OneLogLevelPerKindOfEvent) {
  PasstSpec p;
  ASSERT_NO_FATAL_FAILURE(start_running({p}));
  auto& qmp = env.test_qmp("vm1");
  ASSERT_TRUE(qmp.wait_events(kStreamConnected, 1, 5000)) << explain();
  // Killed from outside, twice: QEMU's report of the dropped stream and the
  // exit race each time, and the log must not depend on which comes first.
  std::vector<int> killed;
  for (uint64_t gen = 1; gen <= 2; ++gen) {
    const int pid = pid_of();
    std::this_thread::sleep_for(kHealthyUptime);
    ASSERT_EQ(::kill(pid, SIGKILL), 0);
    ASSERT_TRUE(wait_running(gen + 1)) << explain();
    killed.push_back(pid);
  }
  for (size_t i = 0; i < killed.size(); ++i) {
    const std::string exit = "passt pid " + std::to_string(killed[i]) + " (generation " + std::to_string(i + 1) +
                             ") killed by SIGKILL";
    ASSERT_TRUE(wait_until([&] { return !log_lines_with(read_file(env.log_path()), exit).empty(); }, 5s)) << explain();
    const std::string log = read_file(env.log_path());
    const auto lines = log_lines_with(log, exit);
    ASSERT_EQ(lines.size(), 1u) << log;
    EXPECT_EQ(lines[0].first, "warning") << lines[0].second;
    EXPECT_EQ(lines[0].second.find("stopped by relinkd"), std::string::npos) << lines[0].second;
    EXPECT_TRUE(log_lines_with(log, "stopping passt pid " + std::to_string(killed[i])).empty())
        << "a passt that is gone is not stopped:\n" << log;
  }
  // passt's start-up banner (8 lines or more), three times: in the log, but
  // at debug. The last one's lines may still be on their way.
  EXPECT_TRUE(wait_until(
      [&] { return log_lines_with(read_file(env.log_path()), "vm1/net1 passt[").size() >= 3 * 8u; }, 5s))
      << read_file(env.log_path());
  const std::string log = read_file(env.log_path());
  EXPECT_EQ(log_lines_with(log, "Template interface: up0").size(), 3u) << log;
  const auto banner = log_lines_with(log, "vm1/net1 passt[");
  ASSERT_GE(banner.size(), 3 * 8u) << log;
  for (const auto& [level, line] : banner) EXPECT_EQ(level, "debug") << line;

  // QEMU exits: relinkd stops passt (or passt sees the stream close first
  // and exits 0). Either is routine: info.
  const int last = pid_of();
  env.kill_qemu("vm1");
  ASSERT_TRUE(wait_passt_state("vm-offline")) << explain();
  const std::string exit = "passt pid " + std::to_string(last) + " (generation 3) ";
  ASSERT_TRUE(wait_until([&] { return !log_lines_with(read_file(env.log_path()), exit).empty(); }, 5s)) << explain();
  const auto lines = log_lines_with(read_file(env.log_path()), exit);
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0].first, "info") << lines[0].second;
}

TEST_F(PasstTest, CrashLoopBacksOffThenFailsUntilReload) {
  PasstSpec p;
  p.args = R"(["--no-such-option"])";  // passt exits 1 at once
  write_config({p});
  start_qemu({p});
  env.start_relinkd();
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(wait_passt_state("failed", 15s)) << explain();
  const auto took = std::chrono::steady_clock::now() - t0;
  auto j = b();
  // 5 starts: backoff 100 + 200 + 400 + 800 ms between them.
  EXPECT_EQ(j.value("generation", 0), 5) << j.dump();
  EXPECT_EQ(j.value("restarts", 0), 4) << j.dump();
  EXPECT_GE(took, 1400ms);
  EXPECT_EQ(j.value("last_exit", ""), "exited with status 1");
  EXPECT_NE(text_of(j, "last_error").find("5 failed starts"), std::string::npos) << j.dump();
  EXPECT_TRUE(j["pid"].is_null());
  // passt's own words reach relinkd's log, under the binding's name, and
  // its error as a warning.
  EXPECT_NE(read_file(env.log_path()).find("vm1/net1 passt["), std::string::npos);
  const auto error = log_lines_with(read_file(env.log_path()), "unrecognized option '--no-such-option'");
  ASSERT_FALSE(error.empty()) << read_file(env.log_path());
  EXPECT_EQ(error[0].first, "warning") << error[0].second;
  // No process storm: nothing runs, nothing more starts.
  std::this_thread::sleep_for(1500ms);
  EXPECT_TRUE(passt_pids().empty());
  EXPECT_EQ(b().value("generation", 0), 5);
  // A reload resets it: another round of 5 starts.
  ASSERT_EQ(sh(relinkctl_bin() + " --socket " + env.control() + " reload").status, 0);
  ASSERT_TRUE(wait_until([&] { return b().value("generation", 0) == 10 && b().value("state", "") == "failed"; }, 15s,
                         20ms))
      << explain();
  EXPECT_TRUE(env.relinkd().running());
}

TEST_F(PasstTest, RestartedRelinkdAdoptsTheRunningPasst) {
  PasstSpec p;
  ASSERT_NO_FATAL_FAILURE(start_running({p}));
  const int pid = pid_of();
  auto& qmp = env.test_qmp("vm1");
  ASSERT_TRUE(qmp.wait_events(kStreamConnected, 1, 5000));

  // SIGTERM: relinkd leaves passt serving the VM.
  ASSERT_GE(env.relinkd().stop(SIGTERM, 5s), 0);
  EXPECT_TRUE(alive(pid));
  env.start_relinkd();
  ASSERT_TRUE(wait_running(1)) << explain();
  EXPECT_EQ(pid_of(), pid);
  // SIGKILL: the same.
  env.relinkd().kill_now();
  EXPECT_TRUE(alive(pid));
  env.start_relinkd();
  ASSERT_TRUE(wait_running(1)) << explain();
  EXPECT_EQ(pid_of(), pid) << "the running passt must be adopted, not replaced";
  EXPECT_TRUE(exactly_one_passt(pid)) << explain();
  EXPECT_EQ(qmp.count_events(kStreamDisconnected), 0u);
  EXPECT_NE(read_file(env.log_path()).find("adopted running passt pid " + std::to_string(pid)), std::string::npos);

  // The adopted passt is watched: its death is noticed and repaired.
  std::this_thread::sleep_for(kHealthyUptime);
  ASSERT_EQ(::kill(pid, SIGKILL), 0);
  ASSERT_TRUE(wait_running(2)) << explain();
  EXPECT_NE(pid_of(), pid);
  EXPECT_EQ(b().value("last_exit", ""), "exited (status unknown: not a child of this relinkd)");
  ASSERT_TRUE(qmp.wait_events(kStreamConnected, 2, 5000));
  EXPECT_TRUE(exactly_one_passt(pid_of()));
}

TEST_F(PasstTest, StalePidfileOfAReusedPidIsNotAdopted) {
  PasstSpec p;
  ASSERT_NO_FATAL_FAILURE(start_running({p}));
  const int pid = pid_of();
  env.relinkd().kill_now();
  // passt dies while relinkd is away, and its pid is taken by another process.
  ASSERT_EQ(::kill(pid, SIGKILL), 0);
  ASSERT_TRUE(wait_until([&] { return !alive(pid); }, 5s));
  Child sleeper({"sleep", "60"}, Child::Options{});
  const std::string pidfile = env.dir() + "/state/passt/vm1/net1.pid";
  auto rec = nlohmann::json::parse(read_file(pidfile), nullptr, false);
  ASSERT_FALSE(rec.is_discarded()) << read_file(pidfile);
  rec["pid"] = sleeper.pid();
  DaemonEnv::write_file(pidfile, rec.dump());
  env.start_relinkd();
  ASSERT_TRUE(wait_running(2)) << explain();
  EXPECT_NE(pid_of(), sleeper.pid());
  EXPECT_TRUE(sleeper.running()) << "relinkd must never signal a pid it does not own";
}

TEST_F(PasstTest, QemuExitStopsPasstAndItsReturnStartsOne) {
  PasstSpec p;
  ASSERT_NO_FATAL_FAILURE(start_running({p}));
  const int pid = pid_of();
  env.kill_qemu("vm1");
  ASSERT_TRUE(wait_passt_state("vm-offline")) << explain();
  EXPECT_TRUE(wait_until([&] { return !alive(pid); }, 5s)) << "passt outlived its VM";
  EXPECT_TRUE(b()["pid"].is_null());
  start_qemu({p});
  ASSERT_TRUE(wait_running(2, "net1", 15s)) << explain();
  // relinkd already watches the QMP path, so passt may connect before the
  // test's monitor is in command mode and sees events: ask QEMU instead
  // (`info network` names the peer once the stream is connected).
  ASSERT_TRUE(wait_until(
      [&] {
        return env.test_qmp("vm1").info_network().find("net1: index=0,type=stream,unix:") != std::string::npos;
      },
      5s, 10ms))
      << env.test_qmp("vm1").info_network();
  EXPECT_TRUE(exactly_one_passt(pid_of()));
}

TEST_F(PasstTest, VhostUserIsRefusedWhereThePasstLacksItAndOthersRun) {
  PasstSpec ok, vu;
  vu.netdev = "net2";
  vu.mode = "vhost-user";
  write_config({ok, vu});
  start_qemu({ok, vu});
  env.start_relinkd();
  ASSERT_TRUE(wait_running(1)) << explain();
  auto j = b("net2");
  ASSERT_TRUE(j.is_object()) << explain();
  EXPECT_EQ(j.value("state", ""), "failed");
  EXPECT_NE(text_of(j, "last_error").find("--vhost-user"), std::string::npos) << j.dump();
  EXPECT_TRUE(j["pid"].is_null());
  EXPECT_EQ(passt_pids().size(), 1u);
  // A reattach of the refused binding says why.
  auto r = sh(relinkctl_bin() + " --socket " + env.control() + " reattach vm1 net2 2>&1");
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.out.find("--vhost-user"), std::string::npos) << r.out;
}

TEST_F(PasstTest, StreamClientRestartsPasstOnTheSamePath) {
  // passt listens as nobody: its socket directory must be writable by it.
  const std::string dir = "/tmp/relink-pc-" + random_suffix();
  ASSERT_EQ(mkdir(dir.c_str(), 0755), 0);
  ASSERT_EQ(chown(dir.c_str(), 65534, 65534), 0);
  struct Cleanup {
    std::string d;
    ~Cleanup() { std::filesystem::remove_all(d); }
  } cleanup{dir};
  PasstSpec p;
  p.mode = "stream-client";
  p.socket = dir + "/passt.sock";
  // The socket's file appears before passt listens on it (see unix_listening).
  auto listening = [&] { return unix_listening(env.ns().run("cat /proc/net/unix").out, p.socket); };
  write_config({p});
  start_qemu({});
  env.start_relinkd();
  // passt listens; QEMU has not connected: starting.
  ASSERT_TRUE(wait_until([&] { return b().value("state", "") == "starting" && b()["pid"].is_number(); }, 10s))
      << explain();
  ASSERT_TRUE(wait_until([&] { return listening(); }, 5s)) << explain();
  // QEMU >= 8.0 connects by itself (reconnect=N); QEMU 7.2 has no reconnect
  // option, so the test plays its part: hot-add a stream client netdev.
  auto& qmp = env.test_qmp("vm1");
  auto connect = [&] {
    return qmp.execute("netdev_add", {{"type", "stream"},
                                      {"id", "net1"},
                                      {"server", false},
                                      {"addr", {{"type", "unix"}, {"path", p.socket}}}});
  };
  auto r = connect();
  ASSERT_TRUE(r.contains("return")) << r.dump();
  ASSERT_TRUE(qmp.wait_events(kStreamConnected, 1, 5000)) << explain();
  ASSERT_TRUE(wait_running(1)) << explain();
  const int pid = pid_of();

  std::this_thread::sleep_for(kHealthyUptime);
  ASSERT_EQ(::kill(pid, SIGKILL), 0);
  ASSERT_TRUE(qmp.wait_events(kStreamDisconnected, 1, 5000));
  // A new passt listens on the same path, waiting for QEMU.
  ASSERT_TRUE(wait_until(
      [&] { return b().value("state", "") == "starting" && b().value("generation", 0) == 2 && pid_of() != pid && pid_of() > 0; },
      5s))
      << explain();
  ASSERT_TRUE(wait_until([&] { return listening(); }, 5s)) << explain();
  ASSERT_TRUE(qmp.execute("netdev_del", {{"id", "net1"}}).contains("return"));
  r = connect();
  ASSERT_TRUE(r.contains("return")) << r.dump();
  ASSERT_TRUE(qmp.wait_events(kStreamConnected, 2, 5000)) << explain();
  ASSERT_TRUE(wait_running(2)) << explain();
  EXPECT_TRUE(exactly_one_passt(pid_of()));
  EXPECT_NE(uid_of(pid_of()).find("65534"), std::string::npos);
}

TEST_F(PasstTest, BindingRemovedFromTheConfigIsStopped) {
  PasstSpec a, c;
  c.netdev = "net2";
  c.args = R"(["-t", "10002"])";
  write_config({a, c});
  start_qemu({a, c});
  env.start_relinkd();
  ASSERT_TRUE(wait_running(1, "net1")) << explain();
  ASSERT_TRUE(wait_running(1, "net2")) << explain();
  const int keep = pid_of("net1"), gone = pid_of("net2");
  write_config({a});
  ASSERT_EQ(sh(relinkctl_bin() + " --socket " + env.control() + " reload").status, 0);
  EXPECT_TRUE(wait_until([&] { return !alive(gone); }, 5s)) << explain();
  EXPECT_TRUE(b("net2").is_null());
  // The unchanged binding keeps its passt.
  ASSERT_TRUE(wait_running(1, "net1")) << explain();
  EXPECT_EQ(pid_of("net1"), keep);
  EXPECT_TRUE(exactly_one_passt(keep));
}

TEST_F(PasstTest, PasstsNoBindingClaimsAreStoppedAtStartAndUnprovedOnesLeftAlone) {
  // passt's listening sockets live in a directory of nobody's.
  const std::string dir = "/tmp/relink-po-" + random_suffix();
  ASSERT_EQ(mkdir(dir.c_str(), 0755), 0);
  ASSERT_EQ(chown(dir.c_str(), 65534, 65534), 0);
  struct Cleanup {
    std::string d;
    ~Cleanup() { std::filesystem::remove_all(d); }
  } cleanup{dir};
  PasstSpec kept, removed;
  removed.netdev = "net2";
  removed.mode = "stream-client";
  removed.socket = dir + "/net2.sock";
  removed.args = R"(["-t", "10002"])";
  write_config({kept, removed});
  start_qemu({kept, removed});
  env.start_relinkd();
  ASSERT_TRUE(wait_running(1, "net1")) << explain();
  ASSERT_TRUE(wait_until([&] { return pid_of("net2") > 0 && std::filesystem::exists(removed.socket); }, 10s))
      << explain();
  const int keep = pid_of("net1"), gone = pid_of("net2");
  ASSERT_GE(env.relinkd().stop(SIGTERM, 5s), 0);

  // While relinkd is stopped: the binding leaves the file; a passt whose
  // record was written before its exec and never replaced (a crash right
  // after the exec), as relinkd's spawner writes it; and a process of
  // nobody's that an earlier relinkd's record (no argv) names.
  const std::string state = env.dir() + "/state/passt/vm1/";
  const std::vector<std::string> argv = {"/usr/bin/passt", "-f", "--socket", dir + "/net3.sock", "-t", "10003"};
  std::vector<std::string> as_nobody = {"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"};
  std::vector<std::string> cmd = as_nobody;
  cmd.insert(cmd.end(), argv.begin(), argv.end());
  Child crashed(cmd, Child::Options{env.ns().name(), env.dir() + "/net3.log", {}});
  ASSERT_TRUE(wait_until([&] { return std::filesystem::exists(dir + "/net3.sock"); }, 5s)) << read_file(env.dir() + "/net3.log");
  auto info = passt::read_proc(crashed.pid());
  ASSERT_TRUE(info);
  passt::PidRecord intent{crashed.pid(), info->start_time, std::filesystem::canonical(argv[0]).string(), 1,
                          "stream-client", dir + "/net3.sock"};
  intent.uid = intent.gid = 65534;
  intent.argv = argv;
  ASSERT_TRUE(passt::write_pidfile(state + "net3.pid", intent));
  cmd = as_nobody;
  cmd.insert(cmd.end(), {"sleep", "60"});
  Child sleeper(cmd, Child::Options{});
  ASSERT_TRUE(wait_until([&] { return read_file("/proc/" + std::to_string(sleeper.pid()) + "/comm") == "sleep\n"; }, 5s));
  auto sinfo = passt::read_proc(sleeper.pid());
  ASSERT_TRUE(sinfo);
  ASSERT_TRUE(passt::write_pidfile(state + "net4.pid", passt::PidRecord{sleeper.pid(), sinfo->start_time, sinfo->exe,
                                                                       1, "stream-client", dir + "/net4.sock"}));
  write_config({kept});
  env.start_relinkd();

  EXPECT_TRUE(wait_until([&] { return !alive(gone) && !alive(crashed.pid()); }, 3s)) << explain();
  EXPECT_FALSE(std::filesystem::exists(removed.socket)) << "the stopped passt's socket is removed";
  EXPECT_FALSE(std::filesystem::exists(dir + "/net3.sock"));
  for (const char* f : {"net2.pid", "net3.pid", "net4.pid"})
    EXPECT_FALSE(std::filesystem::exists(state + f)) << f;
  EXPECT_TRUE(alive(sleeper.pid())) << "what no record proves is never signalled";
  ASSERT_TRUE(wait_running(1, "net1")) << explain();
  EXPECT_EQ(pid_of("net1"), keep) << "the claimed passt is adopted, not stopped";
  EXPECT_TRUE(exactly_one_passt(keep)) << explain();
  const std::string log = read_file(env.log_path());
  EXPECT_NE(log.find("vm1/net2: stopping passt pid " + std::to_string(gone) + ": no binding claims it"),
            std::string::npos) << explain();
  EXPECT_NE(log.find("vm1/net3: stopping passt pid " + std::to_string(crashed.pid())), std::string::npos);
  EXPECT_NE(log.find("vm1/net4: pid " + std::to_string(sleeper.pid()) + " from a pidfile no binding claims is not "
                     "provably"), std::string::npos);
}

TEST_F(PasstTest, MissingQemuSocketBacksOffWithAClearError) {
  PasstSpec p;
  write_config({p});
  start_qemu({});  // QEMU without the stream netdev
  env.start_relinkd();
  ASSERT_TRUE(wait_until([&] { return b().value("state", "") == "backoff" || b().value("state", "") == "failed"; }, 10s))
      << explain();
  EXPECT_NE(text_of(b(), "last_error").find("connect to QEMU's stream socket"), std::string::npos) << b().dump();
  EXPECT_TRUE(passt_pids().empty());
  EXPECT_TRUE(env.relinkd().running());
}

TEST_F(PasstTest, MissingPasstBinaryFailsTheBindingWithTheReason) {
  PasstSpec p;
  write_config({p}, "vm1", "passt = \"/nonexistent/passt\"\n");
  start_qemu({p});
  env.start_relinkd();
  ASSERT_TRUE(wait_passt_state("failed")) << explain();
  const std::string err = text_of(b(), "last_error");
  EXPECT_NE(err.find("cannot run passt"), std::string::npos) << err;
  EXPECT_NE(err.find("/nonexistent/passt"), std::string::npos) << err;
  EXPECT_TRUE(passt_pids().empty());
  EXPECT_TRUE(env.relinkd().running());
}

TEST_F(PasstTest, StreamClientSocketDirectoryPasstCannotWriteIsAClearError) {
  // Root-owned 0755: nobody cannot create passt's socket there.
  const std::string dir = "/tmp/relink-pc-" + random_suffix();
  ASSERT_EQ(mkdir(dir.c_str(), 0755), 0);
  struct Cleanup {
    std::string d;
    ~Cleanup() { std::filesystem::remove_all(d); }
  } cleanup{dir};
  PasstSpec p;
  p.mode = "stream-client";
  p.socket = dir + "/passt.sock";
  write_config({p});
  start_qemu({});
  env.start_relinkd();
  ASSERT_TRUE(wait_until([&] { return b().value("state", "") == "backoff" || b().value("state", "") == "failed"; }, 10s))
      << explain();
  const std::string err = text_of(b(), "last_error");
  EXPECT_NE(err.find("cannot create its socket in " + dir), std::string::npos) << err;
  EXPECT_TRUE(passt_pids().empty());
  EXPECT_FALSE(std::filesystem::exists(p.socket));
}

// One relinkd per state_dir: a second one on the same configuration exits 1
// naming the first's pid, before it has touched anything. The first still
// answers, keeps its control socket and supervises its passt alone (one
// passt after a kill, not one per relinkd).
TEST_F(PasstTest, ASecondRelinkdOnTheSameStateDirExitsAndChangesNothing) {
  ASSERT_NO_FATAL_FAILURE(start_running({PasstSpec{}}));
  const int first = pid_of();
  auto listing = [&] {
    std::string out;
    for (const auto& e : std::filesystem::recursive_directory_iterator(env.dir() + "/state")) {
      struct stat st {};
      lstat(e.path().c_str(), &st);
      out += e.path().string() + " " + std::to_string(st.st_ino) + " " + std::to_string(st.st_mtim.tv_sec) + "." +
             std::to_string(st.st_mtim.tv_nsec) + "\n";
    }
    return out;
  };
  struct stat sock_before {};
  ASSERT_EQ(stat(env.control().c_str(), &sock_before), 0);
  const std::string state_before = listing();
  auto second = sh("timeout 20 ip netns exec " + env.ns().name() + " " + relinkd_bin() + " --config " +
                   env.config_path() + " 2>&1");
  EXPECT_EQ(second.status, 1) << second.out;
  EXPECT_NE(second.out.find("another relinkd (pid " + std::to_string(env.relinkd().pid()) + ") already runs with "
                            "state_dir " + env.dir() + "/state"),
            std::string::npos)
      << second.out;
  struct stat sock_after {};
  ASSERT_EQ(stat(env.control().c_str(), &sock_after), 0);
  EXPECT_EQ(sock_after.st_ino, sock_before.st_ino) << "the second relinkd replaced the control socket";
  EXPECT_EQ(listing(), state_before);
  ASSERT_TRUE(env.status().is_object()) << explain();
  EXPECT_TRUE(exactly_one_passt(first)) << explain();

  std::this_thread::sleep_for(kHealthyUptime);
  ASSERT_EQ(::kill(first, SIGKILL), 0);
  ASSERT_TRUE(wait_running(2)) << explain();
  const int next = pid_of();
  EXPECT_NE(next, first);
  EXPECT_TRUE(exactly_one_passt(next)) << explain();
  std::this_thread::sleep_for(1s);
  EXPECT_EQ(passt_pids(), std::set<int>{next}) << explain();
  EXPECT_EQ(b().value("generation", 0ull), 2u) << explain();
}

// "Max open files" of /proc/PID/limits: {soft, hard}.
std::pair<std::string, std::string> fd_limits(int pid) {
  std::istringstream in(read_file("/proc/" + std::to_string(pid) + "/limits"));
  for (std::string line; std::getline(in, line);)
    if (line.rfind("Max open files", 0) == 0) {
      std::istringstream f(line.substr(14));
      std::string soft, hard;
      f >> soft >> hard;
      return {soft, hard};
    }
  return {};
}

// relinkd raises its own soft fd limit to the hard one; passt starts with
// the soft limit relinkd itself started with, as its hard limit too (passt
// raises its soft limit to its hard one as it starts).
TEST_F(PasstTest, PasstStartsWithTheFdLimitRelinkdStartedWith) {
  write_config({PasstSpec{}});
  start_qemu({PasstSpec{}});
  env.start_relinkd({"prlimit", "--nofile=1000:4096"});
  ASSERT_TRUE(wait_running(1)) << explain();
  EXPECT_EQ(fd_limits(env.relinkd().pid()), (std::pair<std::string, std::string>{"4096", "4096"}));
  const int passt = pid_of();
  EXPECT_EQ(fd_limits(passt), (std::pair<std::string, std::string>{"1000", "1000"}))
      << read_file("/proc/" + std::to_string(passt) + "/limits");
}

// Runtime registrations stay safe even for root: passt options that write
// files at a path of the registration's choosing are refused with the
// reason; a listening passt's socket in a directory of a third user gets
// nothing created, chowned or removed there by root.
TEST_F(PasstTest, RuntimeRegistrationsCannotMakeRootWriteWhereOthersOwn) {
  start_running({PasstSpec{}});
  auto ctl_add = [&](const std::string& toml) {
    const std::string file = env.dir() + "/add.toml";
    DaemonEnv::write_file(file, toml);
    return sh(relinkctl_bin() + " --socket " + env.control() + " add " + file + " 2>&1");
  };
  const std::string pcap = env.dir() + "/victim.pcap";
  auto r = ctl_add("[[vm]]\nname = \"rt1\"\nqmp = \"" + env.qmp_path("rt1") +
                   "\"\n[[vm.passt]]\nnetdev = \"net1\"\nsocket = \"" + env.dir() + "/rt1.sock\"\nargs = [\"--pcap\", \"" +
                   pcap + "\"]\n");
  EXPECT_EQ(r.status, 1) << r.out;
  EXPECT_NE(r.out.find("'--pcap' writes a file at a path of the registration's choosing; it is allowed only in "
                       "relinkd's configuration file"),
            std::string::npos)
      << r.out;
  EXPECT_EQ(env.status().dump().find("rt1"), std::string::npos);

  // Alice's directory (uid 4343, writable by all): passt (nobody) could
  // create its socket there, but root makes no directory in it and removes
  // no socket of hers.
  const std::string alices = env.dir() + "/alice";
  ASSERT_EQ(mkdir(alices.c_str(), 0777), 0);
  ASSERT_EQ(chown(alices.c_str(), 4343, 4343), 0);
  chmod(alices.c_str(), 0777);
  chmod(env.dir().c_str(), 0711);
  env.start_qemu_with("rt2", {});  // a stream-client passt starts once its VM's QEMU is there
  r = ctl_add("[[vm]]\nname = \"rt2\"\nqmp = \"" + env.qmp_path("rt2") +
              "\"\n[[vm.passt]]\nnetdev = \"net1\"\nmode = \"stream-client\"\nsocket = \"" + alices +
              "/sub/rt2.sock\"\n");
  ASSERT_EQ(r.status, 0) << r.out;
  ASSERT_TRUE(wait_until([&] { return text_of(env.binding("rt2", "net1"), "last_error").find("belongs to uid 4343") !=
                                      std::string::npos; },
                         10s))
      << explain();
  EXPECT_NE(text_of(env.binding("rt2", "net1"), "last_error").find("relinkd does not create, chown or remove files "
                                                                   "there"),
            std::string::npos)
      << explain();
  EXPECT_FALSE(std::filesystem::exists(alices + "/sub"));
  EXPECT_TRUE(env.relinkd().running());
}

}  // namespace
}  // namespace relink::test
