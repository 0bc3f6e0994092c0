// SPDX-License-Identifier: GPL-2.0-or-later
// pidfile.h: /proc parsing on a fake tree, the adoption decision, and the
// pidfile itself.
#include "passt/pidfile.h"

#include <fcntl.h>
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

// A /proc/PID/stat line with the given comm, state, starttime (field 22) and
// flags (field 9; 99 has no PF_EXITING).
std::string stat_line(pid_t pid, const std::string& comm, char state, uint64_t start_time, uint64_t flags = 99) {
  std::string s = std::to_string(pid) + " (" + comm + ") " + state;
  // fields 4..21: ppid pgrp session tty_nr tpgid flags minflt cminflt majflt
  // cmajflt utime stime cutime cstime priority nice num_threads itrealvalue
  for (int field = 4; field <= 21; ++field) s += " " + std::to_string(field == 9 ? flags : field * 11);
  s += " " + std::to_string(start_time);
  for (int field = 23; field <= 52; ++field) s += " " + std::to_string(field);
  return s + "\n";
}

// /proc/PID/cmdline: each argument followed by a NUL.
std::string nul_join(const std::vector<std::string>& args) {
  std::string out;
  for (const auto& a : args) out += a + '\0';
  return out;
}

class FakeProc : public ::testing::Test {
 protected:
  void add(pid_t pid, const std::string& comm, char state, uint64_t start_time, const std::string& exe,
           const std::string& status = "", const std::string& cmdline = "") {
    const std::string dir = root_ / std::to_string(pid);
    fs::create_directories(dir);
    write_text(dir + "/stat", stat_line(pid, comm, state, start_time));
    // A dangling symlink reads like /proc/PID/exe.
    if (!exe.empty()) {
      ASSERT_EQ(symlink(exe.c_str(), (dir + "/exe").c_str()), 0);
    }
    if (!status.empty()) write_text(dir + "/status", status);
    if (!cmdline.empty()) write_text(dir + "/cmdline", cmdline);
  }
  TempDir root_;
};

TEST_F(FakeProc, ReadsIdsAndCommandLine) {
  add(4243, "passt.avx2", 'S', 5, "/usr/bin/passt.avx2",
      "Name:\tpasst.avx2\nUmask:\t0022\nState:\tS (sleeping)\nUid:\t65534\t65534\t65534\t65534\n"
      "Gid:\t65533\t65533\t65533\t65533\nGroups:\t\n",
      nul_join({"/usr/bin/passt.avx2", "-f", "--fd", "3", "-t", "10001"}));
  auto info = read_proc(4243, root_.path());
  ASSERT_TRUE(info);
  EXPECT_TRUE(info->ids_known);
  EXPECT_EQ(info->uids, (std::array<uid_t, 4>{65534, 65534, 65534, 65534}));
  EXPECT_EQ(info->gids, (std::array<gid_t, 4>{65533, 65533, 65533, 65533}));
  EXPECT_EQ(info->cmdline, (std::vector<std::string>{"/usr/bin/passt.avx2", "-f", "--fd", "3", "-t", "10001"}));

  // A setuid program: real uid nobody, effective root.
  add(4244, "su", 'S', 6, "/usr/bin/su", "Uid:\t65534\t0\t0\t0\nGid:\t65534\t65534\t65534\t65534\n", "su");
  info = read_proc(4244, root_.path());
  ASSERT_TRUE(info);
  EXPECT_EQ(info->uids, (std::array<uid_t, 4>{65534, 0, 0, 0}));
  EXPECT_EQ(info->cmdline, std::vector<std::string>{"su"});

  add(4245, "x", 'S', 7, "/x", "Uid:\tgarbage\n", "");
  info = read_proc(4245, root_.path());
  ASSERT_TRUE(info);
  EXPECT_FALSE(info->ids_known);
  EXPECT_TRUE(info->cmdline.empty());
}

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

TEST_F(FakeProc, ExitingIsPfExiting) {
  add(80, "passt", 'R', 557, "/usr/bin/passt");
  EXPECT_FALSE(read_proc(80, root_.path())->exiting);
  // A killed passt in do_exit(): PF_EXITING (0x4) with PF_SIGNALED (0x400).
  const std::string dir = root_ / "81";
  fs::create_directories(dir);
  write_text(dir + "/stat", stat_line(81, "passt", 'D', 558, 0x40040c));
  auto info = read_proc(81, root_.path());
  ASSERT_TRUE(info);
  EXPECT_TRUE(info->exiting);
  EXPECT_FALSE(info->zombie);
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
  EXPECT_TRUE(info->ids_known);
  EXPECT_EQ(info->uids[0], getuid());
  EXPECT_EQ(info->uids[1], geteuid());
  EXPECT_EQ(info->gids[0], getgid());
  ASSERT_FALSE(info->cmdline.empty());
  EXPECT_NE(info->cmdline[0].find("relink_unit_passt"), std::string::npos) << info->cmdline[0];
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
  EXPECT_STREQ(adoption_name(Adoption::Outdated), "outdated");
  EXPECT_STREQ(adoption_name(Adoption::Foreign), "foreign");
}

