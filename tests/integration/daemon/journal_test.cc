// SPDX-License-Identifier: GPL-2.0-or-later
// Nothing lost when relinkd dies or starts a VM anew, with a real QEMU and a
// booted guest (TCG): a release written in the journal of intent is finished
// by the next relinkd (killed -9 while a paused guest held the release, the
// guest resumed and released while no relinkd ran), and by a reload that
// starts the VM's objects anew while the NIC is out; a QEMU killed while
// relinkd is stopped leaves no macvtap of relinkd's after the next start;
// and a device_add whose reply comes after QMP's timeout (held back by a
// proxy between relinkd and QEMU) ends attached, not failed.
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <atomic>
#include <thread>

#include "daemon_env.h"

namespace relink::test {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

constexpr const char* kGuestIp = "192.0.2.2";
constexpr const char* kPeerIp = "192.0.2.1";

class Journal : public ::testing::Test {
 protected:
  void SetUp() override {
    RELINK_REQUIRE_ROOT();
    vm.nic = "net0";
    vm.attach = "replug";
    vm.extra = "release_timeout = 60\n";
  }
  void add_parent() {
    env.ns().ip("link add p0 type veth peer name p1 netns " + peer.name());
    env.ns().ip("link set p0 up");
    peer.ip("addr add " + std::string(kPeerIp) + "/24 dev p1");
    peer.ip("link set p1 up");
  }
  std::vector<std::string> guest_args() {
    const std::string dir = test_guest_dir();
    const std::string kernel = std::filesystem::exists(dir + "/vmlinux") ? "/vmlinux" : "/vmlinuz";
    return {"-no-reboot", "-serial", "file:" + env.dir() + "/console.log", "-kernel", dir + kernel, "-initrd",
            dir + "/initramfs.cpio.gz", "-append",
            "console=ttyS0 quiet panic=-1 relink.tag=journal relink.ip=" + std::string(kGuestIp) +
                "/24 relink.poll=0.05"};
  }
  std::string console() { return read_file(env.dir() + "/console.log"); }
  bool wait_ready() {
    return wait_until([&] { return console().find("RELINK-GUEST-READY") != std::string::npos; }, 120s, 100ms);
  }
  bool guest_answers(std::chrono::seconds timeout) {
    return wait_until([&] { return peer.run(std::string("busybox ping -c1 -W1 ") + kGuestIp).status == 0; },
                      timeout, 200ms);
  }
  bool nic_gone() {
    auto r = env.test_qmp(vm.name).execute("qom-get", {{"path", "/machine/peripheral/" + vm.nic}, {"property", "type"}});
    return r.contains("error");
  }
  std::string journal() { return env.dir() + "/state/intent.json"; }
  bool journal_has_entry() { return read_file(journal()).find("\"" + vm.nic + "\"") != std::string::npos; }
  std::string explain() {
    return env.explain() + "\njournal: " + read_file(journal()) + "\nguest console (tail):\n" +
           DaemonEnv::tail(console(), 1500);
  }
  // relinkd dies as a crash or a watchdog would kill it: no cleanup at all.
  void kill9_relinkd() {
    ASSERT_NE(env.relinkd().stop(SIGKILL, 5s), -1);
    std::filesystem::remove(env.control());  // left behind; start_relinkd waits for a new one
  }
  // A running guest whose NIC relinkd adopted from the launcher; then the
  // guest is paused and the parent flaps: relinkd asks for the release
  // (journaled first), which the paused guest cannot give yet.
  void paused_guest_holding_a_release() {
    add_parent();
    env.write_config({vm});
    env.start_qemu_direct(vm, "q35", "lmv0", guest_args());
    env.start_relinkd();
    ASSERT_TRUE(env.wait_state("attached", 0, vm.name, 10s, vm.nic)) << explain();
    ASSERT_TRUE(wait_ready()) << explain();
    ASSERT_TRUE(guest_answers(30s)) << explain();
    ASSERT_TRUE(env.test_qmp(vm.name).execute("stop").contains("return"));
    env.ns().ip("link del p0");
    ASSERT_TRUE(env.wait_state("waiting-parent", 0, vm.name, 10s, vm.nic)) << explain();
    add_parent();
    ASSERT_TRUE(env.wait_state("releasing", 0, vm.name, 10s, vm.nic)) << explain();
    ASSERT_TRUE(journal_has_entry()) << "the release was asked for before it was journaled\n" << explain();
  }
  void expect_back_and_journal_empty() {
    ASSERT_TRUE(env.wait_state("attached", 0, vm.name, 30s, vm.nic)) << explain();
    EXPECT_FALSE(nic_gone()) << explain();
    EXPECT_TRUE(guest_answers(30s)) << "the guest's NIC did not come back\n" << explain();
    EXPECT_TRUE(wait_until([&] { return !std::filesystem::exists(journal()); }, 5s)) << explain();
    EXPECT_NE(read_file(env.log_path()).find("finishing a replug begun before"), std::string::npos) << explain();
  }

