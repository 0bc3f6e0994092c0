// SPDX-License-Identifier: GPL-2.0-or-later
// passt.h: modes, the --help feature probe, user args and argv, without
// running passt. fixtures/passt/help-2023-03.txt is Debian 12's passt
// (2023-03-09, "passt unknown version") captured with no syslog daemon:
//   passt --help 2>&1 >/dev/null | cat
// so every help line comes after a "Failed to send N bytes to syslog".
#include "passt/passt.h"

#include <unistd.h>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "passt/process.h"
#include "support/harness.h"

namespace relink::passt {
namespace {

using Args = std::vector<std::string>;

std::string fixture(const std::string& name) {
  return test::read_file(std::string(RELINK_FIXTURE_DIR) + "/passt/" + name);
}

// Records what would be spawned instead of running it.
class RecordingSpawner : public Spawner {
 public:
  Result<Spawned> spawn(const SpawnRequest& req) override {
    requests.push_back(req);
    return Error{ENOSYS, "recording only"};
  }
  std::vector<SpawnRequest> requests;
};

TEST(PasstMode, NamesRoundTrip) {
  for (Mode m : {Mode::StreamServer, Mode::StreamClient, Mode::VhostUser}) {
    auto parsed = parse_mode(mode_name(m));
    ASSERT_TRUE(parsed) << mode_name(m);
    EXPECT_EQ(*parsed, m);
  }
  EXPECT_STREQ(mode_name(Mode::StreamServer), "stream-server");
  EXPECT_STREQ(mode_name(Mode::StreamClient), "stream-client");
  EXPECT_STREQ(mode_name(Mode::VhostUser), "vhost-user");
  EXPECT_FALSE(parse_mode("stream"));
  EXPECT_FALSE(parse_mode("Stream-Server"));
  EXPECT_FALSE(parse_mode(""));
}

TEST(PasstHelp, Debian12PasstHasFdAndSocketButNoVhostUser) {
  const std::string help = fixture("help-2023-03.txt");
  ASSERT_NE(help.find("Failed to send"), std::string::npos) << "the fixture keeps the syslog noise";
  Features f = parse_help(help);
  EXPECT_TRUE(f.fd);
  EXPECT_TRUE(f.socket);
  EXPECT_TRUE(f.foreground);
  EXPECT_FALSE(f.vhost_user);
  EXPECT_EQ(f.version, "") << "--help carries no version";
}

TEST(PasstHelp, NewerPasstWithVhostUser) {
  // The shape of passt 2025's --help (abridged), with CRLF line ends and noise.
  const std::string help =
      "Usage: passt [OPTION]...\r\n"
      "\r\n"
      "  -f, --foreground\t\tDon't run in background\r\n"
      "Failed to send 40 bytes to syslog\r\n"
      "  -s, --socket, --socket-path PATH\tUNIX domain socket path\r\n"
      "  -F, --fd FD\t\tUse FD as pre-opened connected socket\r\n"
      "  --vhost-user\t\tEnable vhost-user mode\r\n";
  Features f = parse_help(help);
  EXPECT_TRUE(f.fd);
  EXPECT_TRUE(f.socket);
  EXPECT_TRUE(f.foreground);
  EXPECT_TRUE(f.vhost_user);
}

TEST(PasstHelp, OptionsMentionedInDescriptionsOrMissingAreNotFeatures) {
  const std::string help =
      "Usage: passt [OPTION]...\n"
      "  -d, --debug\t\tBe verbose\n"
      "    default: see --fd and --vhost-user in a later version\n"
      "  --fdinfo\t\tnot the fd option\n"
      "  --vhost-user-extra\tnot vhost-user either\n"
      "        -t 22\t\tForward local port 22 to 22 on guest\n"
      "Failed to send 31 bytes to syslog --socket\n";
  Features f = parse_help(help);
  EXPECT_FALSE(f.fd);
  EXPECT_FALSE(f.socket);
  EXPECT_FALSE(f.foreground);
  EXPECT_FALSE(f.vhost_user);
  EXPECT_FALSE(parse_help("").fd);
}

TEST(PasstSupport, Debian12PasstServesStreamModesOnly) {
  Features f = parse_help(fixture("help-2023-03.txt"));
  EXPECT_EQ(unsupported_reason(Mode::StreamServer, f), std::nullopt);
  EXPECT_EQ(unsupported_reason(Mode::StreamClient, f), std::nullopt);
  auto why = unsupported_reason(Mode::VhostUser, f);
  ASSERT_TRUE(why);
  EXPECT_EQ(*why, "the installed passt has no --vhost-user option (vhost-user needs passt 2025-01 or newer)");
}

TEST(PasstSupport, EachModeNamesTheOptionItLacks) {
  Features none;
  EXPECT_EQ(unsupported_reason(Mode::StreamServer, none),
            "the installed passt has no --fd option (stream-server needs it)");
  EXPECT_EQ(unsupported_reason(Mode::StreamClient, none),
            "the installed passt has no --socket option (stream-client needs it)");

  Features vhost_no_socket;
  vhost_no_socket.vhost_user = true;
  EXPECT_EQ(unsupported_reason(Mode::VhostUser, vhost_no_socket),
            "the installed passt has no --socket option (vhost-user needs it)");
  vhost_no_socket.socket = true;
  EXPECT_EQ(unsupported_reason(Mode::VhostUser, vhost_no_socket), std::nullopt);

  Features fd_only;
  fd_only.fd = true;
  EXPECT_EQ(unsupported_reason(Mode::StreamServer, fd_only), std::nullopt);
  EXPECT_TRUE(unsupported_reason(Mode::StreamClient, fd_only));
}

TEST(PasstArgs, AcceptsOrdinaryOptions) {
  for (const Args& args : std::vector<Args>{
           {},
           {"--tcp-ports", "10001"},
           {"-t", "10001", "-u", "53"},
           {"-t10001"},  // "1" is -t's argument, not -1
           {"-d", "--trace", "-q", "-e"},
           {"-l", "/var/log/passt.log", "--log-file=/tmp/x"},
           {"-46", "--mtu", "1500", "--no-dhcp"},
           {"--pcap", "/tmp/p.pcap", "-p/tmp/q.pcap"},
           {"-a", "192.0.2.10", "-g", "192.0.2.254", "-D", "192.0.2.53"},
           {"--", "--tcp-ports=22"},
       }) {
    EXPECT_EQ(check_user_args(args), std::nullopt) << ::testing::PrintToString(args);
  }
}

TEST(PasstArgs, RefusesWhatRelinkdSets) {
  struct Case {
    Args args;
    std::string named;  // the long option the reason names
  };
  for (const Case& c : std::vector<Case>{
           {{"-f"}, "'--foreground'"},
           {{"--foreground"}, "'--foreground'"},
           {{"-qf"}, "'--foreground'"},
           {{"-F", "3"}, "'--fd'"},
           {{"--fd", "3"}, "'--fd'"},
           {{"--fd=3"}, "'--fd'"},
           {{"-F3"}, "'--fd'"},
           {{"-s", "/tmp/s"}, "'--socket'"},
           {{"--socket", "/tmp/s"}, "'--socket'"},
           {{"--socket=/tmp/s"}, "'--socket'"},
           {{"--socket-path", "/tmp/s"}, "'--socket-path'"},
           {{"--vhost-user"}, "'--vhost-user'"},
           {{"-P", "/tmp/pid"}, "'--pid'"},
           {{"--pid=/tmp/pid"}, "'--pid'"},
           {{"--runas", "root"}, "'--runas'"},
           {{"--runas=0:0"}, "'--runas'"},
           {{"--run", "0"}, "'--runas'"},  // getopt_long takes unambiguous prefixes
           {{"-1"}, "'--one-off'"},
           {{"--one-off"}, "'--one-off'"},
           {{"-t", "22", "-d", "--fd", "4"}, "'--fd'"},
       }) {
    auto why = check_user_args(c.args);
    ASSERT_TRUE(why) << ::testing::PrintToString(c.args);
    EXPECT_EQ(why->rfind(c.named, 0), 0u) << *why;
    EXPECT_NE(why->find("remove it from args"), std::string::npos) << *why;
  }
  EXPECT_EQ(check_user_args({"--fd"}), "'--fd' is set by relinkd; remove it from args");
  EXPECT_EQ(check_user_args({"-F3"}), "'--fd' (given as '-F3') is set by relinkd; remove it from args");
}

// passt re-executes itself as "<path>.avx2" on AVX2 CPUs when that file
// exists; exec_path makes the same choice so that relinkd saves the exec.
TEST(PasstExecPath, PrefersTheAvx2BinaryWherePasstWouldSwitchToIt) {
  const std::string dir = ::testing::TempDir() + "relink-exec-path-" + std::to_string(::getpid());
  std::filesystem::create_directories(dir);
  const std::string passt = dir + "/passt";
  auto make_exe = [](const std::string& path, std::filesystem::perms perms) {
    std::ofstream(path) << "#!/bin/sh\n";
    std::filesystem::permissions(path, perms);
  };
  make_exe(passt, std::filesystem::perms::owner_all);
  // No .avx2 beside it: the configured binary.
  EXPECT_EQ(exec_path(passt), passt);
  // A .avx2 that cannot be executed is not chosen.
  make_exe(passt + ".avx2", std::filesystem::perms::owner_read);
  EXPECT_EQ(exec_path(passt), passt);
  std::filesystem::permissions(passt + ".avx2", std::filesystem::perms::owner_all);
  EXPECT_EQ(exec_path(passt), __builtin_cpu_supports("avx2") ? passt + ".avx2" : passt);
  // A directory of that name is not a binary.
  std::filesystem::remove(passt + ".avx2");
  std::filesystem::create_directory(passt + ".avx2");
  EXPECT_EQ(exec_path(passt), passt);
  std::filesystem::remove_all(dir);
}

TEST(PasstArgv, PerMode) {
  const Args user{"--tcp-ports", "10001"};
  EXPECT_EQ(build_argv("/usr/bin/passt", Mode::StreamServer, "/run/x.sock", user),
            (Args{"/usr/bin/passt", "-f", "--fd", "3", "--tcp-ports", "10001"}));
  EXPECT_EQ(build_argv("/usr/bin/passt", Mode::StreamClient, "/run/x.sock", user),
            (Args{"/usr/bin/passt", "-f", "--socket", "/run/x.sock", "--tcp-ports", "10001"}));
  EXPECT_EQ(build_argv("/opt/passt", Mode::VhostUser, "/run/y.sock", {}),
            (Args{"/opt/passt", "-f", "--vhost-user", "--socket", "/run/y.sock"}));
}

TEST(PasstArgv, BuiltArgvPassesItsOwnCheckAfterTheFixedPart) {
  // What relinkd adds is exactly what check_user_args() keeps out of args.
  for (Mode m : {Mode::StreamServer, Mode::StreamClient, Mode::VhostUser}) {
    Args argv = build_argv("/usr/bin/passt", m, "/run/x.sock", {});
    EXPECT_TRUE(check_user_args(Args(argv.begin() + 1, argv.end()))) << mode_name(m);
  }
}

TEST(PasstArgv, SpawnRequestFromBuiltArgv) {
  RecordingSpawner spawner;
  SpawnRequest req;
  req.path = "/usr/bin/passt";
  req.argv = build_argv(req.path, Mode::StreamServer, "", {"-t", "10001"});
  req.uid = 65534;
  req.gid = 65534;
  req.handed_fd = 7;
  EXPECT_FALSE(spawner.spawn(req));
  ASSERT_EQ(spawner.requests.size(), 1u);
  const SpawnRequest& got = spawner.requests[0];
  EXPECT_EQ(got.argv[0], got.path);
  EXPECT_EQ(got.argv, (Args{"/usr/bin/passt", "-f", "--fd", std::to_string(kHandedFd), "-t", "10001"}));
  EXPECT_EQ(got.handed_fd, 7);
}

TEST(PasstProbe, RunsHelpThroughTheSpawnerAndReportsItsError) {
  RecordingSpawner spawner;
  auto f = probe_features(spawner, "/bin/sh", 65534, 65534);  // exists, so the spawner is asked
  ASSERT_FALSE(f);
  EXPECT_EQ(f.error().code, ENOSYS);
  ASSERT_EQ(spawner.requests.size(), 1u);
  EXPECT_EQ(spawner.requests[0].argv, (Args{"/bin/sh", "--help"}));
  EXPECT_EQ(spawner.requests[0].uid, 65534u);
  EXPECT_EQ(spawner.requests[0].handed_fd, -1);
}

TEST(PasstProbe, MissingBinaryIsNamed) {
  RecordingSpawner spawner;
  auto f = probe_features(spawner, "/nonexistent/passt", 65534, 65534);
  ASSERT_FALSE(f);
  EXPECT_EQ(f.error().code, ENOENT);
  EXPECT_EQ(f.error().message.rfind("passt not found at /nonexistent/passt: ", 0), 0u) << f.error().message;
  EXPECT_TRUE(spawner.requests.empty());
}

TEST(PasstSyslogNoise, MatchesOnlyTheSyslogFailureLine) {
  EXPECT_TRUE(is_syslog_noise("Failed to send 31 bytes to syslog"));
  EXPECT_TRUE(is_syslog_noise("Failed to send 7 bytes to syslog\r"));
  EXPECT_TRUE(is_syslog_noise("Failed to send 1024 bytes to syslog\n"));
  EXPECT_FALSE(is_syslog_noise("Failed to send bytes to syslog"));
  EXPECT_FALSE(is_syslog_noise("Failed to send 31 bytes to syslog: extra"));
  EXPECT_FALSE(is_syslog_noise("TCP: Failed to send 31 bytes to syslog"));
  EXPECT_FALSE(is_syslog_noise("No external routable interface for IPv4"));
  EXPECT_FALSE(is_syslog_noise(""));
}

TEST(PasstSyslogNoise, FixtureIsHalfNoise) {
  const std::string help = fixture("help-2023-03.txt");
  size_t lines = 0, noise = 0;
  size_t start = 0;
  while (start < help.size()) {
    size_t nl = help.find('\n', start);
    if (nl == std::string::npos) nl = help.size();
    std::string_view line(help.data() + start, nl - start);
    ++lines;
    if (is_syslog_noise(line)) ++noise;
    else EXPECT_EQ(line.find("Failed to send"), std::string_view::npos) << line;
    start = nl + 1;
  }
  EXPECT_EQ(noise * 2, lines) << "one noise line per help line in the capture";
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

// fixtures/passt/start-fd-2023-03.txt: what Debian 12's passt printed (no
// syslog daemon) when started as relinkd starts it, `passt -f --fd 3 -t
// 10001` as nobody, in a namespace with an IPv4 default route and no IPv6
// one, until its peer closed the socket; the MAC address replaced.
// fixtures/passt/errors-2023-03.txt: its last line when it failed to start:
// `-t 22` as nobody, no default route at all, `--no-such-option`.
TEST(PasstProblemLines, TheStartUpBannerIsChatter) {
  const auto lines = lines_of(fixture("start-fd-2023-03.txt"));
  size_t chatter = 0;
  for (const auto& line : lines) {
    if (is_syslog_noise(line)) continue;
    ++chatter;
    EXPECT_FALSE(is_problem_line(line)) << line;
  }
  EXPECT_EQ(chatter, 10u) << "the fixture is the whole banner";
}

TEST(PasstProblemLines, ErrorsAreProblems) {
  const auto lines = lines_of(fixture("errors-2023-03.txt"));
  ASSERT_EQ(lines.size(), 3u);
  for (const auto& line : lines) EXPECT_TRUE(is_problem_line(line)) << line;
  // More of passt's error messages (from the binary's strings).
  for (const char* line : {"Invalid port specifier 10001:", "Multiple --fd options given",
                           "Can't bind IPv4 TCP socket address: Address already in use",
                           "Couldn't open network namespace /run/netns/x", "Socket path /tmp/s already in use",
                           "Options --socket and --fd are mutually exclusive", "Error reading /etc/resolv.conf: x",
                           "passt: option requires an argument -- 'F'", "Failed to sandbox process, exiting"})
    EXPECT_TRUE(is_problem_line(line)) << line;
}

TEST(PasstProblemLines, IndentedDetailsAndWordsInsideOthersAreNot) {
  // An indented line details the one before: the banner's addresses, the
  // QEMU command line with the socket path (which may hold any word).
  EXPECT_FALSE(is_problem_line("    kvm ... -netdev stream,addr.path=/run/failed-error.sock"));
  EXPECT_FALSE(is_problem_line("\tInvalid"));
  EXPECT_FALSE(is_problem_line("No external routable interface for IPv6"));
  EXPECT_FALSE(is_problem_line("Template interface: terror0 (IPv4)")) << "a word inside another";
  EXPECT_FALSE(is_problem_line("Client closed connection, exiting")) << "QEMU went away: routine";
  EXPECT_FALSE(is_problem_line(""));
  EXPECT_TRUE(is_problem_line("TCP: FAILED to bind")) << "case does not matter";
}

}  // namespace
}  // namespace relink::passt