// The proof against what the binding runs now.
const std::vector<std::string> kArgv = {"/usr/bin/passt", "-f", "--socket", "/run/relinkd/web1-net1.sock", "-t",
                                        "10001"};

Expected expected() {
  Expected e;
  e.uid = 65534;
  e.gid = 65534;
  e.argv = kArgv;
  e.mode = "stream-client";
  e.socket = "/run/relinkd/web1-net1.sock";
  return e;
}

PidRecord full_record() {
  PidRecord r = record();
  r.uid = 65534;
  r.gid = 65534;
  r.argv = kArgv;
  return r;
}

ProcInfo passt_proc(uid_t uid = 65534, gid_t gid = 65534, std::vector<std::string> cmdline = kArgv) {
  ProcInfo p = proc(1000, "/usr/bin/passt");
  p.ids_known = true;
  p.uids = {uid, uid, uid, uid};
  p.gids = {gid, gid, gid, gid};
  p.cmdline = std::move(cmdline);
  return p;
}

TEST(AdoptionProof, TheBindingsPasstIsAdopted) {
  EXPECT_EQ(decide_adoption(full_record(), passt_proc(), expected()), Adoption::Adopt);
  ProcInfo avx2 = passt_proc();
  avx2.exe = "/usr/bin/passt.avx2";  // re-executed itself, argv unchanged
  EXPECT_EQ(decide_adoption(full_record(), avx2, expected()), Adoption::Adopt);
  EXPECT_EQ(decide_adoption(full_record(), std::nullopt, expected()), Adoption::Dead);
  EXPECT_EQ(decide_adoption(full_record(), proc(1000, "", true), expected()), Adoption::Dead);
}

TEST(AdoptionProof, WrongUserIsNeverSignalled) {
  // A root process (a forged pidfile naming `sleep` with its start time and exe copied from /proc).
  PidRecord forged = record();
  forged.exe = "/usr/bin/sleep";
  ProcInfo sleep = passt_proc(0, 0, {"sleep", "600"});
  sleep.exe = "/usr/bin/sleep";
  EXPECT_EQ(decide_adoption(forged, sleep, expected()), Adoption::Foreign);
  // Even with passt's own command line.
  EXPECT_EQ(decide_adoption(record(), passt_proc(0, 0), expected()), Adoption::Foreign);
  EXPECT_EQ(decide_adoption(record(), passt_proc(1000, 65534), expected()), Adoption::Foreign);
  EXPECT_EQ(decide_adoption(record(), passt_proc(65534, 0), expected()), Adoption::Foreign);
  // Real uid runas but effective root (a setuid program): not passt as relinkd runs it.
  ProcInfo setuid = passt_proc();
  setuid.uids = {65534, 0, 0, 0};
  EXPECT_EQ(decide_adoption(record(), setuid, expected()), Adoption::Foreign);
  ProcInfo saved = passt_proc();
  saved.gids = {65534, 65534, 0, 65534};
  EXPECT_EQ(decide_adoption(record(), saved, expected()), Adoption::Foreign);
  ProcInfo unknown = passt_proc();
  unknown.ids_known = false;
  EXPECT_EQ(decide_adoption(record(), unknown, expected()), Adoption::Foreign);
}

TEST(AdoptionProof, WrongCommandLine) {
  // A process of runas with another command line, the record carrying none
  // (a pidfile of an earlier relinkd, or a forged one): proves nothing.
  EXPECT_EQ(decide_adoption(record(), passt_proc(65534, 65534, {"/usr/bin/passt", "-f"}), expected()),
            Adoption::Foreign);
  EXPECT_EQ(decide_adoption(record(), passt_proc(65534, 65534, {}), expected()), Adoption::Foreign);
  // An earlier relinkd's record, the process running exactly the binding's argv: adopted.
  EXPECT_EQ(decide_adoption(record(), passt_proc(), expected()), Adoption::Adopt);
  // The recorded argv differs from what the process runs: not the recorded process.
  PidRecord other = full_record();
  other.argv.back() = "10002";
  EXPECT_EQ(decide_adoption(other, passt_proc(), expected()), Adoption::Reused);
  // The recorded uid differs from the process's: not the recorded process.
  PidRecord uid = full_record();
  uid.uid = 1000;
  EXPECT_EQ(decide_adoption(uid, passt_proc(), expected()), Adoption::Reused);
  // Start time or binary differ: the pid was reused.
  ProcInfo late = passt_proc();
  late.start_time = 1001;
  EXPECT_EQ(decide_adoption(full_record(), late, expected()), Adoption::Reused);
  ProcInfo bash = passt_proc();
  bash.exe = "/usr/bin/bash";
  EXPECT_EQ(decide_adoption(full_record(), bash, expected()), Adoption::Reused);
}

