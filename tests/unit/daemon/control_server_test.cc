// SPDX-License-Identifier: GPL-2.0-or-later
// The control server in-process, with small limits: what it sends back is
// always valid JSON, exceptions never escape, the connection cap makes room
// for a new client, idle connections are closed (and then nothing wakes the
// loop), and running out of fds pauses accepting instead of spinning.
#include "daemon/control_server.h"

#include <grp.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <stdexcept>

#include "support/fake_qmp.h"

namespace relink::daemon {
namespace {

using namespace std::chrono_literals;
using test::run_until;

class ControlServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/relink-cs-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    sd_event* raw = nullptr;
    ASSERT_GE(sd_event_new(&raw), 0);
    loop_.reset(raw);
  }
  void TearDown() override {
    server_.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  std::string path() const { return dir_ + "/control.sock"; }
  void start(ControlServer::Handler h, ControlLimits limits = {}) {
    server_ = std::make_unique<ControlServer>(loop_.get(), std::move(h), limits);
    auto r = server_->listen(path(), "");
    ASSERT_TRUE(r) << r.error().message;
  }
  UniqueFd connect_client() {
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::strncpy(a.sun_path, path().c_str(), sizeof a.sun_path - 1);
    UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    EXPECT_EQ(connect(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a), 0) << std::strerror(errno);
    return fd;
  }
  // What the server sent on `fd` so far; `closed` tells whether it hung up.
  static std::string drain(int fd, bool* closed = nullptr) {
    std::string out;
    char buf[4096];
    while (true) {
      ssize_t n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
      if (n > 0) {
        out.append(buf, static_cast<size_t>(n));
        continue;
      }
      if (closed) *closed = n == 0 || (n < 0 && errno != EAGAIN);
      return out;
    }
  }
  // Sends `line` on a new connection and runs the loop until the reply.
  std::string request(const std::string& line) {
    UniqueFd c = connect_client();
    EXPECT_EQ(send(c.get(), line.data(), line.size(), MSG_NOSIGNAL), static_cast<ssize_t>(line.size()));
    std::string got;
    EXPECT_TRUE(run_until(loop_.get(), [&] { got += drain(c.get()); return got.find('\n') != std::string::npos; }, 5s));
    return got.substr(0, got.find('\n'));
  }

  std::string dir_;
  SdEventPtr loop_;
  std::unique_ptr<ControlServer> server_;
};

TEST_F(ControlServerTest, RepliesWithInvalidUtf8AreValidJson) {
  start([](const nlohmann::json&, const Peer&) {
    return nlohmann::json{{"ok", true}, {"result", std::string("a\xff\xfe" "b")}};
  });
  const std::string line = request("{\"command\":\"status\"}\n");
  auto reply = nlohmann::json::parse(line, nullptr, false);  // strict: invalid UTF-8 is discarded
  ASSERT_FALSE(reply.is_discarded()) << line;
  EXPECT_EQ(reply["result"], "a\xef\xbf\xbd\xef\xbf\xbd" "b") << line;
}

TEST_F(ControlServerTest, ExceptionsBecomeErrorRepliesAndTheServerGoesOn) {
  int calls = 0;
  start([&](const nlohmann::json& req, const Peer&) -> nlohmann::json {
    ++calls;
    if (req.value("command", "") == "int") throw 42;
    if (req.value("command", "") == "runtime") throw std::runtime_error("bad \xff thing");
    return {{"ok", true}};
  });
  for (const char* cmd : {"int", "runtime"}) {
    auto reply = nlohmann::json::parse(request(std::string("{\"command\":\"") + cmd + "\"}\n"), nullptr, false);
    ASSERT_TRUE(reply.is_object()) << cmd;
    EXPECT_EQ(reply["ok"], false);
    EXPECT_EQ(reply["error"].get<std::string>().rfind("internal error", 0), 0u) << reply.dump();
  }
  // A command that is not a string: nlohmann's type_error, caught the same way.
  auto typed = nlohmann::json::parse(request("{\"command\":5}\n"), nullptr, false);
  EXPECT_EQ(typed["ok"], false) << typed.dump();
  EXPECT_EQ(nlohmann::json::parse(request("{\"command\":\"ok\"}\n"))["ok"], true);
  EXPECT_EQ(calls, 4);
}

TEST_F(ControlServerTest, BadRequestsNeverReachTheHandler) {
  int calls = 0;
  ControlLimits limits;
  limits.max_request = 1024;
  start([&](const nlohmann::json&, const Peer&) { ++calls; return nlohmann::json{{"ok", true}}; }, limits);
  EXPECT_NE(request(std::string(5000, '[') + "\n").find("\"ok\":false"), std::string::npos);
  EXPECT_NE(request("{\"a\":\"\xff\"}\n").find("\"ok\":false"), std::string::npos);
  EXPECT_NE(request("\"just a string\"\n").find("not a JSON object"), std::string::npos);
  EXPECT_NE(request(std::string(2000, ' ') + "{}\n").find("request over 1024 bytes"), std::string::npos);
  EXPECT_EQ(calls, 0);
}

TEST_F(ControlServerTest, AtTheCapTheOldestIdleConnectionMakesRoom) {
  ControlLimits limits;
  limits.max_connections = 4;
  start([](const nlohmann::json&, const Peer&) { return nlohmann::json{{"ok", true}}; }, limits);
  std::vector<UniqueFd> idle;
  for (int i = 0; i < 10; ++i) {
    idle.push_back(connect_client());
    // One at a time, so that the accept order is the connect order.
    test::run_for(loop_.get(), 20ms);
  }
  EXPECT_EQ(server_->connections(), 4u);
  // The six oldest were closed; the four newest are still open.
  for (size_t i = 0; i < idle.size(); ++i) {
    bool closed = false;
    drain(idle[i].get(), &closed);
    EXPECT_EQ(closed, i < 6) << "connection " << i;
  }
  EXPECT_EQ(nlohmann::json::parse(request("{\"command\":\"status\"}\n"))["ok"], true);
  EXPECT_LE(server_->connections(), 4u);
}

TEST_F(ControlServerTest, IdleConnectionsAreClosedAndThenNothingWakesTheLoop) {
  ControlLimits limits;
  limits.idle_timeout_us = 200'000;
  start([](const nlohmann::json&, const Peer&) { return nlohmann::json{{"ok", true}}; }, limits);
  UniqueFd quiet = connect_client();
  UniqueFd half = connect_client();
  ASSERT_EQ(send(half.get(), "{\"comm", 6, MSG_NOSIGNAL), 6);
  ASSERT_TRUE(run_until(loop_.get(), [&] { return server_->connections() == 2; }, 2s));
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(run_until(loop_.get(), [&] { return server_->connections() == 0; }, 2s));
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 150ms);
  for (int fd : {quiet.get(), half.get()}) {
    bool closed = false;
    drain(fd, &closed);
    EXPECT_TRUE(closed);
  }
  // No timer is left armed: the loop sleeps until its timeout.
  EXPECT_EQ(sd_event_run(loop_.get(), 500'000), 0);
}

// Fills every fd number below a small soft limit for the time it lives.
class FdExhaustion {
 public:
  FdExhaustion() {
    getrlimit(RLIMIT_NOFILE, &saved_);
    const int limit = dup(2) + 4;
    fillers_.emplace_back(limit - 4);
    while (true) {
      int fd = dup(2);
      if (fd < 0) break;
      fillers_.emplace_back(fd);
      if (fd >= limit - 1) break;
    }
    rlimit rl = saved_;
    rl.rlim_cur = static_cast<rlim_t>(limit);
    ok_ = setrlimit(RLIMIT_NOFILE, &rl) == 0 && dup(2) < 0 && errno == EMFILE;
  }
  ~FdExhaustion() { release(); }
  void release() {
    fillers_.clear();
    setrlimit(RLIMIT_NOFILE, &saved_);
  }
  bool ok() const { return ok_; }

 private:
  rlimit saved_{};
  std::vector<UniqueFd> fillers_;
  bool ok_ = false;
};

double cpu_seconds() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

TEST_F(ControlServerTest, OutOfFdsPausesAcceptingInsteadOfSpinning) {
  start([](const nlohmann::json&, const Peer&) { return nlohmann::json{{"ok", true}}; });
  std::vector<UniqueFd> clients;
  for (int i = 0; i < 3; ++i) {
    clients.push_back(connect_client());
    ASSERT_EQ(send(clients.back().get(), "{}\n", 3, MSG_NOSIGNAL), 3);
  }
  std::string replies[3];
  {
    FdExhaustion full;
    ASSERT_TRUE(full.ok()) << "could not use up the fds";
    // The listening socket stays readable all along: a server that retried
    // at once would be dispatched thousands of times here.
    int dispatches = 0;
    const double cpu0 = cpu_seconds();
    const auto t0 = std::chrono::steady_clock::now();
    while (std::chrono::steady_clock::now() - t0 < 500ms)
      if (sd_event_run(loop_.get(), 50'000) > 0) ++dispatches;
    const double cpu = cpu_seconds() - cpu0;
    full.release();
    EXPECT_LT(dispatches, 20);
    EXPECT_LT(cpu, 0.2);
    EXPECT_EQ(server_->connections(), 0u);
    for (auto& c : clients) EXPECT_EQ(drain(c.get()), "");
    std::cout << "[ figures  ] out of fds for 500 ms: " << dispatches << " dispatches, " << cpu << " s CPU\n";
  }
  // Accepting resumes on its timer once fds are back.
  ASSERT_TRUE(run_until(loop_.get(), [&] {
    bool all = true;
    for (int i = 0; i < 3; ++i) {
      replies[i] += drain(clients[static_cast<size_t>(i)].get());
      all = all && replies[i].find('\n') != std::string::npos;
    }
    return all;
  }, 5s));
  for (const auto& r : replies) EXPECT_EQ(nlohmann::json::parse(r.substr(0, r.find('\n')))["ok"], true);
}

// relinkctl monitor: the subscription is answered, then every published
// event arrives on it; it is neither closed to make room nor as idle.
TEST_F(ControlServerTest, MonitorSubscribersGetEventsAndStay) {
  ControlLimits limits;
  limits.max_connections = 4;
  limits.idle_timeout_us = 100'000;
  start([](const nlohmann::json&, const Peer&) { return nlohmann::json{{"ok", true}}; }, limits);
  EXPECT_FALSE(server_->monitoring());
  UniqueFd sub = connect_client();
  ASSERT_EQ(send(sub.get(), "{\"command\":\"monitor\"}\n", 22, MSG_NOSIGNAL), 22);
  std::string got;
  ASSERT_TRUE(run_until(loop_.get(), [&] { got += drain(sub.get()); return got.find('\n') != std::string::npos; }, 5s));
  EXPECT_EQ(nlohmann::json::parse(got.substr(0, got.find('\n'))), nlohmann::json::parse(R"({"ok":true,"result":{"monitor":true}})"));
  EXPECT_TRUE(server_->monitoring());
  std::vector<UniqueFd> idle;
  for (int i = 0; i < 10; ++i) {
    idle.push_back(connect_client());
    test::run_for(loop_.get(), 10ms);
  }
  test::run_for(loop_.get(), 300ms);  // past the idle timeout
  server_->publish({{"event", "state"}, {"n", 1}});
  server_->publish({{"event", "state"}, {"n", 2}});
  got.clear();
  ASSERT_TRUE(run_until(loop_.get(), [&] { got += drain(sub.get()); return std::count(got.begin(), got.end(), '\n') == 2; }, 5s))
      << got;
  EXPECT_EQ(got, "{\"event\":\"state\",\"n\":1}\n{\"event\":\"state\",\"n\":2}\n");
  // Its end closes the subscription.
  sub.reset();
  ASSERT_TRUE(run_until(loop_.get(), [&] { return !server_->monitoring(); }, 5s));
}

// A subscriber that stopped reading is closed once its unread events pass
// the backlog limit, rather than growing relinkd.
TEST_F(ControlServerTest, SubscriberThatDoesNotReadIsClosed) {
  ControlLimits limits;
  limits.max_subscriber_backlog = 64 * 1024;
  start([](const nlohmann::json&, const Peer&) { return nlohmann::json{{"ok", true}}; }, limits);
  UniqueFd sub = connect_client();
  ASSERT_EQ(send(sub.get(), "{\"command\":\"monitor\"}\n", 22, MSG_NOSIGNAL), 22);
  ASSERT_TRUE(run_until(loop_.get(), [&] { return server_->monitoring(); }, 5s));
  const std::string big(1000, 'x');
  for (int i = 0; i < 20000 && server_->monitoring(); ++i) server_->publish({{"pad", big}});
  EXPECT_FALSE(server_->monitoring());
  EXPECT_EQ(server_->connections(), 0u);
}

// Out of fds with only subscribers open: nothing can be closed to make
// room, so accepting pauses (it must not loop looking for a victim).
TEST_F(ControlServerTest, OutOfFdsWithOnlySubscribersPauses) {
  start([](const nlohmann::json&, const Peer&) { return nlohmann::json{{"ok", true}}; });
  std::vector<UniqueFd> subs;
  for (int i = 0; i < 2; ++i) {
    subs.push_back(connect_client());
    ASSERT_EQ(send(subs.back().get(), "{\"command\":\"monitor\"}\n", 22, MSG_NOSIGNAL), 22);
  }
  ASSERT_TRUE(run_until(loop_.get(), [&] { return server_->connections() == 2 && server_->monitoring(); }, 5s));
  test::run_for(loop_.get(), 50ms);
  UniqueFd waiting = connect_client();
  ASSERT_EQ(send(waiting.get(), "{}\n", 3, MSG_NOSIGNAL), 3);
  {
    FdExhaustion full;
    ASSERT_TRUE(full.ok()) << "could not use up the fds";
    int dispatches = 0;
    const auto t0 = std::chrono::steady_clock::now();
    while (std::chrono::steady_clock::now() - t0 < 300ms)
      if (sd_event_run(loop_.get(), 50'000) > 0) ++dispatches;
    EXPECT_LT(dispatches, 20);
    EXPECT_EQ(server_->connections(), 2u);  // both subscribers kept
  }
  std::string reply;
  ASSERT_TRUE(run_until(loop_.get(), [&] { reply += drain(waiting.get()); return reply.find('\n') != std::string::npos; }, 5s));
  EXPECT_EQ(nlohmann::json::parse(reply.substr(0, reply.find('\n')))["ok"], true);
}

TEST_F(ControlServerTest, GroupSocketIs0660WithThatGroup) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root (chown)";
  struct group* gr = getgrnam("nogroup");
  if (!gr) GTEST_SKIP() << "no group 'nogroup' here";
  const gid_t gid = gr->gr_gid;
  server_ = std::make_unique<ControlServer>(loop_.get(),
                                            [](const nlohmann::json&, const Peer&) { return nlohmann::json{{"ok", true}}; });
  auto r = server_->listen(path(), "nogroup");
  ASSERT_TRUE(r) << r.error().message;
  struct stat st {};
  ASSERT_EQ(lstat(path().c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0660u);
  EXPECT_EQ(st.st_uid, 0u);
  EXPECT_EQ(st.st_gid, gid);
  EXPECT_EQ(nlohmann::json::parse(request("{}\n"))["ok"], true);
}

TEST_F(ControlServerTest, RefusesADirectoryOthersMayWrite) {
  ASSERT_EQ(chmod(dir_.c_str(), 0777), 0);
  ControlServer s(loop_.get(), [](const nlohmann::json&, const Peer&) { return nlohmann::json{}; });
  auto r = s.listen(path(), "");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, EPERM);
  EXPECT_NE(r.error().message.find(dir_), std::string::npos) << r.error().message;
  EXPECT_FALSE(std::filesystem::exists(path()));
}

TEST_F(ControlServerTest, ReplacesAStaleSocketButNothingElse) {
  {
    ControlServer first(loop_.get(), [](const nlohmann::json&, const Peer&) { return nlohmann::json{}; });
    ASSERT_TRUE(first.listen(path(), ""));
    struct stat st {};
    ASSERT_EQ(lstat(path().c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 07777, 0600u);
    // A second server takes the path over; the first, going away, leaves it.
    start([](const nlohmann::json&, const Peer&) { return nlohmann::json{{"ok", true}}; });
  }
  EXPECT_EQ(nlohmann::json::parse(request("{}\n"))["ok"], true);
  server_.reset();
  EXPECT_FALSE(std::filesystem::exists(path()));
  { std::ofstream(path()) << "not a socket"; }
  ControlServer s(loop_.get(), [](const nlohmann::json&, const Peer&) { return nlohmann::json{}; });
  auto r = s.listen(path(), "");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, EEXIST);
}

// Who may connect: root, and the group by the primary gid or any
// supplementary one the kernel reported; nobody else.
TEST(PeerAllowed, RootAndGroupMembersOnly) {
  EXPECT_TRUE(peer_allowed(Peer{1, 0, 0, {}}, std::nullopt));
  EXPECT_FALSE(peer_allowed(Peer{1, 1000, 1000, {}}, std::nullopt));
  EXPECT_TRUE(peer_allowed(Peer{1, 1000, 4242, {}}, 4242));
  EXPECT_TRUE(peer_allowed(Peer{1, 1000, 1000, {27, 4242}}, 4242));
  EXPECT_FALSE(peer_allowed(Peer{1, 1000, 1000, {27, 100}}, 4242));
}

// What a member may do: look and nudge, not change what relinkd manages;
// the refusal lists what it may use. Root may use everything; verbs the
// server does not know are left to the handler.
TEST(VerbRefusal, MembersMayNotAddRemoveOrReload) {
  const Peer member{7, 1000, 1000, {4242}};
  for (const char* verb : kRootVerbs) {
    const std::string why = verb_refusal(verb, member);
    EXPECT_NE(why.find("root only"), std::string::npos) << verb;
    EXPECT_NE(why.find("status, monitor, metrics, qemu-args, reattach"), std::string::npos) << why;
    EXPECT_EQ(verb_refusal(verb, Peer{7, 0, 0, {}}), "");
  }
  for (const char* verb : kMemberVerbs) EXPECT_EQ(verb_refusal(verb, member), "") << verb;
  EXPECT_EQ(verb_refusal("frobnicate", member), "");
}

}  // namespace
}  // namespace relink::daemon
