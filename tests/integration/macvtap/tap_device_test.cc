// SPDX-License-Identifier: GPL-2.0-or-later
// open_tap_queues() on a real macvtap, with a stand-in for /dev so that every
// state of the tap<ifindex> node can be staged without touching the real one.
#include "macvtap/tap_device.h"

#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <memory>

#include "macvtap_helpers.h"
#include "support/harness.h"

namespace relink::macvtap {
namespace {

using mvtest::dev_text;
using mvtest::dir_is_empty;
using mvtest::expect_queue_fd;
using mvtest::fd_path;
using mvtest::TempDir;

class TapDeviceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    RELINK_REQUIRE_ROOT();
    ns_ = std::make_unique<test::Netns>("tap");
    ns_->ip("link add v0 type veth peer name v1");
    ns_->ip("link add link v0 name mvt0 type macvtap");
    ifindex_ = ns_->ifindex("mvt0");
    ASSERT_GT(ifindex_, 0);
    const std::string text = mvtest::sysfs_dev_text(*ns_, "mvt0", ifindex_);
    unsigned maj = 0, min = 0;
    ASSERT_EQ(sscanf(text.c_str(), "%u:%u", &maj, &min), 2) << text;
    dev_ = makedev(maj, min);
    ASSERT_FALSE(dev_dir_.path().empty());
    ASSERT_FALSE(scratch_.path().empty());
    dirs_.dev_dir = dev_dir_.path();
    dirs_.node_dir = scratch_ / "nodes";
  }

  std::string dev_node() const { return dev_dir_ / ("tap" + std::to_string(ifindex_)); }

  std::unique_ptr<test::Netns> ns_;
  int ifindex_ = 0;
  dev_t dev_ = 0;
  TempDir dev_dir_;  // stands in for /dev
  TempDir scratch_;
  TapNodeDirs dirs_;
};

TEST_F(TapDeviceTest, UsesDevNodeWhenItIsTheDevice) {
  ASSERT_EQ(mknod(dev_node().c_str(), S_IFCHR | 0600, dev_), 0) << strerror(errno);
  auto fds = open_tap_queues(dirs_, ifindex_, dev_, 2);
  ASSERT_TRUE(fds) << fds.error().message;
  ASSERT_EQ(fds->size(), 2u);
  for (const auto& fd : *fds) {
    expect_queue_fd(fd.get(), dev_, "mvt0", true);
    EXPECT_EQ(fd_path(fd.get()), dev_node());
  }
  struct stat st {};
  EXPECT_NE(stat(dirs_.node_dir.c_str(), &st), 0) << "node dir made only when needed";
}

TEST_F(TapDeviceTest, MakesPrivateNodeWhenDevNodeIsMissing) {
  auto fds = open_tap_queues(dirs_, ifindex_, dev_, 1);
  ASSERT_TRUE(fds) << fds.error().message;
  ASSERT_EQ(fds->size(), 1u);
  expect_queue_fd((*fds)[0].get(), dev_, "mvt0", false);
  const std::string path = fd_path((*fds)[0].get());
  EXPECT_EQ(path.rfind(dirs_.node_dir + "/tap" + std::to_string(ifindex_) + ".", 0), 0u) << path;
  EXPECT_NE(path.find("(deleted)"), std::string::npos) << path;

  struct stat st {};
  ASSERT_EQ(lstat(dirs_.node_dir.c_str(), &st), 0);
  EXPECT_TRUE(S_ISDIR(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  EXPECT_TRUE(dir_is_empty(dirs_.node_dir));
}

TEST_F(TapDeviceTest, MakesPrivateNodeWhenDevNodeIsAnotherDevice) {
  const dev_t null_dev = makedev(1, 3);  // /dev/null: a stale or foreign node
  ASSERT_EQ(mknod(dev_node().c_str(), S_IFCHR | 0600, null_dev), 0) << strerror(errno);
  auto fds = open_tap_queues(dirs_, ifindex_, dev_, 3);
  ASSERT_TRUE(fds) << fds.error().message;
  ASSERT_EQ(fds->size(), 3u);
  for (const auto& fd : *fds) {
    expect_queue_fd(fd.get(), dev_, "mvt0", true);
    EXPECT_EQ(fd_path(fd.get()).rfind(dirs_.node_dir + "/", 0), 0u);
  }
  struct stat st {};
  ASSERT_EQ(stat(dev_node().c_str(), &st), 0);
  EXPECT_EQ(dev_text(st.st_rdev), "1:3") << "the foreign node is left alone";
  EXPECT_TRUE(dir_is_empty(dirs_.node_dir));
}

TEST_F(TapDeviceTest, RefusesNodeDirOthersCanReach) {
  ASSERT_EQ(mkdir(dirs_.node_dir.c_str(), 0700), 0);
  ASSERT_EQ(chmod(dirs_.node_dir.c_str(), 0755), 0);
  auto fds = open_tap_queues(dirs_, ifindex_, dev_, 1);
  ASSERT_FALSE(fds);
  EXPECT_EQ(fds.error().code, EPERM);
  EXPECT_NE(fds.error().message.find(dev_node()), std::string::npos) << fds.error().message;
  EXPECT_NE(fds.error().message.find("node dir " + dirs_.node_dir), std::string::npos)
      << fds.error().message;
  EXPECT_TRUE(dir_is_empty(dirs_.node_dir));
}

TEST_F(TapDeviceTest, RefusesSymlinkedNodeDir) {
  const std::string target = scratch_ / "elsewhere";
  ASSERT_EQ(mkdir(target.c_str(), 0700), 0);
  ASSERT_EQ(symlink(target.c_str(), dirs_.node_dir.c_str()), 0);
  auto fds = open_tap_queues(dirs_, ifindex_, dev_, 1);
  ASSERT_FALSE(fds);
  EXPECT_EQ(fds.error().code, ENOTDIR) << fds.error().message;
  EXPECT_TRUE(dir_is_empty(target));
}

TEST_F(TapDeviceTest, RefusesNodevNodeDir) {
  // A detached nodev tmpfs, reached through its mount fd: nothing to unmount.
  UniqueFd fs(fsopen("tmpfs", FSOPEN_CLOEXEC));
  ASSERT_TRUE(fs) << strerror(errno);
  ASSERT_EQ(fsconfig(fs.get(), FSCONFIG_CMD_CREATE, nullptr, nullptr, 0), 0) << strerror(errno);
  UniqueFd mnt(fsmount(fs.get(), FSMOUNT_CLOEXEC, MOUNT_ATTR_NODEV));
  ASSERT_TRUE(mnt) << strerror(errno);
  dirs_.node_dir = "/proc/self/fd/" + std::to_string(mnt.get()) + "/nodes";
  auto fds = open_tap_queues(dirs_, ifindex_, dev_, 1);
  ASSERT_FALSE(fds);
  EXPECT_EQ(fds.error().code, EACCES);
  EXPECT_NE(fds.error().message.find("nodev"), std::string::npos) << fds.error().message;
}

TEST_F(TapDeviceTest, GoneDeviceIsErrorAndLeavesNoNode) {
  ns_->ip("link del mvt0");
  auto fds = open_tap_queues(dirs_, ifindex_, dev_, 1);
  ASSERT_FALSE(fds);
  EXPECT_NE(fds.error().message.find("open " + dirs_.node_dir + "/tap"), std::string::npos)
      << fds.error().message;
  EXPECT_TRUE(dir_is_empty(dirs_.node_dir));
}

}  // namespace
}  // namespace relink::macvtap
