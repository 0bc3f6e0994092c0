// pidfile.h: /proc parsing on a fake tree, the adoption decision, and the
// pidfile itself.
#include "passt/pidfile.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "support/harness.h"

namespace relink::passt {
namespace {

namespace fs = std::filesystem;

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "relink-passt-XXXXXX").string();
    if (mkdtemp(tmpl.data())) path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    if (!path_.empty()) fs::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

void write_text(const std::string& path, const std::string& text) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f << text;
}

// A /proc/PID/stat line with the given comm, state and starttime (field 22).
std::string stat_line(pid_t pid, const std::string& comm, char state, uint64_t start_time) {
  std::string s = std::to_string(pid) + " (" + comm + ") " + state;
  // fields 4..21: ppid pgrp session tty_nr tpgid flags minflt cminflt majflt
  // cmajflt utime stime cutime cstime priority nice num_threads itrealvalue
  for (int field = 4; field <= 21; ++field) s += " " + std::to_string(field * 11);
  s += " " + std::to_string(start_time);
  for (int field = 23; field <= 52; ++field) s += " " + std::to_string(field);
  return s + "\n";
}

class FakeProc : public ::testing::Test {
 protected:
  void add(pid_t pid, const std::string& comm, char state, uint64_t start_time, const std::string& exe) {
    const std::string dir = root_ / std::to_string(pid);
    fs::create_directories(dir);
    write_text(dir + "/stat", stat_line(pid, comm, state, start_time));
    // A dangling symlink reads like /proc/PID/exe.
    if (!exe.empty()) {
      ASSERT_EQ(symlink(exe.c_str(), (dir + "/exe").c_str()), 0);
    }
  }
  TempDir root_;
};

TEST_F(FakeProc, ReadsStartTimeAndExe) {
  add(4242, "passt", 'S', 123456789, "/usr/bin/passt");
  auto info = read_proc(4242, root_.path());
  ASSERT_TRUE(info);
  EXPECT_EQ(info->pid, 4242);
  EXPECT_EQ(info->start_time, 123456789u);
  EXPECT_EQ(info->exe, "/usr/bin/passt");
  EXPECT_FALSE(info->zombie);
}

TEST_F(FakeProc, CommWithSpacesAndParens) {
  // comm is whatever the process named itself: only the last ')' ends it.
  add(77, "a) b (c) Z 9 9", 'R', 987654321, "/usr/bin/passt (deleted)");
  auto info = read_proc(77, root_.path());
  ASSERT_TRUE(info);
  EXPECT_EQ(info->start_time, 987654321u);
  EXPECT_FALSE(info->zombie) << "the 'Z' inside comm is not the state";
  EXPECT_EQ(info->exe, "/usr/bin/passt (deleted)");
}

TEST_F(FakeProc, ZombieHasNoExe) {
  add(78, "passt", 'Z', 555, "");
  auto info = read_proc(78, root_.path());
  ASSERT_TRUE(info);
  EXPECT_TRUE(info->zombie);
  EXPECT_EQ(info->exe, "");
  EXPECT_EQ(info->start_time, 555u);

  add(79, "passt", 'X', 556, "");
  ASSERT_TRUE(read_proc(79, root_.path()));
  EXPECT_TRUE(read_proc(79, root_.path())->zombie);
}

TEST_F(FakeProc, MissingOrGarbledIsNoProcess) {
  EXPECT_FALSE(read_proc(31337, root_.path()));
  EXPECT_FALSE(read_proc(0, root_.path()));
  fs::create_directories(root_ / "80");
  write_text(root_ / "80/stat", "80 (passt) S 1 2 3\n");  // truncated before field 22
  EXPECT_FALSE(read_proc(80, root_.path()));
  fs::create_directories(root_ / "81");
  write_text(root_ / "81/stat", "81 passt S 1 2 3\n");  // no comm parens
  EXPECT_FALSE(read_proc(81, root_.path()));
}

