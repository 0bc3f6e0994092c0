// SPDX-License-Identifier: GPL-2.0-or-later
// Readying a listening passt's socket path: root never creates, chowns or
// removes in a directory of a third user, nor removes a third user's socket.
#include "passt/listen_path.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>

#include "util/unique_fd.h"

namespace relink::passt {
namespace {

constexpr uid_t kPasst = 4242;
constexpr uid_t kAlice = 4343;

class ListenPath : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root (chown)";
    char tmpl[] = "/tmp/relink-lp-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    chmod(dir_.c_str(), 0755);
  }
  void TearDown() override {
    std::error_code ec;
    if (!dir_.empty()) std::filesystem::remove_all(dir_, ec);
  }
  std::string mkdir_owned(const std::string& name, uid_t uid, mode_t mode) {
    const std::string d = dir_ + "/" + name;
    EXPECT_EQ(mkdir(d.c_str(), mode), 0);
    EXPECT_EQ(chown(d.c_str(), uid, uid), 0);
    EXPECT_EQ(chmod(d.c_str(), mode), 0);
    return d;
  }
  // A bound (and so stale, once closed) unix socket owned by `uid`.
  void stale_socket(const std::string& path, uid_t uid) {
    UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    std::strncpy(sa.sun_path, path.c_str(), sizeof sa.sun_path - 1);
    ASSERT_EQ(bind(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);
    ASSERT_EQ(lchown(path.c_str(), uid, uid), 0);
  }
  std::string dir_;
};

TEST_F(ListenPath, CreatesAndCleansOnlyInRootsOrPasstsDirectories) {
  // Root's directory: the socket directory is made and given to passt.
  ASSERT_TRUE(prepare_listen_path(dir_ + "/made/p.sock", kPasst, kPasst));
  struct stat st {};
  ASSERT_EQ(stat((dir_ + "/made").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, kPasst);
  // passt's own directory: its stale socket is removed.
  const std::string own = mkdir_owned("own", kPasst, 0755);
  stale_socket(own + "/p.sock", kPasst);
  ASSERT_TRUE(prepare_listen_path(own + "/p.sock", kPasst, kPasst));
  EXPECT_FALSE(std::filesystem::exists(own + "/p.sock"));

  // Alice's directory, writable by all: nothing is created in it...
  const std::string alices = mkdir_owned("alice", kAlice, 0777);
  auto r = prepare_listen_path(alices + "/sub/p.sock", kPasst, kPasst);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, EPERM);
  EXPECT_NE(r.error().message.find("belongs to uid 4343, neither root nor the user passt runs as"), std::string::npos)
      << r.error().message;
  EXPECT_FALSE(std::filesystem::exists(alices + "/sub"));
  // ... and nothing removed from it.
  stale_socket(alices + "/p.sock", kAlice);
  r = prepare_listen_path(alices + "/p.sock", kPasst, kPasst);
  ASSERT_FALSE(r);
  EXPECT_TRUE(std::filesystem::exists(alices + "/p.sock"));
  // Alice's socket in passt's directory is not a stale one of passt's.
  stale_socket(own + "/q.sock", kAlice);
  r = prepare_listen_path(own + "/q.sock", kPasst, kPasst);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("does not remove another user's socket"), std::string::npos) << r.error().message;
  EXPECT_TRUE(std::filesystem::exists(own + "/q.sock"));
}

}  // namespace
}  // namespace relink::passt
