// SPDX-License-Identifier: GPL-2.0-or-later
// libvirt-managed VMs end to end: a real libvirtd in the test's namespace
// (tests/support/libvirt_env.h), real QEMU domains, the real test guest, and
// relinkd following libvirt's domains with no VM in its config file. When
// the parent of a domain's <interface type='direct'> is deleted and
// re-created, relinkd re-plugs the interface through libvirt and the guest
// answers again. Also: discovery of domains and interfaces as they come and
// go, a paused guest, libvirtd restarts, a parent that never returns, a
// domain destroyed while its NIC is being released, a release held across
// relinkd being killed and across reloads of [libvirt].
#include <dirent.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <thread>

#include "test_guest.h"
#include "support/libvirt_env.h"

namespace relink::test {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

constexpr const char* kMac = "52:54:00:12:34:56";

class LibvirtVms : public ::testing::Test {
 protected:
  void SetUp() override {
    RELINK_REQUIRE_ROOT();
    ASSERT_FALSE(guest.dir().empty());
    // libvirt opens a macvtap as /dev/tap<ifindex>: keep this namespace's
    // ifindexes clear of other namespaces'.
    push_ifindex(env.ns());
    guest.add_parent(env.ns());
    ASSERT_NO_FATAL_FAILURE(lv.start());
  }
  void write_config(unsigned release_timeout_s = 10, const std::string& extra = "") {
    DaemonEnv::write_file(env.config_path(), env.config_text({}) + "\n[libvirt]\nuri = \"" + lv.uri() +
                                                 "\"\npid_dir = \"" + lv.pid_dir() + "\"\nrelease_timeout = " +
                                                 std::to_string(release_timeout_s) + "\n" + extra);
  }
  void start_relinkd(unsigned release_timeout_s = 10) {
    write_config(release_timeout_s);
    ASSERT_NO_FATAL_FAILURE(env.start_relinkd());
  }
  DomainSpec guest_domain(const std::string& name, const std::string& machine = "q35") {
    DomainSpec d;
    d.name = name;
    d.machine = machine;
    d.nics.push_back(DirectNic{kMac, "p0"});
    d.guest_dir = guest.dir();
    d.cmdline_extra = TestGuest::cmdline("relink.serve=8080");
    d.serial_log = env.dir() + "/" + name + ".console.log";
    return d;
  }
  DomainSpec no_os(const std::string& name, const std::vector<std::string>& macs) {
    DomainSpec d;
    d.name = name;
    for (const auto& m : macs) d.nics.push_back(DirectNic{m, "p0"});
    return d;
  }
  json vm(const std::string& name) {
    auto st = env.status();
    if (!st.is_object()) return nullptr;
    for (const auto& v : st["vms"])
      if (v.value("name", "") == name) return v;
    return nullptr;
  }
  size_t bindings_of(const std::string& name) {
    auto v = vm(name);
    return v.is_object() ? v["bindings"].size() : 0;
  }
  std::string explain(const std::string& domain = "g1") {
    return env.explain() + "\nlibvirtd log (tail):\n" + lv.log() + "\ndomain's QEMU log (tail):\n" +
           DaemonEnv::tail(lv.qemu_log(domain), 1500) + "\nconsole (tail):\n" +
           DaemonEnv::tail(read_file(env.dir() + "/" + domain + ".console.log"), 1500);
  }
  // `virsh domiflist`: the interface names (macvtaps) with this MAC.
  std::vector<std::string> domiflist_ifaces(const std::string& domain, const std::string& mac = kMac) {
    std::vector<std::string> out;
    std::istringstream in(lv.virsh("domiflist " + domain).out);
    for (std::string line; std::getline(in, line);) {
      std::istringstream f(line);
      std::string iface, type, source, model, m;
      if (f >> iface >> type >> source >> model >> m && m == mac) out.push_back(iface);
    }
    return out;
  }
  // The macvtap character devices QEMU holds open (by major:minor).
  static std::vector<dev_t> macvtap_fds(int pid, unsigned major_number) {
    std::vector<dev_t> out;
    const std::string dir = "/proc/" + std::to_string(pid) + "/fd";
    DIR* d = opendir(dir.c_str());
    if (!d) return out;
    while (dirent* e = readdir(d)) {
      struct stat st {};
      if (stat((dir + "/" + e->d_name).c_str(), &st) == 0 && S_ISCHR(st.st_mode) && major(st.st_rdev) == major_number)
        out.push_back(st.st_rdev);
    }
    closedir(d);
    return out;
  }
  // The binding's macvtap is the one libvirt names, and QEMU holds exactly
  // one macvtap device: that one's.
  void expect_qemu_holds_only(const std::string& domain) {
    auto b = env.binding(domain, "net0");
    const std::string mvt = text_of(b, "macvtap");
    auto names = domiflist_ifaces(domain);
    ASSERT_EQ(names.size(), 1u) << "one NIC with the guest's MAC\n" << lv.virsh("domiflist " + domain).out;
    EXPECT_EQ(names[0], mvt) << "libvirt's live XML names another macvtap than relinkd reports";
    const int ifindex = env.ns().ifindex(mvt);
    ASSERT_GT(ifindex, 0) << mvt << " missing\n" << explain(domain);
    EXPECT_EQ(b.value("macvtap_ifindex", 0), ifindex);
    auto dev = env.ns().run("cat /sys/class/net/" + mvt + "/macvtap/tap" + std::to_string(ifindex) + "/dev");
    unsigned maj = 0, min = 0;
    ASSERT_EQ(sscanf(dev.out.c_str(), "%u:%u", &maj, &min), 2) << dev.out;
    const auto held = macvtap_fds(lv.qemu_pid(domain), maj);
    ASSERT_EQ(held.size(), 1u) << "QEMU holds " << held.size() << " macvtap devices";
    EXPECT_EQ(held[0], makedev(maj, min)) << "QEMU holds another macvtap than " << mvt;
    EXPECT_FALSE(b.contains("wrong_tap")) << b.dump();
  }
  // Deletes the parent (libvirt's macvtap goes with it) and re-creates it;
  // the binding ends attached at `gen` and the guest answers again.
  void flap(const std::string& domain, uint64_t gen) {
    env.ns().ip("link del p0");
    ASSERT_TRUE(env.wait_state("waiting-parent", 0, domain, 10s, "net0")) << explain(domain);
    guest.add_parent(env.ns());
    ASSERT_TRUE(env.wait_state("attached", gen, domain, 30s, "net0")) << explain(domain);
    ASSERT_NO_FATAL_FAILURE(expect_qemu_holds_only(domain));
    ASSERT_TRUE(guest.answers(30s)) << "guest unreachable after replug " << gen << "\n" << explain(domain);
    EXPECT_NE(guest.hello().find("RELINK-GUEST-HELLO"), std::string::npos) << explain(domain);
  }
  void boot(const DomainSpec& d) {
    ASSERT_TRUE(lv.create(domain_xml(d))) << lv.log();
    ASSERT_TRUE(guest.answers(90s)) << "guest unreachable through libvirt's macvtap\n" << explain(d.name);
  }
  // The booted guest g1 followed by relinkd, then suspended: it cannot
  // release its interface until it is resumed.
  void attached_then_suspended(unsigned release_timeout_s) {
    ASSERT_NO_FATAL_FAILURE(boot(guest_domain("g1")));
    ASSERT_NO_FATAL_FAILURE(start_relinkd(release_timeout_s));
    ASSERT_TRUE(env.wait_state("attached", 1, "g1", 20s, "net0")) << explain();
    lv.virsh_ok("suspend g1");
    ASSERT_TRUE(wait_until([&] { return vm("g1").value("paused", false); }, 10s)) << explain();
  }
  // relinkd never talks to a libvirt domain's QEMU behind libvirt's back
  // (the test's libvirt runs QEMU as root, which is a taint of its own).
  void expect_untainted(const std::string& domain) {
    EXPECT_EQ(lv.qemu_log(domain).find("custom-monitor"), std::string::npos)
        << DaemonEnv::tail(lv.qemu_log(domain), 2000);
  }

