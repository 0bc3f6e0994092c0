// SPDX-License-Identifier: GPL-2.0-or-later
// Who may receive tap fds over QMP: the pure decision, and the path walk
// against a real directory tree.
#include "qemu/qmp_peer.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

namespace relink::qemu {
namespace {

constexpr uid_t kQemuUid = 64055;
const QemuIdentity kLibvirtQemu{kQemuUid, "libvirt-qemu"};
const FileId kQemuBin{8, 1234};

DirStep step(const std::string& path, uid_t uid, mode_t mode, const std::string& next, uid_t next_uid) {
  return DirStep{path, true, true, uid, static_cast<mode_t>(S_IFDIR | mode), next, true, next_uid};
}

// QEMU run as uid 64055, its socket in a root-owned /run/qemu.
QmpPeerFacts good() {
  QmpPeerFacts f;
  f.configured = "/run/qemu/web1.qmp";
  f.walk = {step("/", 0, 0755, "run", 0), step("/run", 0, 0755, "qemu", 0),
            step("/run/qemu", 0, 0755, "web1.qmp", kQemuUid)};
  f.walk_complete = true;
  f.socket_is_socket = true;
  f.socket_uid = kQemuUid;
  f.pid = 4242;
  f.uid = kQemuUid;
  f.exe = "/usr/bin/qemu-system-x86_64";
  f.exe_id = kQemuBin;
  f.binaries = {FileId{8, 99}, kQemuBin};
  return f;
}

TEST(QmpPeer, TheVmsQemuOnItsOwnSocketIsAccepted) {
  EXPECT_EQ(judge_qmp_peer(good(), kLibvirtQemu), std::nullopt);
  auto f = good();
  // The user's own /run/user directory.
  f.walk = {step("/", 0, 0755, "run", 0), step("/run", 0, 0755, "user", 0), step("/run/user", 0, 0755, "64055", kQemuUid),
            step("/run/user/64055", kQemuUid, 0700, "web1.qmp", kQemuUid)};
  EXPECT_EQ(judge_qmp_peer(f, kLibvirtQemu), std::nullopt);
  // /tmp: sticky and writable by all, crossed into a directory of QEMU's user.
  f.walk = {step("/", 0, 0755, "tmp", 0), step("/tmp", 0, 01777, "vms", kQemuUid),
            step("/tmp/vms", kQemuUid, 0700, "web1.qmp", kQemuUid)};
  EXPECT_EQ(judge_qmp_peer(f, kLibvirtQemu), std::nullopt);
  // Root's QEMU, root's socket (the default qemu_user).
  f = good();
  f.uid = 0;
  f.socket_uid = 0;
  f.walk.back().next_uid = 0;
  EXPECT_EQ(judge_qmp_peer(f, QemuIdentity{}), std::nullopt);
}

TEST(QmpPeer, APeerOfAnotherUserIsRefused) {
  auto f = good();
  f.uid = 1000;
  auto why = judge_qmp_peer(f, kLibvirtQemu);
  ASSERT_TRUE(why);
  EXPECT_NE(why->find("runs as uid 1000, but the VM's QEMU runs as libvirt-qemu (uid 64055"), std::string::npos)
      << *why;
  // Root's QEMU is not the VM's when the VM names another user.
  f.uid = 0;
  EXPECT_TRUE(judge_qmp_peer(f, kLibvirtQemu));
  // Nor is the QEMU user's when the VM's QEMU is root's.
  EXPECT_TRUE(judge_qmp_peer(good(), QemuIdentity{}));
}

TEST(QmpPeer, ADirectoryOthersCouldChangeIsNamed) {
  // An ancestor anyone may write, without the sticky bit.
  auto f = good();
  f.walk[1].mode = S_IFDIR | 0777;
  auto why = judge_qmp_peer(f, kLibvirtQemu);
  ASSERT_TRUE(why);
  EXPECT_NE(why->find("the directory /run (mode 777) is writable by other users"), std::string::npos) << *why;
  EXPECT_NE(why->find("chmod go-w /run"), std::string::npos) << *why;
  // Group-writable is writable by others too.
  f = good();
  f.walk[2].mode = S_IFDIR | 0775;
  EXPECT_TRUE(judge_qmp_peer(f, kLibvirtQemu));
  // Sticky /tmp, the socket right in it, but made by another user.
  f = good();
  f.walk = {step("/", 0, 0755, "tmp", 0), step("/tmp", 0, 01777, "web1.qmp", 1000)};
  f.socket_uid = 1000;
  why = judge_qmp_peer(f, kLibvirtQemu);
  ASSERT_TRUE(why);
  EXPECT_NE(why->find("the directory /tmp (mode 1777) is writable by other users; its sticky bit"), std::string::npos)
      << *why;
  EXPECT_NE(why->find("/tmp/web1.qmp belongs to uid 1000"), std::string::npos) << *why;
  // A directory of a third user on the way.
  f = good();
  f.walk[2].uid = 1000;
  why = judge_qmp_peer(f, kLibvirtQemu);
  ASSERT_TRUE(why);
  EXPECT_NE(why->find("the directory /run/qemu belongs to uid 1000"), std::string::npos) << *why;
  // A socket of a third user in a safe directory.
  f = good();
  f.socket_uid = 1000;
  EXPECT_TRUE(judge_qmp_peer(f, kLibvirtQemu));
}

TEST(QmpPeer, TheProgramIsComparedAsAFileNotAPath) {
  auto f = good();
  f.exe_id = FileId{8, 777};  // reads /usr/bin/qemu-system-x86_64, is another file (a bind mount)
  auto why = judge_qmp_peer(f, kLibvirtQemu);
  ASSERT_TRUE(why);
  EXPECT_NE(why->find("none of the files [daemon] qemu_binaries names"), std::string::npos) << *why;
  f = good();
  f.exe_id.reset();
  EXPECT_TRUE(judge_qmp_peer(f, kLibvirtQemu));
  f = good();
  f.exe_stable = false;
  EXPECT_TRUE(judge_qmp_peer(f, kLibvirtQemu));
  f = good();
  f.walk_complete = false;
  EXPECT_TRUE(judge_qmp_peer(f, kLibvirtQemu));
}

// The walk on a real tree: symlinks followed, the directory of every hop
// recorded, a missing component ends it.
TEST(QmpPeerWalk, FollowsSymlinksAndRecordsEveryDirectoryCrossed) {
  char tmpl[] = "/tmp/relink-walk-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  const std::string root = tmpl;
  std::filesystem::create_directories(root + "/a/b");
  std::filesystem::create_directories(root + "/hop");
  std::filesystem::create_symlink(root + "/a/b", root + "/hop/link");
  std::filesystem::create_symlink("../hop/link", root + "/a/rel");
  { FILE* f = fopen((root + "/a/b/s").c_str(), "w"); fclose(f); }
  bool complete = false;
  auto walk = walk_path(root + "/a/rel/s", &complete);
  EXPECT_TRUE(complete);
  std::vector<std::string> dirs;
  for (const auto& d : walk) dirs.push_back(d.path);
  auto has = [&](const std::string& d) { return std::find(dirs.begin(), dirs.end(), d) != dirs.end(); };
  EXPECT_EQ(dirs.front(), "/");
  EXPECT_TRUE(has(root + "/a"));    // holds the symlink "rel"
  EXPECT_TRUE(has(root + "/hop"));  // holds the symlink "link"
  EXPECT_TRUE(has(root + "/a/b"));  // holds the socket
  EXPECT_EQ(walk.back().next, "s");
  walk = walk_path(root + "/a/missing/s", &complete);
  EXPECT_FALSE(complete);
  EXPECT_EQ(walk.back().path, root + "/a");
  EXPECT_FALSE(walk.back().next_exists);
  std::filesystem::remove_all(root);
}

TEST(QmpPeerWalk, BinariesAreFoundByIdentity) {
  const std::string self = std::filesystem::read_symlink("/proc/self/exe").string();
  struct stat st {};
  ASSERT_EQ(stat(self.c_str(), &st), 0);
  auto ids = binaries_of({self, "/nonexistent/qemu-*"});
  ASSERT_EQ(ids.size(), 1u);
  EXPECT_EQ(ids[0], (FileId{st.st_dev, st.st_ino}));
}

}  // namespace
}  // namespace relink::qemu