TEST(ReadProcReal, MatchesThisProcess) {
  auto info = read_proc(getpid());
  ASSERT_TRUE(info);
  EXPECT_FALSE(info->zombie);
  EXPECT_GT(info->start_time, 0u);
  EXPECT_EQ(info->exe, fs::read_symlink("/proc/self/exe").string());
  // starttime of this process, read independently.
  const std::string stat = test::read_file("/proc/self/stat");
  std::istringstream rest(stat.substr(stat.rfind(')') + 2));
  std::string field;
  for (int i = 3; i <= 22; ++i) rest >> field;
  EXPECT_EQ(std::to_string(info->start_time), field);
}

PidRecord record() {
  PidRecord r;
  r.pid = 4242;
  r.start_time = 1000;
  r.exe = "/usr/bin/passt";
  r.generation = 3;
  r.mode = "stream-client";
  r.socket = "/run/relinkd/web1-net1.sock";
  return r;
}

ProcInfo proc(uint64_t start_time, const std::string& exe, bool zombie = false) {
  ProcInfo p;
  p.pid = 4242;
  p.start_time = start_time;
  p.exe = exe;
  p.zombie = zombie;
  return p;
}

TEST(Adoption, Decisions) {
  const PidRecord rec = record();
  EXPECT_EQ(decide_adoption(rec, proc(1000, "/usr/bin/passt")), Adoption::Adopt);
  EXPECT_EQ(decide_adoption(rec, std::nullopt), Adoption::Dead);
  EXPECT_EQ(decide_adoption(rec, proc(1000, "", /*zombie=*/true)), Adoption::Dead);
  EXPECT_EQ(decide_adoption(rec, proc(1001, "/usr/bin/passt")), Adoption::Reused) << "pid reused, same binary";
  EXPECT_EQ(decide_adoption(rec, proc(1000, "/usr/bin/sleep")), Adoption::Reused);
  EXPECT_EQ(decide_adoption(rec, proc(1000, "")), Adoption::Reused) << "an unreadable exe proves nothing";
  EXPECT_EQ(decide_adoption(rec, proc(1000, "/usr/bin/passt (deleted)")), Adoption::Adopt)
      << "passt upgraded by the package manager while running";
  EXPECT_EQ(decide_adoption(rec, proc(1000, "/usr/bin/passt.new (deleted)")), Adoption::Reused);
  // passt re-executes itself as passt.avx2 right after start on AVX2 CPUs.
  EXPECT_EQ(decide_adoption(rec, proc(1000, "/usr/bin/passt.avx2")), Adoption::Adopt);
  EXPECT_EQ(decide_adoption(rec, proc(1000, "/usr/bin/passt.avx2 (deleted)")), Adoption::Adopt);
  EXPECT_EQ(decide_adoption(rec, proc(1001, "/usr/bin/passt.avx2")), Adoption::Reused);
  EXPECT_EQ(decide_adoption(rec, proc(1000, "/usr/bin/passt.avx512")), Adoption::Reused);
  PidRecord late = rec;  // exe read after the re-exec
  late.exe = "/usr/bin/passt.avx2";
  EXPECT_EQ(decide_adoption(late, proc(1000, "/usr/bin/passt.avx2")), Adoption::Adopt);
  EXPECT_EQ(decide_adoption(late, proc(1000, "/usr/bin/passt")), Adoption::Reused);
  PidRecord no_exe = rec;
  no_exe.exe = "";
  EXPECT_EQ(decide_adoption(no_exe, proc(1000, "")), Adoption::Reused);
  EXPECT_EQ(decide_adoption(rec, proc(1000, "/usr/bin/passt (deleted) ")), Adoption::Reused);
}

TEST(Adoption, Names) {
  EXPECT_STREQ(adoption_name(Adoption::Adopt), "adopt");
  EXPECT_STREQ(adoption_name(Adoption::Dead), "dead");
  EXPECT_STREQ(adoption_name(Adoption::Reused), "reused");
}

