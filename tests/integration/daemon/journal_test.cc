// SPDX-License-Identifier: GPL-2.0-or-later
// Nothing lost when relinkd dies or starts a VM anew, with a real QEMU and a
// booted guest (TCG): a release written in the journal of intent is finished
// by the next relinkd (killed -9 while a paused guest held the release, the
// guest resumed and released while no relinkd ran), and by a reload that
// starts the VM's objects anew while the NIC is out; a QEMU killed while
// relinkd is stopped leaves no macvtap of relinkd's after the next start;
// and a device_add whose reply comes after QMP's timeout (held back by a
// proxy between relinkd and QEMU) ends attached, not failed; a release still
// pending in a paused guest when relinkd restarts and adopts the NIC's live
// macvtap ends with the NIC plugged in anew once the guest lets go.
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <atomic>
#include <thread>

#include "test_guest.h"

namespace relink::test {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

class Journal : public ::testing::Test {
 protected:
  void SetUp() override {
    RELINK_REQUIRE_ROOT();
    vm.nic = "net0";
    vm.attach = "replug";
    vm.extra = "release_timeout = 60\n";
  }
  bool nic_gone() {
    auto r = env.test_qmp(vm.name).execute("qom-get", {{"path", "/machine/peripheral/" + vm.nic}, {"property", "type"}});
    return r.contains("error");
  }
  std::string journal() { return env.dir() + "/state/intent.json"; }
  bool journal_has_entry() { return read_file(journal()).find("\"" + vm.nic + "\"") != std::string::npos; }
  std::string explain() {
    return env.explain() + "\njournal: " + read_file(journal()) + "\nguest console (tail):\n" +
           guest.console_tail(1500);
  }
  // relinkd dies as a crash or a watchdog would kill it: no cleanup at all.
  void kill9_relinkd() {
    ASSERT_NE(env.relinkd().stop(SIGKILL, 5s), -1);
    std::filesystem::remove(env.control());  // left behind; start_relinkd waits for a new one
  }
  // A running guest whose NIC relinkd adopted from the launcher, then paused.
  void adopted_then_paused() {
    guest.add_parent(env.ns());
    env.write_config({vm});
    env.start_qemu_direct(vm, "q35", "lmv0", guest.qemu_args("journal"));
    env.start_relinkd();
    ASSERT_TRUE(env.wait_state("attached", 0, vm.name, 10s, vm.nic)) << explain();
    ASSERT_TRUE(guest.wait_ready()) << explain();
    ASSERT_TRUE(guest.answers(30s)) << explain();
    ASSERT_TRUE(env.test_qmp(vm.name).execute("stop").contains("return"));
  }
  // The paused guest's parent flaps: relinkd asks for the release (journaled
  // first), which the paused guest cannot give yet.
  void paused_guest_holding_a_release() {
    ASSERT_NO_FATAL_FAILURE(adopted_then_paused());
    env.ns().ip("link del p0");
    ASSERT_TRUE(env.wait_state("waiting-parent", 0, vm.name, 10s, vm.nic)) << explain();
    guest.add_parent(env.ns());
    ASSERT_TRUE(env.wait_state("releasing", 0, vm.name, 10s, vm.nic)) << explain();
    ASSERT_TRUE(journal_has_entry()) << "the release was asked for before it was journaled\n" << explain();
  }
  void expect_back_and_journal_empty() {
    ASSERT_TRUE(env.wait_state("attached", 0, vm.name, 30s, vm.nic)) << explain();
    EXPECT_FALSE(nic_gone()) << explain();
    EXPECT_TRUE(guest.answers(30s)) << "the guest's NIC did not come back\n" << explain();
    EXPECT_TRUE(wait_until([&] { return !std::filesystem::exists(journal()); }, 5s)) << explain();
    EXPECT_NE(read_file(env.log_path()).find("finishing a replug begun before"), std::string::npos) << explain();
  }

