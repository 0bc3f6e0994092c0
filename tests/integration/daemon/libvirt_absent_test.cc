// SPDX-License-Identifier: GPL-2.0-or-later
// [libvirt] with no libvirtd to talk to: one that accepted the connection
// and never answers (a fake peer: a real libvirtd cannot be made to hang in
// its greeting) must not hold relinkd's loop across a reload of [libvirt]
// or its exit; and with no libvirtd at all relinkd waits for its socket
// (inotify) instead of retrying on a timer, then connects to a real
// libvirtd as soon as it starts.
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <thread>

#include "daemon_env.h"
#include "support/libvirt_env.h"

namespace relink::test {
namespace {

using namespace std::chrono_literals;

// A unix socket that accepts connections (the kernel's backlog does) and
// never reads or answers.
class HungPeer {
 public:
  explicit HungPeer(const std::string& path) : path_(path) {
    fd_ = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path.c_str());
    EXPECT_EQ(bind(fd_, reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0) << path;
    EXPECT_EQ(listen(fd_, 16), 0);
  }
  ~HungPeer() {
    close(fd_);
    unlink(path_.c_str());
  }

 private:
  std::string path_;
  int fd_ = -1;
};

size_t count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

std::chrono::milliseconds timed(const std::function<void()>& fn) {
  const auto t0 = std::chrono::steady_clock::now();
  fn();
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0);
}

class LibvirtAbsent : public ::testing::Test {
 protected:
  void SetUp() override { RELINK_REQUIRE_ROOT(); }
  void write_config(const std::string& uri, const std::string& extra = "") {
    DaemonEnv::write_file(env.config_path(), env.config_text({}) + "\n[libvirt]\nuri = \"" + uri + "\"\n" + extra);
  }
  nlohmann::json libvirt_status() {
    auto st = env.status();
    return st.is_object() ? st["libvirt"] : nlohmann::json(nullptr);
  }
  DaemonEnv env;
};

TEST_F(LibvirtAbsent, HungLibvirtdHoldsNeitherStatusNorAReloadNorTheExit) {
  HungPeer hung(env.dir() + "/hung-sock");
  write_config("qemu:///system?socket=" + env.dir() + "/hung-sock");
  env.start_relinkd();
  // The libvirt thread is now stuck in virConnectOpen, waiting for an answer.
  ASSERT_TRUE(wait_until([&] { return read_file(env.log_path()).find("connecting to qemu:///system") != std::string::npos; }, 5s));
  std::this_thread::sleep_for(300ms);
  nlohmann::json st;
  EXPECT_LT(timed([&] { st = env.status(); }), 1500ms);
  ASSERT_TRUE(st.is_object()) << env.explain();
  EXPECT_FALSE(st["libvirt"].value("connected", true));

  // A reload that changes [libvirt] ends the stuck connection and starts another.
  write_config("qemu:///system?socket=" + env.dir() + "/hung-sock", "domains = [\"g1\"]\n");
  ShResult reload;
  EXPECT_LT(timed([&] { reload = sh(relinkctl_bin() + " --socket " + env.control() + " reload"); }), 1500ms);
  EXPECT_EQ(reload.status, 0) << reload.out << env.explain();
  for (int i = 0; i < 3; ++i) {
    EXPECT_LT(timed([&] { st = env.status(); }), 1500ms);
    EXPECT_TRUE(st.is_object()) << env.explain();
    std::this_thread::sleep_for(100ms);
  }
  EXPECT_EQ(st["libvirt"]["domains"], nlohmann::json::array({"g1"}));

  // Exit: the stuck thread is waited for 2 s at most.
  int status = 0;
  EXPECT_LT(timed([&] { status = env.relinkd().stop(SIGTERM, 6s); }), 3500ms) << env.explain();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status << env.explain();
  EXPECT_NE(read_file(env.log_path()).find("did not end within 2000 ms"), std::string::npos) << env.explain();
}

TEST_F(LibvirtAbsent, NoLibvirtdIsWaitedForAndConnectedToWhenItStarts) {
  LibvirtEnv lv{env.ns()};
  write_config(lv.uri(), "pid_dir = \"" + lv.pid_dir() + "\"\n");
  env.start_relinkd();
  ASSERT_TRUE(wait_until([&] { return libvirt_status().value("waiting_for_socket", false); }, 5s)) << env.explain();
  std::this_thread::sleep_for(3s);
  // One attempt, then nothing but the watch: no retries every few seconds.
  const std::string log = read_file(env.log_path());
  EXPECT_EQ(count(log, "debug libvirt: connecting to qemu:///system"), 1u) << env.explain();
  EXPECT_EQ(count(log, "waiting for libvirtd"), 1u) << env.explain();
  EXPECT_TRUE(libvirt_status().value("waiting_for_socket", false));

  ASSERT_NO_FATAL_FAILURE(lv.start());
  const auto ready = std::chrono::steady_clock::now();
  ASSERT_TRUE(wait_until([&] { return libvirt_status().value("connected", false); }, 10s, 20ms)) << env.explain();
  const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - ready);
  EXPECT_LT(took, 1500ms) << "connected " << took.count() << " ms after libvirtd answered";
  std::printf("[ measured ] connected %lld ms after libvirtd answered virsh\n", static_cast<long long>(took.count()));
  EXPECT_FALSE(libvirt_status().value("waiting_for_socket", true));

  // libvirtd stops (and removes its socket): waiting again, connected again.
  lv.stop();
  ASSERT_TRUE(wait_until([&] { return libvirt_status().value("waiting_for_socket", false); }, 10s)) << env.explain();
  ASSERT_NO_FATAL_FAILURE(lv.start());
  ASSERT_TRUE(wait_until([&] { return libvirt_status().value("connected", false); }, 3s, 20ms)) << env.explain();
}

}  // namespace
}  // namespace relink::test
