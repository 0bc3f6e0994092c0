// SPDX-License-Identifier: GPL-2.0-or-later
// QmpClient against a real QEMU (7.2 on Debian 12): the hub-attach sequence
// of the design with the fd of a real macvtap, in a throwaway namespace.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "qemu/qmp_client.h"
#include "support/fake_qmp.h"
#include "support/harness.h"

namespace relink::qemu {
namespace {

using namespace std::chrono_literals;
using json = nlohmann::json;
using test::run_until;

constexpr const char* kMac = "52:54:00:12:34:56";

// Whether process `pid` holds an open fd on character device `dev`.
bool process_holds_device(pid_t pid, dev_t dev) {
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/fd", ec)) {
    struct stat st {};
    if (stat(e.path().c_str(), &st) == 0 && S_ISCHR(st.st_mode) && st.st_rdev == dev) return true;
  }
  return false;
}

class QmpQemuTest : public ::testing::Test {
 protected:
  void SetUp() override {
    RELINK_REQUIRE_ROOT();
    if (test::sh("command -v qemu-system-x86_64").status != 0) GTEST_SKIP() << "qemu-system-x86_64 not installed";
    char tmpl[] = "/tmp/relink-qmpqemu-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    qmp_path_ = dir_ + "/qmp.sock";
    test::Child::Options copts;
    copts.log_path = dir_ + "/qemu.log";
    qemu_ = test::Child({"qemu-system-x86_64", "-S", "-nodefaults", "-display", "none", "-machine", "q35",
                         "-accel", "tcg", "-m", "64", "-qmp", "unix:" + qmp_path_ + ",server=on,wait=off",
                         "-netdev", "hubport,id=nic0.port,hubid=0", "-device",
                         std::string("virtio-net-pci,netdev=nic0.port,id=nic0,mac=") + kMac},
                        copts);
    sd_event* e = nullptr;
    ASSERT_GE(sd_event_new(&e), 0);
    loop_.reset(e);

    QmpClient::Callbacks cbs;
    cbs.on_connected = [this] { ++connected_; };
    cbs.on_event = [this](const std::string& name, const json&) { events_.push_back(name); };
    QmpOptions opts;
    opts.reconnect_min_us = 10'000;
    opts.reconnect_max_us = 100'000;
    client_ = std::make_unique<QmpClient>(loop_.get(), qmp_path_, std::move(cbs), opts);
    client_->start();  // QEMU may not have created the socket yet: the client retries
    ASSERT_TRUE(run_until(loop_.get(), [&] { return connected_ == 1; }, 30s))
        << "no QMP session with QEMU; its log:\n" << test::read_file(dir_ + "/qemu.log");
  }

  void TearDown() override {
    client_.reset();
    qemu_.kill_now();
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }

  // Runs one command and waits for its reply.
  QmpReply call(const std::string& command, json args = nullptr) {
    std::optional<QmpReply> out;
    client_->execute(command, std::move(args), [&](QmpReply r) { out.emplace(std::move(r)); });
    if (!run_until(loop_.get(), [&] { return out.has_value(); }, 10s)) {
      return Error{ETIMEDOUT, "test: no reply to " + command};
    }
    return std::move(*out);
  }

  std::string info_network() {
    auto r = call("human-monitor-command", {{"command-line", "info network"}});
    EXPECT_TRUE(r) << r.error().message;
    return r && r->is_string() ? r->get<std::string>() : "";
  }