TEST(AdoptionProof, ChangedArgsAreAnOlderConfiguration) {
  // relinkd recorded and started it with "-t 10001"; the binding now says 10002.
  Expected now = expected();
  now.argv.back() = "10002";
  EXPECT_EQ(decide_adoption(full_record(), passt_proc(), now), Adoption::Outdated);
  // A passt binary path changed in [daemon] passt.
  now = expected();
  now.argv[0] = "/opt/passt/passt";
  EXPECT_EQ(decide_adoption(full_record(), passt_proc(), now), Adoption::Outdated);
  // Same argv, mode changed (stream-server's argv does not show its socket).
  now = expected();
  now.mode = "vhost-user";
  EXPECT_EQ(decide_adoption(full_record(), passt_proc(), now), Adoption::Outdated);
  // Without the recorded argv the old command line proves nothing.
  now = expected();
  now.argv.back() = "10002";
  EXPECT_EQ(decide_adoption(record(), passt_proc(), now), Adoption::Foreign);
  // Another runas now: the old passt (as nobody) is not provably relinkd's.
  now = expected();
  now.uid = now.gid = 1000;
  EXPECT_EQ(decide_adoption(full_record(), passt_proc(), now), Adoption::Foreign);
  // Another socket: not a passt for this binding's socket.
  now = expected();
  now.socket = "/run/relinkd/other.sock";
  EXPECT_EQ(decide_adoption(full_record(), passt_proc(), now), Adoption::Foreign);
  // No expectation at all proves nothing.
  now = expected();
  now.argv.clear();
  EXPECT_EQ(decide_adoption(full_record(), passt_proc(), now), Adoption::Foreign);
}

TEST(OrphanProof, OnlyTheRecordedPasstOfRunasIsProved) {
  // The record alone says what should run: the recorded passt is proved.
  EXPECT_EQ(decide_orphan(full_record(), passt_proc()), Adoption::Adopt);
  ProcInfo avx2 = passt_proc();
  avx2.exe = "/usr/bin/passt.avx2";
  EXPECT_EQ(decide_orphan(full_record(), avx2), Adoption::Adopt);
  EXPECT_EQ(decide_orphan(full_record(), std::nullopt), Adoption::Dead);
  EXPECT_EQ(decide_orphan(full_record(), proc(1000, "", true)), Adoption::Dead);
  // Another process under the pid.
  ProcInfo late = passt_proc();
  late.start_time = 1001;
  EXPECT_EQ(decide_orphan(full_record(), late), Adoption::Reused);
  // An earlier relinkd's record (no argv, uid, gid) proves nothing about a live process.
  EXPECT_EQ(decide_orphan(record(), passt_proc()), Adoption::Foreign);
  // A process whose ids are not all the recorded runas.
  ProcInfo setuid = passt_proc();
  setuid.uids = {65534, 0, 0, 0};
  EXPECT_EQ(decide_orphan(full_record(), setuid), Adoption::Foreign);
  // A record naming root is never relinkd's passt.
  PidRecord root = full_record();
  root.uid = root.gid = 0;
  EXPECT_EQ(decide_orphan(root, passt_proc(0, 0)), Adoption::Foreign);
  // A command line relinkd does not build (a record that names `sleep` with
  // its own argv, or passt without -f and the socket).
  PidRecord sleep = full_record();
  sleep.exe = "/usr/bin/sleep";
  sleep.argv = {"/usr/bin/sleep", "600"};
  ProcInfo sleeping = passt_proc(65534, 65534, sleep.argv);
  sleeping.exe = "/usr/bin/sleep";
  EXPECT_EQ(decide_orphan(sleep, sleeping), Adoption::Foreign);
  PidRecord other_socket = full_record();
  other_socket.socket = "/run/other.sock";
  EXPECT_EQ(decide_orphan(other_socket, passt_proc()), Adoption::Foreign);
  // stream-server: passt -f --fd 3, the socket being QEMU's.
  PidRecord server = full_record();
  server.mode = "stream-server";
  server.argv = {"/usr/bin/passt", "-f", "--fd", "3", "-t", "10001"};
  EXPECT_EQ(decide_orphan(server, passt_proc(65534, 65534, server.argv)), Adoption::Adopt);
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

namespace relink::passt {
namespace {

TEST(Pidfile, RoundTripWithIdsAndArgv) {
  TempDir dir;
  const std::string path = dir / "net1.pid";
  PidRecord rec = full_record();
  rec.argv.push_back("--name=\u00e9t\u00e9");  // UTF-8 survives
  ASSERT_TRUE(write_pidfile(path, rec));
  auto r = read_pidfile(path);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(*r, rec);
}

TEST(ParsePidfile, AcceptsWhatRelinkdWrites) {
  auto r = parse_pidfile(R"({"pid": 7, "start_time": 9, "exe": "/usr/bin/passt", "generation": 2, "mode": "stream-server",
                             "socket": "/s", "uid": 65534, "gid": 65533, "argv": ["/usr/bin/passt", "-f"]})",
                         "/x/net1.pid");
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->pid, 7);
  EXPECT_EQ(r->uid, 65534);
  EXPECT_EQ(r->gid, 65533);
  EXPECT_EQ(r->argv, (std::vector<std::string>{"/usr/bin/passt", "-f"}));
  // Without the newer fields (an earlier relinkd's pidfile).
  r = parse_pidfile(R"({"pid": 7, "start_time": 9, "exe": "/usr/bin/passt"})", "/x/net1.pid");
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->uid, -1);
  EXPECT_EQ(r->gid, -1);
  EXPECT_TRUE(r->argv.empty());
}