TEST(Pidfile, RoundTripWithMode0600) {
  TempDir dir;
  const std::string path = dir / "web1-net1.pid";
  const mode_t old_umask = umask(0);  // a permissive umask must not widen the file
  auto w = write_pidfile(path, record());
  umask(old_umask);
  ASSERT_TRUE(w) << w.error().message;

  struct stat st {};
  ASSERT_EQ(stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  EXPECT_FALSE(fs::exists(path + ".tmp"));

  auto r = read_pidfile(path);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(*r, record());

  // Rewriting replaces the record and repairs a stale temporary's mode.
  write_text(path + ".tmp", "junk");
  ASSERT_EQ(chmod((path + ".tmp").c_str(), 0644), 0);
  PidRecord next = record();
  next.pid = 5000;
  next.generation = 4;
  ASSERT_TRUE(write_pidfile(path, next));
  ASSERT_EQ(stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  r = read_pidfile(path);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(*r, next);

  remove_pidfile(path);
  EXPECT_FALSE(fs::exists(path));
  remove_pidfile(path);  // absent: no harm
}

TEST(Pidfile, MissingIsEnoent) {
  TempDir dir;
  auto r = read_pidfile(dir / "absent.pid");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ENOENT);
  EXPECT_NE(r.error().message.find("absent.pid"), std::string::npos) << r.error().message;
}

TEST(Pidfile, WriteFailsInMissingDirectory) {
  TempDir dir;
  auto w = write_pidfile(dir / "no/such/dir.pid", record());
  ASSERT_FALSE(w);
  EXPECT_EQ(w.error().code, ENOENT);
}

TEST(Pidfile, MalformedIsEinvalWithReason) {
  TempDir dir;
  const std::string path = dir / "bad.pid";
  struct Case {
    std::string text;
    std::string reason;
  };
  for (const Case& c : std::vector<Case>{
           {"", "not valid JSON"},
           {"{\"pid\": 12", "not valid JSON"},
           {"[1, 2]", "not a JSON object"},
           {R"({"start_time": 1, "exe": "/usr/bin/passt"})", "\"pid\""},
           {R"({"pid": "12", "start_time": 1, "exe": "/usr/bin/passt"})", "\"pid\""},
           {R"({"pid": -3, "start_time": 1, "exe": "/usr/bin/passt"})", "out of range"},
           {R"({"pid": 12, "exe": "/usr/bin/passt"})", "\"start_time\""},
           {R"({"pid": 12, "start_time": -1, "exe": "/usr/bin/passt"})", "\"start_time\""},
           {R"({"pid": 12, "start_time": 1})", "\"exe\""},
           {R"({"pid": 12, "start_time": 1, "exe": ""})", "\"exe\""},
           {R"({"pid": 12, "start_time": 1, "exe": "/x", "generation": "2"})", "\"generation\""},
           {R"({"pid": 12, "start_time": 1, "exe": "/x", "socket": 5})", "\"socket\""},
       }) {
    write_text(path, c.text);
    auto r = read_pidfile(path);
    ASSERT_FALSE(r) << c.text;
    EXPECT_EQ(r.error().code, EINVAL) << c.text;
    EXPECT_NE(r.error().message.find(c.reason), std::string::npos) << c.text << " -> " << r.error().message;
    EXPECT_NE(r.error().message.find(path), std::string::npos) << r.error().message;
  }
}

TEST(Pidfile, DescriptiveFieldsAreOptional) {
  TempDir dir;
  const std::string path = dir / "min.pid";
  write_text(path, R"({"pid": 12, "start_time": 34, "exe": "/usr/bin/passt"})");
  auto r = read_pidfile(path);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->pid, 12);
  EXPECT_EQ(r->start_time, 34u);
  EXPECT_EQ(r->exe, "/usr/bin/passt");
  EXPECT_EQ(r->generation, 0u);
  EXPECT_EQ(r->mode, "");
}

}  // namespace
}  // namespace relink::passt
