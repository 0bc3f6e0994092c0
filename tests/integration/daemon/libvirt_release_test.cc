// SPDX-License-Identifier: GPL-2.0-or-later
// [libvirt] release = "on-loss" end to end, with one booted test guest under
// a real libvirtd, shared by every case (a boot is the costly part): the
// domain's NIC is detached through libvirt as soon as its parent is deleted
// (gone from the live XML and from the guest), and only attached again when
// the parent returns; 5 flaps in a row; a carrier loss releases nothing; a
// parent that returns while the release is in flight; a paused guest (its
// release pending across the parent's return, and its release timing out);
// relinkd restarted during the outage with the NIC released.
#include <dirent.h>
#include <signal.h>
#include <unistd.h>

#include <filesystem>
#include <sstream>
#include <thread>

#include "test_guest.h"
#include "support/libvirt_env.h"

namespace relink::test {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

constexpr const char* kMac = "52:54:00:12:34:5a";
constexpr const char* kDomain = "g1";

size_t count_of(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t p = text.find(what); p != std::string::npos; p = text.find(what, p + 1)) ++n;
  return n;
}

class LibvirtReleaseOnLoss : public ::testing::Test {
 protected:
  void SetUp() override {
    RELINK_REQUIRE_ROOT();
    ASSERT_FALSE(guest.dir().empty());
    push_ifindex(env.ns());  // libvirt opens /dev/tap<ifindex>, shared by every namespace
    guest.add_parent(env.ns());
    ASSERT_NO_FATAL_FAILURE(lv.start());
    DomainSpec d;
    d.name = kDomain;
    d.nics.push_back(DirectNic{kMac, "p0"});
    d.guest_dir = guest.dir();
    d.cmdline_extra = TestGuest::cmdline("relink.serve=8080");
    d.serial_log = guest.console_path();
    ASSERT_TRUE(lv.create(domain_xml(d))) << lv.log();
    ASSERT_TRUE(guest.answers(90s)) << "guest unreachable through libvirt's macvtap\n" << explain();
    // The release is 0.1-0.2 s of guest work: 3 s is ample, and short enough
    // for the paused cases.
    DaemonEnv::write_file(env.config_path(),
                          env.config_text({}) + "\n[libvirt]\nuri = \"" + lv.uri() + "\"\npid_dir = \"" +
                              lv.pid_dir() + "\"\nrelease_timeout = 3\nrelease = \"on-loss\"\n");
    ASSERT_NO_FATAL_FAILURE(env.start_relinkd());
    ASSERT_TRUE(env.wait_state("attached", 1, kDomain, 20s, "net0")) << explain();
  }
  std::string journal() { return read_file(env.dir() + "/state/intent.json"); }
  bool journaled() { return journal().find(kMac) != std::string::npos; }
  std::string log() { return read_file(env.log_path()); }
  json binding() { return env.binding(kDomain, "net0"); }
  // Suspended, and relinkd knows it.
  void suspend() {
    lv.virsh_ok(std::string("suspend ") + kDomain);
    ASSERT_TRUE(wait_until(
        [&] {
          auto st = env.status();
          if (st.is_object())
            for (const auto& v : st["vms"])
              if (v.value("name", "") == kDomain) return v.value("paused", false);
          return false;
        },
        10s))
        << explain();
  }
  uint64_t generation() { return binding().value("generation", uint64_t{0}); }
  std::string explain() {
    return env.explain() + "\nlibvirtd log (tail):\n" + lv.log() + "\ndomain's QEMU log (tail):\n" +
           DaemonEnv::tail(lv.qemu_log(kDomain), 1500) + "\nconsole (tail):\n" + guest.console_tail(1500);
  }
  // The domain's live XML (`virsh domiflist`): its macvtaps with the NIC's MAC.
  std::vector<std::string> nics() {
    std::vector<std::string> out;
    std::istringstream in(lv.virsh("domiflist " + std::string(kDomain)).out);
    for (std::string line; std::getline(in, line);) {
      std::istringstream f(line);
      std::string iface, type, source, model, m;
      if (f >> iface >> type >> source >> model >> m && m == kMac) out.push_back(iface);
    }
    return out;
  }
  size_t macvtap_fds_of_qemu() {
    size_t n = 0;
    const std::string dir = "/proc/" + std::to_string(lv.qemu_pid(kDomain)) + "/fd";
    DIR* d = opendir(dir.c_str());
    if (!d) return 0;
    while (dirent* e = readdir(d)) {
      char target[64] = {0};
      if (readlinkat(dirfd(d), e->d_name, target, sizeof target - 1) > 0 &&
          std::string(target).rfind("/dev/tap", 0) == 0)
        ++n;
    }
    closedir(d);
    return n;
  }
  // Attached at `gen` on the macvtap libvirt names, the one device QEMU
  // holds; the guest answers and the journal of intent is empty again.
  void expect_back(uint64_t gen) {
    ASSERT_TRUE(env.wait_state("attached", gen, kDomain, 30s, "net0")) << explain();
    const auto names = nics();
    ASSERT_EQ(names.size(), 1u) << lv.virsh("domiflist " + std::string(kDomain)).out;
    EXPECT_EQ(names[0], text_of(binding(), "macvtap"));
    EXPECT_GT(env.ns().ifindex(names[0]), 0);
    EXPECT_EQ(macvtap_fds_of_qemu(), 1u) << "QEMU holds another number of macvtap devices than one";
    ASSERT_TRUE(guest.answers(30s)) << "guest unreachable after generation " << gen << "\n" << explain();
    EXPECT_TRUE(wait_until([&] { return !journaled(); }, 5s)) << journal();
  }
  // The parent is deleted: the NIC is detached through libvirt without
  // waiting for the parent (gone from the live XML and from the guest), and
  // its interface is in the journal of intent while the parent is away.
  void expect_released_while_away(size_t gone_before) {
    ASSERT_TRUE(wait_until([&] { return nics().empty(); }, 15s))
        << "the NIC is still in the domain while its parent is away\n"
        << explain();
    ASSERT_TRUE(env.wait_state("waiting-parent", 0, kDomain, 10s, "net0")) << explain();
    // Status says the NIC is out; a reattach says why nothing can be done.
    const json b = binding();
    EXPECT_EQ(b.value("release", ""), "on-loss") << b.dump();
    EXPECT_EQ(b["nic_present"], false) << b.dump();
    auto r = sh(relinkctl_bin() + " --socket " + env.control() + " reattach " + kDomain + " net0 2>&1");
    EXPECT_NE(r.status, 0) << r.out;
    EXPECT_NE(r.out.find("its parent p0 is gone"), std::string::npos) << r.out;
    EXPECT_TRUE(wait_until([&] { return guest.markers("RELINK-GUEST-LINK-GONE") > gone_before; }, 10s))
        << "the guest did not see its NIC go\n"
        << explain();
    EXPECT_TRUE(journaled()) << "a released NIC is not in the journal of intent: " << journal();
    EXPECT_NE(guest.peer().run(std::string("busybox ping -c1 -W1 ") + TestGuest::kIp).status, 0);
  }