  std::string dir_, qmp_path_;
  test::Child qemu_;
  SdEventPtr loop_;
  std::unique_ptr<QmpClient> client_;
  int connected_ = 0;
  std::vector<std::string> events_;
};

TEST_F(QmpQemuTest, ConnectsQueriesAndReceivesEvents) {
  EXPECT_EQ(client_->peer_pid(), qemu_.pid());
  auto status = call("query-status");
  ASSERT_TRUE(status) << status.error().message;
  EXPECT_EQ(status->value("status", ""), "prelaunch");  // -S: not started yet
  EXPECT_EQ(status->value("running", true), false);

  auto cont = call("cont");
  ASSERT_TRUE(cont) << cont.error().message;
  auto stop = call("stop");
  ASSERT_TRUE(stop) << stop.error().message;
  ASSERT_TRUE(run_until(loop_.get(), [&] { return events_.size() >= 2; }, 5s));
  EXPECT_EQ(events_, (std::vector<std::string>{"RESUME", "STOP"}));
}

TEST_F(QmpQemuTest, HubAttachSequenceWithAMacvtapFd) {
  test::Netns ns("qmp");
  ns.ip("link add v0 type veth peer name v1");
  ns.ip("link add link v0 name mvt0 address " + std::string(kMac) + " type macvtap mode bridge");
  const int ifindex = ns.ifindex("mvt0");
  ASSERT_GT(ifindex, 0);
  const std::string tap = "tap" + std::to_string(ifindex);
  unsigned maj = 0, min = 0;
  const std::string devnum = ns.run_ok("cat /sys/class/net/mvt0/macvtap/" + tap + "/dev");
  ASSERT_EQ(sscanf(devnum.c_str(), "%u:%u", &maj, &min), 2) << devnum;
  const dev_t want = makedev(maj, min);

  // /dev/tapN is named by ifindex, which is per namespace: the node may be
  // another namespace's macvtap (a concurrent test's). Then use a private
  // node with the major:minor sysfs gave.
  UniqueFd fd(open(("/dev/" + tap).c_str(), O_RDWR | O_CLOEXEC));
  struct stat st {};
  if (!fd || fstat(fd.get(), &st) != 0 || st.st_rdev != want) {
    const std::string node = dir_ + "/" + tap;
    ASSERT_EQ(mknod(node.c_str(), S_IFCHR | 0600, want), 0) << strerror(errno);
    fd.reset(open(node.c_str(), O_RDWR | O_CLOEXEC));
  }
  ASSERT_TRUE(fd) << strerror(errno);
  ASSERT_EQ(fstat(fd.get(), &st), 0);
  ASSERT_EQ(st.st_rdev, want);

  // The design's sequence, pipelined: written before any reply is read.
  std::vector<std::string> order;
  std::map<std::string, std::optional<QmpReply>> results;
  auto run = [&](const std::string& step, const std::string& command, json args, int pass_fd = -1) {
    client_->execute(
        command, std::move(args),
        [&, step](QmpReply r) {
          order.push_back(step);
          results[step].emplace(std::move(r));
        },
        pass_fd);
  };
  run("getfd", "getfd", {{"fdname", "nic0-tap1"}}, fd.get());
  run("tap", "netdev_add", {{"type", "tap"}, {"id", "nic0.tap1"}, {"fd", "nic0-tap1"}});
  run("hubport", "netdev_add", {{"type", "hubport"}, {"id", "nic0.uplink1"}, {"hubid", 0}, {"netdev", "nic0.tap1"}});
  run("link", "set_link", {{"name", "nic0"}, {"up", true}});
  ASSERT_TRUE(run_until(loop_.get(), [&] { return order.size() == 4; }, 10s));
  EXPECT_EQ(order, (std::vector<std::string>{"getfd", "tap", "hubport", "link"}));
  for (const auto& [step, r] : results) EXPECT_TRUE(*r) << step << ": " << r->error().message;

  const std::string net = info_network();
  EXPECT_NE(net.find("nic0.uplink1"), std::string::npos) << net;
  EXPECT_NE(net.find("nic0.tap1"), std::string::npos) << net;
  // QEMU holds the very macvtap queue we opened (its own copy of the fd).
  fd.reset();
  EXPECT_TRUE(process_holds_device(qemu_.pid(), want));

  auto del_port = call("netdev_del", {{"id", "nic0.uplink1"}});
  EXPECT_TRUE(del_port) << del_port.error().message;
  auto del_tap = call("netdev_del", {{"id", "nic0.tap1"}});
  EXPECT_TRUE(del_tap) << del_tap.error().message;
  const std::string after = info_network();
  EXPECT_EQ(after.find("nic0.uplink1"), std::string::npos) << after;
  EXPECT_EQ(after.find("nic0.tap1"), std::string::npos) << after;
  EXPECT_FALSE(process_holds_device(qemu_.pid(), want)) << "netdev_del left the tap fd open";

  auto again = call("netdev_del", {{"id", "nic0.tap1"}});
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code, EREMOTEIO);
  EXPECT_EQ(again.error().message.rfind("DeviceNotFound: ", 0), 0u) << again.error().message;
  auto bogus = call("no-such-command");
  ASSERT_FALSE(bogus);
  EXPECT_EQ(bogus.error().message.rfind("CommandNotFound: ", 0), 0u) << bogus.error().message;
  EXPECT_TRUE(client_->connected());
}

}  // namespace
}  // namespace relink::qemu
