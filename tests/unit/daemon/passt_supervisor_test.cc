// SPDX-License-Identifier: GPL-2.0-or-later
// The passt supervisor against a recording spawner (no root): it probes
// passt's --help as the first binding's user, refuses what the installed
// passt lacks, starts a binding's passt with the argv the binding builds, and
// routes a passt's exit to the runner that holds it, which starts the next
// generation; a retired passt is stopped.
#include "daemon/passt_supervisor.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "daemon/passt_runner.h"
#include "qemu/qmp_client.h"
#include "support/fake_services.h"
#include "support/fake_qmp.h"

namespace relink::daemon {
namespace {

using namespace std::chrono_literals;

// Records each request and runs a stand-in as this test's own user: `cat`
// of a help text for --help, a version line for --version, `sleep` for a
// passt that runs.
class RecordingSpawner final : public passt::Spawner {
 public:
  explicit RecordingSpawner(std::string help_file) : help_file_(std::move(help_file)) {}
  Result<passt::Spawned> spawn(const passt::SpawnRequest& req) override {
    requests.push_back(req);
    std::vector<std::string> argv = {"/bin/sleep", "60"};
    if (req.argv.size() == 2 && req.argv[1] == "--help") argv = {"/bin/cat", help_file_};
    if (req.argv.size() == 2 && req.argv[1] == "--version") argv = {"/bin/echo", "passt 2023_03_29"};
    int out[2];
    if (pipe2(out, O_CLOEXEC) != 0) return Error::last("pipe2");
    const pid_t pid = fork();
    if (pid < 0) return Error::last("fork");
    if (pid == 0) {
      dup2(out[1], 1);
      std::vector<char*> args;
      for (auto& a : argv) args.push_back(a.data());
      args.push_back(nullptr);
      execv(args[0], args.data());
      _exit(127);
    }
    close(out[1]);
    passt::Spawned s;
    s.pid = pid;
    s.pidfd.reset(static_cast<int>(syscall(SYS_pidfd_open, pid, 0)));
    s.log.reset(out[0]);
    fcntl(out[0], F_SETFL, O_NONBLOCK);
    s.exe = argv[0];
    if (!s.pidfd) return Error::last("pidfd_open");
    pids.push_back(pid);
    return s;
  }
  ~RecordingSpawner() override {
    for (pid_t p : pids) kill(p, SIGKILL);
  }
  std::vector<passt::SpawnRequest> requests;
  std::vector<pid_t> pids;

 private:
  std::string help_file_;
};

class PasstSupervisorTest : public ::testing::Test {
 protected:
  test::FakeServices env;

  PasstSupervisorTest() {
    char tmpl[] = "/tmp/relink-supervisor-XXXXXX";
    dir = mkdtemp(tmpl);
    env.cfg.daemon.state_dir = dir + "/state";
    binding.netdev = "net1";
    binding.uid = getuid();
    binding.gid = getgid();
    binding.runas = "tester";
  }
  ~PasstSupervisorTest() override {
    runner.reset();
    supervisor.reset();
    std::filesystem::remove_all(dir);
  }
  void make_supervisor(const std::string& help_text) {
    std::ofstream(dir + "/help.txt") << help_text;
    auto s = std::make_unique<RecordingSpawner>(dir + "/help.txt");
    spawner = s.get();
    supervisor = std::make_unique<PasstSupervisor>(env.loop.get(), *env.defer, std::move(s));
  }
  std::vector<config::Vm> vms_with(const config::PasstBinding& b) {
    config::Vm vm;
    vm.name = "vm1";
    vm.passts.push_back(b);
    return {config::Vm{"vm0", "/run/vm0.qmp", {}, {}}, vm};
  }
  static std::string help_2023() {
    std::ifstream f(std::string(RELINK_FIXTURE_DIR) + "/passt/help-2023-03.txt");
    return std::string(std::istreambuf_iterator<char>(f), {});
  }