  DaemonEnv env;
  TestGuest guest{env.dir() + "/g1.console.log"};
  LibvirtEnv lv{env.ns()};
};

TEST_F(LibvirtVms, DomainsAndInterfacesAreFollowedAsTheyComeAndGo) {
  ASSERT_TRUE(lv.create(domain_xml(no_os("d0", {})), "--paused"));
  ASSERT_TRUE(lv.create(domain_xml(no_os("d1", {"52:54:00:00:01:01"})), "--paused"));
  ASSERT_TRUE(lv.create(domain_xml(no_os("d2", {"52:54:00:00:02:01", "52:54:00:00:02:02"})), "--paused"));
  ASSERT_NO_FATAL_FAILURE(start_relinkd());
  // Started before relinkd: adopted as they are (generation 1, no replug).
  ASSERT_TRUE(env.wait_state("attached", 1, "d1", 20s, "net0")) << explain("d1");
  ASSERT_TRUE(env.wait_state("attached", 1, "d2", 20s, "net0")) << explain("d2");
  ASSERT_TRUE(env.wait_state("attached", 1, "d2", 20s, "net1")) << explain("d2");
  auto d0 = vm("d0");
  ASSERT_TRUE(d0.is_object()) << explain("d0");
  EXPECT_EQ(d0.value("source", ""), "libvirt");
  EXPECT_EQ(d0["bindings"].size(), 0u);
  auto b = env.binding("d2", "net1");
  EXPECT_EQ(b.value("source", ""), "libvirt");
  EXPECT_EQ(b.value("attach", ""), "libvirt");
  EXPECT_EQ(b.value("mac", ""), "52:54:00:00:02:02");
  EXPECT_EQ(b.value("parent", ""), "p0");
  EXPECT_EQ(b.value("attaches", 1u), 0u) << "adopted, not re-plugged";
  EXPECT_EQ(text_of(b, "macvtap"), domiflist_ifaces("d2", "52:54:00:00:02:02").at(0));
  EXPECT_EQ(vm("d2").value("qemu_pid", 0), lv.qemu_pid("d2"));
  EXPECT_EQ(env.status()["libvirt"].value("connected", false), true);

  // Started after relinkd.
  ASSERT_TRUE(lv.create(domain_xml(no_os("d3", {"52:54:00:00:03:01"})), "--paused"));
  ASSERT_TRUE(env.wait_state("attached", 1, "d3", 20s, "net0")) << explain("d3");

  // An interface attached by hand is followed; one detached by hand is dropped.
  DaemonEnv::write_file(env.dir() + "/iface.xml",
                        "<interface type='direct'><mac address='52:54:00:00:03:02'/><source dev='p0' "
                        "mode='bridge'/><model type='virtio'/></interface>");
  lv.virsh_ok("attach-device d3 " + env.dir() + "/iface.xml --live");
  ASSERT_TRUE(wait_until([&] { return bindings_of("d3") == 2; }, 20s)) << explain("d3");
  auto added = vm("d3")["bindings"][1];
  EXPECT_EQ(added.value("mac", ""), "52:54:00:00:03:02");
  ASSERT_TRUE(env.wait_state("attached", 0, "d3", 20s, added.value("nic", ""))) << explain("d3");

  // A stopped domain is dropped.
  lv.virsh_ok("destroy d1");
  ASSERT_TRUE(wait_until([&] { return vm("d1").is_null(); }, 20s)) << explain("d1");
  EXPECT_TRUE(vm("d2").is_object());
  EXPECT_TRUE(env.relinkd().running());
}

// The guest keeps its network through 10 parent flaps in a row, through
// libvirt: same PCI slot and MAC, libvirt's XML names the new macvtap, QEMU
// holds it and no other, the domain is not tainted. An interface its owner
// detaches by hand is no longer followed.
TEST_F(LibvirtVms, GuestComesBackAfterTenParentFlapsOnQ35) {
  ASSERT_NO_FATAL_FAILURE(boot(guest_domain("g1")));
  ASSERT_NO_FATAL_FAILURE(start_relinkd());
  ASSERT_TRUE(env.wait_state("attached", 1, "g1", 20s, "net0")) << explain();
  ASSERT_NO_FATAL_FAILURE(expect_qemu_holds_only("g1"));
  for (uint64_t gen = 2; gen <= 11; ++gen) ASSERT_NO_FATAL_FAILURE(flap("g1", gen)) << "flap " << gen - 1;
  auto b = env.binding("g1", "net0");
  EXPECT_EQ(b.value("attaches", 0u), 10u);
  EXPECT_TRUE(b["last_release_ms"].is_number()) << b.dump();
  expect_untainted("g1");
  // Nothing left behind: one macvtap in the namespace, the live one.
  auto mvts = env.ns().run("ip -o link show type macvtap | wc -l").out;
  EXPECT_EQ(std::stoi(mvts), 1) << env.ns().run("ip -o link show type macvtap").out;

  // Detached by its owner: dropped, and relinkd does not plug it in again.
  lv.virsh_ok("detach-device-alias g1 net0 --live");
  ASSERT_TRUE(wait_until([&] { return bindings_of("g1") == 0 && vm("g1").is_object(); }, 20s)) << explain();
  std::this_thread::sleep_for(1s);
  EXPECT_TRUE(domiflist_ifaces("g1").empty()) << lv.virsh("domiflist g1").out;
}

TEST_F(LibvirtVms, GuestComesBackAfterTenParentFlapsOnI440fx) {
  ASSERT_NO_FATAL_FAILURE(boot(guest_domain("g1", "pc")));
  ASSERT_NO_FATAL_FAILURE(start_relinkd());
  ASSERT_TRUE(env.wait_state("attached", 1, "g1", 20s, "net0")) << explain();
  for (uint64_t gen = 2; gen <= 11; ++gen) ASSERT_NO_FATAL_FAILURE(flap("g1", gen)) << "flap " << gen - 1;
  expect_untainted("g1");
  EXPECT_EQ(std::stoi(env.ns().run("ip -o link show type macvtap | wc -l").out), 1)
      << env.ns().run("ip -o link show type macvtap").out;
}

// A paused guest cannot release its NIC: the binding gives up after
// release_timeout with the reason, and goes on as soon as the guest runs.
TEST_F(LibvirtVms, PausedGuestBacksOffThenComesBackWhenResumed) {
  ASSERT_NO_FATAL_FAILURE(attached_then_suspended(2));
  env.ns().ip("link del p0");
  ASSERT_TRUE(env.wait_state("waiting-parent", 0, "g1", 10s, "net0")) << explain();
  guest.add_parent(env.ns());
  ASSERT_TRUE(env.wait_state("releasing", 0, "g1", 10s, "net0")) << explain();
  ASSERT_TRUE(env.wait_state("backoff", 0, "g1", 10s, "net0")) << explain();
  EXPECT_EQ(text_of(env.binding("g1", "net0"), "last_error"),
            "the guest did not release net0 within 2 s: is it paused or without PCI hotplug?");
  // libvirt sets the interface's macvtap online to resume: relinkd made a
  // stand-in of that name on the returned parent.
  lv.virsh_ok("resume g1");
  ASSERT_TRUE(env.wait_state("attached", 2, "g1", 30s, "net0")) << explain();
  ASSERT_NO_FATAL_FAILURE(expect_qemu_holds_only("g1"));
  EXPECT_TRUE(guest.answers(30s)) << explain();
  // The stand-in went with the released interface.
  EXPECT_EQ(std::stoi(env.ns().run("ip -o link show type macvtap | wc -l").out), 1)
      << env.ns().run("ip -o link show type macvtap").out;
}

// libvirtd restarts: relinkd reconnects, adopts the healthy NIC (no replug),
// and one restart in the middle of a release still ends with the guest's one
// NIC plugged in again.
TEST_F(LibvirtVms, LibvirtdRestartsAreSurvived) {
  ASSERT_NO_FATAL_FAILURE(boot(guest_domain("g1")));
  ASSERT_NO_FATAL_FAILURE(start_relinkd(2));
  ASSERT_TRUE(env.wait_state("attached", 1, "g1", 20s, "net0")) << explain();

  lv.stop();
  ASSERT_TRUE(wait_until(
      [&] {
        auto st = env.status();
        return st.is_object() && st["libvirt"].is_object() && !st["libvirt"].value("connected", true);
      },
      20s))
      << explain();
  EXPECT_EQ(env.binding("g1", "net0").value("state", ""), "vm-offline");
  auto human = sh(relinkctl_bin() + " --socket " + env.control() + " status");
  EXPECT_NE(human.out.find("libvirt: not connected to qemu:///system"), std::string::npos) << human.out;
  EXPECT_NE(human.out.find("libvirt-down"), std::string::npos) << human.out;
  ASSERT_NO_FATAL_FAILURE(lv.start());
  ASSERT_TRUE(env.wait_state("attached", 1, "g1", 30s, "net0")) << explain();
  EXPECT_EQ(env.binding("g1", "net0").value("attaches", 1u), 0u) << "a healthy NIC is adopted, not re-plugged";

  // A release pending while libvirtd restarts.
  lv.virsh_ok("suspend g1");
  env.ns().ip("link del p0");
  ASSERT_TRUE(env.wait_state("waiting-parent", 0, "g1", 10s, "net0")) << explain();
  guest.add_parent(env.ns());
  ASSERT_TRUE(env.wait_state("releasing", 0, "g1", 10s, "net0")) << explain();
  lv.restart();
  lv.virsh_ok("resume g1");
  ASSERT_TRUE(env.wait_state("attached", 0, "g1", 60s, "net0")) << explain();
  ASSERT_TRUE(wait_until([&] { return env.binding("g1", "net0").value("generation", 0u) >= 2; }, 1s)) << explain();
  ASSERT_NO_FATAL_FAILURE(expect_qemu_holds_only("g1"));
  EXPECT_TRUE(guest.answers(30s)) << explain();
  expect_untainted("g1");
}

// A parent that never returns leaves the binding waiting with the guest's
// link down; a domain destroyed while its NIC is being released is dropped
// and leaves nothing behind.
TEST_F(LibvirtVms, ParentThatNeverReturnsAndDomainDestroyedWhileReleasing) {
  ASSERT_NO_FATAL_FAILURE(boot(guest_domain("g1")));
  ASSERT_NO_FATAL_FAILURE(start_relinkd(5));
  ASSERT_TRUE(env.wait_state("attached", 1, "g1", 20s, "net0")) << explain();
  env.ns().ip("link del p0");
  ASSERT_TRUE(env.wait_state("waiting-parent", 0, "g1", 10s, "net0")) << explain();
  const std::string getlink = std::string("domif-getlink g1 ") + kMac;
  ASSERT_TRUE(wait_until([&] { return lv.virsh(getlink).out.find("down") != std::string::npos; }, 10s))
      << lv.virsh(getlink).out << explain();
  std::this_thread::sleep_for(2s);
  EXPECT_EQ(env.binding("g1", "net0").value("state", ""), "waiting-parent");
  EXPECT_EQ(domiflist_ifaces("g1").size(), 1u) << "the NIC stays in the guest while its parent is away";

  lv.virsh_ok("suspend g1");
  guest.add_parent(env.ns());
  ASSERT_TRUE(env.wait_state("releasing", 0, "g1", 10s, "net0")) << explain();
  lv.virsh_ok("destroy g1");
  ASSERT_TRUE(wait_until([&] { return vm("g1").is_null(); }, 20s)) << explain();
  EXPECT_TRUE(env.relinkd().running());
  EXPECT_EQ(env.ns().run("ip -o link show type macvtap").out, "");
  EXPECT_TRUE(lv.domains().empty());
}

// libvirt opens the new macvtap as /dev/tap<ifindex>, and /dev is shared by
// every network namespace: when another namespace has a macvtap with that
// ifindex, the node is that one's and QEMU gets the wrong device. relinkd
// finds out, says so, and plugs the NIC in again (on a macvtap with another
// ifindex).
TEST_F(LibvirtVms, WrongTapFromAnotherNamespaceIsFoundAndReplugged) {
  ASSERT_NO_FATAL_FAILURE(boot(guest_domain("g1")));
  ASSERT_NO_FATAL_FAILURE(start_relinkd());
  ASSERT_TRUE(env.wait_state("attached", 1, "g1", 20s, "net0")) << explain();
  env.ns().ip("link del p0");
  ASSERT_TRUE(env.wait_state("waiting-parent", 0, "g1", 10s, "net0")) << explain();
  // Where the namespace's ifindex counter stands: the parent gets the next
  // ifindex, libvirt's new macvtap the one after.
  env.ns().ip("link add rlprobe0 type veth peer name rlprobe1");
  const int last = std::max(env.ns().ifindex("rlprobe0"), env.ns().ifindex("rlprobe1"));
  env.ns().ip("link del rlprobe0");
  ASSERT_GT(last, 0);
  const int predicted = last + 2;
  Netns other{"other"};
  other.ip("link add op0 type veth peer name op1");
  other.ip("link set op0 up");
  other.ip("link add link op0 name omv index " + std::to_string(predicted) + " type macvtap mode bridge");
  ASSERT_EQ(other.ifindex("omv"), predicted);
  guest.add_parent(env.ns());
  ASSERT_EQ(env.ns().ifindex("p0"), last + 1) << "the parent did not get the predicted ifindex";
  ASSERT_TRUE(env.wait_state("attached", 3, "g1", 30s, "net0")) << explain();
  const std::string log = read_file(env.log_path());
  EXPECT_NE(log.find("which is another network namespace's macvtap"), std::string::npos) << explain();
  EXPECT_NE(log.find("/dev/tap" + std::to_string(predicted)), std::string::npos) << explain();
  ASSERT_NO_FATAL_FAILURE(expect_qemu_holds_only("g1"));
  EXPECT_NE(env.binding("g1", "net0").value("macvtap_ifindex", 0), predicted);
  EXPECT_TRUE(guest.answers(30s)) << explain();
  EXPECT_EQ(other.ifindex("omv"), predicted) << "the other namespace's macvtap is not relinkd's";
}

// libvirt's calls run off relinkd's loop: with libvirtd hung (SIGSTOP) in
// the middle of a replug, the control socket still answers at once; once
// libvirtd runs again, the replug completes.
TEST_F(LibvirtVms, HungLibvirtdBlocksNothingElse) {
  ASSERT_NO_FATAL_FAILURE(boot(guest_domain("g1")));
  ASSERT_NO_FATAL_FAILURE(start_relinkd());
  ASSERT_TRUE(env.wait_state("attached", 1, "g1", 20s, "net0")) << explain();
  env.ns().ip("link del p0");
  ASSERT_TRUE(env.wait_state("waiting-parent", 0, "g1", 10s, "net0")) << explain();
  ASSERT_EQ(::kill(lv.pid(), SIGSTOP), 0);
  struct Cont {
    pid_t pid;
    ~Cont() { ::kill(pid, SIGCONT); }
  } cont{lv.pid()};
  guest.add_parent(env.ns());
  ASSERT_TRUE(env.wait_state("releasing", 0, "g1", 10s, "net0")) << explain();
  for (int i = 0; i < 5; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    auto st = env.status();
    const auto took = std::chrono::steady_clock::now() - t0;
    ASSERT_TRUE(st.is_object());
    EXPECT_LT(took, 2s) << "status waited for libvirt";
    std::this_thread::sleep_for(200ms);
  }
  ::kill(lv.pid(), SIGCONT);
  ASSERT_TRUE(env.wait_state("attached", 2, "g1", 30s, "net0")) << explain();
  ASSERT_NO_FATAL_FAILURE(expect_qemu_holds_only("g1"));
  EXPECT_TRUE(guest.answers(30s)) << explain();
}

// The guest's link follows the parent's carrier through libvirt (a live
// <link state> update); nothing is re-plugged.
TEST_F(LibvirtVms, GuestLinkFollowsTheParentsCarrier) {
  ASSERT_NO_FATAL_FAILURE(boot(guest_domain("g1")));
  ASSERT_NO_FATAL_FAILURE(start_relinkd());
  ASSERT_TRUE(env.wait_state("attached", 1, "g1", 20s, "net0")) << explain();
  const std::string getlink = std::string("domif-getlink g1 ") + kMac;
  guest.peer().ip("link set p1 down");
  ASSERT_TRUE(wait_until([&] { return lv.virsh(getlink).out.find(" down") != std::string::npos; }, 10s))
      << lv.virsh(getlink).out << explain();
  EXPECT_EQ(env.binding("g1", "net0").value("link", ""), "down");
  guest.peer().ip("link set p1 up");
  ASSERT_TRUE(wait_until([&] { return lv.virsh(getlink).out.find(" up") != std::string::npos; }, 10s))
      << lv.virsh(getlink).out << explain();
  EXPECT_TRUE(guest.answers(30s)) << explain();
  auto b = env.binding("g1", "net0");
  EXPECT_EQ(b.value("generation", 0u), 1u) << "nothing re-plugged";
  EXPECT_EQ(b.value("state", ""), "attached");
}

// A domain named like a VM of the config file is not followed, and says so.
TEST_F(LibvirtVms, DomainNamedLikeAConfiguredVmIsRefused) {
  ASSERT_TRUE(lv.create(domain_xml(no_os("vm1", {"52:54:00:00:01:01"})), "--paused"));
  VmSpec v;
  DaemonEnv::write_file(env.config_path(), env.config_text({v}) + "\n[libvirt]\nuri = \"" + lv.uri() +
                                               "\"\npid_dir = \"" + lv.pid_dir() + "\"\n");
  ASSERT_NO_FATAL_FAILURE(env.start_relinkd());
  ASSERT_TRUE(wait_until([&] { auto st = env.status(); return st.is_object() && st["libvirt"]["not_followed"].contains("vm1"); }, 20s))
      << explain("vm1");
  auto v1 = vm("vm1");
  EXPECT_EQ(v1.value("source", ""), "config");
  EXPECT_NE(read_file(env.log_path()).find("libvirt domain vm1 has the name of a VM in"), std::string::npos);
  auto human = sh(relinkctl_bin() + " --socket " + env.control() + " status");
  EXPECT_NE(human.out.find("libvirt: domain vm1 not followed: a VM of the config file has this name"),
            std::string::npos)
      << human.out;
}

}  // namespace
}  // namespace relink::test

