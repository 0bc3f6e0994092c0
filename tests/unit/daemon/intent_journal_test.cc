// SPDX-License-Identifier: GPL-2.0-or-later
// The journal of intent in a throwaway state_dir: what is recorded loads back
// in a new journal (a new relinkd), forgetting the last entry removes the
// file, entries of a process that is gone (or whose pid now names another
// process) are dropped, the file is root's alone and bounded, and a file that
// cannot be used is put aside, not trusted.
#include "daemon/intent_journal.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

namespace relink::daemon {
namespace {

class IntentJournalTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/relink-ij-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    ASSERT_EQ(chmod(dir_.c_str(), 0755), 0);
  }
  void TearDown() override {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  std::string file(const std::string& name = IntentJournal::kFileName) const { return dir_ + "/" + name; }
  bool exists(const std::string& name = IntentJournal::kFileName) const {
    struct stat st {};
    return lstat(file(name).c_str(), &st) == 0;
  }
  void write(const std::string& text) const { std::ofstream(file()) << text; }
  // This very process, as a QEMU whose identity is alive.
  Intent live(const std::string& nic) const {
    Intent e;
    uint64_t start = 0;
    e.identity = qemu_identity(getpid(), &start).value_or("");
    e.pid = getpid();
    e.start_time = start;
    e.nic = nic;
    e.vm = "vm1";
    e.what = {{"driver", "virtio-net-pci"}, {"mac", "52:54:00:12:34:56"}, {"bus", "rp1"}, {"addr", 0}};
    return e;
  }

  std::string dir_;
};

TEST_F(IntentJournalTest, RecordedEntriesLoadBackInANewJournal) {
  IntentJournal j(dir_);
  ASSERT_TRUE(j.load());
  EXPECT_TRUE(j.entries().empty());
  EXPECT_FALSE(exists());
  const Intent a = live("net0"), b = live("net1");
  ASSERT_FALSE(a.identity.empty());
  ASSERT_TRUE(j.record(a));
  ASSERT_TRUE(j.record(b));
  struct stat st {};
  ASSERT_EQ(stat(file().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  EXPECT_EQ(st.st_uid, geteuid());
  EXPECT_FALSE(exists(std::string(IntentJournal::kFileName) + ".tmp"));

  IntentJournal next(dir_);  // the next relinkd
  ASSERT_TRUE(next.load());
  ASSERT_EQ(next.entries().size(), 2u);
  const Intent* found = next.find(a.identity, "net0");
  ASSERT_NE(found, nullptr);
  EXPECT_EQ(found->what, a.what);
  EXPECT_EQ(found->vm, "vm1");
  EXPECT_GT(found->written_at, 0);
  EXPECT_EQ(next.find("qemu:1:2", "net0"), nullptr);

  // Recording the same NIC again replaces its entry.
  Intent a2 = a;
  a2.what["addr"] = 8;
  ASSERT_TRUE(next.record(a2));
  EXPECT_EQ(next.entries().size(), 2u);
  EXPECT_EQ(next.find(a.identity, "net0")->what["addr"], 8);

  ASSERT_TRUE(next.forget(a.identity, "net0"));
  ASSERT_TRUE(next.forget(a.identity, "net0"));  // twice is fine
  EXPECT_TRUE(exists());
  ASSERT_TRUE(next.forget(b.identity, "net1"));
  EXPECT_FALSE(exists()) << "an empty journal is no file";
}

TEST_F(IntentJournalTest, EntriesOfAProcessThatIsGoneAreDropped) {
  // A child that exits: its pid names nothing (or, later, someone else).
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) _exit(0);
  uint64_t start = 0;
  // Racy to read the child's start time before it exits: record it by hand.
  Intent gone = live("net0");
  gone.pid = child;
  gone.identity = "qemu:" + std::to_string(child) + ":1";
  gone.start_time = 1;
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  Intent reused = live("net1");  // our own pid, recorded with another start time: pid reuse
  reused.start_time += 12345;
  reused.identity = "qemu:" + std::to_string(getpid()) + ":" + std::to_string(reused.start_time);
  Intent unknown = live("net2");  // no process recorded (a libvirt domain whose QEMU pid was unknown)
  unknown.pid = 0;
  unknown.start_time = 0;
  unknown.identity = "libvirt:9f2c0b4e-0000-4000-8000-000000000001";
  const Intent kept = live("net3");
  (void)start;
  {
    IntentJournal j(dir_);
    ASSERT_TRUE(j.load());
    for (const auto& e : {gone, reused, unknown, kept}) ASSERT_TRUE(j.record(e));
    EXPECT_EQ(j.entries().size(), 4u);
  }
  IntentJournal next(dir_);
  ASSERT_TRUE(next.load());
  ASSERT_EQ(next.entries().size(), 2u);
  EXPECT_NE(next.find(unknown.identity, "net2"), nullptr);
  EXPECT_NE(next.find(kept.identity, "net3"), nullptr);
  // The file says the same.
  IntentJournal again(dir_);
  ASSERT_TRUE(again.load());
  EXPECT_EQ(again.entries().size(), 2u);
}

TEST_F(IntentJournalTest, AFileThatCannotBeUsedIsPutAsideAndNotTrusted) {
  for (const std::string& bad : {std::string("{"), std::string("{\"version\":2,\"entries\":[]}"),
                                std::string("{\"version\":1,\"entries\":[{\"identity\":\"x\"}]}"),
                                std::string("{\"version\":1,\"entries\":[{\"identity\":\"x\",\"nic\":\"n\","
                                            "\"vm\":\"v\",\"pid\":-4,\"what\":{}}]}")}) {
    SCOPED_TRACE(bad);
    write(bad);
    IntentJournal j(dir_);
    auto r = j.load();
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().message.find(IntentJournal::kInvalidName), std::string::npos) << r.error().message;
    EXPECT_TRUE(j.entries().empty());
    EXPECT_FALSE(exists());
    EXPECT_TRUE(exists(IntentJournal::kInvalidName));
  }
  // Each set-aside file keeps its own name: the first is never replaced.
  for (int n = 1; n <= 3; ++n)
    EXPECT_TRUE(exists(std::string(IntentJournal::kInvalidName) + "." + std::to_string(n))) << n;
  EXPECT_FALSE(exists(std::string(IntentJournal::kInvalidName) + ".4"));
  std::ifstream first(file(IntentJournal::kInvalidName));
  EXPECT_EQ(std::string(std::istreambuf_iterator<char>(first), {}), "{");
  // Others may write it: not relinkd's.
  IntentJournal j(dir_);
  ASSERT_TRUE(j.load());
  ASSERT_TRUE(j.record(live("net0")));
  ASSERT_EQ(chmod(file().c_str(), 0666), 0);
  IntentJournal next(dir_);
  auto r = next.load();
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("not a file relinkd wrote"), std::string::npos) << r.error().message;
  EXPECT_TRUE(next.entries().empty());
  // A symlink in its place is not followed.
  ASSERT_EQ(symlink("/etc/passwd", file().c_str()), 0);
  IntentJournal third(dir_);
  EXPECT_FALSE(third.load());
  EXPECT_TRUE(third.entries().empty());
}

