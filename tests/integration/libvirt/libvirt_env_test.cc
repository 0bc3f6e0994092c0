// SPDX-License-Identifier: GPL-2.0-or-later
// The libvirt test harness (tests/support/libvirt_env.h) against the real
// libvirtd and QEMU: libvirtd in a fresh namespace, a domain with a direct
// interface (a macvtap libvirt makes on a veth parent), a libvirtd restart
// that keeps the domain, destroy; the real test guest booted by libvirt and
// reachable through its macvtap; and nothing left behind when a test is
// interrupted or its process dies.
#include "support/libvirt_env.h"

#include <gtest/gtest-spi.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>

#include "support/harness.h"

namespace relink::test {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

double since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

bool pid_alive(int pid) {
  if (pid <= 0) return false;
  const std::string stat = read_file("/proc/" + std::to_string(pid) + "/stat");
  const size_t close = stat.rfind(')');
  return close != std::string::npos && close + 2 < stat.size() && stat[close + 2] != 'Z';
}

// The process holds /dev/tap<ifindex> open.
bool holds_tap(int pid, int ifindex) {
  std::error_code ec;
  const std::string want = "/dev/tap" + std::to_string(ifindex);
  for (const auto& e : fs::directory_iterator("/proc/" + std::to_string(pid) + "/fd", ec))
    if (fs::read_symlink(e.path(), ec).string() == want) return true;
  return false;
}

// The macvtap `virsh domiflist` names for the NIC with this MAC ("" if none).
std::string macvtap_of(LibvirtEnv& lv, const std::string& domain, const std::string& mac) {
  const std::string out = lv.virsh_ok("domiflist " + domain);
  size_t p = 0;
  while (p < out.size()) {
    size_t e = out.find('\n', p);
    if (e == std::string::npos) e = out.size();
    const std::string line = out.substr(p, e - p);
    p = e + 1;
    if (line.find(mac) == std::string::npos) continue;
    char ifname[64] = {0}, type[64] = {0}, source[64] = {0};
    if (sscanf(line.c_str(), " %63s %63s %63s", ifname, type, source) == 3 && std::string(type) == "direct")
      return ifname;
  }
  return "";
}

// A veth pair in `ns` whose end `name` is up: the macvtaps' parent.
void add_parent(const Netns& ns, const std::string& name) {
  ns.ip("link add " + name + " type veth peer name " + name + "-peer");
  ns.ip("link set " + name + " up");
  ns.ip("link set " + name + "-peer up");
}

TEST(LibvirtHarness, RunsADomainWithADirectInterfaceAcrossALibvirtdRestart) {
  RELINK_REQUIRE_ROOT();
  Netns ns("lv");
  auto t = std::chrono::steady_clock::now();
  push_ifindex(ns);
  const double push_s = since(t);
  add_parent(ns, "p0");

  LibvirtEnv lv(ns);
  ASSERT_NO_FATAL_FAILURE(lv.start());
  const double first_s = lv.last_start_seconds();
  const bool first_cached = lv.last_start_used_cache();
  EXPECT_TRUE(lv.running());
  EXPECT_NE(lv.virsh_ok("uri").find(lv.dir()), std::string::npos);
  // libvirtd is in the namespace (and so will its QEMUs be).
  EXPECT_EQ(sh("ip netns identify " + std::to_string(lv.pid())).out, ns.name() + "\n");

  const std::string mac = "52:54:00:4c:56:01";
  DomainSpec spec;
  spec.name = "lv-noos";
  spec.nics.push_back({.mac = mac, .source_dev = "p0"});
  t = std::chrono::steady_clock::now();
  ASSERT_TRUE(lv.create(domain_xml(spec), "--paused")) << lv.log();
  const double create_s = since(t);

  const std::string mvt = macvtap_of(lv, spec.name, mac);
  ASSERT_EQ(mvt.rfind("macvtap", 0), 0u) << lv.virsh("domiflist " + spec.name).out;
  auto link = ns.run("ip -d link show " + mvt);
  ASSERT_EQ(link.status, 0) << mvt << " is not in " << ns.name();
  EXPECT_NE(link.out.find(mvt + "@p0:"), std::string::npos) << link.out;
  EXPECT_NE(link.out.find("link/ether " + mac), std::string::npos) << link.out;
  EXPECT_NE(link.out.find("macvtap mode bridge"), std::string::npos) << link.out;
  const int ifindex = ns.ifindex(mvt);
  EXPECT_GT(ifindex, 3000) << "the ifindex counter was not pushed";

  const int qemu = lv.qemu_pid(spec.name);
  ASSERT_GT(qemu, 0) << lv.qemu_log(spec.name);
  EXPECT_TRUE(pid_alive(qemu));
  EXPECT_EQ(sh("ip netns identify " + std::to_string(qemu)).out, ns.name() + "\n");
  // Both in the namespace: Netns's destructor (`ip netns pids`, kill) gets
  // them too.
  const std::string in_ns = sh("ip netns pids " + ns.name()).out;
  EXPECT_NE(in_ns.find(std::to_string(qemu) + "\n"), std::string::npos) << in_ns;
  EXPECT_NE(in_ns.find(std::to_string(lv.pid()) + "\n"), std::string::npos) << in_ns;
  EXPECT_TRUE(holds_tap(qemu, ifindex)) << "QEMU does not hold /dev/tap" << ifindex;
  EXPECT_NE(lv.qemu_log(spec.name).find("qemu-system-x86_64"), std::string::npos);

  // A libvirtd restart keeps the domain: same QEMU, same macvtap.
  const pid_t old_libvirtd = lv.pid();
  ASSERT_NO_FATAL_FAILURE(lv.restart());
  const double restart_s = lv.last_start_seconds();
  EXPECT_TRUE(lv.last_start_used_cache()) << "libvirt probed QEMU again";
  EXPECT_NE(lv.pid(), old_libvirtd);
  EXPECT_EQ(lv.domains(), std::vector<std::string>{spec.name});
  EXPECT_EQ(lv.virsh_ok("domstate " + spec.name), "paused\n\n");
  EXPECT_EQ(lv.qemu_pid(spec.name), qemu);
  EXPECT_EQ(macvtap_of(lv, spec.name, mac), mvt);
  EXPECT_EQ(ns.ifindex(mvt), ifindex);

  // Stopped alone, libvirtd leaves its QEMU running.
  lv.stop();
  EXPECT_FALSE(lv.running());
  EXPECT_TRUE(pid_alive(qemu));
  ASSERT_NO_FATAL_FAILURE(lv.start());
  EXPECT_EQ(lv.domains(), std::vector<std::string>{spec.name});

  t = std::chrono::steady_clock::now();
  lv.virsh_ok("destroy " + spec.name);
  const double destroy_s = since(t);
  EXPECT_EQ(ns.ifindex(mvt), 0) << mvt << " outlived its domain";
  EXPECT_TRUE(wait_until([&] { return !pid_alive(qemu); }, 5s));
  EXPECT_EQ(lv.qemu_pid(spec.name), 0);
  EXPECT_TRUE(lv.domains().empty());

  printf(
      "[ timing ] push_ifindex %.2f s; libvirtd first start %.2f s (%s); restart %.2f s (%s); "
      "create --paused %.2f s; destroy %.2f s\n",
      push_s, first_s, first_cached ? "cached capabilities" : "probed QEMU", restart_s,
      lv.last_start_used_cache() ? "cached capabilities" : "probed QEMU", create_s, destroy_s);
}

TEST(LibvirtHarness, TestGuestBootsInALibvirtDomainAndAnswersThroughItsMacvtap) {
  RELINK_REQUIRE_ROOT();
  const std::string guest_dir = binary_dir() + "/guest";
  auto built = sh("bash " + source_dir() + "/tests/guest/build-guest.sh " + guest_dir);
  ASSERT_EQ(built.status, 0) << "building the test guest failed:\n" << built.out;

  Netns ns("lv");
  Netns peer("peer");
  push_ifindex(ns);
  // p0 in libvirt's namespace; its veth peer p1 in the peer namespace, as a
  // switch port would be.
  ns.ip("link add p0 type veth peer name p1 netns " + peer.name());
  ns.ip("link set p0 up");
  peer.ip("addr add 192.0.2.1/24 dev p1");
  peer.ip("link set p1 up");

  LibvirtEnv lv(ns);
  ASSERT_NO_FATAL_FAILURE(lv.start());
  const std::string mac = "52:54:00:4c:56:02";
  DomainSpec spec;
  spec.name = "lv-guest";
  spec.nics.push_back({.mac = mac, .source_dev = "p0"});
  spec.guest_dir = guest_dir;
  spec.cmdline_extra = "relink.ip=192.0.2.2/24 relink.serve=8080 relink.poll=0.05";
  spec.serial_log = lv.dir() + "/console.log";
  auto console = [&] { return read_file(spec.serial_log); };
  auto explain = [&] {
    return "guest console:\n" + console() + "\nQEMU log:\n" + lv.qemu_log(spec.name) + "\n" + lv.log();
  };

  auto t = std::chrono::steady_clock::now();
  ASSERT_TRUE(lv.create(domain_xml(spec)));
  const double create_s = since(t);
  t = std::chrono::steady_clock::now();
  ASSERT_TRUE(wait_until([&] { return peer.run("busybox ping -c1 -W1 192.0.2.2").status == 0; }, 120s, 100ms))
      << "the guest does not answer\n"
      << explain();
  const double ping_s = since(t);

  // Its services start right after its address is up.
  ASSERT_TRUE(wait_until([&] { return console().find("RELINK-GUEST-READY") != std::string::npos; }, 30s, 50ms))
      << explain();
  EXPECT_NE(peer.run("busybox nc -w 3 192.0.2.2 8080 </dev/null").out.find("RELINK-GUEST-HELLO tag=lv-guest"),
            std::string::npos)
      << explain();
  // The guest's eth0 is the NIC of the domain's XML, and libvirt's macvtap
  // carries its MAC on p0.
  EXPECT_NE(console().find("RELINK-GUEST-IFUP dev=eth0"), std::string::npos) << explain();
  EXPECT_NE(console().find("mac=" + mac), std::string::npos) << explain();
  const std::string mvt = macvtap_of(lv, spec.name, mac);
  EXPECT_NE(ns.run("ip link show " + mvt).out.find("@p0:"), std::string::npos);
  EXPECT_EQ(console().find("RELINK-GUEST-ERROR"), std::string::npos) << explain();
  printf("[ timing ] create %.2f s; guest boot to first ping %.2f s\n", create_s, ping_s);
}

// Two namespaces pushed one after the other get ifindexes far apart, and
// both past every /dev/tapN.
TEST(LibvirtHarness, PushedNamespacesGetDistinctIfindexes) {
  RELINK_REQUIRE_ROOT();
  Netns a("lv"), b("lv");
  push_ifindex(a, 100);
  push_ifindex(b, 100);
  add_parent(a, "p0");
  add_parent(b, "p0");
  const int ia = a.ifindex("p0"), ib = b.ifindex("p0");
  EXPECT_GT(ia, 200);
  EXPECT_GT(ib, ia + 500);
  EXPECT_NE(a.run("ip -o link show lo").out.find("alias relink-ifindex-end="), std::string::npos);
}

// A test interrupted by a fatal failure leaves nothing: the env's destructor
// destroys the domain (its macvtap goes), stops libvirtd, removes the
// directory. And when libvirtd was stopped with a domain still running, the
// destructor kills that QEMU and deletes its macvtap itself.
struct Seen {
  int libvirtd = 0, qemu = 0, qemu2 = 0;
  std::string dir, mvt, mvt2;
};
Seen seen;  // EXPECT_FATAL_FAILURE's statement cannot use locals

void interrupted_test(const Netns& ns) {
  LibvirtEnv lv(ns);
  ASSERT_NO_FATAL_FAILURE(lv.start());
  seen.dir = lv.dir();
  seen.libvirtd = lv.pid();
  for (const char* name : {"lv-a", "lv-b"}) {
    DomainSpec spec;
    spec.name = name;
    spec.machine = "pc";
    spec.nics.push_back({.mac = std::string(name) == "lv-a" ? "52:54:00:4c:56:0a" : "52:54:00:4c:56:0b",
                         .source_dev = "p0",
                         .pci_slot = "0x05"});
    ASSERT_TRUE(lv.create(domain_xml(spec), "--paused"));
  }
  seen.qemu = lv.qemu_pid("lv-a");
  seen.qemu2 = lv.qemu_pid("lv-b");
  seen.mvt = macvtap_of(lv, "lv-a", "52:54:00:4c:56:0a");
  seen.mvt2 = macvtap_of(lv, "lv-b", "52:54:00:4c:56:0b");
  ASSERT_TRUE(seen.qemu > 0 && seen.qemu2 > 0 && !seen.mvt.empty() && !seen.mvt2.empty());
  FAIL() << "interrupted on purpose";
}

Netns* g_ns = nullptr;

TEST(LibvirtHarness, AnInterruptedTestLeavesNothingBehind) {
  RELINK_REQUIRE_ROOT();
  Netns ns("lv");
  g_ns = &ns;
  push_ifindex(ns);
  add_parent(ns, "p0");
  seen = Seen{};
  auto t = std::chrono::steady_clock::now();
  EXPECT_FATAL_FAILURE(interrupted_test(*g_ns), "interrupted on purpose");
  const double s = since(t);
  ASSERT_GT(seen.qemu, 0);
  EXPECT_FALSE(pid_alive(seen.libvirtd));
  EXPECT_FALSE(pid_alive(seen.qemu));
  EXPECT_FALSE(pid_alive(seen.qemu2));
  EXPECT_EQ(ns.ifindex(seen.mvt), 0);
  EXPECT_EQ(ns.ifindex(seen.mvt2), 0);
  EXPECT_FALSE(fs::exists(seen.dir));
  EXPECT_EQ(sh("ip netns pids " + ns.name()).out, "") << "processes left in the namespace";
  printf("[ timing ] interrupted test with two domains, start to clean: %.2f s\n", s);

  // libvirtd stopped by the test, a domain left running: the destructor
  // still kills the QEMU and deletes the macvtap.
  int qemu = 0;
  std::string mvt, dir;
  {
    LibvirtEnv lv(ns);
    ASSERT_NO_FATAL_FAILURE(lv.start());
    dir = lv.dir();
    DomainSpec spec;
    spec.name = "lv-left";
    spec.nics.push_back({.mac = "52:54:00:4c:56:0c", .source_dev = "p0"});
    ASSERT_TRUE(lv.create(domain_xml(spec), "--paused"));
    qemu = lv.qemu_pid(spec.name);
    mvt = macvtap_of(lv, spec.name, "52:54:00:4c:56:0c");
    ASSERT_GT(ns.ifindex(mvt), 0);
    lv.stop();
    ASSERT_TRUE(pid_alive(qemu));
  }
  EXPECT_FALSE(pid_alive(qemu));
  EXPECT_EQ(ns.ifindex(mvt), 0);
  EXPECT_FALSE(fs::exists(dir));
}

// libvirtd failing to start fails the test with its own words.
LibvirtEnv* g_broken = nullptr;

TEST(LibvirtHarness, ALibvirtdThatCannotStartFailsTheTestWithItsLog) {
  RELINK_REQUIRE_ROOT();
  Netns ns("lv");
  LibvirtEnv lv(ns);
  std::ofstream(lv.dir() + "/etc/libvirt/libvirtd.conf") << "this is not a libvirtd.conf\n";
  g_broken = &lv;
  EXPECT_FATAL_FAILURE(g_broken->start(), "configuration file syntax error");
  EXPECT_FALSE(lv.running());
}

// The Netns goes before the env (members declared in the wrong order): its
// destructor kills libvirtd and QEMU, the env's then has nothing to stop.
TEST(LibvirtHarness, ANetnsGoneFirstLeavesNothingEither) {
  RELINK_REQUIRE_ROOT();
  auto ns = std::make_unique<Netns>("lv");
  push_ifindex(*ns);
  add_parent(*ns, "p0");
  int libvirtd = 0, qemu = 0;
  std::string dir;
  {
    LibvirtEnv lv(*ns);
    ASSERT_NO_FATAL_FAILURE(lv.start());
    DomainSpec spec;
    spec.name = "lv-first";
    spec.nics.push_back({.mac = "52:54:00:4c:56:0e", .source_dev = "p0"});
    ASSERT_TRUE(lv.create(domain_xml(spec), "--paused"));
    libvirtd = lv.pid();
    qemu = lv.qemu_pid(spec.name);
    dir = lv.dir();
    ASSERT_GT(qemu, 0);
    ns.reset();
    EXPECT_TRUE(wait_until([&] { return !pid_alive(libvirtd) && !pid_alive(qemu); }, 5s));
  }
  EXPECT_FALSE(fs::exists(dir));
}

// The test process itself dies (SIGKILL, no destructor runs): the reaper
// kills libvirtd and its QEMU.
TEST(LibvirtHarness, AKilledTestProcessLeavesNoLibvirtdOrQemu) {
  RELINK_REQUIRE_ROOT();
  Netns ns("lv");
  push_ifindex(ns);
  add_parent(ns, "p0");
  int pipefd[2];
  ASSERT_EQ(pipe(pipefd), 0);
  fflush(nullptr);
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    close(pipefd[0]);
    LibvirtEnv lv(ns);
    lv.start();
    DomainSpec spec;
    spec.name = "lv-orphan";
    spec.nics.push_back({.mac = "52:54:00:4c:56:0d", .source_dev = "p0"});
    const int qemu = lv.create(domain_xml(spec), "--paused") ? lv.qemu_pid(spec.name) : 0;
    const std::string line = std::to_string(lv.pid()) + " " + std::to_string(qemu) + " " + lv.dir() + "\n";
    if (write(pipefd[1], line.data(), line.size()) != static_cast<ssize_t>(line.size())) _exit(1);
    pause();
    _exit(0);
  }
  close(pipefd[1]);
  std::string line;
  char buf[512];
  ssize_t n;
  while ((n = read(pipefd[0], buf, sizeof buf)) > 0) {
    line.append(buf, static_cast<size_t>(n));
    if (line.find('\n') != std::string::npos) break;
  }
  close(pipefd[0]);
  kill(child, SIGKILL);
  int st;
  waitpid(child, &st, 0);
  int libvirtd = 0, qemu = 0;
  char dir[256] = {0};
  ASSERT_EQ(sscanf(line.c_str(), "%d %d %255s", &libvirtd, &qemu, dir), 3) << line;
  // Nobody is left to remove the directory of a killed test process.
  struct RemoveDir {
    std::string d;
    ~RemoveDir() {
      std::error_code ec;
      if (d.rfind("/tmp/relink-lv-", 0) == 0) fs::remove_all(d, ec);
    }
  } remove_dir{dir};
  ASSERT_GT(libvirtd, 0);
  ASSERT_GT(qemu, 0);
  EXPECT_TRUE(wait_until([&] { return !pid_alive(libvirtd) && !pid_alive(qemu); }, 10s))
      << "libvirtd " << libvirtd << " or QEMU " << qemu << " outlived the test process";
}

}  // namespace
}  // namespace relink::test