namespace relink::test {
namespace {

// relinkd is killed -9 while a paused guest holds a release it asked for
// through libvirt; the guest is resumed and releases the interface while no
// relinkd runs, so libvirt's live XML no longer has it. The next relinkd
// finds the interface in the journal of intent and attaches it again.
TEST_F(LibvirtVms, RelinkdKilledMidReleaseTheNextOneAttachesTheInterfaceAgain) {
  ASSERT_NO_FATAL_FAILURE(attached_then_suspended(60));
  env.ns().ip("link del p0");
  ASSERT_TRUE(env.wait_state("waiting-parent", 0, "g1", 10s, "net0")) << explain();
  guest.add_parent(env.ns());
  ASSERT_TRUE(env.wait_state("releasing", 0, "g1", 10s, "net0")) << explain();
  const std::string journal = env.dir() + "/state/intent.json";
  ASSERT_NE(read_file(journal).find(kMac), std::string::npos) << "not journaled before the release\n" << explain();
  ASSERT_NE(env.relinkd().stop(SIGKILL, 5s), -1);
  std::filesystem::remove(env.control());
  lv.virsh_ok("resume g1");
  ASSERT_TRUE(wait_until([&] { return domiflist_ifaces("g1").empty(); }, 30s))
      << "the guest did not release the interface\n" << lv.virsh("domiflist g1").out;
  ASSERT_NO_FATAL_FAILURE(env.start_relinkd());
  ASSERT_TRUE(env.wait_state("attached", 0, "g1", 60s, "net0")) << explain();
  ASSERT_NO_FATAL_FAILURE(expect_qemu_holds_only("g1"));
  EXPECT_TRUE(guest.answers(30s)) << explain();
  EXPECT_TRUE(wait_until([&] { return !std::filesystem::exists(journal); }, 5s)) << read_file(journal);
  EXPECT_NE(read_file(env.log_path()).find("finishing a replug begun before"), std::string::npos) << explain();
  expect_untainted("g1");
}

// A release asked while the interface's macvtap is alive (relinkctl
// reattach of a paused guest) is still pending when relinkd is killed; the
// next relinkd adopts the live macvtap. The guest, resumed, lets go of the
// interface: that is the earlier relinkd's release (the journal says so),
// not its owner detaching it, and it is attached again.
TEST_F(LibvirtVms, AReleasePendingAcrossARestartWithALiveMacvtapEndsAttached) {
  ASSERT_NO_FATAL_FAILURE(attached_then_suspended(60));
  auto r = sh(relinkctl_bin() + " --socket " + env.control() + " reattach --no-wait g1 net0 2>&1");
  ASSERT_EQ(r.status, 0) << r.out;
  ASSERT_TRUE(env.wait_state("releasing", 0, "g1", 10s, "net0")) << explain();
  const std::string journal = env.dir() + "/state/intent.json";
  ASSERT_NE(read_file(journal).find(kMac), std::string::npos) << "not journaled before the release\n" << explain();
  ASSERT_NE(env.relinkd().stop(SIGKILL, 5s), -1);
  std::filesystem::remove(env.control());
  ASSERT_NO_FATAL_FAILURE(env.start_relinkd());
  ASSERT_TRUE(env.wait_state("attached", 0, "g1", 20s, "net0")) << "the live macvtap was not adopted\n" << explain();
  lv.virsh_ok("resume g1");
  ASSERT_TRUE(wait_until(
      [&] {
        auto b = env.binding("g1", "net0");
        return b.is_object() && b.value("attaches", 0u) >= 1 && b.value("state", "") == "attached";
      },
      30s))
      << explain();
  ASSERT_NO_FATAL_FAILURE(expect_qemu_holds_only("g1"));
  EXPECT_TRUE(guest.answers(30s)) << explain();
  EXPECT_TRUE(wait_until([&] { return !std::filesystem::exists(journal); }, 5s)) << read_file(journal);
}

// A reload that changes [libvirt] re-creates the connection and the domains'
// VMs. First while a paused guest holds a release: the new VM asks again and
// plugs the interface in once the resumed guest lets go. Then with the
// domain not followed while the guest releases (a reload lists another
// domain; the release completes, libvirt's live XML no longer has the
// interface): the reload that follows it again finds the interface in the
// journal of intent and plugs it back in.
TEST_F(LibvirtVms, AReleaseHeldAcrossLibvirtReloadsEndsWithTheInterfaceBack) {
  ASSERT_NO_FATAL_FAILURE(boot(guest_domain("g1")));
  ASSERT_NO_FATAL_FAILURE(start_relinkd(60));
  ASSERT_TRUE(env.wait_state("attached", 1, "g1", 20s, "net0")) << explain();
  const std::string journal = env.dir() + "/state/intent.json";
  auto reload = [&](unsigned release_timeout_s, const std::string& extra) {
    write_config(release_timeout_s, extra);
    auto r = sh(relinkctl_bin() + " --socket " + env.control() + " reload 2>&1");
    ASSERT_EQ(r.status, 0) << r.out;
  };
  auto pause_holding_a_release = [&] {
    lv.virsh_ok("suspend g1");
    ASSERT_TRUE(wait_until([&] { return vm("g1").value("paused", false); }, 10s)) << explain();
    env.ns().ip("link del p0");
    ASSERT_TRUE(env.wait_state("waiting-parent", 0, "g1", 10s, "net0")) << explain();
    guest.add_parent(env.ns());
    ASSERT_TRUE(env.wait_state("releasing", 0, "g1", 10s, "net0")) << explain();
    ASSERT_NE(read_file(journal).find(kMac), std::string::npos) << "not journaled before the release\n" << explain();
  };
  auto release_timeout = [&] {
    auto b = env.binding("g1", "net0");
    return b.is_object() ? b.value("release_timeout_s", 0) : 0;
  };
  auto expect_back = [&] {
    ASSERT_TRUE(env.wait_state("attached", 0, "g1", 60s, "net0")) << explain();
    ASSERT_NO_FATAL_FAILURE(expect_qemu_holds_only("g1"));
    EXPECT_TRUE(guest.answers(30s)) << explain();
    EXPECT_TRUE(wait_until([&] { return !std::filesystem::exists(journal); }, 5s)) << read_file(journal);
  };

  ASSERT_NO_FATAL_FAILURE(pause_holding_a_release());
  ASSERT_NO_FATAL_FAILURE(reload(59, ""));
  ASSERT_TRUE(wait_until([&] { return release_timeout() == 59; }, 20s))
      << "the domain's VM was not made anew\n" << explain();
  ASSERT_TRUE(env.wait_state("releasing", 0, "g1", 20s, "net0")) << explain();
  lv.virsh_ok("resume g1");
  ASSERT_NO_FATAL_FAILURE(expect_back());

  ASSERT_NO_FATAL_FAILURE(pause_holding_a_release());
  ASSERT_NO_FATAL_FAILURE(reload(58, "domains = [\"another\"]\n"));
  ASSERT_TRUE(wait_until([&] { return vm("g1").is_null(); }, 20s)) << explain();
  lv.virsh_ok("resume g1");
  ASSERT_TRUE(wait_until([&] { return domiflist_ifaces("g1").empty(); }, 30s))
      << "the guest did not release the interface\n" << lv.virsh("domiflist g1").out;
  ASSERT_NE(read_file(journal).find(kMac), std::string::npos) << "the journal lost the release\n" << explain();
  ASSERT_NO_FATAL_FAILURE(reload(57, ""));
  ASSERT_NO_FATAL_FAILURE(expect_back());
  EXPECT_EQ(release_timeout(), 57);
  EXPECT_NE(read_file(env.log_path()).find("finishing a replug begun before"), std::string::npos) << explain();
  EXPECT_EQ(std::stoi(env.ns().run("ip -o link show type macvtap | wc -l").out), 1)
      << env.ns().run("ip -o link show type macvtap").out;
  expect_untainted("g1");
}

}  // namespace
}  // namespace relink::test