TEST_F(IntentJournalTest, BoundedInEntriesAndBytes) {
  IntentJournal j(dir_);
  ASSERT_TRUE(j.load());
  for (size_t i = 0; i < IntentJournal::kMaxEntries; ++i) ASSERT_TRUE(j.record(live("n" + std::to_string(i))));
  auto over = j.record(live("one-more"));
  ASSERT_FALSE(over);
  EXPECT_EQ(over.error().code, ENOSPC);
  EXPECT_EQ(j.entries().size(), IntentJournal::kMaxEntries);
  ASSERT_TRUE(j.forget(j.entries().front().identity, "n0"));
  Intent huge = live("huge");
  huge.what["romfile"] = std::string(IntentJournal::kMaxBytes, 'x');
  auto big = j.record(huge);
  ASSERT_FALSE(big);
  EXPECT_EQ(big.error().code, EFBIG);
  EXPECT_EQ(j.find(huge.identity, "huge"), nullptr);
  // A file past the bound is not read.
  write(std::string(IntentJournal::kMaxBytes + 1, ' '));
  IntentJournal next(dir_);
  EXPECT_FALSE(next.load());
}

TEST_F(IntentJournalTest, AStateDirOthersMayWriteIsRefused) {
  ASSERT_EQ(chmod(dir_.c_str(), 0777), 0);
  IntentJournal j(dir_);
  EXPECT_FALSE(j.load());
  Intent e = live("net0");
  EXPECT_FALSE(j.record(e));
  EXPECT_FALSE(exists());
}

TEST(IntentFormat, RoundTrips) {
  Intent e;
  e.identity = "libvirt:uuid";
  e.nic = "52:54:00:00:00:01";
  e.vm = "dom";
  e.what = {{"xml", "<interface type='direct'/>"}};
  e.written_at = 1700000000;
  auto back = parse_intents(format_intents({e}), "x");
  ASSERT_TRUE(back) << back.error().message;
  ASSERT_EQ(back->size(), 1u);
  EXPECT_EQ(back->front(), e);
}

}  // namespace
}  // namespace relink::daemon
