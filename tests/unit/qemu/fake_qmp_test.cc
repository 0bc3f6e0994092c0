// SPDX-License-Identifier: GPL-2.0-or-later
// The fake QMP server must fail tests on what a real client could get wrong,
// or client tests built on it prove nothing.
#include "support/fake_qmp.h"

#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest-spi.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <cstring>
#include <string>
#include <vector>

namespace relink::test {
namespace {

using ::testing::HasSubstr;
using namespace std::chrono_literals;

// Writes exactly what a test wants, one sendmsg per send(), fds included.
class RawClient {
 public:
  explicit RawClient(const std::string& path) : fd_(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    path.copy(addr.sun_path, sizeof addr.sun_path - 1);
    EXPECT_EQ(connect(fd_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  }
  void send(const std::string& bytes, int fd = -1) {
    iovec iov{const_cast<char*>(bytes.data()), bytes.size()};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
    if (fd >= 0) {
      msg.msg_control = control;
      msg.msg_controllen = sizeof control;
      cmsghdr* c = CMSG_FIRSTHDR(&msg);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN(sizeof(int));
      std::memcpy(CMSG_DATA(c), &fd, sizeof fd);
    }
    EXPECT_EQ(sendmsg(fd_.get(), &msg, MSG_NOSIGNAL), static_cast<ssize_t>(bytes.size()));
  }
  std::string read_available() {
    std::string out;
    char buf[4096];
    ssize_t n;
    while ((n = recv(fd_.get(), buf, sizeof buf, MSG_DONTWAIT)) > 0) out.append(buf, static_cast<size_t>(n));
    return out;
  }

 private:
  UniqueFd fd_;
};

// Messages of the test failures `fn` causes, kept from failing this test.
std::vector<std::string> failures_during(const std::function<void()>& fn) {
  ::testing::TestPartResultArray results;
  {
    ::testing::ScopedFakeTestPartResultReporter reporter(
        ::testing::ScopedFakeTestPartResultReporter::INTERCEPT_ONLY_CURRENT_THREAD, &results);
    fn();
  }
  std::vector<std::string> out;
  for (int i = 0; i < results.size(); ++i) out.emplace_back(results.GetTestPartResult(i).message());
  return out;
}

constexpr const char* kCaps = "{\"execute\": \"qmp_capabilities\"}\n";

class FakeQmpTest : public ::testing::Test {
 protected:
  FakeQmpTest() {
    sd_event* e = nullptr;
    EXPECT_GE(sd_event_new(&e), 0);
    loop_.reset(e);
    int p[2];
    EXPECT_EQ(pipe2(p, O_CLOEXEC), 0);
    pipe_rd_.reset(p[0]);
    pipe_wr_.reset(p[1]);
  }
  bool wait_received(FakeQmp& fake, size_t n) {
    return run_until(loop_.get(), [&] { return fake.received().size() >= n; }, 2s);
  }
  SdEventPtr loop_;
  UniqueFd pipe_rd_, pipe_wr_;
};

TEST_F(FakeQmpTest, FdInTheMiddleOfACommandFails) {
  FakeQmp fake(loop_.get());
  fake.expect("getfd", {{"fdname", "x"}}).returns();
  RawClient c(fake.path());
  auto failures = failures_during([&] {
    c.send(kCaps);
    c.send("{\"execute\": \"getfd\", ");
    c.send("\"arguments\": {\"fdname\": \"x\"}}\n", pipe_wr_.get());
    ASSERT_TRUE(wait_received(fake, 2));
  });
  ASSERT_EQ(failures.size(), 1u);
  EXPECT_THAT(failures[0], HasSubstr("in the middle of a command"));
}

TEST_F(FakeQmpTest, FdOnTheWrongCommandFails) {
  FakeQmp fake(loop_.get());
  fake.expect("query-status").returns();
  fake.expect("getfd", {{"fdname", "x"}}).returns();
  RawClient c(fake.path());
  auto failures = failures_during([&] {
    c.send(kCaps);
    // One sendmsg for both: the fd comes with query-status's first byte.
    c.send("{\"execute\": \"query-status\"}\n{\"execute\": \"getfd\", \"arguments\": {\"fdname\": \"x\"}}\n",
           pipe_wr_.get());
    ASSERT_TRUE(wait_received(fake, 3));
  });
  ASSERT_EQ(failures.size(), 2u);
  EXPECT_THAT(failures[0], HasSubstr("query-status came with 1 fds, expected 0"));
  EXPECT_THAT(failures[1], HasSubstr("getfd came with 0 fds, expected 1"));
}

TEST_F(FakeQmpTest, FdOnTheFirstByteIsTheCommands) {
  FakeQmp fake(loop_.get());
  fake.expect("query-status").returns();
  fake.expect("add-fd").fds(1).returns({{"fdset-id", 0}, {"fd", 42}});
  RawClient c(fake.path());
  c.send(kCaps);
  c.send("{\"execute\": \"query-status\"}\n");
  c.send("{\"execute\": \"add-fd\", \"id\": 9}\n", pipe_wr_.get());
  ASSERT_TRUE(wait_received(fake, 3));
  EXPECT_EQ(fake.expectations_left(), 0u);
  EXPECT_TRUE(fake.received()[1].fds.empty());
  ASSERT_EQ(fake.received()[2].fds.size(), 1u);
  EXPECT_THAT(c.read_available(), HasSubstr(R"({"id":9,"return":{"fd":42,"fdset-id":0}})"));
}

TEST_F(FakeQmpTest, WrongArgumentsAndUnexpectedCommandsFailAndGetAnError) {
  FakeQmp fake(loop_.get());
  fake.expect("netdev_del", {{"id", "a"}}).returns();
  RawClient c(fake.path());
  auto failures = failures_during([&] {
    c.send(kCaps);
    c.send("{\"execute\": \"netdev_del\", \"arguments\": {\"id\": \"b\"}, \"id\": 1}\n");
    c.send("{\"execute\": \"quit\", \"id\": 2}\n");
    ASSERT_TRUE(wait_received(fake, 3));
  });
  ASSERT_EQ(failures.size(), 2u);
  EXPECT_THAT(failures[0], HasSubstr("argument id should be \"a\""));
  EXPECT_THAT(failures[1], HasSubstr("unexpected command"));
  EXPECT_THAT(c.read_available(),
              HasSubstr(R"({"error":{"class":"GenericError","desc":"fake QMP: unexpected command"},"id":2})"));
}

TEST_F(FakeQmpTest, CommandBeforeCapabilitiesFailsLikeQemu) {
  FakeQmp fake(loop_.get());
  RawClient c(fake.path());
  auto failures = failures_during([&] {
    c.send("{\"execute\": \"query-status\"}\n");
    ASSERT_TRUE(wait_received(fake, 1));
  });
  ASSERT_EQ(failures.size(), 1u);
  EXPECT_THAT(failures[0], HasSubstr("before qmp_capabilities"));
  EXPECT_THAT(c.read_available(), HasSubstr("Expecting capabilities negotiation"));
}

TEST_F(FakeQmpTest, ExpectationLeftOverFailsOnDestruction) {
  auto failures = failures_during([&] {
    FakeQmp fake(loop_.get());
    fake.expect("device_del");
  });
  ASSERT_EQ(failures.size(), 1u);
  EXPECT_THAT(failures[0], HasSubstr("device_del"));
}

}  // namespace
}  // namespace relink::test