  DaemonEnv env;
  Netns peer{"peer"};
  VmSpec vm;
};

TEST_F(Journal, TheNextRelinkdPlugsInANicReleasedWhileNoRelinkdRan) {
  paused_guest_holding_a_release();
  kill9_relinkd();
  ASSERT_TRUE(env.test_qmp(vm.name).execute("cont").contains("return"));
  ASSERT_TRUE(wait_until([&] { return nic_gone(); }, 20s)) << "the guest did not release its NIC\n" << explain();
  env.start_relinkd();
  expect_back_and_journal_empty();
}

// [daemon] passt changed: every QMP VM is started anew, its attachers with
// it. The NIC is out (released, and its parent gone again) when that
// happens; the new VM object finds its template in the journal.
TEST_F(Journal, AReloadThatStartsTheVmAnewKeepsTheTemplate) {
  paused_guest_holding_a_release();
  env.ns().ip("link del p0");
  ASSERT_TRUE(env.wait_state("waiting-parent", 0, vm.name, 10s, vm.nic)) << explain();
  ASSERT_TRUE(env.test_qmp(vm.name).execute("cont").contains("return"));
  ASSERT_TRUE(wait_until([&] { return nic_gone(); }, 20s)) << explain();
  env.write_config({vm}, "passt = \"/usr/bin//passt\"\n");
  auto r = sh(relinkctl_bin() + " --socket " + env.control() + " reload 2>&1");
  ASSERT_EQ(r.status, 0) << r.out;
  ASSERT_NE(r.out.find("vm1"), std::string::npos) << "the VM was not started anew: " << r.out;
  ASSERT_TRUE(env.wait_state("waiting-parent", 0, vm.name, 10s, vm.nic)) << explain();
  add_parent();
  expect_back_and_journal_empty();
}

// A hub-attached VM (no guest needed): relinkd's macvtap carries its alias;
// QEMU dies while relinkd is down, and the next relinkd deletes the macvtap
// nobody holds, which would keep the VM's next macvtap from coming up.
TEST_F(Journal, AMacvtapNobodyHoldsIsDeletedAtStart) {
  VmSpec hub;
  env.add_veth_parent("p0");
  env.write_config({hub});
  env.start_qemu(hub);
  env.start_relinkd();
  ASSERT_TRUE(env.wait_state("attached", 1)) << env.explain();
  const std::string mvt = text_of(env.binding("vm1"), "macvtap");
  ASSERT_FALSE(mvt.empty());
  const std::string link = env.ns().run("ip -d link show " + mvt).out;
  EXPECT_NE(link.find("alias relink:vm1/nic0"), std::string::npos) << link;
  // An unmarked macvtap is not relinkd's, held or not: it stays.
  env.ns().ip("link add link p0 name other0 address 52:54:00:aa:bb:cc type macvtap mode bridge");
  kill9_relinkd();
  env.kill_qemu("vm1");
  ASSERT_GT(env.ns().ifindex(mvt), 0) << "the macvtap went before relinkd started again";
  env.start_relinkd();
  EXPECT_TRUE(wait_until([&] { return env.ns().ifindex(mvt) == 0; }, 5s)) << env.explain();
  EXPECT_GT(env.ns().ifindex("other0"), 0);
  EXPECT_NE(read_file(env.log_path()).find("no process holds it"), std::string::npos) << env.explain();
}

}  // namespace
}  // namespace relink::test
