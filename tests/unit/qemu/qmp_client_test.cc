// SPDX-License-Identifier: GPL-2.0-or-later
// QmpClient against the scripted fake QMP server, on one sd-event loop.
#include "qemu/qmp_client.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <filesystem>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "support/fake_qmp.h"
#include "util/clock.h"

namespace relink::qemu {
namespace {

using namespace std::chrono_literals;
using test::FakeQmp;
using test::run_for;
using test::run_until;
using json = nlohmann::json;
using Outcome = std::shared_ptr<std::optional<QmpReply>>;

QmpOptions fast_options() {
  QmpOptions o;
  o.command_timeout_us = 2'000'000;
  o.connect_timeout_us = 1'000'000;
  o.reconnect_min_us = 5'000;
  o.reconnect_max_us = 50'000;
  return o;
}

size_t open_fd_count() {
  size_t n = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator("/proc/self/fd")) ++n;
  return n;
}

bool same_file(int a, int b) {
  struct stat sa {}, sb {};
  return fstat(a, &sa) == 0 && fstat(b, &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

class QmpClientTest : public ::testing::Test {
 protected:
  QmpClientTest() {
    sd_event* e = nullptr;
    EXPECT_GE(sd_event_new(&e), 0);
    loop_.reset(e);
  }
  ~QmpClientTest() override {
    client_.reset();
    fake_.reset();
  }

  FakeQmp& fake(FakeQmp::Options opts = FakeQmp::Options()) {
    fake_ = std::make_unique<FakeQmp>(loop_.get(), std::move(opts));
    return *fake_;
  }

  void make_client(QmpOptions opts = fast_options()) {
    QmpClient::Callbacks cbs;
    cbs.on_connected = [this] {
      ++connected_;
      trace_.push_back("connected");
      if (on_connected_hook_) on_connected_hook_();
    };
    cbs.on_refused = [this](const Error& why) { refusals_.push_back(why.message); };
    cbs.on_disconnected = [this](const Error& why) {
      ++disconnected_;
      last_disconnect_ = why;
      trace_.push_back("disconnected");
    };
    cbs.on_event = [this](const std::string& name, const json& data) {
      trace_.push_back("event " + name + " " + data.dump());
      if (on_event_hook_) on_event_hook_();
    };
    client_ = std::make_unique<QmpClient>(loop_.get(), fake_->path(), std::move(cbs), opts);
  }

  void start_client(QmpOptions opts = fast_options()) {
    make_client(opts);
    client_->start();
  }

  void connect(QmpOptions opts = fast_options()) {
    start_client(opts);
    ASSERT_TRUE(wait([&] { return connected_ == 1; })) << "no QMP session";
  }

  // Runs a command; the outcome is filled in when its callback runs.
  Outcome run(const std::string& command, json args = nullptr, int fd = -1) {
    auto out = std::make_shared<std::optional<QmpReply>>();
    client_->execute(
        command, std::move(args),
        [this, out, command](QmpReply r) {
          trace_.push_back("reply " + command + " " + (r ? r->dump() : "error"));
          out->emplace(std::move(r));
        },
        fd);
    return out;
  }

  bool wait(const std::function<bool()>& pred, std::chrono::milliseconds timeout = 5s) {
    return run_until(loop_.get(), pred, timeout);
  }
  bool wait_done(const Outcome& o) {
    return wait([&] { return o->has_value(); });
  }

  SdEventPtr loop_;
  std::unique_ptr<FakeQmp> fake_;
  std::unique_ptr<QmpClient> client_;
  int connected_ = 0;
  int disconnected_ = 0;
  Error last_disconnect_;
  std::vector<std::string> trace_;  // callbacks in the order they ran
  std::function<void()> on_event_hook_;
  std::function<void()> on_connected_hook_;
  std::vector<std::string> refusals_;
};

TEST_F(QmpClientTest, QemuVersionComesFromTheGreeting) {
  fake();  // QEMU 7.2's greeting
  connect();
  EXPECT_EQ(client_->qemu_version(), 702u);
}

TEST_F(QmpClientTest, OddVersionsInTheGreetingAreUnknown) {
  for (const std::string v : {R"("10")", R"({"qemu": {"major": -1, "minor": 0}})", R"({"qemu": {"major": 10}})",
                              R"({"qemu": {"major": 10, "minor": 1e9}})", R"({"qemu": "10.0"})", "[]"}) {
    SCOPED_TRACE(v);
    fake(FakeQmp::Options{.greeting = R"({"QMP": {"version": )" + v + R"(, "capabilities": []}})"});
    connected_ = 0;
    connect();
    EXPECT_EQ(client_->qemu_version(), 0u);
  }
}

TEST_F(QmpClientTest, GreetingThenCapabilitiesThenConnected) {
  fake();
  connect();
  EXPECT_TRUE(client_->connected());
  EXPECT_EQ(client_->peer_pid(), getpid());  // the fake runs in this process
  ASSERT_EQ(fake_->received().size(), 1u);
  const auto& caps = fake_->received()[0];
  EXPECT_EQ(caps.name, "qmp_capabilities");
  EXPECT_TRUE(caps.id.is_number_unsigned());
  EXPECT_TRUE(caps.arguments.is_null());
  EXPECT_EQ(disconnected_, 0);
}

// A Batch holds commands back until it ends; then they go out together, an
// fd still on its own command's first byte.
TEST_F(QmpClientTest, ABatchWritesItsCommandsWhenItEnds) {
  fake();
  fake_->expect("getfd", {{"fdname", "relink-nic0-1"}}).returns();
  fake_->expect("netdev_add", {{"id", "nic0.tap1"}}).returns();
  fake_->expect("set_link", {{"name", "nic0"}}).returns();
  connect();
  int p[2];
  ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
  Outcome a, b, c;
  {
    QmpClient::Batch outer(*client_);
    {
      QmpClient::Batch inner(*client_);
      a = run("getfd", {{"fdname", "relink-nic0-1"}}, p[0]);
      b = run("netdev_add", {{"type", "tap"}, {"id", "nic0.tap1"}, {"fd", "relink-nic0-1"}});
    }
    c = run("set_link", {{"name", "nic0"}, {"up", true}});
    test::run_for(loop_.get(), 50ms);
    EXPECT_EQ(fake_->received().size(), 1u) << "a command left before its batch ended";
  }
  close(p[0]);
  close(p[1]);
  ASSERT_TRUE(wait_done(c));
  ASSERT_TRUE(**a && **b && **c);
  ASSERT_EQ(fake_->received().size(), 4u);
  EXPECT_EQ(fake_->received()[1].fds.size(), 1u);
  EXPECT_EQ(fake_->received()[2].fds.size(), 0u);
}

TEST_F(QmpClientTest, ExecuteWithoutSessionFailsLaterNotInside) {
  fake(FakeQmp::Options{.greeting = ""});  // accepts but never greets: stays before Ready
  make_client();
  auto unstarted = run("query-status");
  EXPECT_FALSE(unstarted->has_value()) << "callback ran inside execute()";
  client_->start();
  ASSERT_TRUE(wait([&] { return fake_->client_connected(); }));
  auto greeting = run("query-status");
  EXPECT_FALSE(greeting->has_value()) << "callback ran inside execute()";
  ASSERT_TRUE(wait([&] { return unstarted->has_value() && greeting->has_value(); }));
  for (const auto& r : {unstarted, greeting}) {
    ASSERT_FALSE(**r);
    EXPECT_EQ((*r)->error().code, ENOTCONN);
  }
}

TEST_F(QmpClientTest, PipelinedCommandsAreAnsweredInOrder) {
  fake();
  fake_->expect("query-status").delay(100ms).returns({{"status", "running"}});
  fake_->expect("query-name").returns({{"name", "web1"}});
  fake_->expect("netdev_del", {{"id", "nic0.tap1"}}).returns();
  connect();

  auto a = run("query-status");
  auto b = run("query-name");
  auto c = run("netdev_del", {{"id", "nic0.tap1"}});
  // All three reach the server while the first is still unanswered: they are
  // written at once, not one per reply.
  ASSERT_TRUE(wait([&] { return fake_->received().size() == 4; }));
  EXPECT_FALSE(a->has_value());

  ASSERT_TRUE(wait_done(c));
  ASSERT_TRUE(**a && **b && **c);
  EXPECT_EQ(***a, json({{"status", "running"}}));
  EXPECT_EQ(***b, json({{"name", "web1"}}));
  EXPECT_EQ(***c, json::object());
  EXPECT_EQ(trace_, (std::vector<std::string>{"connected", R"(reply query-status {"status":"running"})",
                                              R"(reply query-name {"name":"web1"})", "reply netdev_del {}"}));
  std::set<json> ids;
  for (const auto& cmd : fake_->received()) ids.insert(cmd.id);
  EXPECT_EQ(ids.size(), 4u) << "command ids must be unique";
}

TEST_F(QmpClientTest, EventsBetweenRepliesComeInWireOrder) {
  fake();
  fake_->expect("device_del", {{"id", "nic0"}})
      .event_before("E1", {{"n", 1}})
      .returns()
      .event_after("DEVICE_DELETED", {{"device", "nic0"}});
  fake_->expect("query-name").event_before("STOP").returns({{"name", "web1"}});
  connect();
  fake_->emit_event("E0", {{"n", 0}});
  auto a = run("device_del", {{"id", "nic0"}});
  auto b = run("query-name");
  ASSERT_TRUE(wait_done(b));
  EXPECT_TRUE(**a);
  EXPECT_EQ(trace_, (std::vector<std::string>{
                        "connected",
                        R"(event E0 {"n":0})",
                        R"(event E1 {"n":1})",
                        "reply device_del {}",
                        R"(event DEVICE_DELETED {"device":"nic0"})",
                        "event STOP {}",  // no data: an empty object
                        R"(reply query-name {"name":"web1"})",
                    }));
}

TEST_F(QmpClientTest, ErrorReplyCarriesClassAndDescAndSessionStays) {
  fake();
  fake_->expect("netdev_del", {{"id", "nope"}}).error("DeviceNotFound", "Device 'nope' not found");
  fake_->expect("query-status").returns({{"status", "running"}});
  connect();
  auto bad = run("netdev_del", {{"id", "nope"}});
  auto good = run("query-status");
  ASSERT_TRUE(wait_done(good));
  ASSERT_FALSE(**bad);
  EXPECT_EQ((*bad)->error().code, EREMOTEIO);
  EXPECT_EQ((*bad)->error().message, "DeviceNotFound: Device 'nope' not found");
  EXPECT_TRUE(**good);
  EXPECT_TRUE(client_->connected());
  EXPECT_EQ(disconnected_, 0);
}

TEST_F(QmpClientTest, BadLineResetsSessionThenReconnects) {
  struct Case {
    std::string bytes;
    std::string why;
  };
  const std::vector<Case> cases = {
      {"this is not json\r\n", "invalid JSON"},
      {"{\"return\": \r\n", "invalid JSON"},
      {"[1, 2, 3]\r\n", "not a JSON object"},
      {"\"a string\"\r\n", "not a JSON object"},
      {"\r\n", "invalid JSON"},
      {std::string(200'000, '[') + "\r\n", "nested deeper than 64 levels"},  // must not blow the stack
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.bytes.substr(0, 20));
    client_.reset();
    connected_ = disconnected_ = 0;
    fake();
    fake_->expect("query-status").raw(c.bytes);
    fake_->expect("query-status").returns({{"status", "running"}});
    connect();
    auto r = run("query-status");
    ASSERT_TRUE(wait_done(r));
    ASSERT_FALSE(**r);
    EXPECT_EQ((*r)->error().code, ECONNRESET);
    EXPECT_NE((*r)->error().message.find(c.why), std::string::npos) << (*r)->error().message;
    EXPECT_EQ(disconnected_, 1);
    EXPECT_EQ(last_disconnect_.message, (*r)->error().message);

    ASSERT_TRUE(wait([&] { return connected_ == 2; }));
    EXPECT_EQ(fake_->connections(), 2u);
    auto again = run("query-status");
    ASSERT_TRUE(wait_done(again));
    EXPECT_TRUE(**again);
  }
}

TEST_F(QmpClientTest, TenMegabytesWithoutNewlineResetsSession) {
  fake();
  fake_->expect("query-status").raw(std::string(10u << 20, 'x'));
  fake_->expect("query-status").returns({{"status", "running"}});
  connect();
  auto r = run("query-status");
  ASSERT_TRUE(wait_done(r));
  ASSERT_FALSE(**r);
  EXPECT_EQ((*r)->error().code, ECONNRESET);
  EXPECT_NE((*r)->error().message.find("longer than 1048576 bytes"), std::string::npos)
      << (*r)->error().message;
  EXPECT_EQ(disconnected_, 1);

  ASSERT_TRUE(wait([&] { return connected_ == 2; }));
  auto again = run("query-status");
  ASSERT_TRUE(wait_done(again));
  EXPECT_TRUE(**again);
}

TEST_F(QmpClientTest, CommandTimeoutKeepsSessionAndDropsLateReply) {
  QmpOptions opts = fast_options();
  opts.command_timeout_us = 300'000;
  fake();
  fake_->expect("query-status").no_reply();
  fake_->expect("query-name").delay(400ms).returns({{"name", "late"}});
  fake_->expect("query-uuid").returns({{"UUID", "next"}});
  connect(opts);

  const uint64_t t0 = monotonic_us();
  auto lost = run("query-status");
  ASSERT_TRUE(wait_done(lost));
  EXPECT_GE(monotonic_us() - t0, opts.command_timeout_us);
  ASSERT_FALSE(**lost);
  EXPECT_EQ((*lost)->error().code, ETIMEDOUT);
  EXPECT_TRUE(client_->connected());

  // The reply to query-name comes after its timeout, just before the reply
  // to query-uuid (sent after the timeout): it must not be taken for it.
  auto late = run("query-name");
  ASSERT_TRUE(wait_done(late));
  ASSERT_FALSE(**late);
  EXPECT_EQ((*late)->error().code, ETIMEDOUT);
  auto next = run("query-uuid");
  ASSERT_TRUE(wait_done(next));
  ASSERT_TRUE(**next);
  EXPECT_EQ(***next, json({{"UUID", "next"}}));
  EXPECT_EQ(disconnected_, 0);
  EXPECT_EQ(fake_->connections(), 1u);
}

TEST_F(QmpClientTest, GetfdPassesTheCallersFileAndKeepsNoCopy) {
  fake();
  fake_->expect("getfd", {{"fdname", "nic0-1"}}).returns();
  connect();
  int p[2];
  ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
  UniqueFd rd(p[0]), wr(p[1]);
  const size_t fds_before = open_fd_count();

  auto r = run("getfd", {{"fdname", "nic0-1"}}, wr.get());
  ASSERT_TRUE(wait_done(r));
  ASSERT_TRUE(**r);
  ASSERT_EQ(fake_->received().size(), 2u);
  ASSERT_EQ(fake_->received()[1].fds.size(), 1u);
  const int got = fake_->received()[1].fds[0].get();
  EXPECT_TRUE(same_file(got, wr.get()));
  // It is the very pipe: bytes written through it come out of ours.
  ASSERT_EQ(write(got, "hi", 2), 2);
  char buf[2];
  ASSERT_EQ(read(rd.get(), buf, 2), 2);
  EXPECT_EQ(std::string(buf, 2), "hi");
  // Only the fake's copy is new: the client closed its dup, and not ours.
  EXPECT_EQ(open_fd_count(), fds_before + 1);
  EXPECT_GE(fcntl(wr.get(), F_GETFD), 0);
}

TEST_F(QmpClientTest, QueuedCommandsKeepEachFdOnItsOwnCommand) {
  fake();
  // 1 MiB does not fit the socket (about 200 KiB): execute() writes what
  // fits, the rest and everything behind it stays queued and goes out on
  // EPOLLOUT, several commands per sendmsg. Each fd must still start its own
  // sendmsg so it arrives with its command's first byte.
  const std::string blob(1u << 20, 'a');
  fake_->expect("human-monitor-command", {{"command-line", blob}}).returns("");
  fake_->expect("getfd", {{"fdname", "a"}}).returns();
  fake_->expect("query-status").returns();
  fake_->expect("getfd", {{"fdname", "b"}}).returns();
  fake_->expect("netdev_add", {{"fd", "b"}}).returns();
  connect();
  int pa[2], pb[2];
  ASSERT_EQ(pipe2(pa, O_CLOEXEC), 0);
  ASSERT_EQ(pipe2(pb, O_CLOEXEC), 0);
  UniqueFd a0(pa[0]), a1(pa[1]), b0(pb[0]), b1(pb[1]);

  auto r0 = run("human-monitor-command", {{"command-line", blob}});
  auto r1 = run("getfd", {{"fdname", "a"}}, a1.get());
  auto r2 = run("query-status");
  auto r3 = run("getfd", {{"fdname", "b"}}, b1.get());
  auto r4 = run("netdev_add", {{"type", "tap"}, {"id", "t"}, {"fd", "b"}});
  ASSERT_TRUE(wait_done(r4));
  EXPECT_TRUE(**r0 && **r1 && **r2 && **r3 && **r4);
  // The fake fails the test by itself if an fd arrives after a command's
  // first byte or with the wrong command; here, check which fd went where.
  auto& rx = fake_->received();
  ASSERT_EQ(rx.size(), 6u);
  ASSERT_EQ(rx[2].fds.size(), 1u);
  ASSERT_EQ(rx[4].fds.size(), 1u);
  EXPECT_TRUE(same_file(rx[2].fds[0].get(), a1.get()));
  EXPECT_TRUE(same_file(rx[4].fds[0].get(), b1.get()));
}

TEST_F(QmpClientTest, ServerGoneMidCommandThenBack) {
  fake();
  fake_->expect("query-status").no_reply();
  connect();
  auto r = run("query-status");
  ASSERT_TRUE(wait([&] { return fake_->received().size() == 2; }));
  fake_->shutdown();  // QEMU exits with the command unanswered

  ASSERT_TRUE(wait_done(r));
  ASSERT_FALSE(**r);
  EXPECT_EQ((*r)->error().code, ECONNRESET);
  EXPECT_EQ(disconnected_, 1);
  EXPECT_FALSE(client_->connected());
  EXPECT_EQ(client_->peer_pid(), 0);
  // on_disconnected first, then the pending command's failure.
  EXPECT_EQ(trace_, (std::vector<std::string>{"connected", "disconnected", "reply query-status error"}));

  run_for(loop_.get(), 100ms);  // failed attempts meanwhile: not sessions, no callbacks
  EXPECT_EQ(disconnected_, 1);
  EXPECT_EQ(connected_, 1);

  fake_->expect("query-name").returns({{"name", "web1"}});
  fake_->listen();  // QEMU is back
  ASSERT_TRUE(wait([&] { return connected_ == 2; }));
  auto again = run("query-name");
  ASSERT_TRUE(wait_done(again));
  EXPECT_TRUE(**again);
  EXPECT_EQ(disconnected_, 1);
}

TEST_F(QmpClientTest, RetriesUntilTheSocketAppears) {
  fake().shutdown();
  start_client();
  run_for(loop_.get(), 200ms);
  EXPECT_FALSE(client_->connected());
  EXPECT_EQ(connected_, 0);
  EXPECT_EQ(disconnected_, 0);
  fake_->listen();
  ASSERT_TRUE(wait([&] { return connected_ == 1; }));
  EXPECT_EQ(fake_->connections(), 1u);
}

// Accepts connections and closes them at once, noting when each came.
class ClosingListener {
 public:
  ClosingListener(sd_event* loop, const std::string& path) : path_(path) {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    path.copy(addr.sun_path, sizeof addr.sun_path - 1);
    fd_.reset(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    EXPECT_EQ(bind(fd_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    EXPECT_EQ(listen(fd_.get(), 4), 0);
    sd_event_source* s = nullptr;
    EXPECT_GE(sd_event_add_io(loop, &s, fd_.get(), EPOLLIN, &ClosingListener::on_io, this), 0);
    src_.reset(s);
  }
  ~ClosingListener() {
    src_.reset();
    fd_.reset();
    unlink(path_.c_str());
  }
  const std::vector<uint64_t>& times() const { return times_; }

 private:
  static int on_io(sd_event_source*, int fd, uint32_t, void* userdata) {
    auto* self = static_cast<ClosingListener*>(userdata);
    while (UniqueFd(accept4(fd, nullptr, nullptr, SOCK_CLOEXEC))) self->times_.push_back(monotonic_us());
    return 0;
  }
  std::string path_;
  UniqueFd fd_;
  SdEventSourcePtr src_;
  std::vector<uint64_t> times_;
};

TEST_F(QmpClientTest, BackoffDoublesUpToTheCapAndRestartsAfterAStableSession) {
  QmpOptions opts = fast_options();
  opts.reconnect_min_us = 5'000;
  opts.reconnect_max_us = 320'000;
  opts.stable_session_us = 100'000;
  fake().shutdown();
  auto closing = std::make_unique<ClosingListener>(loop_.get(), fake_->path());
  start_client(opts);
  // Each attempt connects and is closed before the greeting: a failed attempt.
  ASSERT_TRUE(wait([&] { return closing->times().size() >= 9; }, 10s));
  const auto& t = closing->times();
  for (size_t i = 1; i < 9; ++i) {
    const uint64_t want = std::min<uint64_t>(opts.reconnect_min_us << (i - 1), opts.reconnect_max_us);
    EXPECT_GE(t[i] - t[i - 1], want) << "attempt " << i;
  }
  EXPECT_LT(t[8] - t[7], 2 * opts.reconnect_max_us) << "backoff not capped";
  EXPECT_EQ(connected_, 0);
  EXPECT_EQ(disconnected_, 0);

  closing.reset();
  fake_->listen();
  ASSERT_TRUE(wait([&] { return connected_ == 1; }));
  run_for(loop_.get(), 150ms);  // longer than stable_session_us
  const uint64_t lost = monotonic_us();
  fake_->drop_client();
  ASSERT_TRUE(wait([&] { return connected_ == 2; }));
  EXPECT_LT(monotonic_us() - lost, opts.reconnect_max_us) << "backoff did not restart at the minimum";
  EXPECT_EQ(disconnected_, 1);
}

TEST_F(QmpClientTest, NoOrWrongGreetingTimesOutOrFailsAndRetries) {
  for (const std::string greeting : {"", R"({"hello": "world"})"}) {
    SCOPED_TRACE("greeting: " + greeting);
    client_.reset();
    QmpOptions opts = fast_options();
    opts.connect_timeout_us = 50'000;
    fake(FakeQmp::Options{.greeting = greeting});
    start_client(opts);
    ASSERT_TRUE(wait([&] { return fake_->connections() >= 3; }));
    EXPECT_EQ(connected_, 0);
    EXPECT_EQ(disconnected_, 0);
    EXPECT_FALSE(client_->connected());
    // Never negotiated: the client did not send qmp_capabilities blindly.
    EXPECT_TRUE(fake_->received().empty());
  }
}

TEST_F(QmpClientTest, StopCancelsPendingAndStaysDown) {
  fake();
  fake_->expect("query-status").no_reply();
  connect();
  auto r = run("query-status");
  ASSERT_TRUE(wait([&] { return fake_->received().size() == 2; }));
  client_->stop();
  EXPECT_FALSE(r->has_value()) << "callback ran inside stop()";
  EXPECT_FALSE(client_->connected());
  ASSERT_TRUE(wait_done(r));
  ASSERT_FALSE(**r);
  EXPECT_EQ((*r)->error().code, ECANCELED);
  EXPECT_EQ(disconnected_, 0);  // stop() is not a lost session
  ASSERT_TRUE(wait([&] { return !fake_->client_connected(); }));
  run_for(loop_.get(), 100ms);
  EXPECT_EQ(fake_->connections(), 1u) << "reconnected after stop()";

  auto after = run("query-status");
  ASSERT_TRUE(wait_done(after));
  EXPECT_EQ((*after)->error().code, ENOTCONN);

  client_->start();
  ASSERT_TRUE(wait([&] { return connected_ == 2; }));
}

TEST_F(QmpClientTest, DestroyedClientNeverCallsBack) {
  fake();
  fake_->expect("query-status").delay(50ms).returns();
  connect();
  auto pending = run("query-status");
  client_->stop();
  auto deferred = run("query-name");  // ENOTCONN, queued for the next iteration
  client_.reset();
  run_for(loop_.get(), 150ms);
  EXPECT_FALSE(pending->has_value());
  EXPECT_FALSE(deferred->has_value());
}

TEST_F(QmpClientTest, CallbackMayDestroyTheClient) {
  fake();
  // Both events and the reply arrive in one read; the first event's handler
  // deletes the client, which must then stop reading that buffer.
  fake_->expect("query-status").event_before("E1").event_before("E2").returns();
  connect();
  int events = 0;
  on_event_hook_ = [&] {
    ++events;
    client_.reset();
  };
  auto r = run("query-status");
  ASSERT_TRUE(wait([&] { return events > 0; }));
  run_for(loop_.get(), 100ms);
  EXPECT_EQ(events, 1);
  EXPECT_FALSE(r->has_value());
}

TEST_F(QmpClientTest, CallbackMayDestroyTheClientAmongCancellations) {
  fake();
  fake_->expect("query-status").no_reply();
  fake_->expect("query-name").no_reply();
  connect();
  int calls = 0;
  auto destroy = [&](QmpReply) {
    ++calls;
    client_.reset();
  };
  client_->execute("query-status", nullptr, destroy);
  client_->execute("query-name", nullptr, destroy);
  ASSERT_TRUE(wait([&] { return fake_->received().size() == 3; }));
  client_->stop();  // both complete with ECANCELED in one deferred batch
  ASSERT_TRUE(wait([&] { return calls > 0; }));
  run_for(loop_.get(), 50ms);
  EXPECT_EQ(calls, 1);
}

}  // namespace
}  // namespace relink::qemu

namespace relink::qemu {
namespace {

// A peer that greets, negotiates and then drops every session at once must
// not be reconnected faster than the backoff: only a session that stayed up
// for stable_session_us starts the wait over.
TEST_F(QmpClientTest, SessionsDroppedAtOnceKeepTheBackoffGrowing) {
  QmpOptions opts = fast_options();
  opts.reconnect_min_us = 5'000;
  opts.reconnect_max_us = 160'000;
  opts.stable_session_us = 10'000'000;
  fake();
  on_connected_hook_ = [&] { fake_->drop_client(); };
  start_client(opts);
  run_for(loop_.get(), 1000ms);
  // 5+10+20+40+80+160+160+... ms: about 9 sessions in a second; a backoff
  // reset by each handshake would give well over 100.
  EXPECT_GE(connected_, 4);
  EXPECT_LE(connected_, 12);
  EXPECT_EQ(disconnected_, connected_);
}

// While nobody listens, the client retries with backoff and then waits for
// the socket to appear (inotify), with no timer: an offline VM costs no
// wakeups. The socket appearing connects at once.
TEST_F(QmpClientTest, AnAbsentSocketIsAwaitedWithoutPolling) {
  QmpOptions opts = fast_options();
  opts.reconnect_min_us = 5'000;
  opts.reconnect_max_us = 40'000;
  opts.slow_poll_us = 60'000'000;
  int attempts = 0;
  opts.connector = [&attempts](const std::string& path) -> Result<UniqueFd> {
    ++attempts;
    UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    path.copy(addr.sun_path, sizeof addr.sun_path - 1);
    if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0) return Error::last("connect " + path);
    return fd;
  };
  fake().shutdown();
  start_client(opts);
  run_for(loop_.get(), 300ms);  // 5+10+20+40 ms of backoff, then quiet
  const int settled = attempts;
  EXPECT_GE(settled, 4);
  EXPECT_LE(settled, 8);
  run_for(loop_.get(), 500ms);
  EXPECT_EQ(attempts, settled) << "the client polled for an absent socket";
  EXPECT_NE(client_->last_error().find("No such file"), std::string::npos) << client_->last_error();
  const uint64_t t0 = monotonic_us();
  fake_->listen();
  ASSERT_TRUE(wait([&] { return connected_ == 1; }, 2s));
  EXPECT_LT(monotonic_us() - t0, 500'000u);
}

// The socket's directory may not exist yet either (/run/qemu before the
// first VM): the watch follows the path down as it is created.
TEST_F(QmpClientTest, AWatchFollowsMissingDirectoriesDown) {
  QmpOptions opts = fast_options();
  opts.reconnect_min_us = 5'000;
  opts.reconnect_max_us = 20'000;
  opts.slow_poll_us = 60'000'000;
  fake().shutdown();
  char tmpl[] = "/tmp/relink-watch-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  const std::string root = tmpl;
  const std::string sock = root + "/a/b/vm.qmp";
  QmpClient::Callbacks cbs;
  cbs.on_connected = [this] { ++connected_; };
  client_ = std::make_unique<QmpClient>(loop_.get(), sock, std::move(cbs), opts);
  client_->start();
  run_for(loop_.get(), 200ms);
  std::filesystem::create_directory(root + "/a");
  run_for(loop_.get(), 50ms);
  std::filesystem::create_directory(root + "/a/b");
  run_for(loop_.get(), 50ms);
  fake_->listen();  // in the fake's own directory: no event here yet
  run_for(loop_.get(), 50ms);
  EXPECT_EQ(connected_, 0);
  const uint64_t t0 = monotonic_us();
  ASSERT_EQ(symlink(fake_->path().c_str(), sock.c_str()), 0);
  EXPECT_TRUE(wait([&] { return connected_ == 1; }, 2s));
  EXPECT_LT(monotonic_us() - t0, 500'000u);
  client_.reset();
  std::filesystem::remove_all(root);
}

TEST_F(QmpClientTest, ARefusedPeerGetsNothingAndIsReported) {
  QmpOptions opts = fast_options();
  opts.verify_peer = [](int, const std::string& path) -> Result<void> {
    return Error{EPERM, "QMP socket " + path + " is not QEMU's"};
  };
  fake();
  start_client(opts);
  ASSERT_TRUE(wait([&] { return !refusals_.empty(); }));
  run_for(loop_.get(), 100ms);
  EXPECT_EQ(connected_, 0);
  EXPECT_FALSE(client_->connected());
  EXPECT_TRUE(fake_->received().empty()) << "a refused peer was sent a command";
  EXPECT_NE(refusals_[0].find("is not QEMU's"), std::string::npos);
  EXPECT_NE(client_->last_error().find("is not QEMU's"), std::string::npos);
  auto out = run("getfd", {{"fdname", "x"}}, 0);
  ASSERT_TRUE(wait_done(out));
  EXPECT_FALSE(**out);
}

// What the review found crashing relinkd, at the client: each is a reset
// session with a reason, never an exception.
TEST_F(QmpClientTest, HostileGreetingsAndMessagesResetTheSession) {
  struct Case {
    std::string greeting;
    std::string want;
  };
  const std::string deep = std::string(60000, '[') + std::string(60000, ']');
  std::string accents;
  for (int i = 0; i < 100; ++i) accents += "\xc3\xa9";
  for (const Case& c : std::vector<Case>{
           {R"({"QMP": 1e400})", "number out of range"},
           {R"({"QMP": {"x": )" + deep + "}}", "nested deeper than 64"},
           {"{\"xy\": \"" + accents + "\"}", "expected a QMP greeting"},
           {"{\"QMP\": \"\xff\xfe\"}", "invalid JSON"},
           {std::string("{\"QMP\": \"a\0b\"}", 14), "invalid JSON"},
       }) {
    SCOPED_TRACE(c.want);
    client_.reset();
    fake(FakeQmp::Options{.greeting = c.greeting});
    start_client();
    ASSERT_TRUE(wait([&] { return fake_->connections() >= 2; }));
    EXPECT_EQ(connected_, 0);
    const std::string err = client_->last_error();
    EXPECT_NE(err.find(c.want), std::string::npos) << err;
    // Whatever the peer sent, what is kept is valid UTF-8 that serialises.
    EXPECT_NO_THROW((void)json(err).dump());
    EXPECT_LE(err.size(), 400u);
  }
}

TEST_F(QmpClientTest, DeepEventsAndRepliesWithoutIdAreDroppedSafely) {
  std::string nested;
  for (int i = 0; i < 60000; ++i) nested += "{\"a\":";
  nested += "1" + std::string(60000, '}');
  auto& f = fake();
  f.expect("query-status").raw("{\"event\": \"X\", \"data\": " + nested + "}\n{\"return\": " + nested + "}\n");
  connect();
  auto out = run("query-status");
  ASSERT_TRUE(wait_done(out));
  EXPECT_FALSE(**out);  // the session was reset under it
  EXPECT_NE(client_->last_error().find("nested deeper"), std::string::npos) << client_->last_error();
  ASSERT_TRUE(wait([&] { return connected_ == 2; }));
}

// A QEMU that stops answering is not given ever more to queue: a few
// timeouts in a row end the session, and the client connects again.
TEST_F(QmpClientTest, TimeoutsInARowResetTheSession) {
  QmpOptions opts = fast_options();
  opts.command_timeout_us = 200'000;
  opts.max_consecutive_timeouts = 3;
  fake();
  for (int i = 0; i < 3; ++i) fake_->expect("query-status").no_reply();
  connect(opts);
  auto a = run("query-status");
  auto b = run("query-status");
  ASSERT_TRUE(wait_done(a) && wait_done(b));
  EXPECT_EQ((*a)->error().code, ETIMEDOUT);
  EXPECT_TRUE(client_->connected()) << "two timeouts in a row are not yet a hung QEMU";
  auto c = run("query-status");
  ASSERT_TRUE(wait_done(c));
  ASSERT_TRUE(wait([&] { return disconnected_ == 1; }));
  EXPECT_NE(last_disconnect_.message.find("3 commands in a row got no answer"), std::string::npos)
      << last_disconnect_.message;
  EXPECT_TRUE(wait([&] { return connected_ == 2; })) << "no new session after the reset";
}

// Commands a QEMU leaves unanswered are capped: the one over the cap fails
// at once (ENOBUFS, from the loop, not inside execute) and the session is
// reset, so what the peer can make relinkd hold stays bounded.
TEST_F(QmpClientTest, TooManyUnansweredCommandsResetTheSession) {
  QmpOptions opts = fast_options();
  opts.command_timeout_us = 5'000'000;
  opts.max_pending = 4;
  fake();
  for (int i = 0; i < 4; ++i) fake_->expect("query-status").no_reply();
  connect(opts);
  std::vector<Outcome> sent;
  for (int i = 0; i < 4; ++i) sent.push_back(run("query-status"));
  bool inside = true;
  auto over = std::make_shared<std::optional<QmpReply>>();
  client_->execute("query-status", nullptr, [&inside, over](QmpReply r) {
    EXPECT_FALSE(inside) << "callback ran inside execute()";
    over->emplace(std::move(r));
  });
  inside = false;
  ASSERT_TRUE(wait_done(over));
  ASSERT_FALSE(**over);
  EXPECT_EQ((*over)->error().code, ENOBUFS);
  EXPECT_NE((*over)->error().message.find("4 commands unanswered"), std::string::npos) << (*over)->error().message;
  ASSERT_TRUE(wait([&] { return disconnected_ == 1; }));
  for (auto& o : sent) {
    ASSERT_TRUE(wait_done(o));
    EXPECT_FALSE(**o);
  }
  EXPECT_TRUE(wait([&] { return connected_ == 2; }));
}

// After a reload changed what makes a peer acceptable, a session already up
// is checked again: one that no longer passes is dropped and reported.
TEST_F(QmpClientTest, ReverifyDropsAPeerThatNoLongerPasses) {
  QmpOptions opts = fast_options();
  bool allowed = true;
  opts.verify_peer = [&allowed](int, const std::string&) -> Result<void> {
    if (allowed) return ok();
    return Error{EPERM, "no longer QEMU enough"};
  };
  fake();
  connect(opts);
  client_->reverify();
  run_for(loop_.get(), 50ms);
  EXPECT_TRUE(client_->connected());
  allowed = false;
  client_->reverify();
  EXPECT_TRUE(client_->connected()) << "reverify acts from the loop, not inside the call";
  ASSERT_TRUE(wait([&] { return disconnected_ == 1; }));
  ASSERT_FALSE(refusals_.empty());
  EXPECT_NE(refusals_.back().find("no longer QEMU enough"), std::string::npos);
  run_for(loop_.get(), 100ms);
  EXPECT_FALSE(client_->connected());
}

}  // namespace
}  // namespace relink::qemu
