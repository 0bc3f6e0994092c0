// SPDX-License-Identifier: GPL-2.0-or-later
// Who may receive tap fds over QMP: the pure decision.
#include "qemu/qmp_peer.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

namespace relink::qemu {
namespace {

const std::vector<std::string> kQemu = {"/usr/bin/qemu-system-*", "/usr/libexec/qemu-kvm"};

PathFacts dir(const std::string& path, uid_t uid, mode_t mode) {
  return PathFacts{path, true, true, false, uid, static_cast<mode_t>(S_IFDIR | mode)};
}

// QEMU run by libvirt as uid 64055, its socket in a root-owned directory.
QmpPeerFacts good() {
  QmpPeerFacts f;
  f.configured = "/run/qemu/web1.qmp";
  f.socket = PathFacts{"/run/qemu/web1.qmp", true, false, true, 64055, S_IFSOCK | 0600};
  f.dirs = {dir("/run/qemu", 0, 0755)};
  f.pid = 4242;
  f.uid = 64055;
  f.exe = "/usr/bin/qemu-system-x86_64";
  return f;
}

TEST(QmpPeer, QemusOwnSocketIsAccepted) {
  EXPECT_EQ(judge_qmp_peer(good(), kQemu), std::nullopt);
  auto f = good();
  f.dirs = {dir("/home/alice/vms", 64055, 0700)};  // the user's own directory
  EXPECT_EQ(judge_qmp_peer(f, kQemu), std::nullopt);
  f = good();
  f.uid = 0;  // a root QEMU may listen on a socket it chowned away
  EXPECT_EQ(judge_qmp_peer(f, kQemu), std::nullopt);
  f = good();
  f.exe = "/usr/libexec/qemu-kvm";
  EXPECT_EQ(judge_qmp_peer(f, kQemu), std::nullopt);
}

TEST(QmpPeer, AWorldWritableDirectoryIsRefusedEvenWithTheStickyBit) {
  auto f = good();
  f.dirs = {dir("/tmp", 0, 01777)};
  auto why = judge_qmp_peer(f, kQemu);
  ASSERT_TRUE(why);
  EXPECT_NE(why->find("/tmp (mode 1777) is writable by other users"), std::string::npos) << *why;
  f.dirs = {dir("/srv/vms", 0, 0775)};
  EXPECT_TRUE(judge_qmp_peer(f, kQemu));
}

TEST(QmpPeer, ADirectoryOfAnotherUserIsRefused) {
  auto f = good();
  f.dirs = {dir("/home/mallory", 1001, 0755)};
  auto why = judge_qmp_peer(f, kQemu);
  ASSERT_TRUE(why);
  EXPECT_NE(why->find("belongs to uid 1001"), std::string::npos) << *why;
}

TEST(QmpPeer, ASymlinkTargetsDirectoryCountsToo) {
  auto f = good();
  f.dirs.push_back(dir("/tmp", 0, 01777));
  EXPECT_TRUE(judge_qmp_peer(f, kQemu));
  f.dirs.back() = PathFacts{"(target of /run/qemu/web1.qmp)"};
  EXPECT_TRUE(judge_qmp_peer(f, kQemu));
}

TEST(QmpPeer, ASocketOwnedByAnotherUserThanThePeerIsRefused) {
  auto f = good();
  f.uid = 65534;  // nobody listens on QEMU's path
  auto why = judge_qmp_peer(f, kQemu);
  ASSERT_TRUE(why);
  EXPECT_NE(why->find("owned by uid 64055 but the process listening on it runs as uid 65534"), std::string::npos)
      << *why;
}

TEST(QmpPeer, APeerThatIsNotQemuIsRefused) {
  auto f = good();
  f.exe = "/usr/bin/python3.11";
  auto why = judge_qmp_peer(f, kQemu);
  ASSERT_TRUE(why);
  EXPECT_NE(why->find("runs /usr/bin/python3.11, which is not QEMU"), std::string::npos) << *why;
  f.exe = "/tmp/usr/bin/qemu-system-x86_64";  // patterns match whole paths, not suffixes
  EXPECT_TRUE(judge_qmp_peer(f, kQemu));
  f.exe = "";
  EXPECT_TRUE(judge_qmp_peer(f, kQemu));
  f = good();
  f.exe_stable = false;  // exited or replaced while checked
  EXPECT_TRUE(judge_qmp_peer(f, kQemu));
}

TEST(QmpPeer, NotASocketIsRefused) {
  auto f = good();
  f.socket.is_socket = false;
  EXPECT_TRUE(judge_qmp_peer(f, kQemu));
  f.socket.exists = false;
  EXPECT_TRUE(judge_qmp_peer(f, kQemu));
}

TEST(QmpPeer, PeerTextInTheReasonIsMadeSafe) {
  auto f = good();
  f.exe = "/tmp/\x1b[2Jevil\xff";
  auto why = judge_qmp_peer(f, kQemu);
  ASSERT_TRUE(why);
  EXPECT_NE(why->find("/tmp/\\x1b[2Jevil\\xff"), std::string::npos) << *why;
}

}  // namespace
}  // namespace relink::qemu