TEST(ParsePidfile, RefusesMalformedHugeDeepAndInvalidText) {
  const std::string base = R"("pid": 7, "start_time": 9, "exe": "/usr/bin/passt")";
  struct Case {
    std::string text;
    std::string reason;
  };
  std::string deep;
  for (int i = 0; i < 200; ++i) deep += "[";
  for (int i = 0; i < 200; ++i) deep += "]";
  const std::string huge = "{" + base + R"(, "socket": ")" + std::string(5000, 'a') + "\"}";
  for (const Case& c : std::vector<Case>{
           {huge, "over 4096 bytes"},
           {deep, "nested deeper"},
           {"{" + base + R"(, "argv": [[[["x"]]]]})", "nested deeper"},
           {"{\"pid\": 7, \"start_time\": 9, \"exe\": \"/usr/bin/p\xff\xfe\"}", "not valid JSON"},
           {"{\"pid\": 7, \"start_time\": 9, \"exe\": \"/usr/bin/p\xc3\"}", "not valid JSON"},
           {"\xef\xbb\xbf\x80", "not valid JSON"},
           {R"({"pid": 0, "start_time": 9, "exe": "/x"})", "out of range"},
           {R"({"pid": 2147483648, "start_time": 9, "exe": "/x"})", "out of range"},
           {R"({"pid": 1e3, "start_time": 9, "exe": "/x"})", "\"pid\""},
           {R"({"pid": 7, "start_time": 1e400, "exe": "/x"})", "not valid JSON"},
           {R"({"pid": 7, "start_time": 99999999999999999999999, "exe": "/x"})", "start_time"},
           {"{" + base + R"(, "generation": 18446744073709551615})", "\"generation\""},
           {"{" + base + R"(, "uid": 4294967295})", "\"uid\""},
           {"{" + base + R"(, "uid": -1})", "\"uid\""},
           {"{" + base + R"(, "gid": "0"})", "\"gid\""},
           {"{" + base + R"(, "argv": []})", "\"argv\""},
           {"{" + base + R"(, "argv": "passt"})", "\"argv\""},
           {"{" + base + R"(, "argv": ["passt", 3]})", "\"argv\""},
           {"{" + base + R"(, "argv": ["pa\u0000sst"]})", "\"argv\""},
           {"null", "not a JSON object"},
       }) {
    auto r = parse_pidfile(c.text, "/x/net1.pid");
    ASSERT_FALSE(r) << c.text.substr(0, 200);
    EXPECT_EQ(r.error().code, EINVAL);
    EXPECT_NE(r.error().message.find(c.reason), std::string::npos) << r.error().message;
    EXPECT_EQ(r.error().message.rfind("pidfile /x/net1.pid: ", 0), 0u) << r.error().message;
    // What a peer wrote reaches a log only as safe text.
    EXPECT_EQ(r.error().message.find('\xff'), std::string::npos);
    EXPECT_LT(r.error().message.size(), 600u);
  }
}