  DaemonEnv env;
  TestGuest guest{env.dir() + "/console.log"};
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

// A changed binding (as a changed [daemon] passt does for every QMP VM):
// the VM is started anew, its attachers with it. The NIC is out (released, and its parent gone again) when that
// happens; the new VM object finds its template in the journal.
TEST_F(Journal, AReloadThatStartsTheVmAnewKeepsTheTemplate) {
  paused_guest_holding_a_release();
  env.ns().ip("link del p0");
  ASSERT_TRUE(env.wait_state("waiting-parent", 0, vm.name, 10s, vm.nic)) << explain();
  ASSERT_TRUE(env.test_qmp(vm.name).execute("cont").contains("return"));
  ASSERT_TRUE(wait_until([&] { return nic_gone(); }, 20s)) << explain();
  vm.extra = "release_timeout = 59\n";  // the binding changed: its VM is started anew
  env.write_config({vm});
  auto r = sh(relinkctl_bin() + " --socket " + env.control() + " reload 2>&1");
  ASSERT_EQ(r.status, 0) << r.out;
  ASSERT_NE(r.out.find("vm1/net0"), std::string::npos) << "the VM was not started anew: " << r.out;
  ASSERT_TRUE(env.wait_state("waiting-parent", 0, vm.name, 10s, vm.nic)) << explain();
  guest.add_parent(env.ns());
  expect_back_and_journal_empty();
}

// A release asked while the NIC's macvtap is alive (relinkctl reattach of a
// paused guest) is still pending in QEMU when relinkd is killed; the next
// relinkd adopts the live macvtap. The guest, resumed, lets go of the NIC:
// that is the earlier relinkd's release (the journal says so), not someone
// else unplugging it, and the NIC is plugged in anew.
TEST_F(Journal, AReleasePendingAcrossARestartWithALiveMacvtapEndsAttached) {
  ASSERT_NO_FATAL_FAILURE(adopted_then_paused());
  auto r =
      sh(relinkctl_bin() + " --socket " + env.control() + " reattach --no-wait " + vm.name + " " + vm.nic + " 2>&1");
  ASSERT_EQ(r.status, 0) << r.out;
  ASSERT_TRUE(env.wait_state("releasing", 0, vm.name, 10s, vm.nic)) << explain();
  ASSERT_TRUE(journal_has_entry()) << explain();
  kill9_relinkd();
  env.start_relinkd();
  ASSERT_TRUE(env.wait_state("attached", 0, vm.name, 10s, vm.nic)) << "the live macvtap was not adopted\n" << explain();
  ASSERT_TRUE(env.test_qmp(vm.name).execute("cont").contains("return"));
  ASSERT_TRUE(wait_until(
      [&] {
        auto b = env.binding(vm.name, vm.nic);
        return b.is_object() && b.value("attaches", 0u) >= 1 && b.value("state", "") == "attached";
      },
      30s))
      << explain();
  EXPECT_FALSE(nic_gone()) << explain();
  EXPECT_TRUE(guest.answers(30s)) << "the guest's NIC did not come back\n" << explain();
  EXPECT_TRUE(wait_until([&] { return !std::filesystem::exists(journal()); }, 5s)) << explain();
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


// Relays QMP between relinkd and QEMU's socket `qemu_path`, and holds back
// everything QEMU says for `hold` once relinkd has sent its first
// device_add: the reply comes after relinkd's 5 s timeout. The listening
// socket is the test's, but listen() is called by QEMU's process itself (a
// perl wrapper that then execs QEMU), so SO_PEERCRED and the peer check name
// QEMU, as they would without a proxy.
class HoldingProxy {
 public:
  HoldingProxy(int listener, std::string qemu_path, std::chrono::milliseconds hold)
      : listener_(listener), qemu_path_(std::move(qemu_path)), hold_(hold), thread_([this] { run(); }) {}
  ~HoldingProxy() {
    stop_ = true;
    thread_.join();
  }
  bool held() const { return held_; }

 private:
  void run() {
    while (!stop_) {
      pollfd p{listener_, POLLIN, 0};
      if (poll(&p, 1, 50) <= 0) continue;
      UniqueFd client(accept4(listener_, nullptr, nullptr, SOCK_CLOEXEC));
      if (client) relay(client.get());
    }
  }
  static UniqueFd connect_to(const std::string& path) {
    UniqueFd s(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    snprintf(a.sun_path, sizeof a.sun_path, "%s", path.c_str());
    if (connect(s.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) return UniqueFd();
    return s;
  }
  // relinkd -> QEMU, fds (getfd) on the same sendmsg as their bytes.
  bool forward_request(int from, int to, std::string& seen) {
    char buf[65536];
    char ctl[CMSG_SPACE(sizeof(int) * 16)];
    iovec iov{buf, sizeof buf};
    msghdr m{};
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    m.msg_control = ctl;
    m.msg_controllen = sizeof ctl;
    const ssize_t n = recvmsg(from, &m, MSG_CMSG_CLOEXEC);
    if (n <= 0) return false;
    iov.iov_len = static_cast<size_t>(n);
    if (m.msg_controllen == 0) m.msg_control = nullptr;
    const bool ok = sendmsg(to, &m, MSG_NOSIGNAL) == n;
    for (cmsghdr* c = m.msg_control ? CMSG_FIRSTHDR(&m) : nullptr; c; c = CMSG_NXTHDR(&m, c))
      if (c->cmsg_type == SCM_RIGHTS)
        for (size_t i = 0; i < (c->cmsg_len - CMSG_LEN(0)) / sizeof(int); ++i)
          close(reinterpret_cast<int*>(CMSG_DATA(c))[i]);
    seen.append(buf, static_cast<size_t>(n));
    return ok;
  }
  void relay(int client) {
    UniqueFd qemu = connect_to(qemu_path_);
    if (!qemu) return;
    std::string seen, held;
    auto until = std::chrono::steady_clock::time_point::min();
    while (!stop_) {
      pollfd p[2] = {{client, POLLIN, 0}, {qemu.get(), POLLIN, 0}};
      poll(p, 2, 20);
      if ((p[0].revents & (POLLIN | POLLHUP)) && !forward_request(client, qemu.get(), seen)) return;
      if (!held_ && seen.find("\"device_add\"") != std::string::npos) {
        held_ = true;
        until = std::chrono::steady_clock::now() + hold_;
      }
      if (p[1].revents & (POLLIN | POLLHUP)) {
        char buf[65536];
        const ssize_t n = read(qemu.get(), buf, sizeof buf);
        if (n <= 0) return;
        held.append(buf, static_cast<size_t>(n));
      }
      if (!held.empty() && std::chrono::steady_clock::now() >= until) {
        if (send(client, held.data(), held.size(), MSG_NOSIGNAL) < 0) return;
        held.clear();
      }
    }
  }

  int listener_;
  std::string qemu_path_;
  std::chrono::milliseconds hold_;
  std::atomic<bool> stop_{false}, held_{false};
  std::thread thread_;
};

// relinkd's first hand-over of the NIC (device_add) gets its reply after
// 6 s. Timed out is not failed: relinkd resets the session, sees the NIC
// plugged onto its new tap, and adopts it; it neither deletes that tap nor
// plugs the NIC again ("Duplicate ID"), and the guest answers.
TEST_F(Journal, ADeviceAddAnsweredAfterTheTimeoutEndsAttached) {
  guest.add_parent(env.ns());
  const std::string proxy_path = env.dir() + "/vm1.proxy.qmp";
  UniqueFd sock(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  snprintf(a.sun_path, sizeof a.sun_path, "%s", proxy_path.c_str());
  ASSERT_EQ(bind(sock.get(), reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  // A number of its own, clear of the launcher's fd 3.
  UniqueFd listener(fcntl(sock.get(), F_DUPFD_CLOEXEC, 100));
  sock.reset();
  env.qemu_keep_fds = {listener.get()};
  env.qemu_wrapper = {"perl", "-e",
                      "open(S, \"+<&=$ARGV[0]\") or die \"open: $!\"; listen(S, 8) or die \"listen: $!\"; "
                      "shift; exec @ARGV or die \"exec: $!\"",
                      std::to_string(listener.get())};
  std::string config = env.config_text({vm});
  config.replace(config.find(env.qmp_path(vm.name)), env.qmp_path(vm.name).size(), proxy_path);
  DaemonEnv::write_file(env.config_path(), config);
  // No launcher macvtap: the first attach is already a device_add.
  env.start_qemu_direct(vm, "q35", "", guest.qemu_args("journal"));
  HoldingProxy proxy(listener.get(), env.qmp_path(vm.name), 6000ms);
  ASSERT_TRUE(guest.wait_ready()) << explain();
  env.start_relinkd();
  ASSERT_TRUE(wait_until([&] { return proxy.held(); }, 30s)) << "relinkd sent no device_add\n" << explain();
  ASSERT_TRUE(env.wait_state("attached", 0, vm.name, 30s, vm.nic)) << explain();
  const std::string log = read_file(env.log_path());
  EXPECT_NE(log.find("device_add: QMP command device_add timed out"), std::string::npos) << explain();
  EXPECT_EQ(log.find("Duplicate ID"), std::string::npos) << explain();
  EXPECT_EQ(env.binding(vm.name, vm.nic).value("generation", 0u), 1u) << "plugged in more than once\n" << explain();
  EXPECT_TRUE(guest.answers(30s)) << explain();
  auto b = env.binding(vm.name, vm.nic);
  const std::string mvt = text_of(b, "macvtap");
  EXPECT_GT(env.ns().ifindex(mvt), 0) << "the tap QEMU uses was deleted\n" << explain();
}

}  // namespace
}  // namespace relink::test
