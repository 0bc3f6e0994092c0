// SPDX-License-Identifier: GPL-2.0-or-later
// runtime.toml in a throwaway state_dir: what is saved loads back, an empty
// list removes the file, a file that cannot be used is put aside as
// runtime.toml.invalid, the file is root's alone, and a state_dir others may
// write is refused.
#include "daemon/runtime_store.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

namespace relink::daemon {
namespace {

const char* kVms = R"(
[[vm]]
name = "a"
qmp = "/run/qemu/a.qmp"
[[vm.macvtap]]
nic = "nic0"
parent = "eth0"
mac = "52:54:00:00:00:01"

[[vm]]
name = "b"
qmp = "/run/qemu/b.qmp"
[[vm.passt]]
netdev = "net0"
socket = "/run/qemu/b-passt.sock"
)";

class RuntimeStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/relink-rs-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    ASSERT_EQ(chmod(dir_.c_str(), 0755), 0);
  }
  void TearDown() override {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  std::string file(const std::string& name = RuntimeStore::kFileName) const { return dir_ + "/" + name; }
  bool exists(const std::string& name) const {
    struct stat st {};
    return lstat(file(name).c_str(), &st) == 0;
  }
  std::string read(const std::string& name) const {
    std::ifstream f(file(name));
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
  }
  void write(const std::string& name, const std::string& text) const {
    std::ofstream f(file(name), std::ios::trunc);
    f << text;
    ASSERT_TRUE(f.good());
  }
  static std::vector<config::RuntimeVm> vms() { return config::parse_runtime_vms(kVms, "t"); }

  std::string dir_;
};

TEST_F(RuntimeStoreTest, PathIsInStateDir) {
  EXPECT_EQ(RuntimeStore(dir_).path(), dir_ + "/runtime.toml");
  EXPECT_EQ(RuntimeStore(dir_ + "/").path(), dir_ + "/runtime.toml");
}

TEST_F(RuntimeStoreTest, MissingFileIsNoVms) {
  auto r = RuntimeStore(dir_).load();
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_TRUE(r->vms.empty());
}

TEST_F(RuntimeStoreTest, SaveThenLoadGivesTheSameVms) {
  RuntimeStore store(dir_);
  const auto saved = vms();
  ASSERT_EQ(saved.size(), 2u);
  auto w = store.save(saved);
  ASSERT_TRUE(w) << w.error().message;
  EXPECT_EQ(read(RuntimeStore::kFileName), config::format_runtime_file(saved));
  auto r = RuntimeStore(dir_).load();
  ASSERT_TRUE(r) << r.error().message;
  ASSERT_EQ(r->vms.size(), 2u);
  EXPECT_EQ(r->vms[0].vm, saved[0].vm);
  EXPECT_EQ(r->vms[1].vm, saved[1].vm);
  EXPECT_EQ(r->vms[1].toml, saved[1].toml);

  // Rewritten with fewer VMs: replaced, and no temporary file is left.
  w = store.save({saved[1]});
  ASSERT_TRUE(w) << w.error().message;
  r = store.load();
  ASSERT_TRUE(r) << r.error().message;
  ASSERT_EQ(r->vms.size(), 1u);
  EXPECT_EQ(r->vms[0].vm.name, "b");
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(dir_)) names.push_back(e.path().filename());
  EXPECT_EQ(names, std::vector<std::string>{"runtime.toml"});
}