  DaemonEnv env;
  TestGuest guest{env.dir() + "/" + kDomain + ".console.log"};
  LibvirtEnv lv{env.ns()};
};

TEST_F(LibvirtReleaseOnLoss, ReleasedWhileTheParentIsAwayAndPluggedInWhenItReturns) {
  const auto t0 = std::chrono::steady_clock::now();
  auto since = [](std::chrono::steady_clock::time_point t) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
  };
  uint64_t gen = 1;

  // 5 flaps in a row.
  for (int i = 1; i <= 5; ++i) {
    SCOPED_TRACE("flap " + std::to_string(i));
    const size_t gone = guest.markers("RELINK-GUEST-LINK-GONE");
    env.ns().ip("link del p0");
    ASSERT_NO_FATAL_FAILURE(expect_released_while_away(gone));
    std::this_thread::sleep_for(300ms);
    EXPECT_TRUE(nics().empty()) << "plugged in again without a parent";
    ASSERT_NO_FATAL_FAILURE(guest.add_parent(env.ns()));
    ASSERT_NO_FATAL_FAILURE(expect_back(++gen));
  }
  auto b = binding();
  EXPECT_EQ(b.value("attaches", 0u), 5u) << b.dump();
  EXPECT_TRUE(b["last_release_ms"].is_number()) << b.dump();
  const double flaps_s = since(t0);

  // A carrier loss is not a loss of the parent: the NIC stays, link down.
  guest.peer().ip("link set p1 down");
  const std::string getlink = std::string("domif-getlink ") + kDomain + " " + kMac;
  ASSERT_TRUE(wait_until([&] { return lv.virsh(getlink).out.find(" down") != std::string::npos; }, 10s))
      << lv.virsh(getlink).out << explain();
  std::this_thread::sleep_for(500ms);
  EXPECT_EQ(nics().size(), 1u) << "released on a carrier loss";
  guest.peer().ip("link set p1 up");
  ASSERT_TRUE(wait_until([&] { return lv.virsh(getlink).out.find(" up") != std::string::npos; }, 10s))
      << lv.virsh(getlink).out << explain();
  EXPECT_EQ(generation(), gen) << "re-plugged on a carrier loss";
  ASSERT_TRUE(guest.answers(30s)) << explain();

  // The parent returns while the release is in flight: the release goes on,
  // then one attach.
  {
    SCOPED_TRACE("parent back during the release");
    const size_t asked = count_of(log(), "asking the guest to release");
    const size_t log_from = log().size();
    env.ns().ip("link del p0");
    ASSERT_TRUE(wait_until([&] { return count_of(log(), "asking the guest to release") > asked; }, 10s, 2ms))
        << explain();
    ASSERT_NO_FATAL_FAILURE(guest.add_parent(env.ns()));
    ASSERT_NO_FATAL_FAILURE(expect_back(++gen));
    const std::string seg = log().substr(log_from);
    const size_t back = seg.find("net0: parent is p0"), released = seg.find("the guest released the NIC");
    ASSERT_NE(released, std::string::npos) << seg;
    EXPECT_LT(back, released) << "the parent returned after the release had ended: not the case under test\n" << seg;
    EXPECT_EQ(count_of(log(), "asking the guest to release"), asked + 1) << seg;
  }

  // A paused guest cannot release: its release is pending when the parent
  // returns; relinkd makes a stand-in macvtap so that libvirt can resume the
  // domain, and the NIC is plugged in once the guest let go of it.
  {
    SCOPED_TRACE("paused, the parent back before the release timed out");
    ASSERT_NO_FATAL_FAILURE(suspend());
    env.ns().ip("link del p0");
    ASSERT_TRUE(env.wait_state("releasing", 0, kDomain, 10s, "net0")) << explain();
    ASSERT_NO_FATAL_FAILURE(guest.add_parent(env.ns()));
    const std::string old = nics().empty() ? "" : nics()[0];
    ASSERT_FALSE(old.empty()) << "a paused guest released its NIC";
    ASSERT_TRUE(wait_until([&] { return env.ns().ifindex(old) > 0; }, 5s)) << "no stand-in " << old << "\n" << explain();
    lv.virsh_ok(std::string("resume ") + kDomain);
    ASSERT_NO_FATAL_FAILURE(expect_back(++gen));
  }
  {
    SCOPED_TRACE("paused, the release timed out during the outage");
    ASSERT_NO_FATAL_FAILURE(suspend());
    env.ns().ip("link del p0");
    // Backoff, then waiting for the parent again (the error stays).
    const std::string timed_out = "the guest did not release net0 within 3 s: is it paused or without PCI hotplug?";
    ASSERT_TRUE(wait_until([&] { return text_of(binding(), "last_error") == timed_out; }, 10s, 20ms)) << explain();
    EXPECT_EQ(nics().size(), 1u);
    ASSERT_NO_FATAL_FAILURE(guest.add_parent(env.ns()));
    ASSERT_TRUE(env.wait_state("releasing", 0, kDomain, 10s, "net0")) << explain();
    lv.virsh_ok(std::string("resume ") + kDomain);
    ASSERT_NO_FATAL_FAILURE(expect_back(++gen));
  }

  // relinkd restarted during the outage, the NIC already released: the next
  // one keeps the journal's entry while the parent is away and plugs the NIC
  // in when it returns.
  {
    SCOPED_TRACE("relinkd restarted during the outage");
    const size_t gone = guest.markers("RELINK-GUEST-LINK-GONE");
    env.ns().ip("link del p0");
    ASSERT_NO_FATAL_FAILURE(expect_released_while_away(gone));
    const size_t log_from = log().size();
    ASSERT_NE(env.relinkd().stop(SIGTERM, 10s), -1) << explain();
    std::filesystem::remove(env.control());
    ASSERT_NO_FATAL_FAILURE(env.start_relinkd());
    ASSERT_TRUE(env.wait_state("waiting-parent", 0, kDomain, 20s, "net0")) << explain();
    std::this_thread::sleep_for(1s);
    EXPECT_TRUE(journaled()) << "the journal's entry went while the parent is away: " << journal();
    EXPECT_TRUE(nics().empty());
    EXPECT_NE(log().find("finishing a replug begun before", log_from), std::string::npos) << explain();
    ASSERT_NO_FATAL_FAILURE(guest.add_parent(env.ns()));
    ASSERT_NO_FATAL_FAILURE(expect_back(0));
    EXPECT_EQ(binding().value("attaches", 0u), 1u) << binding().dump();
  }
  EXPECT_EQ(std::stoi(env.ns().run("ip -o link show type macvtap | wc -l").out), 1)
      << env.ns().run("ip -o link show type macvtap").out;
  EXPECT_EQ(lv.qemu_log(kDomain).find("custom-monitor"), std::string::npos) << "the domain is tainted";
  printf("[ timing ] 5 on-loss flaps %.1f s; all cases %.1f s\n", flaps_s, since(t0));
}

}  // namespace
}  // namespace relink::test