class PidfileTrust : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(dir_.path().empty());
    path_ = dir_ / "net1.pid";
  }
  void expect_refused(const std::string& why) {
    auto r = read_pidfile(path_);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, EPERM) << r.error().message;
    EXPECT_NE(r.error().message.find(why), std::string::npos) << r.error().message;
    EXPECT_NE(r.error().message.find(path_), std::string::npos) << r.error().message;
  }
  TempDir dir_;
  std::string path_;
};

TEST_F(PidfileTrust, SymlinkIsNeverFollowed) {
  TempDir elsewhere;
  const std::string target = elsewhere / "precious";
  write_text(target, R"({"pid": 1, "start_time": 1, "exe": "/sbin/init"})");
  ASSERT_EQ(symlink(target.c_str(), path_.c_str()), 0);
  expect_refused("is a symlink");
  // Writing replaces the link, removing removes the link: the target stays.
  ASSERT_TRUE(write_pidfile(path_, record()));
  EXPECT_EQ(test::read_file(target), R"({"pid": 1, "start_time": 1, "exe": "/sbin/init"})");
  ASSERT_EQ(unlink(path_.c_str()), 0);
  ASSERT_EQ(symlink(target.c_str(), path_.c_str()), 0);
  remove_pidfile(path_);
  EXPECT_FALSE(fs::exists(fs::symlink_status(path_)));
  EXPECT_TRUE(fs::exists(target));
}

TEST_F(PidfileTrust, WritableByOthersOrNotRegularOrTooBigIsRefused) {
  write_text(path_, R"({"pid": 12, "start_time": 34, "exe": "/usr/bin/passt"})");
  ASSERT_EQ(chmod(path_.c_str(), 0620), 0);
  expect_refused("writable by group or others");
  ASSERT_EQ(chmod(path_.c_str(), 0602), 0);
  expect_refused("writable by group or others");
  ASSERT_EQ(chmod(path_.c_str(), 0644), 0);
  EXPECT_TRUE(read_pidfile(path_));

  write_text(path_, std::string(kMaxPidfileBytes + 1, ' '));
  expect_refused("over 4096 bytes");

  ASSERT_EQ(unlink(path_.c_str()), 0);
  ASSERT_EQ(mkfifo(path_.c_str(), 0600), 0);
  expect_refused("not a regular file");  // and open() did not hang on the FIFO
  ASSERT_EQ(unlink(path_.c_str()), 0);
  ASSERT_EQ(mkdir(path_.c_str(), 0700), 0);
  expect_refused("not a regular file");
}

TEST_F(PidfileTrust, OwnedByAnotherUserIsRefused) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to give a file away";
  write_text(path_, R"({"pid": 12, "start_time": 34, "exe": "/usr/bin/passt"})");
  ASSERT_EQ(chmod(path_.c_str(), 0600), 0);
  ASSERT_EQ(chown(path_.c_str(), 65534, 65534), 0);
  expect_refused("is not owned by root");
}

TEST_F(PidfileTrust, DirectoryMustBeTrustedAndNotASymlink) {
  ASSERT_TRUE(write_pidfile(path_, record()));
  ASSERT_EQ(chmod(dir_.path().c_str(), 0777), 0);
  auto r = read_pidfile(path_);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, EPERM);
  EXPECT_NE(r.error().message.find("writable by group or others"), std::string::npos) << r.error().message;
  EXPECT_FALSE(write_pidfile(path_, record()));
  ASSERT_EQ(chmod(dir_.path().c_str(), 0700), 0);

  TempDir links;
  const std::string link = links / "vm1";
  ASSERT_EQ(symlink(dir_.path().c_str(), link.c_str()), 0);
  EXPECT_FALSE(read_pidfile(link + "/net1.pid"));
  EXPECT_FALSE(write_pidfile(link + "/net2.pid", record()));
  EXPECT_FALSE(fs::exists(dir_ / "net2.pid"));
  EXPECT_FALSE(fs::exists(dir_ / "net2.pid.tmp"));
  remove_pidfile(link + "/net1.pid");
  EXPECT_TRUE(fs::exists(path_)) << "removed through a symlinked directory";
}

TEST_F(PidfileTrust, AStaleTemporaryHardLinkIsNotWrittenThrough) {
  TempDir elsewhere;
  const std::string other = elsewhere / "other";
  write_text(other, "keep me");
  ASSERT_EQ(link(other.c_str(), (path_ + ".tmp").c_str()), 0);
  ASSERT_TRUE(write_pidfile(path_, record()));
  EXPECT_EQ(test::read_file(other), "keep me");
  auto r = read_pidfile(path_);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(*r, record());
}

}  // namespace
}  // namespace relink::passt
