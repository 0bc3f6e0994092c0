// SPDX-License-Identifier: GPL-2.0-or-later
// trusted_dir.h: what relinkd creates, and what it refuses to trust.
#include "util/trusted_dir.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <string>

namespace relink::trusted {
namespace {

namespace fs = std::filesystem;

class TrustedDir : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "relink-trusted-XXXXXX").string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    root_ = tmpl;
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(root_, ec);
  }
  static mode_t mode_of(const std::string& path) {
    struct stat st {};
    return lstat(path.c_str(), &st) == 0 ? st.st_mode & 07777 : 0;
  }
  void expect_refused(const Result<UniqueFd>& r, const std::string& path, const std::string& why) {
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, EPERM) << r.error().message;
    EXPECT_NE(r.error().message.find(path), std::string::npos) << r.error().message;
    EXPECT_NE(r.error().message.find(why), std::string::npos) << r.error().message;
  }
  std::string root_;
};

TEST_F(TrustedDir, CreatesMissingWithExactModeWhateverTheUmask) {
  const mode_t old = umask(0077);
  auto top = open_dir(root_ + "/state/", 0755);
  umask(old);
  ASSERT_TRUE(top) << top.error().message;
  EXPECT_EQ(mode_of(root_ + "/state"), 0755u);
  auto sub = open_subdir(top->get(), "passt", 0700, true, root_ + "/state/passt");
  ASSERT_TRUE(sub) << sub.error().message;
  EXPECT_EQ(mode_of(root_ + "/state/passt"), 0700u);
  // Existing and fine: opened as it is.
  ASSERT_TRUE(open_dir(root_ + "/state", 0700));
  EXPECT_EQ(mode_of(root_ + "/state"), 0755u);
  // Missing, not to be created.
  auto none = open_subdir(top->get(), "vm1", 0700, false, root_ + "/state/vm1");
  ASSERT_FALSE(none);
  EXPECT_EQ(none.error().code, ENOENT);
  EXPECT_FALSE(fs::exists(root_ + "/state/vm1"));
}

TEST_F(TrustedDir, WritableByOthersIsRefusedWithOwnerModeAndRemedy) {
  ASSERT_EQ(mkdir((root_ + "/state").c_str(), 0755), 0);
  ASSERT_EQ(chmod((root_ + "/state").c_str(), 0777), 0);
  auto r = open_dir(root_ + "/state", 0755);
  expect_refused(r, root_ + "/state", "writable by group or others");
  EXPECT_NE(r.error().message.find("mode 0777"), std::string::npos) << r.error().message;
  EXPECT_NE(r.error().message.find("chmod"), std::string::npos) << r.error().message;
  EXPECT_EQ(mode_of(root_ + "/state"), 0777u) << "refused, not repaired behind the admin's back";
  ASSERT_EQ(chmod((root_ + "/state").c_str(), 0775), 0);
  expect_refused(open_dir(root_ + "/state", 0755), root_ + "/state", "writable by group or others");
}

TEST_F(TrustedDir, OwnedByAnotherUserIsRefused) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to give a directory away";
  ASSERT_EQ(mkdir((root_ + "/state").c_str(), 0755), 0);
  ASSERT_EQ(chown((root_ + "/state").c_str(), 65534, 65534), 0);
  auto r = open_dir(root_ + "/state", 0755);
  expect_refused(r, root_ + "/state", "is not owned by root");
  EXPECT_NE(r.error().message.find("owner uid 65534"), std::string::npos) << r.error().message;
}

TEST_F(TrustedDir, SymlinkIsRefusedAndItsTargetUntouched) {
  ASSERT_EQ(mkdir((root_ + "/target").c_str(), 0700), 0);
  ASSERT_EQ(symlink((root_ + "/target").c_str(), (root_ + "/state").c_str()), 0);
  expect_refused(open_dir(root_ + "/state", 0755), root_ + "/state", "is a symlink");
  auto top = open_dir(root_ + "/target", 0755);
  ASSERT_TRUE(top);
  ASSERT_EQ(symlink((root_ + "/target").c_str(), (root_ + "/target/vm1").c_str()), 0);
  expect_refused(open_subdir(top->get(), "vm1", 0700, true, root_ + "/target/vm1"), root_ + "/target/vm1",
                 "is a symlink");
  // A file where a directory belongs.
  ASSERT_EQ(close(creat((root_ + "/target/vm2").c_str(), 0600)), 0);
  expect_refused(open_subdir(top->get(), "vm2", 0700, true, root_ + "/target/vm2"), root_ + "/target/vm2",
                 "not a directory");
}

TEST_F(TrustedDir, ParentOthersCanRenameInIsRefusedUnlessSticky) {
  ASSERT_EQ(mkdir((root_ + "/open").c_str(), 0755), 0);
  ASSERT_EQ(chmod((root_ + "/open").c_str(), 0777), 0);
  auto r = open_dir(root_ + "/open/state", 0755);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, EPERM);
  EXPECT_NE(r.error().message.find("parent directory " + root_ + "/open"), std::string::npos) << r.error().message;
  EXPECT_FALSE(fs::exists(root_ + "/open/state"));
  // Like /tmp: others cannot rename or remove root's entries.
  ASSERT_EQ(chmod((root_ + "/open").c_str(), 01777), 0);
  EXPECT_TRUE(open_dir(root_ + "/open/state", 0755));
}

TEST_F(TrustedDir, BadNames) {
  auto top = open_dir(root_, 0700);
  ASSERT_TRUE(top) << top.error().message;
  for (const char* name : {"", ".", "..", "a/b"}) {
    auto r = open_subdir(top->get(), name, 0700, true, "x");
    ASSERT_FALSE(r) << name;
    EXPECT_EQ(r.error().code, EINVAL);
  }
  EXPECT_FALSE(open_dir("relative/state", 0755));
  EXPECT_FALSE(open_dir("/", 0755));
}

}  // namespace
}  // namespace relink::trusted