TEST_F(RuntimeStoreTest, FileIsRootsAloneMode0600) {
  const mode_t old = umask(0);
  auto w = RuntimeStore(dir_).save(vms());
  umask(old);
  ASSERT_TRUE(w) << w.error().message;
  struct stat st {};
  ASSERT_EQ(lstat(file().c_str(), &st), 0);
  EXPECT_TRUE(S_ISREG(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  EXPECT_EQ(st.st_uid, geteuid());
}

TEST_F(RuntimeStoreTest, EmptyListRemovesTheFile) {
  RuntimeStore store(dir_);
  ASSERT_TRUE(store.save(vms()));
  ASSERT_TRUE(exists(RuntimeStore::kFileName));
  auto w = store.save({});
  ASSERT_TRUE(w) << w.error().message;
  EXPECT_FALSE(exists(RuntimeStore::kFileName));
  // Again, with nothing to remove.
  w = store.save({});
  ASSERT_TRUE(w) << w.error().message;
  auto r = store.load();
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_TRUE(r->vms.empty());
}

TEST_F(RuntimeStoreTest, CorruptFileIsPutAsideAndReported) {
  const std::string corrupt = "[[vm]]\nname = \"a\"\nqmp = \n";
  write(RuntimeStore::kFileName, corrupt);
  write(RuntimeStore::kInvalidName, "an older one\n");
  RuntimeStore store(dir_);
  auto r = store.load();
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, EINVAL);
  EXPECT_EQ(r.error().message.rfind(file() + ":3:", 0), 0u) << r.error().message;
  EXPECT_NE(r.error().message.find("runtime.toml.invalid"), std::string::npos) << r.error().message;
  EXPECT_NE(r.error().message.find("runtime.toml.invalid.1"), std::string::npos) << r.error().message;
  EXPECT_FALSE(exists(RuntimeStore::kFileName));
  // Never over an earlier one: that one stays as it was.
  EXPECT_EQ(read(RuntimeStore::kInvalidName), "an older one\n");
  EXPECT_EQ(read(std::string(RuntimeStore::kInvalidName) + ".1"), corrupt);

  // Now missing: no VMs, and a save does not touch the kept files.
  auto again = store.load();
  ASSERT_TRUE(again) << again.error().message;
  EXPECT_TRUE(again->vms.empty());
  ASSERT_TRUE(store.save(vms()));
  EXPECT_EQ(read(std::string(RuntimeStore::kInvalidName) + ".1"), corrupt);
}

TEST_F(RuntimeStoreTest, AnInvalidVmIsHeldAloneAndTheFileKept) {
  write(RuntimeStore::kFileName, std::string(kVms) + "\n[[vm]]\nname = \"c\"\nqmp = \"relative\"\n");
  auto r = RuntimeStore(dir_).load();
  ASSERT_TRUE(r) << r.error().message;
  ASSERT_EQ(r->vms.size(), 2u);
  ASSERT_EQ(r->held.size(), 1u);
  EXPECT_EQ(r->held[0].name, "c");
  EXPECT_EQ(r->held[0].error.rfind(file() + " (VM 'c'):3:7: 'qmp' must be an absolute path", 0), 0u)
      << r->held[0].error;
  EXPECT_FALSE(exists(RuntimeStore::kInvalidName));
  // Saved with the loaded ones, it is written back as it was.
  ASSERT_TRUE(RuntimeStore(dir_).save({r->vms[0]}, r->held));
  auto again = RuntimeStore(dir_).load();
  ASSERT_TRUE(again) << again.error().message;
  ASSERT_EQ(again->vms.size(), 1u);
  ASSERT_EQ(again->held.size(), 1u);
  EXPECT_EQ(again->held[0].toml, r->held[0].toml);
}

TEST_F(RuntimeStoreTest, FileLargerThanOneMebibyteIsPutAside) {
  write(RuntimeStore::kFileName, std::string(RuntimeStore::kMaxSize + 1, '#'));
  auto r = RuntimeStore(dir_).load();
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, EFBIG);
  EXPECT_NE(r.error().message.find("is larger than 1 MiB"), std::string::npos) << r.error().message;
  EXPECT_FALSE(exists(RuntimeStore::kFileName));
  EXPECT_TRUE(exists(RuntimeStore::kInvalidName));
}

TEST_F(RuntimeStoreTest, SymlinkIsNotFollowed) {
  write("elsewhere", "[[vm]]\nname = \"a\"\nqmp = \"/q\"\n");
  ASSERT_EQ(symlink("elsewhere", file().c_str()), 0);
  auto r = RuntimeStore(dir_).load();
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("symlink"), std::string::npos) << r.error().message;
  EXPECT_EQ(read("elsewhere"), "[[vm]]\nname = \"a\"\nqmp = \"/q\"\n");
}

TEST_F(RuntimeStoreTest, FileOthersMayWriteIsPutAside) {
  write(RuntimeStore::kFileName, "");
  ASSERT_EQ(chmod(file().c_str(), 0666), 0);
  auto r = RuntimeStore(dir_).load();
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, EPERM);
  EXPECT_NE(r.error().message.find("writable by group or others"), std::string::npos) << r.error().message;
}

TEST_F(RuntimeStoreTest, StateDirWritableByOthersIsRefused) {
  ASSERT_EQ(chmod(dir_.c_str(), 0777), 0);
  RuntimeStore store(dir_);
  auto w = store.save(vms());
  ASSERT_FALSE(w);
  EXPECT_EQ(w.error().code, EPERM);
  EXPECT_EQ(w.error().message.rfind("state_dir: ", 0), 0u) << w.error().message;
  EXPECT_NE(w.error().message.find("writable by group or others"), std::string::npos) << w.error().message;
  EXPECT_FALSE(exists(RuntimeStore::kFileName));
  auto r = store.load();
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, EPERM);
}

}  // namespace
}  // namespace relink::daemon