  std::string dir;
  RecordingSpawner* spawner = nullptr;
  std::unique_ptr<PasstSupervisor> supervisor;
  std::unique_ptr<PasstRunner> runner;
  config::PasstBinding binding;
};

TEST_F(PasstSupervisorTest, NoPasstBindingRunsNothing) {
  make_supervisor(help_2023());
  supervisor->probe({config::Vm{"vm0", "/run/vm0.qmp", {}, {}}}, "/bin/true");
  EXPECT_FALSE(supervisor->probed());
  EXPECT_TRUE(spawner->requests.empty());
}

TEST_F(PasstSupervisorTest, ProbesAsTheFirstBindingsUserAndRefusesWhatPasstLacks) {
  make_supervisor(help_2023());
  binding.uid = 4242;
  binding.gid = 4343;
  supervisor->probe(vms_with(binding), "/bin/true");
  EXPECT_TRUE(supervisor->probed());
  ASSERT_EQ(spawner->requests.size(), 2u);
  EXPECT_EQ(spawner->requests[0].argv, (std::vector<std::string>{"/bin/true", "--help"}));
  EXPECT_EQ(spawner->requests[0].uid, 4242u);
  EXPECT_EQ(spawner->requests[0].gid, 4343u);
  EXPECT_EQ(spawner->requests[1].argv[1], "--version");
  EXPECT_FALSE(supervisor->refusal(passt::Mode::StreamServer));
  EXPECT_FALSE(supervisor->refusal(passt::Mode::StreamClient));
  const auto why = supervisor->refusal(passt::Mode::VhostUser);
  ASSERT_TRUE(why);
  EXPECT_NE(why->find("--vhost-user"), std::string::npos) << *why;
}

TEST_F(PasstSupervisorTest, AMissingPasstRefusesEveryMode) {
  make_supervisor(help_2023());
  supervisor->probe(vms_with(binding), dir + "/no-passt-here");
  const auto why = supervisor->refusal(passt::Mode::StreamServer);
  ASSERT_TRUE(why);
  EXPECT_NE(why->find("cannot run passt"), std::string::npos) << *why;
}

// A vhost-user binding starts its passt at once (Listen); when that passt
// dies, its exit reaches the runner, which starts generation 2; a retired
// binding's passt is stopped.
TEST_F(PasstSupervisorTest, AnExitReachesItsRunnerWhichStartsTheNextGeneration) {
  make_supervisor(help_2023() + "  --vhost-user\t\tAct as a vhost-user backend\n");
  binding.mode = passt::Mode::VhostUser;
  binding.socket = dir + "/sock/vm1-net1.sock";
  supervisor->probe(vms_with(binding), "/bin/true");
  ASSERT_FALSE(supervisor->refusal(passt::Mode::VhostUser));
  spawner->requests.clear();
  qemu::QmpClient qmp(env.loop.get(), dir + "/no-qmp", {});
  runner = std::make_unique<PasstRunner>("vm1", binding, *supervisor, qmp, env.services);
  runner->listen();
  ASSERT_EQ(spawner->requests.size(), 1u);
  EXPECT_EQ(spawner->requests[0].argv, supervisor->expected(binding).argv);
  EXPECT_NE(std::find(spawner->requests[0].argv.begin(), spawner->requests[0].argv.end(), binding.socket),
            spawner->requests[0].argv.end());
  EXPECT_EQ(spawner->requests[0].uid, getuid());
  ASSERT_TRUE(test::run_until(env.loop.get(), [&] { return runner->status()["pid"].is_number(); }, 5s))
      << runner->status().dump();
  const pid_t first = runner->status()["pid"].get<pid_t>();
  EXPECT_EQ(runner->status()["generation"], 1);

  kill(first, SIGKILL);
  ASSERT_TRUE(test::run_until(
      env.loop.get(), [&] { return runner->status()["generation"] == 2 && runner->status()["pid"].is_number(); }, 5s))
      << runner->status().dump();
  EXPECT_EQ(spawner->requests.size(), 2u);
  const pid_t second = runner->status()["pid"].get<pid_t>();
  EXPECT_NE(second, first);
  EXPECT_EQ(runner->status()["restarts"], 1);

  runner->retire();
  runner.reset();
  // SIGTERM ends the stand-in at once; the supervisor reaps it.
  EXPECT_TRUE(test::run_until(env.loop.get(), [&] { return kill(second, 0) != 0; }, 5s));
}

}  // namespace
}  // namespace relink::daemon
