// SPDX-License-Identifier: GPL-2.0-or-later
// Who holds a macvtap, against the real kernel: a queue fd of a live macvtap
// is live and names it; once the macvtap is deleted the fd is dead, and stays
// dead when a new macvtap takes over its major:minor (the minor is reused at
// once), which the device number alone cannot tell.
#include "macvtap/tap_holders.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cstdio>
#include <memory>
#include <string>

#include "support/harness.h"
#include "util/unique_fd.h"

namespace relink::macvtap {
namespace {

class TapHolders : public ::testing::Test {
 protected:
  void SetUp() override {
    RELINK_REQUIRE_ROOT();
    ns_ = std::make_unique<test::Netns>("holders");
    ns_->ip("link add v0 type veth peer name v1");
    ns_->ip("link set v0 up");
    char tmpl[] = "/tmp/relink-holders-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    if (!dir_.empty()) test::sh("rm -rf " + dir_);
  }
  // Makes macvtap `name` on v0 and returns its device number.
  dev_t make(const std::string& name) {
    ns_->ip("link add link v0 name " + name + " type macvtap mode bridge");
    ns_->ip("link set " + name + " up");
    const int ifindex = ns_->ifindex(name);
    const std::string text =
        ns_->run("cat /sys/class/net/" + name + "/macvtap/tap" + std::to_string(ifindex) + "/dev").out;
    unsigned maj = 0, min = 0;
    EXPECT_EQ(sscanf(text.c_str(), "%u:%u", &maj, &min), 2) << text;
    return makedev(maj, min);
  }
  // Opens the device through a node of our own (as relinkd's factory may).
  UniqueFd open_dev(dev_t dev) {
    const std::string node = dir_ + "/node" + std::to_string(++nodes_);
    EXPECT_EQ(mknod(node.c_str(), S_IFCHR | 0600, dev), 0);
    UniqueFd fd(::open(node.c_str(), O_RDWR | O_CLOEXEC));
    unlink(node.c_str());
    return fd;
  }

  std::unique_ptr<test::Netns> ns_;
  std::string dir_;
  int nodes_ = 0;
};

TEST_F(TapHolders, ADeadQueueWhoseMinorWasReusedIsNotHeld) {
  const dev_t first = make("mt0");
  UniqueFd fd = open_dev(first);
  ASSERT_TRUE(fd);
  EXPECT_EQ(fd_liveness(getpid(), fd.get(), "mt0"), Liveness::Live);
  EXPECT_EQ(fd_liveness(getpid(), fd.get(), "other"), Liveness::Dead);
  EXPECT_TRUE(holds_live(getpid(), first, "mt0"));
  EXPECT_TRUE(anyone_holds_live(first, "mt0"));

  ns_->ip("link del mt0");
  EXPECT_EQ(fd_liveness(getpid(), fd.get(), "mt0"), Liveness::Dead);
  // The next macvtap gets the freed minor: same device number as our dead fd.
  const dev_t second = make("mt1");
  // Another process on the machine may have taken the minor first; then the
  // dead fd simply has another number, and the checks below still hold.
  if (second == first) EXPECT_EQ(fds_of_device(getpid(), second).size(), 1u);
  else printf("note: the freed minor went to another macvtap of the machine\n");
  EXPECT_EQ(fd_liveness(getpid(), fd.get(), "mt1"), Liveness::Dead);
  EXPECT_FALSE(holds_live(getpid(), second, "mt1"));
  EXPECT_FALSE(anyone_holds_live(second, "mt1"));
  UniqueFd live = open_dev(second);
  EXPECT_TRUE(holds_live(getpid(), second, "mt1"));
}

// Without pidfd_getfd (a unit's seccomp filter), the node says what it can.
TEST_F(TapHolders, TheNodeAloneTellsADevtmpfsQueueDeadOrAlive) {
  const dev_t dev = make("mt2");
  const std::string node = "/dev/tap" + std::to_string(ns_->ifindex("mt2"));
  struct stat st {};
  if (stat(node.c_str(), &st) != 0 || st.st_rdev != dev) {
    printf("note: %s is missing or another namespace's macvtap; checking the private node only\n", node.c_str());
  } else {
    UniqueFd fd(::open(node.c_str(), O_RDWR | O_CLOEXEC));
    ASSERT_TRUE(fd);
    EXPECT_EQ(fd_liveness_by_node(getpid(), fd.get()), Liveness::Live);
    ns_->ip("link del mt2");
    ASSERT_TRUE(test::wait_until([&] { return ::access(node.c_str(), F_OK) != 0; }, std::chrono::seconds(2)));
    EXPECT_EQ(fd_liveness_by_node(getpid(), fd.get()), Liveness::Dead);
    return;
  }
  UniqueFd priv = open_dev(dev);
  EXPECT_EQ(fd_liveness_by_node(getpid(), priv.get()), Liveness::Unknown);
}

}  // namespace
}  // namespace relink::macvtap
